package main

import (
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/rotate"
)

func repairCommand() *cli.Command {
	return &cli.Command{
		Name:  "repair",
		Usage: "put each slot's current key back into targets that drifted (no new key)",
		Description: "For each slot whose secret or targets do not hold its current key (drift, as status and verify\n" +
			"report it), probes the current key live, then writes it into those places under the slot's lease\n" +
			"and reads them back. It makes no key and deletes nothing; slots without drift are left alone.\n" +
			"A slot with a rotation in progress is refused: resuming the rotation rewrites every target.",
		Flags: []cli.Flag{viewSlotFlag()},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("repair takes no arguments (got %q); use --slot", c.Args().First())
			}
			return runRepair(c)
		},
	}
}

func runRepair(c *cli.Context) error {
	j, err := newJob(c, hostsFromEnv(), c.String("config"), c.StringSlice("slot"))
	if err != nil {
		return err
	}
	defer j.close()
	if err := j.cleanTemp(c.Context); err != nil {
		return err
	}
	r := j.rotator(c)
	out := rotateOutput{Command: "repair", Results: []*rotate.Result{}}
	var errs []error
	for _, s := range j.slots {
		res, err := r.Repair(j.ctx, s)
		if err != nil {
			err = repairHint(err, s.Name)
			errs = append(errs, err)
			out.Errors = append(out.Errors, toErrorJSON(s.Name, err))
			continue
		}
		out.Results = append(out.Results, res)
		if !j.out.json {
			printResult(j.out, res)
		}
	}
	if j.out.json {
		return errors.Join(j.out.jsonDoc(out), errors.Join(errs...))
	}
	return errors.Join(errs...)
}

// printRepair shows a repair's outcome.
func printRepair(p *printer, res *rotate.Result) {
	if res.Skip != "" {
		p.note("%s: nothing to do (%s)", res.Slot, res.Reason)
		return
	}
	p.note("")
	p.note("%s: repaired (repair %s): the current key is back in every place", res.Slot, res.RotationID)
	p.note("  current  %s  %s", res.NewKey.Fingerprint, res.NewKey.Name)
	if res.NewVersion != "" {
		p.note("  secret   %s", res.NewVersion)
	}
	for _, t := range res.Targets {
		p.note("  target   %s  %s (%s)", orDash(t.Fingerprint), t.Target, t.Action)
	}
}
