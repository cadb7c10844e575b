package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/keyrotate/keyrotate/internal/errhint"
	"path"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/targets"
	"github.com/keyrotate/keyrotate/verify"
)

// job is what plan and rotate share: the config, the selected slots, the
// clients and the output.
type job struct {
	// ctx is the run's context: interrupted by SIGINT/SIGTERM and bounded
	// by --timeout (less the shares of what follows the steps), so that
	// retries end with the last real error.
	ctx     context.Context
	cancel  context.CancelFunc
	cfg     *config.Config
	slots   []*rotate.Slot
	dotenvs []string // files written by atomic replace (temp files to clean)
	clients *clients
	hosts   hosts // where the APIs are (emulators)
	out     *printer
	// shard is the part of the selected slots this process takes.
	shard shard
	// meter paces and counts the API calls of the run.
	meter *gcp.Meter
	// budget is how the run spends its --timeout; ctx ends at its work.
	budget budget
}

// newJob loads the config, selects slots and checks every local target,
// all before any API call: bad input changes nothing and calls nothing.
func newJob(c *cli.Context, h hosts, cfgPath string, slotNames []string) (*job, error) {
	return openJob(c, h, cfgPath, slotNames, true)
}

// openJob is newJob; a job that is not bounded (a server: serve, listen)
// has no deadline on its context and arms no --timeout.
func openJob(c *cli.Context, h hosts, cfgPath string, slotNames []string, bounded bool) (*job, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		if errors.Is(err, config.ErrInvalid) {
			return nil, err
		}
		return nil, usageError{err} // unreadable or missing: bad usage, exit 2
	}
	selected, err := selectSlots(cfg, slotNames)
	if err != nil {
		return nil, err
	}
	sh, err := shardFrom(c, getenv)
	if err != nil {
		return nil, err
	}
	selected = inShard(selected, sh)
	j := &job{cfg: cfg, out: newPrinter(c), shard: sh, hosts: h}
	j.meter = &gcp.Meter{Pacer: gcp.NewPacer(quotas(cfg, sh), 0), QuotaProject: quotaProjectOf(c, cfg)}
	if bounded {
		j.budget = budgetOf(c)
		j.ctx, j.cancel = context.WithDeadline(c.Context, j.budget.work)
	} else {
		j.ctx, j.cancel = context.WithCancel(c.Context)
	}
	local, err := readLocalTargets(c.Context, selected)
	if err != nil {
		j.cancel()
		return nil, err
	}
	if j.clients, err = newClients(j.ctx, h, j.meter, j.meter.QuotaProject); err != nil {
		j.cancel()
		return nil, err
	}
	for _, s := range selected {
		for _, t := range s.Targets {
			if t.Type != config.TargetSecretManager {
				continue
			}
			if err := j.clients.addLocations(j.ctx, secretLocation(t.Secret)); err != nil {
				j.close()
				return nil, err
			}
		}
	}
	for i, s := range selected {
		j.slots = append(j.slots, j.slot(s, local[i]))
	}
	return j, nil
}

// readLocalTargets builds the targets of each slot that need no client (see
// localTarget; nil for the others) and reads them, so that a missing file
// or variable stops the run before any API call. The job keeps what it
// built: a file target compares its next write with this read.
func readLocalTargets(ctx context.Context, selected []*config.Slot) ([][]rotate.Target, error) {
	local := make([][]rotate.Target, len(selected))
	for i, s := range selected {
		local[i] = make([]rotate.Target, len(s.Targets))
		for k, t := range s.Targets {
			lt := localTarget(t)
			if lt == nil {
				continue
			}
			if _, err := lt.Read(ctx); err != nil && !errors.Is(err, rotate.ErrUnreadable) {
				return nil, fmt.Errorf("slot %s: %w", s.Name, err)
			}
			local[i][k] = lt
		}
	}
	return local, nil
}

func (j *job) close() {
	j.cancel()
	j.clients.Close()
}

// slot builds the rotate.Slot of s; local holds the targets of s that
// readLocalTargets built, nil where a target needs a client.
func (j *job) slot(s *config.Slot, local []rotate.Target) *rotate.Slot {
	rs := &rotate.Slot{
		Name: s.Name, Project: s.Project, Secret: s.Secret, Key: s.Key, ServiceAccount: s.ServiceAccount,
		Grace:              j.cfg.EffectiveGrace(s),
		MaxAge:             j.cfg.EffectiveMaxAge(s),
		PropagationTimeout: time.Duration(j.cfg.Defaults.PropagationTimeout),
		LeaseTTL:           time.Duration(j.cfg.Defaults.LeaseTTL),
		Retire:             rotate.RetireMode(j.cfg.EffectiveRetire(s)),
		QuietPeriod:        j.cfg.EffectiveQuietPeriod(s),
		DrainTimeout:       j.cfg.EffectiveDrainTimeout(s),
		Usage:              rotate.UsagePolicy(j.cfg.EffectiveUsage(s)),
		ScheduleTopic:      j.cfg.EffectiveScheduleTopic(s),
	}
	rs.SecretProjectDiffers = s.SecretProjectDiffers
	rs.BoundKeyRestrictions = s.BoundKeyRestrictions
	if s.Verify == config.VerifyGemini {
		probe, model := j.cfg.EffectiveProbe(s)
		rs.Prober = j.clients.gemini.With(verify.ProbeMethod(probe), model)
	}
	for i, t := range s.Targets {
		tg := local[i]
		if tg == nil {
			tg = j.remoteTarget(t)
		}
		rs.Targets = append(rs.Targets, tg)
		if p := tempFilePath(t); p != "" {
			j.dotenvs = append(j.dotenvs, p)
		}
	}
	return rs
}

