package rotate

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
)

// Abort undoes an unfinished rotation of slot: every target and the secret
// go back to the old key (the secret by a new version, never by disabling
// the newest), the new key is deleted and the lock cleared. The old key is
// undeleted first if the rotation had already deleted it, and verified live
// before anything is written; if it does not work the rotation is left as
// it was. An interrupted abort is resumed by running Abort again.
//
// With no unfinished rotation there is nothing to do: the Result says so.
func (r *Rotator) Abort(ctx context.Context, slot *Slot) (*Result, error) {
	ka, sa := r.apis()
	pre, err := r.preflight(ctx, slot)
	if err != nil {
		return nil, err
	}
	res := &Result{Slot: slot.Name, Kind: KindAbort}
	if pre.rec == nil {
		res.Reason = "no unfinished rotation: nothing to abort"
		r.event(slot.Name, StepDone, "%s", res.Reason)
		return res, nil
	}
	next := func(old *Record) (Record, bool, error) {
		switch {
		case old == nil:
			return Record{}, false, fmt.Errorf("slot %s: the unfinished rotation was finished or cleared meanwhile: %w", slot.Name, ErrRotationInProgress)
		case old.kind() == KindAbort:
			return *old, true, nil
		}
		orig := *old
		orig.Holder = Holder{}
		return Record{
			Kind: KindAbort, ID: old.ID, Slot: slot.Name, Phase: PhaseLocked,
			OldKey: old.newKeyName(), OldFP: old.NewFP,
			NewKey: old.OldKey, NewKeyID: keyIDOf(old.OldKey), NewFP: old.OldFP,
			Started: r.now(), Aborted: &orig,
		}, false, nil
	}
	l, rec, err := r.lockUndo(ctx, slot, pre, sa, next, res)
	if err != nil {
		return nil, err
	}
	r.event(slot.Name, StepLock, "aborting rotation %s: putting %s back in place", rec.ID, rec.NewKey)
	st := &run{Rotator: r, kind: KindAbort, slot: slot, pre: pre, lease: l, rec: newRunRecord(rec), undeleted: rec.Undeleted, res: res, ka: ka, sa: sa,
		fromVersion: rec.OldVersion}
	from, err := ka.Get(ctx, rec.OldKey)
	if err != nil && !errors.Is(err, ErrKeyNotFound) {
		st.mayHaveCreated = true
		return nil, st.fail(ctx, err)
	}
	st.from = oldKeyRef(from)
	if st.from != nil && st.from.DeleteTime == "" && res.OldKey.Fingerprint == "" {
		// The rotation stopped before its read-back recorded the new
		// key's fingerprint: read it, so that the result names the key
		// being retired as every other result does. Only for display: a
		// failure to read it does not hold up the abort.
		if ks, kerr := ka.KeyString(ctx, rec.OldKey); kerr == nil {
			res.OldKey.Fingerprint = ks.Fingerprint()
		} else {
			r.log().Warn("could not read the fingerprint of the key being retired", "slot", slot.Name, "key", rec.OldKey, "error", kerr)
		}
	}
	return st.drive(ctx)
}

// RollbackOptions change a rollback.
type RollbackOptions struct {
	// To names the key to go back to; by default the key the current one
	// superseded (its keyrotate.supersedes annotation).
	To string
}

// Rollback undoes a finished rotation within the 30-day soft-delete window:
// it undeletes the previous key, verifies it live, makes it current in the
// secret and every target, reads them back, then deletes the newer key. An
// interrupted rollback is resumed by running Rollback again.
func (r *Rotator) Rollback(ctx context.Context, slot *Slot, opts RollbackOptions) (*Result, error) {
	ka, sa := r.apis()
	pre, err := r.preflight(ctx, slot)
	if err != nil {
		return nil, err
	}
	to := opts.To
	if pre.rec == nil {
		if pre.old == nil {
			return nil, fmt.Errorf("slot %s: current key %s: %w", slot.Name, pre.oldName, ErrKeyNotFound)
		}
		if to == "" {
			to = pre.old.Annotations[annSupersedes]
		}
		if to == "" {
			return nil, withNext(fmt.Errorf("slot %s: the current key %s names no key it superseded: %w", slot.Name, pre.oldName, ErrNothingToRollBack),
				"name the key to go back to", Next{Action: NextNameKey, Slot: slot.Name})
		}
		if keyIDOf(to) == keyIDOf(pre.oldName) {
			return nil, fmt.Errorf("slot %s: %s is already the current key: %w", slot.Name, to, ErrNothingToRollBack)
		}
	}
	res := &Result{Slot: slot.Name, Kind: KindRollback}
	next := func(old *Record) (Record, bool, error) {
		switch {
		case old == nil:
			id := r.runID()
			return Record{
				Kind: KindRollback, ID: id, Slot: slot.Name, Phase: PhaseLocked,
				OldKey: pre.oldName, OldFP: pre.oldKey.Fingerprint(), OldVersion: pre.latest.Name,
				NewKey: keyParent(pre.oldName) + "/keys/" + keyIDOf(to), NewKeyID: keyIDOf(to), Started: r.now(),
			}, false, nil
		case old.kind() == KindRollback:
			return *old, true, nil
		}
		return Record{}, false, withNext(fmt.Errorf("slot %s: %w: an unfinished %s (%s) holds the slot", slot.Name, ErrRotationInProgress, old.kind(), old.ID),
			"finish it or undo it first", Next{Action: NextFinishOrUndoFirst, Slot: slot.Name, Kind: old.kind()})
	}
	l, rec, err := r.lockUndo(ctx, slot, pre, sa, next, res)
	if err != nil {
		return nil, err
	}
	r.event(slot.Name, StepLock, "rolling back to %s (rollback %s)", rec.NewKey, rec.ID)
	st := &run{Rotator: r, kind: KindRollback, slot: slot, pre: pre, lease: l, rec: newRunRecord(rec), undeleted: rec.Undeleted, res: res, ka: ka, sa: sa,
		from: oldKeyRef(pre.old), fromVersion: rec.OldVersion}
	return st.drive(ctx)
}

