package rotate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// What a target holds, in TargetStatus.Holds.
const (
	HoldsCurrent = "current key" // the slot's current key
	HoldsNew     = "new key"     // the new key of the rotation in progress
	HoldsOld     = "old key"     // an old key of the slot, kept for a grace period: drift
	HoldsOther   = "other key"   // anything else: drift
	HoldsNothing = "no key"      // an empty value: drift
	HoldsUnknown = "unknown"     // a write-only target: not drift, not known
)

// Named results of CheckHealth; test them with errors.Is.
var (
	// ErrDrift: a target does not hold the slot's current key.
	ErrDrift = errors.New("drift: a target does not hold the current key")
	// ErrKeyDead: the slot's current key does not work (deleted, suspended,
	// blocked) or could not be shown to work.
	ErrKeyDead = errors.New("the current key does not work")
)

// SlotStatus is the state of one slot as Status found it, learned without
// any write: names, times and fingerprints, never a key string.
type SlotStatus struct {
	Slot    string  `json:"slot"`
	Secret  string  `json:"secret"`
	Version string  `json:"current_version,omitempty"`
	Current KeyInfo `json:"current_key"`
	// Age is how old the current key is; Due says whether it is older
	// than the slot's max age (DueAt).
	Age   time.Duration `json:"-"` // JSON: age_seconds (json.go)
	Due   bool          `json:"due"`
	DueAt time.Time     `json:"due_at,omitzero"`
	// OldKeys are the slot's old keys still alive: kept for a grace period
	// until finalize deletes them, or left behind by a failed rotation.
	OldKeys  []OldKeyStatus  `json:"old_keys"`
	Rotation *RotationStatus `json:"rotation,omitempty"`
	// Schedule is the rotation schedule the secret carries (Secret
	// Manager's, see Rotator.Schedule); nil for none.
	Schedule *Schedule      `json:"schedule,omitempty"`
	Targets  []TargetStatus `json:"targets"`
	// Drift is set when a target holds anything but the current key (or
	// the new key of the rotation in progress).
	Drift bool `json:"drift"`
	// UsageUnknown says, in one line, why Cloud Monitoring could not tell
	// who uses the keys (a denied permission, a disabled API, an outage).
	UsageUnknown string `json:"usage_unknown,omitempty"`
	usageErr     error
}

// UsageErr is the error behind UsageUnknown, with its hint; nil when
// usage is known or not asked for.
func (s *SlotStatus) UsageErr() error { return s.usageErr }

// OldKeyStatus is an old key of a slot that is not deleted yet.
type OldKeyStatus struct {
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	DeleteAfter time.Time `json:"delete_after,omitzero"`
	// Due is set when finalize (or the next rotate) would delete it now.
	Due bool `json:"due"`
	// Reason says why the key waits, or why finalize deletes it.
	Reason string `json:"reason"`
	// Usage is what Cloud Monitoring counted of the key's calls.
	Usage *KeyUsage `json:"usage,omitempty"`
	uid   string
}

// RotationStatus is the rotation record found on a slot's secret.
type RotationStatus struct {
	Kind    string    `json:"kind"`
	ID      string    `json:"id"`
	Phase   string    `json:"phase"`
	OldKey  string    `json:"old_key"`
	NewKey  string    `json:"new_key"`
	Started time.Time `json:"started,omitzero"`
	Holder  Holder    `json:"holder"`
	Expires time.Time `json:"expires,omitzero"`
	// Lease is "live" (a run holds the slot), "expired", "released" (the
	// run stopped part-way and gave the lease up) or "holder gone" (its
	// process on this host no longer exists). Only a live lease stops
	// another run; the others are resumed by the next rotate.
	Lease string `json:"lease"`
	// Next says what to do about it: the wait for a live lease; otherwise
	// empty, for the caller to word Then as a command.
	Next string `json:"next"`
	// Then is what resolves an unfinished run (no live lease).
	Then Next `json:"-"`
}

// TargetStatus is what one target holds.
type TargetStatus struct {
	Target      string `json:"target"`
	Fingerprint string `json:"fingerprint"`
	// Holds is HoldsCurrent, HoldsNew, HoldsOld, HoldsOther or HoldsNothing.
	Holds string `json:"holds"`
	// Key is the resource name of the key held, when known.
	Key   string `json:"key,omitempty"`
	Drift bool   `json:"drift"`
	// Detail explains a drift: which key it is and what becomes of it.
	Detail string `json:"detail,omitempty"`
}

