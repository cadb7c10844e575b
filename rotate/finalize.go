package rotate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/cenkalti/backoff/v5"
	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// FinalizeOptions change a finalize run.
type FinalizeOptions struct {
	// DryRun lists what would be deleted and changes nothing.
	DryRun bool
	// Scan lists the project's keys to find keyrotate's leftovers (keys
	// annotated with the slot that are neither current nor in a rotation).
	// Without it only the old keys indexed on the secret are considered,
	// which costs no extra call: that is what rotate runs.
	Scan bool
	// ConfirmRevocation polls each deleted key until the API rejects it.
	ConfirmRevocation bool
	// Only, when set, limits the run to these keys (resource names) and
	// deletes them whatever their grace: the response to a leaked old key.
	Only []string
}

// Finalized is what finalize did, or would do, with one key.
type Finalized struct {
	Key         string     `json:"key"`
	Fingerprint string     `json:"fingerprint,omitempty"`
	Action      string     `json:"action"` // deleted, would delete, kept, skipped
	Reason      string     `json:"reason"`
	DeleteAfter *time.Time `json:"delete_after,omitempty"`
	// Revocation is how long the API kept accepting the key after its
	// deletion (ConfirmRevocation).
	Revocation time.Duration `json:"-"` // JSON: revocation_seconds (json.go)
}

// FinalizeResult lists the keys of one slot that finalize looked at.
type FinalizeResult struct {
	Slot    string      `json:"slot"`
	Skipped string      `json:"skipped,omitempty"` // why the slot was left alone
	Keys    []Finalized `json:"keys"`
}

type candidate struct {
	key     *apikeys.V2Key
	pending *pendingKey
}

