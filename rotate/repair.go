package rotate

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
)

// UnfinishedError is the error of a run that found an unfinished rotation
// (or abort, or rollback) on the slot, released or expired, that it may not
// resume itself: Record names it. It matches ErrRotationInProgress.
type UnfinishedError struct {
	Record Record
}

func (e *UnfinishedError) Error() string {
	r := &e.Record
	return fmt.Sprintf("slot %s: %s: an unfinished %s (%s, phase %s) holds the slot", r.Slot, ErrRotationInProgress, r.kind(), r.ID, r.Phase)
}

// Is makes errors.Is(err, ErrRotationInProgress) hold.
func (e *UnfinishedError) Is(target error) bool { return target == ErrRotationInProgress }

// Hint says what is safe; the command that finishes or undoes it is the
// caller's to name.
func (e *UnfinishedError) Hint() string {
	return "nothing was changed; finishing that " + e.Record.kind() + " writes its key to every target"
}

// Kind is what the unfinished record drives.
func (e *UnfinishedError) Kind() string { return e.Record.kind() }

// Repair puts the slot's current key back where it drifted: into every
// readable target that holds another key (or none), and into the secret
// when its latest version does not hold it. It makes no key. It proves the
// current key works first (a live probe, unless the slot's verify is none),
// holds the slot's lease while it writes, then reads every written place
// back.
//
// With no drift it does nothing (Skip SkipNoDrift). Errors: an
// UnfinishedError or a HeldError when a rotation is in progress (its
// resume rewrites every target); ErrKeyDead when the current key does not
// work (putting it back would break the targets; nothing was written).
func (r *Rotator) Repair(ctx context.Context, slot *Slot) (*Result, error) {
	ctx = gcp.WithProject(ctx, r.ChargedProject(slot))
	_, sa := r.apis()
	pre, err := r.preflight(ctx, slot)
	if err != nil {
		return nil, err
	}
	if pre.rec != nil {
		if !takeable(pre.rec.Holder, pre.rec.Expires, r.now()) {
			return nil, &HeldError{Record: *pre.rec}
		}
		return nil, &UnfinishedError{Record: *pre.rec}
	}
	cur := pre.oldKey
	fp := cur.Fingerprint()
	res := &Result{Slot: slot.Name, Kind: KindRepair, OldKey: KeyRef{Name: pre.oldName, Fingerprint: fp}, NewKey: KeyRef{Name: pre.oldName, Fingerprint: fp}}
	drifted, secretDrifted := pre.drifted()
	if len(drifted) == 0 && !secretDrifted {
		res.Skip, res.Reason = SkipNoDrift, "no drift: the secret and every readable target hold the current key "+fp
		r.event(slot.Name, StepDone, "nothing to do: %s", res.Reason)
		return res, nil
	}
	if slot.Prober != nil {
		err := slot.Prober.Probe(ctx, cur)
		var thr interface{ Throttled() bool }
		switch {
		case err == nil || errors.As(err, &thr) && thr.Throttled():
			r.event(slot.Name, StepVerify, "current key %s works", pre.oldName)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("slot %s: probe key %s: %w", slot.Name, pre.oldName, context.Cause(ctx))
		default:
			return nil, errhint.Replace(fmt.Errorf("slot %s: current key %s (%s): %w: %w", slot.Name, pre.oldName, fp, ErrKeyDead, err),
				"nothing was written: putting back a key that does not work would break the targets; a new key is needed")
		}
	}

	now := r.now()
	next := func(old *Record) (Record, bool, error) {
		if old != nil {
			return Record{}, false, &UnfinishedError{Record: *old}
		}
		return Record{Kind: KindRepair, ID: r.runID(), Slot: slot.Name, Phase: PhaseLocked,
			OldKey: pre.oldName, OldFP: fp, NewKey: pre.oldName, NewKeyID: keyIDOf(pre.oldName), NewFP: fp, Started: now}, false, nil
	}
	l, _, err := acquire(ctx, sa, pre.sec, next, slot.LeaseTTL, r.now, r.RunID)
	if err != nil {
		return nil, fmt.Errorf("lock slot %s: %w", slot.Name, err)
	}
	res.RotationID = l.record().ID
	r.event(slot.Name, StepLock, "locked slot (repair %s)", res.RotationID)
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l.keepAlive(runCtx, cancel)
	err = r.repair(runCtx, slot, pre, drifted, secretDrifted, res)
	bg, stop := cleanupContext(ctx, r.CleanupTimeout)
	defer stop()
	if cerr := l.clear(bg, nil); cerr != nil && err == nil {
		err = fmt.Errorf("clear the lock: %w", cerr)
	}
	if err != nil {
		return nil, errhint.With(fmt.Errorf("slot %s: repair %s: %w", slot.Name, res.RotationID, err),
			"every target holds the key it held or the current key, and both work; fix the cause and run the repair again")
	}
	r.event(slot.Name, StepDone, "repaired: %d place(s) hold the current key %s again", len(drifted)+btoi(secretDrifted), fp)
	return res, nil
}

// repair writes the current key into the drifted places and reads them back.
func (r *Rotator) repair(ctx context.Context, slot *Slot, pre *preflight, drifted []int, secretDrifted bool, res *Result) error {
	_, sa := r.apis()
	cur := pre.oldKey
	if secretDrifted {
		v, err := sa.Add(ctx, slot.Secret, cur)
		if err != nil {
			return err
		}
		res.NewVersion = v
		r.event(slot.Name, StepDistribute, "added secret version %s", v)
	}
	wrote := map[int]bool{}
	for _, i := range drifted {
		t := slot.Targets[i]
		err := t.Write(ctx, cur)
		if errors.Is(err, ErrTargetChanged) {
			// Another target of this slot may share the file: write on
			// top of that change if the value is still as read.
			if again, rerr := t.Read(ctx); rerr == nil && again.Equal(pre.targets[i]) {
				err = t.Write(ctx, cur)
			}
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", t, err)
		}
		wrote[i] = true
		r.event(slot.Name, StepDistribute, "wrote %s", t)
	}
	if secretDrifted {
		v, err := sa.Access(ctx, slot.Secret+"/versions/latest")
		if err != nil {
			return err
		}
		if !v.Key.Equal(cur) {
			return fmt.Errorf("read back %s: latest version %s holds %s, want %s", slot.Secret, v.Name, v.Key, cur.Fingerprint())
		}
	}
	for i, t := range slot.Targets {
		action := "already current"
		switch {
		case pre.unreadable[i]:
			action = "not readable: left as it is"
		case wrote[i]:
			got, err := t.Read(ctx)
			if err != nil {
				return fmt.Errorf("read back %s: %w", t, err)
			}
			if !got.Equal(cur) {
				return fmt.Errorf("read back %s: holds %s, want %s", t, got, cur.Fingerprint())
			}
			action = "written"
		}
		res.Targets = append(res.Targets, TargetResult{Target: t.String(), Action: action, Fingerprint: pre.targets[i].Fingerprint()})
		if wrote[i] {
			res.Targets[len(res.Targets)-1].Fingerprint = cur.Fingerprint()
		}
	}
	r.event(slot.Name, StepReadback, "secret and %d target(s) hold %s", len(drifted), cur.Fingerprint())
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