// Status reports the state of a slot: its current key, old keys waiting for
// finalize, any rotation in progress and its lease, and what every target
// holds (a drift view). It only reads: drift is reported, not an error.
func (r *Rotator) Status(ctx context.Context, slot *Slot) (*SlotStatus, error) {
	st, _, err := r.status(ctx, slot)
	return st, err
}

func (r *Rotator) status(ctx context.Context, slot *Slot) (*SlotStatus, *preflight, error) {
	ka, _ := r.apis()
	pre, err := r.preflight(ctx, slot)
	if err != nil {
		return nil, nil, err
	}
	now := r.now()
	st := &SlotStatus{Slot: slot.Name, Secret: slot.Secret, Version: pre.latest.Name, OldKeys: []OldKeyStatus{}, Targets: []TargetStatus{}}
	st.Current = describeKey(pre.old, pre.oldName)
	if !pre.oldKey.IsZero() {
		st.Current.Fingerprint = pre.oldKey.Fingerprint()
	} else if pre.rec != nil {
		st.Current.Fingerprint = pre.rec.OldFP // the secret holds the new key already
	}
	if pre.old != nil {
		st.Age = now.Sub(pre.created())
		st.Due = pre.due(slot, now)
		if slot.MaxAge > 0 {
			st.DueAt = pre.dueAt(slot)
		}
	}
	if rec := pre.rec; rec != nil {
		st.Rotation = rotationStatus(rec, slot, now)
	}
	st.Schedule = scheduleStatus(pre.sec)

	if err := st.findOldKeys(ctx, ka, slot, pre, now); err != nil {
		return nil, nil, err
	}
	for i, t := range slot.Targets {
		if pre.unreadable[i] {
			st.Targets = append(st.Targets, TargetStatus{Target: t.String(), Holds: HoldsUnknown, Detail: "write-only: its value cannot be read back"})
			continue
		}
		ts, err := r.targetStatus(ctx, ka, pre, st, pre.targets[i])
		if err != nil {
			return nil, nil, fmt.Errorf("slot %s: target %s: %w", slot.Name, t, err)
		}
		ts.Target = t.String()
		st.Drift = st.Drift || ts.Drift
		st.Targets = append(st.Targets, ts)
	}
	r.addUsage(ctx, st, pre.oldName)
	return st, pre, nil
}

// findOldKeys lists the slot's old keys still alive: the secret's index,
// checked against the keys themselves (their delete-after annotation is the
// source of truth), and keys the slot's rotations made that are neither
// current nor in a rotation.
func (st *SlotStatus) findOldKeys(ctx context.Context, ka *gcp.Keys, slot *Slot, pre *preflight, now time.Time) error {
	live, err := ka.List(ctx, keyParent(pre.oldName), false)
	if err != nil {
		return fmt.Errorf("slot %s: %w", slot.Name, err)
	}
	pend := map[string]pendingKey{}
	for _, p := range pendingKeys(pre.sec) {
		pend[keyIDOf(p.Key)] = p
	}
	for _, k := range live {
		id := keyIDOf(k.Name)
		p, indexed := pend[id]
		switch {
		case id == keyIDOf(pre.oldName):
			continue
		case pre.rec != nil && (id == keyIDOf(pre.rec.newKeyName()) || id == keyIDOf(pre.rec.OldKey)):
			continue
		case !indexed && k.Annotations[annSlot] != slot.Name:
			continue
		}
		st.OldKeys = append(st.OldKeys, oldKeyStatus(k, p, indexed, now))
	}
	sort.Slice(st.OldKeys, func(i, j int) bool { return st.OldKeys[i].Name < st.OldKeys[j].Name })
	return nil
}

