package main

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/rotate"
)

// slotFlag selects slots; what says what the command does to them, e.g.
// "rotate only".
func slotFlag(what string) cli.Flag {
	return &cli.StringSliceFlag{Name: "slot", Aliases: []string{"s"}, Usage: what + " this `SLOT` (repeatable, globs allowed); default all"}
}

func rotateCommand() *cli.Command {
	return &cli.Command{
		Name:  "rotate",
		Usage: "rotate the keys of the slots that are due (or --now)",
		Description: "Creates a new key with the old key's restrictions and binding, probes it until it works,\n" +
			"writes it to the secret and every target, reads them back, then deletes the old key once\n" +
			"Cloud Monitoring shows nothing uses it any more (retire: quiet; still used at drain_timeout, it is\n" +
			"kept and the run exits 5), or keeps it for --grace. A run that stops part-way resumes on the next run.",
		Flags: append([]cli.Flag{
			slotFlag("rotate only"),
			&cli.BoolFlag{Name: "now", Usage: "rotate even when the key is not due"},
			&cli.BoolFlag{Name: "leaked", Usage: "read a leaked key string from stdin, find it among the slots and take it out of service at once (no grace)"},
			&cli.BoolFlag{Name: "again", Usage: "with --now, rotate even if the slot was rotated less than lease_ttl ago (otherwise taken for a retry of that run)"},
			&cli.StringFlag{Name: "grace", Usage: "keep the old key this `DURATION` (e.g. 24h, 7d) instead of the config's grace (implies --retire grace)"},
			&cli.StringFlag{Name: "retire", Usage: "what to do with the old key, instead of the config's retire: `MODE` quiet (delete it once Cloud Monitoring " +
				"shows it unused), grace (keep it for the grace period) or now (delete it at once)"},
			&cli.StringFlag{Name: "wait-for-lease", Usage: "when another live run holds a slot, wait for it up to `DURATION` " +
				"(e.g. 16m, more than lease_ttl to outwait a dead holder) and report its outcome instead of exit 4"},
		}, fleetFlags()...),
		Action: func(c *cli.Context) error {
			if c.Bool("leaked") {
				if c.IsSet("grace") || c.IsSet("retire") || c.IsSet("slot") || c.IsSet("shard") {
					return usagef("--leaked deletes the leaked key at once and finds the slot itself: drop --grace, --retire, --slot and --shard")
				}
				return runLeaked(c)
			}
			opts, err := rotateOptions(c)
			if err != nil {
				return err
			}
			if c.IsSet("wait-for-lease") {
				d, err := config.ParseDuration(c.String("wait-for-lease"))
				if err != nil {
					return usagef("--wait-for-lease: %v", err)
				}
				if d <= 0 {
					return usagef("--wait-for-lease must be positive (got %s)", c.String("wait-for-lease"))
				}
				opts.WaitForLease = time.Duration(d)
			}
			if c.Args().Present() {
				return usagef("rotate takes no arguments (got %q); use --slot", c.Args().First())
			}
			fo, err := fleetOptionsFrom(c)
			if err != nil {
				return err
			}
			return runRotate(c, hostsFromEnv(), c.String("config"), c.StringSlice("slot"), opts, fo)
		},
	}
}

// rotateOptions reads the flags that decide what rotate does to a slot,
// shared by rotate and plan (which predicts it): --now, --again, --grace.
func rotateOptions(c *cli.Context) (rotate.Options, error) {
	opts := rotate.Options{Force: c.Bool("now"), Again: c.Bool("again")}
	if c.IsSet("retire") {
		switch m := c.String("retire"); m {
		case config.RetireQuiet, config.RetireGrace, config.RetireNow:
			opts.Retire = rotate.RetireMode(m)
		default:
			return opts, usagef("--retire must be quiet, grace or now (got %s)", m)
		}
	}
	if c.IsSet("grace") && opts.Retire == rotate.RetireNow {
		return opts, usagef("--grace keeps the old key, --retire now deletes it at once: drop one")
	}
	if c.IsSet("grace") {
		d, err := config.ParseDuration(c.String("grace"))
		if err != nil {
			return opts, usagef("--grace: %v", err)
		}
		if d < 0 {
			return opts, usagef("--grace must not be negative (got %s)", c.String("grace"))
		}
		g := time.Duration(d)
		opts.Grace = &g
	}
	return opts, nil
}

