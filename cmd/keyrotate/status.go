package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/rotate"
)

// viewSlotFlag selects slots for the read-only commands.
func viewSlotFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "slot", Aliases: []string{"s"}, Usage: "only this `SLOT` (repeatable, globs allowed); default all"}
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show each slot's keys, rotation in progress and what every target holds (drift)",
		Description: "Reads each slot's current key (age, due date, type, binding, restrictions), its old keys\n" +
			"waiting for finalize, any rotation in progress and its lease, and what every target holds,\n" +
			"compared by fingerprint with the current key. It writes nothing, and exits 0 even with drift:\n" +
			"use verify for a health check.\n" +
			"\n" +
			"With Cloud Monitoring (on Google, or MONITORING_EMULATOR_HOST) it shows under each key who\n" +
			"uses it: requests in the last hour, 24 hours and 7 days, ok and failed, when last seen, and\n" +
			"by method (needs roles/monitoring.viewer; without it, one line says usage is unknown).",
		Flags: []cli.Flag{viewSlotFlag()},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("status takes no arguments (got %q); use --slot", c.Args().First())
			}
			return runStatus(c, hostsFromEnv(), c.String("config"), c.StringSlice("slot"))
		},
	}
}

type statusOutput struct {
	Command string               `json:"command"`
	Slots   []*rotate.SlotStatus `json:"slots"`
	Errors  []errorJSON          `json:"errors,omitempty"`
}

func runStatus(c *cli.Context, h hosts, cfgPath string, slots []string) error {
	return runPerSlot(c, h, cfgPath, slots, "status", func(j *job, r *rotate.Rotator, s *rotate.Slot) (*rotate.SlotStatus, error) {
		st, err := r.Status(j.ctx, s)
		if err != nil {
			return nil, err
		}
		if rs := st.Rotation; rs != nil && rs.Next == "" {
			rs.Next = nextHint(rs.Then)
		}
		if !j.out.json {
			j.out.note("%s", strings.TrimRight(formatStatus(st), "\n"))
		}
		return st, nil
	}, func(sts []*rotate.SlotStatus, errs []errorJSON) any {
		return statusOutput{Command: "status", Slots: sts, Errors: errs}
	})
}

// formatStatus renders one slot as aligned tables: the slot's key and
// rotation, the old keys waiting for finalize, and what each target holds.
func formatStatus(st *rotate.SlotStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "slot %s\n", st.Slot)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	row := func(name, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{name}, args...)...)
	}
	keyRows(row, st)
	switch {
	case st.UsageUnknown != "":
		row("usage", "unknown: %s", st.UsageUnknown)
	case st.Current.Usage != nil:
		row("usage", "%s", usageLine(st.Current.Usage))
	}
	rotationRows(row, st.Rotation)
	if sc := st.Schedule; sc != nil {
		row("schedule", "next rotation %s, every %s, to %s", timeOrNone(sc.Next), periodOrNone(sc.Period), topicList(sc.Topics))
	}
	if len(st.OldKeys) == 0 {
		row("old keys", "none waiting for finalize")
	}
	_ = tw.Flush()

	if len(st.OldKeys) > 0 {
		b.WriteString("\n")
		writeOldKeys(&b, st.OldKeys)
	}
	b.WriteString("\n")
	writeTargets(&b, st)
	b.WriteString("\n")
	return b.String()
}

// keyRows describes the slot's secret and current key: what it is, how it
// is bound and restricted, and when it is due.
func keyRows(row func(name, format string, args ...any), st *rotate.SlotStatus) {
	k := st.Current
	row("secret", "%s (latest: %s)", st.Secret, orNone(st.Version))
	row("current key", "%s", k.Name)
	row("fingerprint", "%s", orNone(k.Fingerprint))
	if k.UID != "" {
		row("uid", "%s", k.UID)
	}
	if k.DisplayName != "" {
		row("display name", "%q", k.DisplayName)
	}
	typ := k.Type
	if k.ServiceAccount != "" {
		typ += ", bound to " + k.ServiceAccount
	} else if k.Type == "standard key" {
		typ += ", not bound to a service account"
	}
	if k.Deleted {
		typ += " (DELETED)"
	}
	row("type", "%s", typ)
	if len(k.Restrictions) > 0 {
		row("restrictions", "%s", strings.Join(k.Restrictions, "; "))
	} else {
		row("restrictions", "none (unrestricted: rotate refuses to copy that)")
	}
	if k.Created.IsZero() {
		return
	}
	row("created", "%s (age %s)", k.Created.Format(time.RFC3339), ageString(st.Age))
	switch {
	case st.DueAt.IsZero():
		row("due", "now (no max age)")
	case st.Due:
		row("due", "DUE since %s: `keyrotate rotate --slot %s`", st.DueAt.Format(time.RFC3339), st.Slot)
	default:
		row("due", "%s (in %s)", st.DueAt.Format(time.RFC3339), ageString(st.DueAt.Sub(k.Created)-st.Age))
	}
}

// rotationRows describes the rotation in progress, if any, and its lease.
func rotationRows(row func(name, format string, args ...any), rs *rotate.RotationStatus) {
	if rs == nil {
		row("rotation", "none in progress")
		return
	}
	row("rotation", "%s %s, phase %s", rs.Kind, rs.ID, rs.Phase)
	row("  keys", "%s -> %s", rs.OldKey, rs.NewKey)
	lease := rs.Lease
	if rs.Holder.Run != "" {
		lease += fmt.Sprintf(", held by %s until %s", rs.Holder, rs.Expires.Format(time.RFC3339))
	}
	row("  lease", "%s", lease)
	row("  next", "%s", rs.Next)
}

// writeOldKeys tabulates the old keys waiting for finalize.
func writeOldKeys(b *strings.Builder, old []rotate.OldKeyStatus) {
	tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  OLD KEY\tFINGERPRINT\tDELETE AFTER\tSTATE\n")
	for _, o := range old {
		state := "waiting"
		if o.Due {
			state = "DUE"
		}
		after := "-"
		if !o.DeleteAfter.IsZero() {
			after = o.DeleteAfter.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s: %s\n", o.Name, orDash(o.Fingerprint), after, state, o.Reason)
	}
	_ = tw.Flush()
	for _, o := range old {
		if o.Usage != nil {
			fmt.Fprintf(b, "  usage of %s: %s\n", o.Name[strings.LastIndexByte(o.Name, '/')+1:], usageLine(o.Usage))
		}
	}
}

// writeTargets tabulates what each target holds and, with drift, says how
// many targets drifted and what to do.
func writeTargets(b *strings.Builder, st *rotate.SlotStatus) {
	tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  TARGET\tFINGERPRINT\tHOLDS\tSTATE\n")
	drifted := 0
	for _, t := range st.Targets {
		state := "ok"
		if t.Drift {
			state = "DRIFT"
			drifted++
		}
		if t.Detail != "" {
			state += ": " + t.Detail
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Target, orDash(t.Fingerprint), t.Holds, state)
	}
	_ = tw.Flush()
	if st.Drift {
		fmt.Fprintf(b, "  drift: %d target(s) do not hold the current key; %s\n", drifted, driftHint(st.Slot, st.Rotation != nil))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ageString formats a duration for people: days from two days up,
// otherwise hours, minutes and seconds.
func ageString(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d >= 48*time.Hour {
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	return d.Round(time.Second).String()
}