// lockUndo takes the slot's lease for an abort or a rollback and names the
// keys in the result.
func (r *Rotator) lockUndo(ctx context.Context, slot *Slot, pre *preflight, sa *gcp.Secrets,
	next func(*Record) (Record, bool, error), res *Result) (*lease, Record, error) {
	l, resumed, err := acquire(ctx, sa, pre.sec, next, slot.LeaseTTL, r.now, r.RunID)
	if err != nil {
		return nil, Record{}, fmt.Errorf("lock slot %s: %w", slot.Name, err)
	}
	rec := l.record()
	res.RotationID, res.Resumed = rec.ID, resumed
	res.OldKey = KeyRef{Name: rec.OldKey, Fingerprint: rec.OldFP}
	return l, rec, nil
}

// adopt obtains an existing key to put back in place (abort, rollback),
// undeleting it when a rotation had deleted it.
func (st *run) adopt(ctx context.Context) error {
	name := st.rec.NewKey
	key, err := st.ka.Get(ctx, name)
	if errors.Is(err, ErrKeyNotFound) {
		return errhint.With(fmt.Errorf("key %s is gone (purged 30 days after its deletion, or never existed): %w", name, err),
			"nothing was changed; a purged key cannot come back: rotate to a new key instead")
	}
	if err != nil {
		return err
	}
	if key.DeleteTime != "" {
		if err := st.lease.update(ctx, func(r *Record) { r.Undeleted = true }); err != nil {
			return err
		}
		st.undeleted = true
		if key, err = st.ka.Undelete(ctx, name); err != nil {
			return err
		}
		st.event(st.slot.Name, StepObtain, "undeleted key %s", name)
	}
	st.newKey = keyRef(key)
	if st.newStr, err = st.ka.KeyString(ctx, name); err != nil {
		return err
	}
	if st.rec.NewFP != "" && st.newStr.Fingerprint() != st.rec.NewFP {
		return fmt.Errorf("key %s holds %s, but the record expects %s: %w", name, st.newStr, st.rec.NewFP, ErrBadConfig)
	}
	st.res.NewKey = KeyRef{Name: name, Fingerprint: st.newStr.Fingerprint()}
	return nil
}

// undoVerifyFailed handles an abort or rollback whose key does not work:
// nothing was distributed, so put things back as they were.
func (st *run) undoVerifyFailed(ctx context.Context, cause error) error {
	name := st.newKey.Name
	if st.undeleted {
		if err := st.ka.Delete(ctx, name, ""); err != nil && !errors.Is(err, ErrKeyNotFound) {
			return fmt.Errorf("key %s does not work (%w); deleting it again: %w", name, cause, err)
		}
	}
	if st.kind == KindAbort && st.rec.Aborted != nil {
		if err := st.lease.restore(ctx, *st.rec.Aborted); err != nil {
			return fmt.Errorf("key %s does not work (%w); restoring the rotation record: %w", name, cause, err)
		}
		st.undone = true
		return withNext(fmt.Errorf("abort of rotation %s: the old key %s does not work: %w", st.rec.ID, name, cause),
			"nothing was changed: the rotation is left as it was", Next{Action: NextFinishRotation, Slot: st.slot.Name, Kind: KindRotate})
	}
	if err := st.lease.clear(ctx, nil); err != nil {
		return fmt.Errorf("key %s does not work (%w); clearing the lock: %w", name, cause, err)
	}
	st.undone = true
	return errhint.Replace(fmt.Errorf("%w: %s %s: key %s: %w", ErrVerifyFailed, st.kind, st.rec.ID, name, cause),
		"nothing was changed: the current key still works everywhere; "+hintFor(cause))
}