type rotateOutput struct {
	Command string           `json:"command"`
	Shard   string           `json:"shard,omitempty"`
	Results []*rotate.Result `json:"results"`
	Errors  []errorJSON      `json:"errors,omitempty"`
}

// runRotate rotates the selected slots that are due (all with --now),
// fo.parallel at a time, then writes the run record and posts to the
// webhook as asked. Neither of those changes the exit code: a failure to
// write or post is a warning.
func runRotate(c *cli.Context, h hosts, cfgPath string, names []string, opts rotate.Options, fo fleetOptions) error {
	rec := newRunRecord(c, "rotate", cfgPath)
	b := budgetOf(c)
	err := rotateFleet(c, h, cfgPath, names, opts, fo, rec)
	rec.finish(err)
	if rec.Summary.Slots > 0 && c.String("output") != "json" {
		fmt.Fprintln(c.App.Writer, rec.totals())
	}
	deliver(c, b, rec, fo)
	return err
}

// deliver writes the finished run record and posts it to the webhook, as
// fo asks, within budget b. Neither changes the exit code: a failure to
// write or post is a warning.
func deliver(c *cli.Context, b budget, rec *runRecord, fo fleetOptions) {
	if fo.report != "" {
		if werr := rec.write(fo.report); werr != nil {
			warn(c, "could not write the run record: %v", werr)
		}
	}
	if fo.webhook != "" && (rec.ExitCode != exitOK || fo.always) {
		ctx, cancel := b.notifyContext(c.Context)
		defer cancel()
		if nerr := notify(ctx, fo.webhook, rec); nerr != nil {
			warn(c, "could not post to the webhook: %v", nerr)
		}
	}
}

func warn(c *cli.Context, format string, args ...any) {
	fmt.Fprintf(c.App.ErrWriter, "keyrotate: warning: "+format+"\n", args...)
}

