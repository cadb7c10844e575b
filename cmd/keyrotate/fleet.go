package main

import (
	"fmt"
	"github.com/keyrotate/keyrotate/internal/errhint"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// Environment variables that name a task's shard in the engines keyrotate
// runs on.
const (
	cloudRunTaskIndexEnv = "CLOUD_RUN_TASK_INDEX" // Cloud Run Jobs
	cloudRunTaskCountEnv = "CLOUD_RUN_TASK_COUNT"
	jobCompletionEnv     = "JOB_COMPLETION_INDEX" // Kubernetes Indexed Jobs (the count is not in the environment)
	notifyWebhookEnv     = "KEYROTATE_NOTIFY_WEBHOOK"
)

func shardFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "shard", Usage: "take only shard `i/n` of the slots (0-based, by a stable hash of the slot name); default from " +
			cloudRunTaskIndexEnv + "/" + cloudRunTaskCountEnv + " (Cloud Run Jobs) or " + jobCompletionEnv + " with --shard-count (Kubernetes Indexed Jobs)"},
		&cli.IntFlag{Name: "shard-count", DefaultText: "none",
			Usage: "number of shards `n` when the index comes from " + jobCompletionEnv + " (the Indexed Job's completions)"},
	}
}

func fleetFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.IntFlag{Name: "parallel", Usage: "rotate up to `N` slots at once; API calls stay paced under each project's quota", Value: 8},
	}, append(shardFlags(),
		&cli.StringFlag{Name: "report", Usage: "write a JSON run record to `FILE`: slots, actions, key names and fingerprints, timings, API calls, errors"},
		&cli.StringFlag{Name: "notify-webhook", EnvVars: []string{notifyWebhookEnv},
			Usage: "post a Slack-compatible JSON summary to `URL` (it is a secret: prefer " + notifyWebhookEnv + ")"},
		&cli.StringFlag{Name: "notify-on", Usage: "post to the webhook on `WHEN`: failure or always", Value: "failure"},
	)...)
}

// fleetOptions are the flags of a multi-slot rotate run.
type fleetOptions struct {
	parallel int
	report   string
	webhook  string
	always   bool // notify on success too
}

func fleetOptionsFrom(c *cli.Context) (fleetOptions, error) {
	fo := fleetOptions{parallel: c.Int("parallel"), report: c.String("report"), webhook: c.String("notify-webhook")}
	if fo.parallel < 1 || fo.parallel > 1000 {
		return fo, usagef("--parallel must be from 1 to 1000, not %d", fo.parallel)
	}
	switch c.String("notify-on") {
	case "failure":
	case "always":
		fo.always = true
	default:
		return fo, usagef("--notify-on must be failure or always, not %q", c.String("notify-on"))
	}
	if fo.webhook != "" {
		if err := checkWebhookURL(fo.webhook); err != nil {
			return fo, err
		}
	}
	return fo, nil
}

// shard is the part of the slots one process of a sharded job takes.
type shard struct {
	index, count int
	from         string // where it came from, for people
}

func (s shard) String() string { return fmt.Sprintf("%d/%d", s.index, s.count) }

func (s shard) all() bool { return s.count <= 1 }

// shardFrom reads --shard, or the engine's task index. A command without
// the flags takes every slot.
func shardFrom(c *cli.Context, getenv func(string) string) (shard, error) {
	all := shard{index: 0, count: 1}
	if !hasFlag(c, "shard") {
		return all, nil
	}
	count := c.Int("shard-count")
	if c.IsSet("shard-count") && count < 1 {
		return all, usagef("--shard-count must be at least 1, not %d", count)
	}
	if v := c.String("shard"); v != "" {
		i, n, ok := parseShard(v)
		if !ok {
			return all, usagef("--shard must be i/n with 0 <= i < n (for example 0/4), not %q", v)
		}
		if c.IsSet("shard-count") && count != n {
			return all, usagef("--shard %s and --shard-count %d disagree; give one of them", v, count)
		}
		return shard{i, n, "--shard"}, nil
	}
	if v := getenv(cloudRunTaskIndexEnv); v != "" {
		i, err1 := strconv.Atoi(v)
		n, err2 := strconv.Atoi(getenv(cloudRunTaskCountEnv))
		if c.IsSet("shard-count") {
			n, err2 = count, nil
		}
		if err1 != nil || err2 != nil || i < 0 || n < 1 || i >= n {
			return all, usagef("%s=%q and %s=%q do not name a task (want 0 <= index < count)",
				cloudRunTaskIndexEnv, v, cloudRunTaskCountEnv, getenv(cloudRunTaskCountEnv))
		}
		return shard{i, n, cloudRunTaskIndexEnv}, nil
	}
	if v := getenv(jobCompletionEnv); v != "" {
		if !c.IsSet("shard-count") {
			return all, errhint.With(usagef("%s is set (a Kubernetes Indexed Job) but the number of shards is not", jobCompletionEnv),
				"pass --shard-count with the Job's completions, e.g. `keyrotate rotate --shard-count 4`")
		}
		i, err := strconv.Atoi(v)
		if err != nil || i < 0 || i >= count {
			return all, usagef("%s=%q is not an index below --shard-count %d", jobCompletionEnv, v, count)
		}
		return shard{i, count, jobCompletionEnv}, nil
	}
	if c.IsSet("shard-count") {
		return all, usagef("--shard-count needs %s (a Kubernetes Indexed Job); elsewhere use --shard i/n", jobCompletionEnv)
	}
	return all, nil
}

func parseShard(v string) (i, n int, ok bool) {
	a, b, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return 0, 0, false
	}
	return i, n, true
}

func hasFlag(c *cli.Context, name string) bool {
	if c.Command == nil {
		return false
	}
	for _, f := range c.Command.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

// inShard keeps the slots of shard s.
func inShard(slots []*config.Slot, s shard) []*config.Slot {
	if s.all() {
		return slots
	}
	var out []*config.Slot
	for _, sl := range slots {
		if rotate.Shard(sl.Name, s.count) == s.index {
			out = append(out, sl)
		}
	}
	return out
}

// quotas are the quotas the run paces under: Google's documented ones,
// raised where the config says, shared among the shards (which run at once
// against the same projects).
func quotas(cfg *config.Config, s shard) map[string]gcp.Quota {
	out := map[string]gcp.Quota{}
	for api, q := range gcp.DefaultQuotas {
		if c, ok := cfg.Defaults.Quotas[api]; ok {
			if c.Reads > 0 {
				q.Reads = c.Reads
			}
			if c.Writes > 0 {
				q.Writes = c.Writes
			}
		}
		out[api] = q.Share(s.count)
	}
	return out
}

// getenv is os.Getenv; tests replace it.
var getenv = os.Getenv
