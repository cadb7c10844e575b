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
	// Force deletes an old key kept because it was in use (the drain gate)
	// without checking that it has been quiet since. It overrides only
	// that check: a key the secret or a target holds is never deleted, and
	// a key kept for its grace period stays until it ends.
	Force bool
}

// Finalized is what finalize did, or would do, with one key.
type Finalized struct {
	Key         string         `json:"key"`
	Fingerprint string         `json:"fingerprint,omitempty"`
	Action      FinalizeAction `json:"action"`
	Reason      string         `json:"reason"`
	DeleteAfter *time.Time     `json:"delete_after,omitempty"`
	// Revocation is how long the API kept accepting the key after its
	// deletion (ConfirmRevocation).
	Revocation time.Duration `json:"-"` // JSON: revocation_seconds (json.go)
}

// FinalizeAction is what finalize did, or would do, with one key
// (Finalized.Action); Finalized.Reason says why.
type FinalizeAction string

// Finalize's actions.
const (
	FinalizeDeleted     FinalizeAction = "deleted"
	FinalizeWouldDelete FinalizeAction = "would delete" // a dry run's answer
	FinalizeKept        FinalizeAction = "kept"         // its grace period has not ended
	FinalizeSkipped     FinalizeAction = "skipped"      // held by a place, not a time, or its delete failed

	// finalizeDue marks a key whose grace has ended while its key string
	// is not yet checked against what the places hold (checkHeld).
	finalizeDue FinalizeAction = ""
)

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
//
// Its steps: read the slot, gather the candidates, classify them (kept for
// their grace, or due), check the due keys against what the places hold,
// and, under the slot's lease (see drive), delete the due keys.
func (r *Rotator) Finalize(ctx context.Context, slot *Slot, opts FinalizeOptions) (*FinalizeResult, error) {
	ctx = gcp.WithProject(ctx, r.ChargedProject(slot))
	ka, sa := r.apis()
	f := &finalizing{Rotator: r, slot: slot, opts: opts, ka: ka, sa: sa, res: &FinalizeResult{Slot: slot.Name, Keys: []Finalized{}}}
	if err := f.readSlot(ctx); err != nil {
		return nil, err
	}
	if f.res.Skipped != "" {
		return f.res, nil // an unfinished run holds the slot
	}
	for _, step := range []func(context.Context) error{f.candidates, f.classify, f.checkHeld} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	if opts.DryRun || len(f.strs) == 0 {
		return f.res, nil // a dry run, or nothing to delete
	}
	if err := f.lock(ctx); err != nil {
		return nil, err
	}
	if err := drive(ctx, f.lease, f.steps(), f.fail); err != nil {
		return nil, err
	}
	return f.res, f.errs
}

// finalizing is the state of one finalize run.
type finalizing struct {
	*Rotator
	slot *Slot
	opts FinalizeOptions
	ka   *gcp.Keys
	sa   *gcp.Secrets
	res  *FinalizeResult

	sec     *secretmanagerpb.Secret
	latest  gcp.Version
	current string            // the current key's name
	held    map[string]string // fingerprint of what a place holds -> that place
	started time.Time         // when the candidates were classified

	cands map[string]*candidate // by key id
	ids   []string              // the ids of cands, sorted
	only  map[string]bool       // the ids of opts.Only
	keep  pendingList           // the index entries the secret keeps
	strs  map[string]secret.Key // the key strings of the keys to delete, by name

	lease *lease
	errs  error // what failed in the deletes, which go on past a failure
}

// readSlot reads the slot's secret, its current key and what its places
// hold. A slot with an unfinished run is left alone (res.Skipped).
func (f *finalizing) readSlot(ctx context.Context) error {
	slot := f.slot
	sec, err := f.sa.Get(ctx, slot.Secret)
	if err != nil {
		return fmt.Errorf("slot %s: %w", slot.Name, err)
	}
	if rec, err := parseRecord(sec); err != nil || rec != nil {
		if err != nil {
			return err
		}
		f.res.Skipped = fmt.Sprintf("an unfinished %s (%s) holds the slot; finish or abort it first", rec.kind(), rec.ID)
		return nil
	}
	latest, err := f.sa.Access(ctx, slot.Secret+"/versions/latest")
	if err != nil {
		return fmt.Errorf("slot %s: %w", slot.Name, err)
	}
	current, ok := currentKeyOf(sec, latest)
	if !ok {
		if current, err = f.ka.Lookup(ctx, latest.Key); err != nil {
			return fmt.Errorf("slot %s: %w", slot.Name, err)
		}
	}
	if err := checkProjects(slot, sec.GetName(), current, projectNumber(slot, sec)); err != nil {
		return err
	}
	f.sec, f.latest, f.current = sec, latest, current
	// What the slot's places hold: never delete a key one of them holds.
	f.held = map[string]string{latest.Key.Fingerprint(): slot.Secret}
	for _, t := range slot.Targets {
		k, err := t.Read(ctx)
		if errors.Is(err, ErrUnreadable) {
			continue // what it holds cannot be known
		}
		if err != nil {
			return fmt.Errorf("slot %s: %w", slot.Name, err)
		}
		f.held[k.Fingerprint()] = t.String()
	}
	return nil
}

