package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/rotate"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "health check: probe each slot's current key and check that every target holds it",
		Description: "Probes each slot's current key once at the live API (unless verify: none) and reads the\n" +
			"secret and every target back, comparing fingerprints with the current key. It writes nothing.\n" +
			"Exits 1 when a key does not work or a target holds another key (drift), naming what is wrong;\n" +
			"meant for a scheduled job.",
		Flags: []cli.Flag{viewSlotFlag()},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("verify takes no arguments (got %q); use --slot", c.Args().First())
			}
			return runVerify(c, hostsFromEnv(), c.String("config"), c.StringSlice("slot"))
		},
	}
}

type verifyOutput struct {
	Command string                 `json:"command"`
	Healthy bool                   `json:"healthy"`
	Slots   []*rotate.HealthReport `json:"slots"`
	Errors  []errorJSON            `json:"errors,omitempty"`
}

func runVerify(c *cli.Context, h hosts, cfgPath string, slots []string) error {
	return runPerSlot(c, h, cfgPath, slots, "verify", func(j *job, r *rotate.Rotator, s *rotate.Slot) (*rotate.HealthReport, error) {
		v, err := r.CheckHealth(j.ctx, s)
		if err == nil {
			nameFixes(v)
			err = v.Err()
		}
		if v != nil && !j.out.json {
			j.out.note("%s", strings.TrimRight(formatVerify(v), "\n"))
		}
		return v, err
	}, func(vs []*rotate.HealthReport, errs []errorJSON) any {
		return verifyOutput{Command: "verify", Healthy: len(errs) == 0, Slots: vs, Errors: errs}
	})
}

// formatVerify renders one slot's checks, a line each, and a verdict.
func formatVerify(v *rotate.HealthReport) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, c := range v.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s: %s\n", v.Slot, c.Check, strings.ToUpper(c.Status), c.Subject, c.Message)
	}
	_ = tw.Flush()
	fails, warns := 0, 0
	for _, c := range v.Checks {
		switch c.Status {
		case rotate.CheckFail:
			fails++
		case rotate.CheckWarn:
			warns++
		}
	}
	switch {
	case fails > 0:
		fmt.Fprintf(&b, "%s: UNHEALTHY: %d check(s) failed\n", v.Slot, fails)
	case warns > 0:
		fmt.Fprintf(&b, "%s: healthy, with %d warning(s)\n", v.Slot, warns)
		for _, c := range v.Checks {
			if c.Status == rotate.CheckWarn && c.Hint != "" {
				fmt.Fprintf(&b, "%s: %s: %s\n", v.Slot, c.Subject, c.Hint)
			}
		}
	default:
		fmt.Fprintf(&b, "%s: healthy\n", v.Slot)
	}
	return b.String()
}

// nameFixes gives the failed checks of v the command that fixes them: the
// library reports drift and dead keys as findings, without commands.
func nameFixes(v *rotate.HealthReport) {
	inProgress := false
	for _, c := range v.Checks {
		inProgress = inProgress || c.Check == "rotation"
	}
	for i := range v.Checks {
		c := &v.Checks[i]
		c.Hint = probeHint(c.Err, c.Hint)
		var fix string
		switch {
		case c.Hint == "" && c.Then.Action != rotate.NextNone:
			c.Hint = nextHint(c.Then)
			continue
		case c.Drift:
			fix = driftHint(v.Slot, inProgress)
		case c.Dead:
			fix = fmt.Sprintf("`keyrotate doctor` diagnoses the key; `keyrotate rotate --slot %s --now` makes a new key and writes it to every target", v.Slot)
		default:
			continue
		}
		if c.Hint != "" {
			fix = c.Hint + "; " + fix
		}
		c.Hint = fix
	}
}
