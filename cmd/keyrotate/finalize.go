package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/rotate"
)

func finalizeCommand() *cli.Command {
	return &cli.Command{
		Name:  "finalize",
		Usage: "delete old keys whose grace period ended, and keys left by failed rotations",
		Description: "Deletes each slot's old keys whose keyrotate.delete-after time has come, and keys keyrotate\n" +
			"created (annotated with the slot) that are neither current nor part of a rotation. An old key that\n" +
			"rotate kept because it was still in use is deleted only once Cloud Monitoring shows it quiet\n" +
			"(or with --force). It never deletes the current key or a key the secret or a target still holds,\n" +
			"and disables the secret version of each deleted key (never the newest). rotate also finalizes\n" +
			"its slots' due keys.",
		Flags: []cli.Flag{
			slotFlag("delete due old keys of only"),
			&cli.BoolFlag{Name: "dry-run", Usage: "list what would be deleted; change nothing"},
			&cli.BoolFlag{Name: "confirm-revocation", Usage: "probe each deleted key until the API rejects it, and report how long that took"},
			&cli.BoolFlag{Name: "force", Usage: "delete old keys kept because they were in use without checking that they are quiet now " +
				"(overrides only that check: a key the secret or a target holds is never deleted, a grace period still runs)"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("finalize takes no arguments (got %q); use --slot", c.Args().First())
			}
			return runFinalize(c, rotate.FinalizeOptions{
				DryRun: c.Bool("dry-run"), Scan: true, ConfirmRevocation: c.Bool("confirm-revocation"), Force: c.Bool("force"),
			})
		},
	}
}

type finalizeOutput struct {
	Command string                   `json:"command"`
	DryRun  bool                     `json:"dry_run"`
	Results []*rotate.FinalizeResult `json:"results"`
	Errors  []errorJSON              `json:"errors,omitempty"`
}

func runFinalize(c *cli.Context, opts rotate.FinalizeOptions) error {
	return runFinalizeOn(c, hostsFromEnv(), c.String("config"), c.StringSlice("slot"), opts)
}

// runFinalizeOn is runFinalize with the hosts, config and slots given
// (the demo's).
func runFinalizeOn(c *cli.Context, h hosts, cfgPath string, slots []string, opts rotate.FinalizeOptions) error {
	j, err := newJob(c, h, cfgPath, slots)
	if err != nil {
		return err
	}
	defer j.close()
	r := j.rotator(c)
	out := finalizeOutput{Command: "finalize", DryRun: opts.DryRun, Results: []*rotate.FinalizeResult{}}
	var errs []error
	for _, s := range j.slots {
		res, err := r.Finalize(j.ctx, s, opts)
		if err != nil {
			errs = append(errs, err)
			out.Errors = append(out.Errors, toErrorJSON(s.Name, err))
		}
		if res == nil {
			continue
		}
		out.Results = append(out.Results, res)
		if j.out.json {
			continue
		}
		switch {
		case res.Skipped != "":
			j.out.note("%s: skipped: %s", res.Slot, res.Skipped)
		case len(res.Keys) == 0:
			j.out.note("%s: nothing to finalize", res.Slot)
		}
		for _, k := range res.Keys {
			extra := ""
			if k.Revocation > 0 {
				extra = "; rejected by the API after " + k.Revocation.Round(time.Millisecond).String()
			}
			j.out.note("%s", finalizedLine(res.Slot, k, extra))
		}
	}
	if j.out.json {
		if err := j.out.jsonDoc(out); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// finalizedLine is the line for one key finalize looked at: its action,
// fingerprint (left out when unknown, e.g. a kept key found only by its
// annotation) and name, and why.
func finalizedLine(slot string, k rotate.Finalized, extra string) string {
	fp := ""
	if k.Fingerprint != "" {
		fp = k.Fingerprint + "  "
	}
	return fmt.Sprintf("%s: %-12s %s%s (%s%s)", slot, k.Action, fp, k.Key, k.Reason, extra)
}