// candidates gathers the keys to look at: the old keys indexed on the
// secret, with Scan the project's keys annotated with the slot, and with
// Only just the keys it names.
func (f *finalizing) candidates(ctx context.Context) error {
	f.cands = map[string]*candidate{}
	pend := pendingKeys(f.sec)
	for i := range pend {
		f.cands[keyIDOf(pend[i].Key)] = &candidate{pending: &pend[i]}
	}
	if f.opts.Scan {
		if err := f.scan(ctx); err != nil {
			return err
		}
	}
	f.only = map[string]bool{}
	for _, n := range f.opts.Only {
		f.only[keyIDOf(n)] = true
	}
	if len(f.only) > 0 {
		f.limitToOnly()
	}
	f.ids = make([]string, 0, len(f.cands))
	for id := range f.cands {
		f.ids = append(f.ids, id)
	}
	sort.Strings(f.ids)
	return nil
}

// scan adds the project's keys annotated with the slot to the candidates.
func (f *finalizing) scan(ctx context.Context) error {
	keys, err := f.ka.List(ctx, keyParent(f.current), false)
	if err != nil {
		return fmt.Errorf("slot %s: %w", f.slot.Name, err)
	}
	for _, k := range keys {
		if k.Annotations[annSlot] != f.slot.Name {
			continue
		}
		c := f.cands[keyIDOf(k.Name)]
		if c == nil {
			c = &candidate{}
			f.cands[keyIDOf(k.Name)] = c
		}
		c.key = k
	}
	return nil
}

// limitToOnly limits the candidates to the keys Only names: the others
// stay in the index as they are.
func (f *finalizing) limitToOnly() {
	for id, c := range f.cands {
		if !f.only[id] {
			if c.pending != nil {
				f.keep = append(f.keep, *c.pending)
			}
			delete(f.cands, id)
		}
	}
	for id := range f.only {
		if f.cands[id] == nil {
			f.cands[id] = &candidate{}
		}
	}
}

// classify reads each candidate's key and decides whether it is due: kept
// while its grace lasts, skipped when its grace cannot be read, due when
// its grace ended, when Only names it, or when a rotation left it behind.
// Keys already deleted, purged, or current are no candidates.
func (f *finalizing) classify(ctx context.Context) error {
	f.started = f.now()
	for _, id := range f.ids {
		c := f.cands[id]
		if c.key == nil {
			k, err := f.ka.Get(ctx, keyParent(f.current)+"/keys/"+id)
			switch {
			case errors.Is(err, ErrKeyNotFound):
				continue // purged: drop it from the index
			case err != nil:
				return fmt.Errorf("slot %s: %w", f.slot.Name, err)
			}
			c.key = k
		}
		k := c.key
		switch {
		case k.DeleteTime != "":
			continue // already deleted
		case keyIDOf(k.Name) == keyIDOf(f.current):
			continue // the current key is no leftover
		}
		fin := f.grace(id, c)
		if fin.Action == finalizeDue && k.Annotations[annKeptInUse] != "" && !f.only[id] {
			if err := f.checkQuiet(ctx, &fin, k); err != nil {
				return err
			}
			if fin.Action == FinalizeSkipped && c.pending != nil {
				f.keep = append(f.keep, *c.pending)
			}
		}
		if fin.Action == FinalizeKept && c.pending != nil {
			fin.Fingerprint = c.pending.Fingerprint // recorded when it was kept: no call
			f.keep = append(f.keep, *c.pending)
		}
		f.res.Keys = append(f.res.Keys, fin)
	}
	return nil
}