func oldKeyStatus(k *apikeys.V2Key, p pendingKey, indexed bool, now time.Time) OldKeyStatus {
	o := OldKeyStatus{Name: k.Name, Fingerprint: p.Fingerprint, uid: k.Uid}
	s := k.Annotations[annDeleteAfter]
	switch t, err := time.Parse(time.RFC3339, s); {
	case s != "" && err != nil:
		o.Reason = fmt.Sprintf("its %s annotation %q is not a time: finalize leaves it alone", annDeleteAfter, s)
		return o
	case s != "":
		o.DeleteAfter = t
	case indexed:
		o.DeleteAfter = p.DeleteAfter // the annotation write did not land
	default:
		o.Due = true
		o.Reason = fmt.Sprintf("left by rotation %s, which did not finish with it: finalize deletes it", k.Annotations[annRotation])
		return o
	}
	if k.Annotations[annKeptInUse] != "" {
		// The drain gate kept it: finalize deletes it once it has been
		// quiet since, which only a read of Cloud Monitoring tells.
		o.Reason = "kept since " + o.DeleteAfter.Format(time.RFC3339) + " because it was still in use"
		if k.Annotations[annKeptInUse] == DrainUnknown {
			o.Reason = "kept since " + o.DeleteAfter.Format(time.RFC3339) + " because its use was unknown"
		}
		o.Reason += ": finalize deletes it once Cloud Monitoring shows it quiet (or when forced)"
		return o
	}
	if now.Before(o.DeleteAfter) {
		o.Reason = "kept for a grace period until " + o.DeleteAfter.Format(time.RFC3339) + "; finalize deletes it then"
	} else {
		o.Due = true
		o.Reason = "grace period ended " + o.DeleteAfter.Format(time.RFC3339) + ": finalize (or the next rotate) deletes it"
	}
	return o
}

func rotationStatus(rec *Record, slot *Slot, now time.Time) *RotationStatus {
	rs := &RotationStatus{
		Kind: rec.kind(), ID: rec.ID, Phase: rec.Phase, OldKey: rec.OldKey, NewKey: rec.newKeyName(),
		Started: rec.Started, Holder: rec.Holder, Expires: rec.Expires,
	}
	switch {
	case rec.Holder.Run == "":
		rs.Lease = "released"
	case !now.Before(rec.Expires):
		rs.Lease = "expired"
	case takeable(rec.Holder, rec.Expires, now):
		rs.Lease = "holder gone"
	default:
		rs.Lease = "live"
	}
	switch {
	case rs.Lease == "live":
		rs.Next = fmt.Sprintf("wait: %s holds the slot until %s", rec.Holder, rec.Expires.Format(time.RFC3339))
	default:
		rs.Then = Next{Action: NextResume, Slot: slot.Name, Kind: rs.Kind}
	}
	return rs
}

// targetStatus classifies what a target holds. Only a value that is neither
// the current key, the new key nor a known old key costs API calls: a
// LookupKey to name the key, and a GetKey to say whether it is deleted.
func (r *Rotator) targetStatus(ctx context.Context, ka *gcp.Keys, pre *preflight, st *SlotStatus, k secret.Key) (TargetStatus, error) {
	ts := TargetStatus{Fingerprint: k.Fingerprint()}
	fp := k.Fingerprint()
	rec := pre.rec
	switch {
	case k.IsZero():
		ts.Holds, ts.Drift, ts.Detail = HoldsNothing, true, "the value is empty"
		return ts, nil
	case fp == st.Current.Fingerprint:
		ts.Holds, ts.Key = HoldsCurrent, st.Current.Name
		return ts, nil
	case rec != nil && rec.NewFP != "" && fp == rec.NewFP:
		ts.Holds, ts.Key = HoldsNew, rec.newKeyName()
		ts.Detail = fmt.Sprintf("the new key of %s %s in progress", rec.kind(), rec.ID)
		return ts, nil
	}
	for i, o := range st.OldKeys {
		if o.Fingerprint == fp {
			return oldHeld(ts, &st.OldKeys[i]), nil
		}
	}
	ts.Holds, ts.Drift = HoldsOther, true
	name, err := ka.Lookup(ctx, k)
	switch {
	case ctx.Err() != nil:
		return ts, ctx.Err()
	case gcp.HTTPCode(err) == http.StatusBadRequest || errors.Is(err, ErrKeyNotFound):
		ts.Detail = "not a live API key: the API does not know it, or it was purged"
		return ts, nil
	case err != nil:
		ts.Detail = "a key that could not be looked up: " + err.Error()
		return ts, nil
	}
	ts.Key = name
	if rec != nil && keyIDOf(name) == keyIDOf(rec.newKeyName()) {
		ts.Holds, ts.Drift = HoldsNew, false
		ts.Detail = fmt.Sprintf("the new key of %s %s in progress", rec.kind(), rec.ID)
		return ts, nil
	}
	for i, o := range st.OldKeys {
		if keyIDOf(o.Name) == keyIDOf(name) {
			st.OldKeys[i].Fingerprint = fp
			return oldHeld(ts, &st.OldKeys[i]), nil
		}
	}
	key, err := ka.Get(ctx, name)
	switch {
	case ctx.Err() != nil:
		return ts, ctx.Err()
	case errors.Is(err, ErrKeyNotFound):
		ts.Detail = "key " + name + ", which no longer exists"
	case err != nil:
		ts.Detail = "key " + name + ", not the slot's current key"
	case key.DeleteTime != "":
		ts.Detail = fmt.Sprintf("key %s, deleted at %s: the target uses a dead key", name, key.DeleteTime)
	default:
		ts.Detail = "key " + name + ", not the slot's current key"
	}
	return ts, nil
}