func rotateFleet(c *cli.Context, h hosts, cfgPath string, names []string, opts rotate.Options, fo fleetOptions, rec *runRecord) error {
	j, err := newJob(c, h, cfgPath, names)
	if err != nil {
		return err
	}
	defer j.close()
	rec.start(j)
	if err := j.cleanTemp(c.Context); err != nil {
		return err
	}
	if !j.shard.all() {
		j.out.note("shard %s (from %s): %d of the selected slots", j.shard, j.shard.from, len(j.slots))
	}
	r := j.rotator(c)
	out := rotateOutput{Command: "rotate", Results: []*rotate.Result{}}
	if !j.shard.all() {
		out.Shard = j.shard.String()
	}
	order := rec.order // each slot's place in the config
	type failed struct {
		slot string
		err  error
	}
	var (
		mu      sync.Mutex
		fails   []failed
		prog    = newProgress(j.out, len(j.slots))
		results = map[string]*rotate.Result{}
	)
	if prog != nil {
		r.Events = processOf(c).events(prog.event)
		r.Retry.OnRetry = prog.retrying
	}
	f := &rotate.Fleet{Rotator: r, Parallel: fo.parallel}
	f.Start = func(s *rotate.Slot) { prog.start(s.Name) }
	f.Done = func(o rotate.Outcome) {
		mu.Lock()
		defer mu.Unlock()
		rec.add(o)
		prog.done(o)
		if o.Err != nil {
			fails = append(fails, failed{o.Slot.Name, rotateHeldHint(o.Err, o.Slot.Name)})
			return
		}
		results[o.Slot.Name] = o.Result
		if !j.out.json {
			prog.above(func() { printResult(j.out, o.Result) })
		}
	}
	f.Run(j.ctx, j.slots, opts)
	prog.finish()
	slices.SortFunc(fails, func(a, b failed) int { return order[a.slot] - order[b.slot] })
	var errs []error
	for _, fl := range fails {
		errs = append(errs, fl.err)
		out.Errors = append(out.Errors, toErrorJSON(fl.slot, fl.err))
	}
	for _, s := range j.slots {
		if res := results[s.Name]; res != nil {
			out.Results = append(out.Results, res)
		}
	}
	if j.out.json {
		if err := j.out.jsonDoc(out); err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return attentionOf(out.Results) // exit 5 when an old key was kept in use
}

// skipHint says how to rotate anyway when rotate would do nothing.
func skipHint(skip string) string {
	switch skip {
	case rotate.SkipNotDue:
		return "use --now to rotate anyway"
	case rotate.SkipRetry:
		return "use --now --again to rotate anyway"
	}
	return ""
}

func printResult(p *printer, res *rotate.Result) {
	for _, f := range res.Finalized {
		p.note("%s: finalize: %s %s (%s)", res.Slot, f.Action, f.Key, f.Reason)
	}
	if w := res.Waited; w != nil {
		p.note("%s: waited %s for %s %s held by %s: %s", res.Slot, w.Duration.Round(time.Second), w.Kind, w.ID, w.Holder, waitedOutcome(res))
	}
	if res.Kind == rotate.KindRepair {
		printRepair(p, res)
		return
	}
	if !res.Rotated {
		h := skipHint(res.Skip)
		switch {
		case !p.saidDone(res.Slot): // a progress bar took the step lines
			if h != "" {
				p.note("%s: nothing to do (%s; %s)", res.Slot, res.Reason, h)
			} else {
				p.note("%s: nothing to do (%s)", res.Slot, res.Reason)
			}
		case h != "":
			p.note("%s: %s", res.Slot, h) // the step line said why
		}
		return
	}
	verb := map[string]string{rotate.KindRotate: "rotated", rotate.KindAbort: "aborted", rotate.KindRollback: "rolled back"}[res.Kind]
	resumed := ""
	if res.Resumed {
		resumed = ", resumed"
	}
	p.note("")
	p.note("%s: %s (%s %s%s)", res.Slot, verb, res.Kind, res.RotationID, resumed)
	if res.Retired == rotate.RetiredNeverCreated {
		p.note("  retired  never created  %s", res.OldKey.Name)
	} else {
		p.note("  retired  %s  %s  %s", orUnknown(res.OldKey.Fingerprint), res.OldKey.Name, retired(res))
	}
	if d := res.Drain; d != nil && res.KeptReason != "" {
		for _, m := range d.Usage {
			p.note("  in use   %s", usageText([]rotate.MethodRate{m}))
		}
	}
	p.note("  current  %s  %s", res.NewKey.Fingerprint, res.NewKey.Name)
	p.note("  secret   %s", res.NewVersion)
	for _, t := range res.Targets {
		p.note("  target   %s  %s (%s)", t.Fingerprint, t.Target, t.Action)
	}
}

// orUnknown stands in for a fingerprint that could not be read.
func orUnknown(fp string) string {
	if fp == "" {
		return "(fingerprint unknown)"
	}
	return fp
}

func retired(res *rotate.Result) string {
	if res.KeptReason != "" {
		return "(kept: " + res.KeptReason + ")"
	}
	if res.DeleteAfter != nil {
		return fmt.Sprintf("(kept until %s)", res.DeleteAfter.Format(time.RFC3339))
	}
	return "(" + res.Retired + ")"
}

func waitedOutcome(res *rotate.Result) string {
	switch res.Waited.Outcome {
	case "rotated":
		return fmt.Sprintf("it rotated the slot (current key %s %s)", res.OldKey.Fingerprint, res.OldKey.Name)
	case "resumed":
		return "it stopped part-way; this run resumed it"
	}
	return fmt.Sprintf("it ended without rotating (current key %s %s)", res.OldKey.Fingerprint, res.OldKey.Name)
}