// Finalize deletes the slot's old keys whose grace period has ended and,
// with Scan, keys keyrotate created that are neither current nor part of a
// rotation (leftovers of failures). It never deletes the current key or a
// key that the secret or any target still holds; it disables the secret
// version of each deleted key (never the newest). It holds the slot's lease
// while it deletes, and leaves a slot with an unfinished rotation alone.
func (r *Rotator) Finalize(ctx context.Context, slot *Slot, opts FinalizeOptions) (*FinalizeResult, error) {
	ctx = gcp.WithProject(ctx, r.ChargedProject(slot))
	ka, sa := r.apis()
	res := &FinalizeResult{Slot: slot.Name, Keys: []Finalized{}}
	sec, err := sa.Get(ctx, slot.Secret)
	if err != nil {
		return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
	}
	if rec, err := parseRecord(sec); err != nil || rec != nil {
		if err != nil {
			return nil, err
		}
		res.Skipped = fmt.Sprintf("an unfinished %s (%s) holds the slot; finish or abort it first", rec.kind(), rec.ID)
		return res, nil
	}
	latest, err := sa.Access(ctx, slot.Secret+"/versions/latest")
	if err != nil {
		return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
	}
	current, ok := currentKeyOf(sec, latest)
	if !ok {
		if current, err = ka.Lookup(ctx, latest.Key); err != nil {
			return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
		}
	}
	if err := checkProjects(slot, sec.GetName(), current, projectNumber(slot, sec)); err != nil {
		return nil, err
	}
	// What the slot's places hold: never delete a key one of them holds.
	held := map[string]string{latest.Key.Fingerprint(): slot.Secret}
	for _, t := range slot.Targets {
		k, err := t.Read(ctx)
		if errors.Is(err, ErrUnreadable) {
			continue // what it holds cannot be known
		}
		if err != nil {
			return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
		}
		held[k.Fingerprint()] = t.String()
	}

	cands := map[string]*candidate{}
	pend := pendingKeys(sec)
	for i := range pend {
		cands[keyIDOf(pend[i].Key)] = &candidate{pending: &pend[i]}
	}
	if opts.Scan {
		keys, err := ka.List(ctx, keyParent(current), false)
		if err != nil {
			return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
		}
		for _, k := range keys {
			if k.Annotations[annSlot] != slot.Name {
				continue
			}
			c := cands[keyIDOf(k.Name)]
			if c == nil {
				c = &candidate{}
				cands[keyIDOf(k.Name)] = c
			}
			c.key = k
		}
	}
	keep := pendingList{}
	only := map[string]bool{}
	for _, n := range opts.Only {
		only[keyIDOf(n)] = true
	}
	if len(only) > 0 {
		for id, c := range cands {
			if !only[id] {
				if c.pending != nil {
					keep = append(keep, *c.pending)
				}
				delete(cands, id)
			}
		}
		for id := range only {
			if cands[id] == nil {
				cands[id] = &candidate{}
			}
		}
	}
	ids := make([]string, 0, len(cands))
	for id := range cands {
		ids = append(ids, id)
	}
	sort.Strings(ids)

	now := r.now()
	var due []*candidate
	for _, id := range ids {
		c := cands[id]
		name := keyParent(current) + "/keys/" + id
		if c.key == nil {
			k, err := ka.Get(ctx, name)
			switch {
			case errors.Is(err, ErrKeyNotFound):
				continue // purged: drop it from the index
			case err != nil:
				return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
			}
			c.key = k
		}
		k := c.key
		f := Finalized{Key: k.Name}
		switch {
		case k.DeleteTime != "":
			continue // already deleted
		case keyIDOf(k.Name) == keyIDOf(current):
			continue // the current key is no leftover
		}
		if only[id] {
			f.Reason = "leaked: deleted at once, grace or not"
		} else if s := k.Annotations[annDeleteAfter]; s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				f.Action, f.Reason = "skipped", fmt.Sprintf("its %s annotation %q is not a time", annDeleteAfter, s)
				res.Keys = append(res.Keys, f)
				continue
			}
			f.DeleteAfter = &t
			if now.Before(t) {
				f.Action, f.Reason = "kept", "grace period until "+t.Format(time.RFC3339)
				if c.pending != nil {
					f.Fingerprint = c.pending.Fingerprint // recorded when it was kept: no call
					keep = append(keep, *c.pending)
				}
				res.Keys = append(res.Keys, f)
				continue
			}
			f.Reason = "grace period ended " + t.Format(time.RFC3339)
		} else {
			f.Reason = fmt.Sprintf("left by rotation %s, which did not finish with it", k.Annotations[annRotation])
		}
		due = append(due, c)
		res.Keys = append(res.Keys, f)
	}
	if len(due) == 0 {
		return res, nil
	}

	// Check the due keys against what the places hold.
	strs := map[string]secret.Key{}
	for i := range res.Keys {
		f := &res.Keys[i]
		if f.Action != "" {
			continue
		}
		ks, err := ka.KeyString(ctx, f.Key)
		if err != nil {
			return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
		}
		f.Fingerprint = ks.Fingerprint()
		if where, ok := held[f.Fingerprint]; ok {
			f.Action, f.Reason = "skipped", "still held by "+where+" (drift): put the current key there first"
			continue
		}
		strs[f.Key] = ks
		f.Action = "would delete"
	}
	if opts.DryRun || len(strs) == 0 {
		return res, nil
	}

	next := func(old *Record) (Record, bool, error) {
		if old != nil {
			return Record{}, false, fmt.Errorf("slot %s: %w: an unfinished %s (%s) holds the slot", slot.Name, ErrRotationInProgress, old.kind(), old.ID)
		}
		return Record{Kind: "finalize", ID: r.runID(), Slot: slot.Name, Phase: PhaseLocked, OldKey: current, Started: now}, false, nil
	}
	l, _, err := acquire(ctx, sa, sec, next, slot.LeaseTTL, r.now, r.RunID)
	if err != nil {
		return nil, fmt.Errorf("lock slot %s: %w", slot.Name, err)
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l.keepAlive(runCtx, cancel)
	// Read the local targets once more, just before the deletes: something
	// may have put a key back since the read above.
	again, err := readLocal(runCtx, slot.Targets)
	if err != nil {
		_ = l.clear(runCtx, nil)
		return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
	}
	for _, h := range again {
		held[h.key.Fingerprint()] = h.target.String()
	}
	var firstErr error
	for i := range res.Keys {
		f := &res.Keys[i]
		if f.Action != "would delete" {
			continue
		}
		c := cands[keyIDOf(f.Key)]
		if where, ok := held[f.Fingerprint]; ok {
			f.Action, f.Reason = "skipped", "held again by "+where+" (drift): put the current key there first"
			if c.pending != nil {
				keep = append(keep, *c.pending)
			}
			continue
		}
		if err := ka.Delete(runCtx, f.Key, c.key.Etag); err != nil && !errors.Is(err, ErrKeyNotFound) {
			f.Action, f.Reason = "skipped", "delete failed: "+err.Error()
			firstErr = errors.Join(firstErr, err)
			if c.pending != nil {
				keep = append(keep, *c.pending)
			}
			continue
		}
		f.Action = "deleted"
		r.event(slot.Name, "finalize", "deleted key %s (%s)", f.Key, f.Reason)
		v := c.key.Annotations[annVersion]
		if v == "" && c.pending != nil {
			v = c.pending.Version
		}
		if v != "" && versionNumber(v) != versionNumber(latest.Name) {
			if err := sa.Disable(runCtx, v); err != nil && !errors.Is(err, ErrSecretNotFound) {
				firstErr = errors.Join(firstErr, err)
			}
		}
		if opts.ConfirmRevocation && slot.Prober != nil {
			d, err := r.confirmRevocation(runCtx, slot, f.Key, strs[f.Key])
			if err != nil {
				firstErr = errors.Join(firstErr, err)
			}
			f.Revocation = d
		}
	}
	if err := l.clear(runCtx, func(_, next *secretmanagerpb.Secret) { setPending(next, keep) }); err != nil {
		firstErr = errors.Join(firstErr, err)
	}
	return res, firstErr
}

// confirmRevocation probes a deleted key until the API rejects it and
// returns how long that took.
func (r *Rotator) confirmRevocation(ctx context.Context, slot *Slot, name string, key secret.Key) (time.Duration, error) {
	start := r.now()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = orDefault(r.ProbeInterval, DefaultProbeInterval)
	b.MaxInterval = orDefault(r.ProbeMaxInterval, DefaultProbeMaxInterval)
	for {
		err := slot.Prober.Probe(ctx, key)
		var rej interface{ Rejected() bool }
		if errors.As(err, &rej) && rej.Rejected() {
			d := r.now().Sub(start)
			r.event(slot.Name, "finalize", "confirmed: the API rejects deleted key %s (after %s)", name, d.Round(time.Millisecond))
			return d, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		next := b.NextBackOff()
		if r.now().Add(next).Sub(start) > slot.PropagationTimeout {
			return r.now().Sub(start), fmt.Errorf("deleted key %s still accepted after %s", name, slot.PropagationTimeout)
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}