func oldHeld(ts TargetStatus, o *OldKeyStatus) TargetStatus {
	ts.Holds, ts.Key, ts.Drift = HoldsOld, o.Name, true
	if o.DeleteAfter.IsZero() {
		ts.Detail = "old key " + o.Name + ": " + o.Reason
	} else {
		ts.Detail = fmt.Sprintf("old key %s, which stops working when finalize deletes it after %s", o.Name, o.DeleteAfter.Format(time.RFC3339))
	}
	return ts
}

// Check statuses in a HealthReport.
const (
	CheckOK      = "ok" // also for AccessCheck
	CheckFail    = "fail"
	CheckWarn    = "warn"
	CheckSkipped = "skipped"
)

// HealthCheck is one check of CheckHealth.
type HealthCheck struct {
	Check   string `json:"check"`   // key, secret, target, rotation, old key
	Subject string `json:"subject"` // what was checked: a key or target name
	Status  string `json:"status"`  // ok, fail, warn, skipped
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
	// Drift marks a failed target check: the target does not hold the
	// current key (put it back) and Hint is left to the caller. Dead marks
	// a failed key check: the current key does not work (a new key is
	// needed); Hint then says only what the API told.
	Drift bool `json:"drift,omitempty"`
	Dead  bool `json:"dead,omitempty"`
	// Err, on a failed key check, is the failure behind it (the probe's
	// error), for a caller that words the fix itself.
	Err error `json:"-"`
	// Then, on a warning, is what resolves it when Hint is empty: the
	// caller words it as a command.
	Then Next `json:"-"`
}

// HealthReport is the outcome of CheckHealth for one slot.
type HealthReport struct {
	Slot    string        `json:"slot"`
	Healthy bool          `json:"healthy"`
	Key     KeyRef        `json:"key"`
	Checks  []HealthCheck `json:"checks"`

	dead, drift bool
}

// Err returns nil for a healthy slot, else an error matching ErrKeyDead
// and/or ErrDrift that names every failed check, with a hint.
func (v *HealthReport) Err() error {
	if v.Healthy {
		return nil
	}
	var msgs, hints []string
	for _, c := range v.Checks {
		if c.Status != CheckFail {
			continue
		}
		msgs = append(msgs, c.Subject+": "+c.Message)
		if c.Hint != "" && !slices.Contains(hints, c.Hint) {
			hints = append(hints, c.Hint)
		}
	}
	var err error
	switch {
	case v.dead && v.drift:
		err = fmt.Errorf("slot %s is unhealthy (%w; %w): %s", v.Slot, ErrKeyDead, ErrDrift, strings.Join(msgs, "; "))
	case v.dead:
		err = fmt.Errorf("slot %s is unhealthy (%w): %s", v.Slot, ErrKeyDead, strings.Join(msgs, "; "))
	default:
		err = fmt.Errorf("slot %s is unhealthy (%w): %s", v.Slot, ErrDrift, strings.Join(msgs, "; "))
	}
	return errhint.With(err, strings.Join(hints, "; "))
}

func (v *HealthReport) add(c HealthCheck) {
	v.Checks = append(v.Checks, c)
	if c.Status == CheckFail {
		v.Healthy = false
	}
}