// grace says what becomes of candidate c by its grace period: kept, skipped
// (its deletion time is not a time), or due (Action finalizeDue).
func (f *finalizing) grace(id string, c *candidate) Finalized {
	k := c.key
	fin := Finalized{Key: k.Name}
	if f.only[id] {
		fin.Reason = "leaked: deleted at once, grace or not"
		return fin
	}
	s := k.Annotations[annDeleteAfter]
	if s == "" {
		fin.Reason = fmt.Sprintf("left by rotation %s, which did not finish with it", k.Annotations[annRotation])
		return fin
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		fin.Action, fin.Reason = FinalizeSkipped, fmt.Sprintf("its %s annotation %q is not a time", annDeleteAfter, s)
		return fin
	}
	fin.DeleteAfter = &t
	if k.Annotations[annKeptInUse] != "" {
		// Kept because it was in use: its delete-after is when it was kept,
		// and whether it may go is the drain gate's rule (checkQuiet).
		fin.Reason = "kept since " + t.Format(time.RFC3339)
		return fin
	}
	if f.started.Before(t) {
		fin.Action, fin.Reason = FinalizeKept, "grace period until "+t.Format(time.RFC3339)
		return fin
	}
	fin.Reason = "grace period ended " + t.Format(time.RFC3339)
	return fin
}

// checkQuiet decides whether an old key the drain gate kept because it was
// in use (or its use unknown) may go now: only when the settled-window rule
// holds from the time it was kept (its delete-after), read once from Cloud
// Monitoring; finalize does not wait. Otherwise it is skipped, with its
// latest traffic. Force skips the check.
func (f *finalizing) checkQuiet(ctx context.Context, fin *Finalized, k *apikeys.V2Key) error {
	kept := *fin.DeleteAfter
	why := "kept in use since " + kept.Format(time.RFC3339)
	if k.Annotations[annKeptInUse] == DrainUnknown {
		why = "kept since " + kept.Format(time.RFC3339) + " because its use was unknown"
	}
	if f.opts.Force {
		fin.Reason = why + "; deleted with force, whether or not it is still used"
		return nil
	}
	var read *drainRead
	err := errors.New("the key's uid is unknown")
	if k.Uid != "" {
		now := f.now()
		read, err = f.awaitRead(ctx, f.slot.Project, &drainWant{from: now, due: now, by: now, window: drainWindow(f.UsageDelay, f.slot.QuietPeriod)})
		if err != nil && !errors.Is(err, errNoMonitoring) {
			return fmt.Errorf("slot %s: %w", f.slot.Name, err)
		}
		if err == nil {
			err = read.err
		}
	}
	if err != nil {
		fin.Action, fin.Reason = FinalizeSkipped, fmt.Sprintf("%s; whether it is quiet now is unknown (%s): kept", why, usageReason(err))
		return nil
	}
	pts := keyPoints(read.counts, k.Uid)
	v := settledQuiet(kept, read.asOf, f.UsageDelay, f.slot.QuietPeriod, pts)
	if v.Pass {
		fin.Reason = fmt.Sprintf("%s; quiet since: no successful request for %s in Cloud Monitoring's settled data (to %s)",
			why, human(f.slot.QuietPeriod), v.SettledTo.Format(time.RFC3339))
		return nil
	}
	last := "no successful call seen, but Cloud Monitoring's data has settled only to " + v.SettledTo.Format(time.RFC3339)
	if !v.LastOK.IsZero() {
		last = "last successful call in the minute to " + v.LastOK.Format(time.RFC3339) + "; " + ratesText(methodRates(pts, read.asOf))
	}
	fin.Action, fin.Reason = FinalizeSkipped, fmt.Sprintf("%s; not quiet for %s yet (%s); quiet at %s at the earliest",
		why, human(f.slot.QuietPeriod), last, v.QuietAt.Format(time.RFC3339))
	f.event(f.slot.Name, StepFinalize, "kept key %s: %s", k.Name, fin.Reason)
	return nil
}

// checkHeld reads the key string of each due key and skips the keys that
// the secret or a target holds; the others would be deleted.
func (f *finalizing) checkHeld(ctx context.Context) error {
	f.strs = map[string]secret.Key{}
	for i := range f.res.Keys {
		fin := &f.res.Keys[i]
		if fin.Action != finalizeDue {
			continue
		}
		ks, err := f.ka.KeyString(ctx, fin.Key)
		if err != nil {
			return fmt.Errorf("slot %s: %w", f.slot.Name, err)
		}
		fin.Fingerprint = ks.Fingerprint()
		if where, ok := f.held[fin.Fingerprint]; ok {
			fin.Action, fin.Reason = FinalizeSkipped, "still held by "+where+" (drift): put the current key there first"
			continue
		}
		f.strs[fin.Key] = ks
		fin.Action = FinalizeWouldDelete
	}
	return nil
}

