package main

import (
	"context"
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/rotate"
)

func abortCommand() *cli.Command {
	return &cli.Command{
		Name:      "abort",
		Usage:     "undo an unfinished rotation of SLOT",
		ArgsUsage: "SLOT",
		Description: "Puts the old key back in the secret (as a new version) and in every target, reads them\n" +
			"back, then deletes the new key and clears the lock. The old key is undeleted first if the\n" +
			"rotation had already deleted it, and verified live before anything is written.",
		Action: func(c *cli.Context) error {
			slot, err := oneSlotArg(c)
			if err != nil {
				return err
			}
			return runUndo(c, slot, func(ctx context.Context, r *rotate.Rotator, s *rotate.Slot) (*rotate.Result, error) {
				return r.Abort(ctx, s)
			})
		},
	}
}

func rollbackCommand() *cli.Command {
	return &cli.Command{
		Name:      "rollback",
		Usage:     "undo a finished rotation of SLOT (within the 30-day undelete window)",
		ArgsUsage: "SLOT",
		Description: "Undeletes the key the current one superseded (or --to KEY), verifies it live, makes it\n" +
			"current in the secret and every target, reads them back, then deletes the newer key.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "roll back to this `KEY` (projects/P/locations/global/keys/K) instead of the superseded one"},
		},
		Action: func(c *cli.Context) error {
			slot, err := oneSlotArg(c)
			if err != nil {
				return err
			}
			opts := rotate.RollbackOptions{To: c.String("to")}
			return runUndo(c, slot, func(ctx context.Context, r *rotate.Rotator, s *rotate.Slot) (*rotate.Result, error) {
				return r.Rollback(ctx, s, opts)
			})
		},
	}
}

func oneSlotArg(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", usagef("%s takes exactly one SLOT (got %d arguments)", c.Command.Name, c.NArg())
	}
	return c.Args().First(), nil
}

func runUndo(c *cli.Context, slot string, do func(context.Context, *rotate.Rotator, *rotate.Slot) (*rotate.Result, error)) error {
	j, err := newJob(c, hostsFromEnv(), c.String("config"), []string{slot})
	if err != nil {
		return err
	}
	defer j.close()
	if len(j.slots) != 1 || j.slots[0].Name != slot {
		return usagef("%s needs one slot by its exact name, not the pattern %q", c.Command.Name, slot)
	}
	if err := j.cleanTemp(c.Context); err != nil {
		return err
	}
	out := rotateOutput{Command: c.Command.Name, Results: []*rotate.Result{}}
	res, err := do(j.ctx, j.rotator(c), j.slots[0])
	err = heldHint(err, c.Command.Name+" "+slot)
	if err != nil {
		out.Errors = append(out.Errors, toErrorJSON(slot, err))
	} else {
		out.Results = append(out.Results, res)
		if !j.out.json {
			printResult(j.out, res)
		}
	}
	if j.out.json {
		return errors.Join(j.out.jsonDoc(out), err)
	}
	return err
}
