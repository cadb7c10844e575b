package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/rotate"
)

func scheduleCommand() *cli.Command {
	return &cli.Command{
		Name:  "schedule",
		Usage: "set each slot's Secret Manager rotation schedule from its max_age and schedule_topic",
		Description: "Makes each slot's secret carry the rotation schedule that matches the slot: Secret Manager\n" +
			"publishes SECRET_ROTATE to the slot's schedule_topic when the current key reaches max_age, then\n" +
			"every max_age (a key due already: in 10 minutes). It shows the difference first, writes only the\n" +
			"fields that differ (with the secret's etag) and keeps the secret's other topics; run again, it\n" +
			"changes nothing. `keyrotate serve` or `keyrotate listen` act on the messages.\n" +
			"\n" +
			"Needs roles/secretmanager.admin (secretmanager.secrets.update) on each secret; the topic must exist\n" +
			"and Secret Manager's service agent (service-PROJECT_NUMBER@gcp-sa-secretmanager.iam.gserviceaccount.com)\n" +
			"needs roles/pubsub.publisher on it.",
		Flags: []cli.Flag{
			viewSlotFlag(),
			&cli.BoolFlag{Name: "dry-run", Usage: "show the difference; change nothing"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("schedule takes no arguments (got %q); use --slot", c.Args().First())
			}
			return runSchedule(c, hostsFromEnv(), c.String("config"), c.StringSlice("slot"), c.Bool("dry-run"))
		},
	}
}

type scheduleOutput struct {
	Command string                   `json:"command"`
	DryRun  bool                     `json:"dry_run"`
	Slots   []*rotate.ScheduleChange `json:"slots"`
	Errors  []errorJSON              `json:"errors,omitempty"`
}

func runSchedule(c *cli.Context, h hosts, cfgPath string, slots []string, dryRun bool) error {
	// Every selected slot needs a topic: checked before any API call.
	if cfg, err := config.Load(cfgPath); err == nil {
		sel, err := selectSlots(cfg, slots)
		if err != nil {
			return err
		}
		var none []string
		for _, s := range sel {
			if cfg.EffectiveScheduleTopic(s) == "" {
				none = append(none, s.Name)
			}
		}
		if len(none) > 0 {
			return errhint.With(usagef("no schedule_topic for slot %s in %s", strings.Join(none, ", "), cfg.Path),
				"add \"schedule_topic: projects/PROJECT/topics/TOPIC\" under defaults (or the slot), or pick slots that have one with --slot")
		}
	}
	return runPerSlot(c, h, cfgPath, slots, "schedule", func(j *job, r *rotate.Rotator, s *rotate.Slot) (*rotate.ScheduleChange, error) {
		// The difference first (one read), then the write, if any, with a
		// compare-and-swap on what was read.
		ch, err := r.Schedule(j.ctx, s, false)
		if err != nil || dryRun || len(ch.Changes) == 0 {
			if ch != nil && !j.out.json {
				j.out.note("%s", strings.TrimRight(formatSchedule(ch, dryRun, err == nil), "\n"))
			}
			return ch, err
		}
		if !j.out.json {
			j.out.note("%s", strings.TrimRight(scheduleRows(ch), "\n"))
		}
		err = r.ApplySchedule(j.ctx, ch)
		if st := scheduleDone(ch, false, err == nil); st != "" && !j.out.json {
			j.out.note("%s", strings.TrimRight(st, "\n"))
		}
		return ch, err
	}, func(chs []*rotate.ScheduleChange, errs []errorJSON) any {
		return scheduleOutput{Command: "schedule", DryRun: dryRun, Slots: chs, Errors: errs}
	})
}

// formatSchedule shows, for one slot, each field of the schedule as the
// secret has it and as the slot wants it, then what was done.
func formatSchedule(ch *rotate.ScheduleChange, dryRun, ok bool) string {
	return scheduleRows(ch) + scheduleDone(ch, dryRun, ok)
}

// scheduleRows shows each field of the slot's schedule as the secret has
// it and as the slot wants it.
func scheduleRows(ch *rotate.ScheduleChange) string {
	var b strings.Builder
	fmt.Fprintf(&b, "slot %s (secret %s)\n", ch.Slot, ch.Secret)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	changed := func(path string) string {
		for _, c := range ch.Changes {
			if c == path {
				return "change"
			}
		}
		return "same"
	}
	row := func(name, path, cur, want string) {
		if changed(path) == "same" {
			fmt.Fprintf(tw, "  %s\t%s\t(unchanged)\n", name, cur)
			return
		}
		fmt.Fprintf(tw, "  %s\t%s -> %s\n", name, cur, want)
	}
	row("topics", rotate.PathTopics, topicList(ch.Current.Topics), topicList(ch.Wanted.Topics))
	row("next rotation", rotate.PathNext, timeOrNone(ch.Current.Next), timeOrNone(ch.Wanted.Next))
	row("period", rotate.PathPeriod, periodOrNone(ch.Current.Period), periodOrNone(ch.Wanted.Period))
	_ = tw.Flush()
	return b.String()
}

// scheduleDone says what was done with the difference (scheduleRows).
func scheduleDone(ch *rotate.ScheduleChange, dryRun, ok bool) string {
	var b strings.Builder
	switch {
	case len(ch.Changes) == 0:
		b.WriteString("  the secret carries this schedule already: nothing to do\n")
	case dryRun:
		fmt.Fprintf(&b, "  dry run: would update %s; nothing written\n", strings.Join(ch.Changes, ", "))
	case ok && ch.Applied:
		fmt.Fprintf(&b, "  updated %s\n", strings.Join(ch.Changes, ", "))
	}
	return b.String()
}

func topicList(ts []string) string {
	if len(ts) == 0 {
		return "none"
	}
	return strings.Join(ts, ", ")
}

func timeOrNone(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.UTC().Format(time.RFC3339)
}

func periodOrNone(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