// lock takes the slot's lease for the deletes.
func (f *finalizing) lock(ctx context.Context) error {
	next := func(old *Record) (Record, bool, error) {
		if old != nil {
			return Record{}, false, fmt.Errorf("slot %s: %w: an unfinished %s (%s) holds the slot", f.slot.Name, ErrRotationInProgress, old.kind(), old.ID)
		}
		return Record{Kind: KindFinalize, ID: f.runID(), Slot: f.slot.Name, Phase: PhaseLocked, OldKey: f.current, Started: f.started}, false, nil
	}
	l, _, err := acquire(ctx, f.sa, f.sec, next, f.slot.LeaseTTL, f.now, f.RunID)
	if err != nil {
		return fmt.Errorf("lock slot %s: %w", f.slot.Name, err)
	}
	f.lease = l
	return nil
}

// steps are finalize's steps under the lease: the deletes go on past a
// failure (errs), and the lock is cleared whatever became of them.
func (f *finalizing) steps() []step {
	return []step{
		{StepFinalize, f.readAgain},
		{StepFinalize, f.deleteDue},
		{StepFinalize, f.unlock},
	}
}

// readAgain reads the local targets once more, just before the deletes:
// something may have put a key back since the slot was read.
func (f *finalizing) readAgain(ctx context.Context) error {
	again, err := readLocal(ctx, f.slot.Targets)
	if err != nil {
		return fmt.Errorf("slot %s: %w", f.slot.Name, err)
	}
	for _, h := range again {
		f.held[h.key.Fingerprint()] = h.target.String()
	}
	return nil
}

// fail clears the lock of a finalize that failed before it deleted.
func (f *finalizing) fail(ctx context.Context, err error) error {
	_ = f.lease.clear(ctx, nil)
	return err
}

// deleteDue deletes each key that would be deleted and is not held again,
// disables the secret version that held it (never the newest) and, with
// ConfirmRevocation, waits until the API rejects it. A key whose delete
// fails stays in the index.
func (f *finalizing) deleteDue(ctx context.Context) error {
	for i := range f.res.Keys {
		fin := &f.res.Keys[i]
		if fin.Action != FinalizeWouldDelete {
			continue
		}
		c := f.cands[keyIDOf(fin.Key)]
		if where, ok := f.held[fin.Fingerprint]; ok {
			fin.Action, fin.Reason = FinalizeSkipped, "held again by "+where+" (drift): put the current key there first"
			f.keepPending(c)
			continue
		}
		if err := f.ka.Delete(ctx, fin.Key, c.key.Etag); err != nil && !errors.Is(err, ErrKeyNotFound) {
			fin.Action, fin.Reason = FinalizeSkipped, "delete failed: "+err.Error()
			f.errs = errors.Join(f.errs, err)
			f.keepPending(c)
			continue
		}
		fin.Action = FinalizeDeleted
		f.event(f.slot.Name, StepFinalize, "deleted key %s (%s)", fin.Key, fin.Reason)
		f.disableVersion(ctx, c)
		if f.opts.ConfirmRevocation && f.slot.Prober != nil {
			d, err := f.confirmRevocation(ctx, f.slot, fin.Key, f.strs[fin.Key])
			if err != nil {
				f.errs = errors.Join(f.errs, err)
			}
			fin.Revocation = d
		}
	}
	return nil
}

// keepPending keeps c's index entry on the secret: its key was not deleted.
func (f *finalizing) keepPending(c *candidate) {
	if c.pending != nil {
		f.keep = append(f.keep, *c.pending)
	}
}

// disableVersion disables the secret version that held the deleted key of
// c, unless it is the newest.
func (f *finalizing) disableVersion(ctx context.Context, c *candidate) {
	v := c.key.Annotations[annVersion]
	if v == "" && c.pending != nil {
		v = c.pending.Version
	}
	if v != "" && versionNumber(v) != versionNumber(f.latest.Name) {
		if err := f.sa.Disable(ctx, v); err != nil && !errors.Is(err, ErrSecretNotFound) {
			f.errs = errors.Join(f.errs, err)
		}
	}
}

// unlock clears the lock and writes the index of the keys still kept.
func (f *finalizing) unlock(ctx context.Context) error {
	if err := f.lease.clear(ctx, func(_, next *secretmanagerpb.Secret) { setPending(next, f.keep) }); err != nil {
		f.errs = errors.Join(f.errs, err)
	}
	return nil
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
			r.event(slot.Name, StepFinalize, "confirmed: the API rejects deleted key %s (after %s)", name, d.Round(time.Millisecond))
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