func (j *job) rotator(c *cli.Context) *rotate.Rotator {
	r := &rotate.Rotator{
		Keys: j.clients.keys, Lookup: j.clients.lookup, Secrets: j.clients.secrets,
		Access:         j.clients.access,
		Monitoring:     j.clients.monitoring,
		UsageDelay:     time.Duration(j.cfg.Defaults.UsageDelay),
		QuotaProject:   j.meter.QuotaProject,
		Log:            newLogger(c),
		Events:         processOf(c).events(j.out.event),
		CleanupTimeout: j.budget.cleanup,
		RunID:          runID(c), // one id in the records, leases, logs and report
		// The other shards of the job probe the same projects' new keys:
		// each probes them n times less often.
		Shards: j.shard.count,
		// Retries are logged (info, warn after 30s) and shown on a
		// terminal; a refused emulator address fails at once.
		Retry: gcp.RetryPolicy{OnRetry: j.out.retrying, Permanent: j.hosts.refusedEmulator},
	}
	onDemoClock(c, r)
	return r
}

// selectSlots picks the slots named by --slot (globs allowed), or all.
func selectSlots(cfg *config.Config, names []string) ([]*config.Slot, error) {
	if len(names) == 0 {
		out := make([]*config.Slot, len(cfg.Slots))
		for i := range cfg.Slots {
			out[i] = &cfg.Slots[i]
		}
		return out, nil
	}
	var out []*config.Slot
	seen := map[string]bool{}
	for _, pat := range names {
		if _, err := path.Match(pat, ""); err != nil {
			return nil, usagef("--slot %q is not a valid pattern: %v", pat, err)
		}
		n := 0
		for i := range cfg.Slots {
			s := &cfg.Slots[i]
			if ok, _ := path.Match(pat, s.Name); ok {
				n++
				if !seen[s.Name] {
					seen[s.Name] = true
					out = append(out, s)
				}
			}
		}
		if n == 0 {
			hint := "the config's slots are: " + slotNames(cfg)
			var names []string
			for _, sl := range cfg.Slots {
				names = append(names, sl.Name)
			}
			if s := config.Suggest(pat, names); s != "" {
				hint = fmt.Sprintf("did you mean %q? The config's slots are: %s", s, slotNames(cfg))
			}
			return nil, errhint.With(usagef("no slot named %q in %s", pat, cfg.Path), hint)
		}
	}
	return out, nil
}

func slotNames(cfg *config.Config) string {
	s := ""
	for i, sl := range cfg.Slots {
		if i > 0 {
			s += ", "
		}
		s += sl.Name
	}
	return s
}

// cleanTemp removes temp files of interrupted atomic writes next to each
// .env target, so that no key string is left in a stray file.
// A write holds its directory's lock for milliseconds; a lock held for
// long belongs to a stuck process, so the wait is bounded.
func (j *job) cleanTemp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, p := range j.dotenvs {
		removed, err := targets.CleanTemp(ctx, p)
		if err != nil {
			return fmt.Errorf("clean temp files of %s: %w", p, err)
		}
		for _, r := range removed {
			j.out.note("removed %s, left by an interrupted write", r)
		}
	}
	return nil
}

// runPerSlot runs a read-only command (plan, status, verify) over the
// selected slots, one after another and without progress events. view
// reads one slot, shows it to people (not in JSON mode) and returns its
// report (nil for none) and its error; one slot's error does not stop the
// others. With --json, document makes the one JSON document of the
// reports and the errors. The error is every slot's error joined.
func runPerSlot[R any](c *cli.Context, h hosts, cfgPath string, slots []string, command string,
	view func(j *job, r *rotate.Rotator, s *rotate.Slot) (*R, error),
	document func(reports []*R, errs []errorJSON) any,
) error {
	j, err := newJob(c, h, cfgPath, slots)
	if err != nil {
		return err
	}
	defer j.close()
	r := j.rotator(c)
	r.Events = nil
	reports := []*R{}
	var errs []error
	var errsJSON []errorJSON
	for _, s := range j.slots {
		report, err := view(j, r, s)
		if err != nil {
			errs = append(errs, err)
			errsJSON = append(errsJSON, toErrorJSON(s.Name, inCommand(command, err)))
		}
		if report != nil {
			reports = append(reports, report)
		}
	}
	if j.out.json {
		if err := j.out.jsonDoc(document(reports, errsJSON)); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}