// CheckHealth is a health check of a slot for a scheduled job: it probes the
// current key live (unless the slot's verify is none) and reads back the
// secret and every target, comparing fingerprints with the current key.
// It only reads, and makes one probe.
//
// A dead key or drift is reported in the HealthReport (Healthy false, and
// Err says what is wrong); the error is for slots that could not be checked
// (configuration, permissions, the API). A current key that is deleted or
// unknown to the API is a failed check, not an error.
func (r *Rotator) CheckHealth(ctx context.Context, slot *Slot) (*HealthReport, error) {
	v := &HealthReport{Slot: slot.Name, Healthy: true, Checks: []HealthCheck{}}
	st, pre, err := r.status(ctx, slot)
	if errors.Is(err, ErrKeyNotFound) {
		v.dead = true
		v.add(HealthCheck{Check: "key", Subject: "current key", Status: CheckFail, Message: err.Error(), Hint: errhint.Of(err), Dead: true})
		return v, nil
	}
	if err != nil {
		return nil, err
	}

	// The key consumers get: the secret's latest version.
	probe, name := pre.latest.Key, st.Current.Name
	if probe.IsZero() {
		probe = pre.oldKey // a first run: the slot names its key
	}
	if pre.rec != nil && !probe.Equal(pre.oldKey) {
		name = pre.rec.newKeyName()
	}
	v.Key = KeyRef{Name: name, Fingerprint: probe.Fingerprint()}
	if err := v.checkKey(ctx, slot, probe, name); err != nil {
		return nil, err
	}

	// The secret's latest version is what preflight took the current key
	// from; during a rotation it may hold the new key.
	if pre.latest.Name != "" {
		msg := "latest version " + versionNumber(pre.latest.Name) + " holds the current key"
		if name != st.Current.Name {
			msg = "latest version " + versionNumber(pre.latest.Name) + " holds the new key of the rotation in progress"
		}
		v.add(HealthCheck{Check: "secret", Subject: slot.Secret, Status: CheckOK, Message: msg})
	}
	v.checkTargets(st)
	v.checkLeftovers(slot, st)
	return v, nil
}

// checkKey probes the key consumers get (probe, the key name) live, unless
// the slot's verify is none. Only a probe cut short by ctx is an error.
func (v *HealthReport) checkKey(ctx context.Context, slot *Slot, probe secret.Key, name string) error {
	subject := fmt.Sprintf("%s %s", probe.Fingerprint(), name)
	if slot.Prober == nil {
		v.add(HealthCheck{Check: "key", Subject: subject, Status: CheckSkipped, Message: "live probe off for this slot (verify: none)"})
		return nil
	}
	err := slot.Prober.Probe(ctx, probe)
	var thr interface{ Throttled() bool }
	switch {
	case err == nil:
		v.add(HealthCheck{Check: "key", Subject: subject, Status: CheckOK, Message: "works at the live API" + probeCall(slot.Prober)})
	case ctx.Err() != nil:
		return fmt.Errorf("slot %s: probe key %s: %w", slot.Name, name, err)
	case errors.As(err, &thr) && thr.Throttled():
		v.add(HealthCheck{Check: "key", Subject: subject, Status: CheckOK, Message: "works, but the API rate-limits it (" + err.Error() + ")"})
	default:
		v.dead = true
		v.add(HealthCheck{Check: "key", Subject: subject, Status: CheckFail, Message: "does not work: " + err.Error(), Hint: errhint.Of(err), Dead: true,
			Err: err})
	}
	return nil
}

// checkTargets fails each target that holds neither the current key nor
// the new key of the rotation in progress (drift).
func (v *HealthReport) checkTargets(st *SlotStatus) {
	for _, t := range st.Targets {
		c := HealthCheck{Check: "target", Subject: t.Target, Status: CheckOK}
		switch t.Holds {
		case HoldsCurrent:
			c.Message = "holds the current key " + t.Fingerprint
		case HoldsNew:
			c.Message = "holds " + t.Fingerprint + ", " + t.Detail
		case HoldsUnknown:
			c.Status, c.Message = CheckSkipped, t.Detail
		default:
			v.drift = true
			c.Status = CheckFail
			c.Message = fmt.Sprintf("DRIFT: holds %s (%s), not the current key %s", orEmpty(t.Fingerprint), t.Detail, st.Current.Fingerprint)
			c.Drift = true // the caller names the fix: put the current key back
		}
		v.add(c)
	}
}

// checkLeftovers warns about a rotation in progress and about old keys due
// for deletion.
func (v *HealthReport) checkLeftovers(slot *Slot, st *SlotStatus) {
	if rs := st.Rotation; rs != nil {
		c := HealthCheck{Check: "rotation", Subject: rs.ID, Status: CheckWarn,
			Message: fmt.Sprintf("%s %s in progress (phase %s), lease %s", rs.Kind, rs.ID, rs.Phase, rs.Lease), Hint: rs.Next, Then: rs.Then}
		if rs.Lease == "live" {
			c.Message += fmt.Sprintf(": held by %s until %s", rs.Holder, rs.Expires.Format(time.RFC3339))
		}
		v.add(c)
	}
	for _, o := range st.OldKeys {
		if o.Due {
			v.add(HealthCheck{Check: "old key", Subject: o.Name, Status: CheckWarn, Message: o.Reason,
				Then: Next{Action: NextFinalize, Slot: slot.Name}})
		}
	}
}

func orEmpty(fp string) string {
	if fp == "" {
		return "an empty value"
	}
	return fp
}
