package rotate

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"strings"
	"time"

	apikeysapi "cloud.google.com/go/apikeys/apiv2"
	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/cenkalti/backoff/v5"
	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// Slot is one logical credential: a Secret Manager secret holding the
// current key string, the API key behind it, and the targets that consume it.
type Slot struct {
	Name string
	// ScheduleTopic is the Pub/Sub topic Secret Manager notifies when the
	// slot is due, once Schedule set the rotation schedule on its secret;
	// "": none.
	ScheduleTopic string
	Project       string // project id or number; the current key must belong to it
	// Secret is projects/P/secrets/S.
	Secret string
	// SecretProjectDiffers allows the secret to live in another project
	// than Project (a central secrets project); without it such a slot is
	// refused.
	SecretProjectDiffers bool
	// Key names the current key (projects/P/locations/global/keys/K) for a
	// first run whose secret has no version yet. Once the secret holds a key,
	// the secret wins.
	Key string
	// ServiceAccount, when set, binds new keys to it: the migration from a
	// standard key to an auth key.
	ServiceAccount string
	// BoundKeyRestrictions is BoundGemini, BoundCopy or "": what a key
	// newly bound to ServiceAccount is restricted to when the old key is
	// not restricted to the Gemini API alone (see bindingRestrictions).
	BoundKeyRestrictions string
	// Targets receive the new key after the secret.
	Targets []Target
	// Prober checks new keys live; nil skips the live check (verify: none).
	Prober Prober

	Grace              time.Duration // keep the old key this long (0: delete at once)
	MaxAge             time.Duration // a key older than this is due
	PropagationTimeout time.Duration // how long a new key may take to work
	LeaseTTL           time.Duration // how long the lock lasts without renewal

	// Retire is what the rotation does with the old key once every target
	// holds the new one; "" is today's library default: kept for Grace
	// when Grace > 0, else deleted at once.
	Retire RetireMode
	// QuietPeriod is how long the old key must have had no successful
	// request, in data Cloud Monitoring has settled, before RetireQuiet
	// deletes it; DrainTimeout bounds that wait (0: do not wait; the key
	// is kept for finalize unless it is quiet already).
	QuietPeriod, DrainTimeout time.Duration
	// Usage is what RetireQuiet does when Cloud Monitoring cannot answer;
	// "" is UsageBestEffort.
	Usage UsagePolicy
}

// RetireMode is what a rotation does with the old key (Slot.Retire).
type RetireMode string

// Retire modes.
const (
	// RetireQuiet deletes the old key once it has been quiet for
	// Slot.QuietPeriod (the drain gate); still used at Slot.DrainTimeout,
	// it is kept for finalize.
	RetireQuiet RetireMode = "quiet"
	// RetireGrace keeps it for Slot.Grace and leaves it to finalize.
	RetireGrace RetireMode = "grace"
	// RetireNow deletes it at once.
	RetireNow RetireMode = "now"
)

// UsagePolicy is what the drain gate does when Cloud Monitoring cannot
// answer (Slot.Usage).
type UsagePolicy string

// Usage policies.
const (
	// UsageRequired keeps the old key and stops, naming the permission
	// or the API to enable.
	UsageRequired UsagePolicy = "required"
	// UsageBestEffort warns and falls back to the grace period.
	UsageBestEffort UsagePolicy = "best-effort"
)

// Rotator runs the protocol with Google's clients. The zero values of the
// optional fields are sensible defaults.
type Rotator struct {
	// Keys is the API Keys API (REST, the discovery client: only it
	// carries a key's service account binding).
	Keys *apikeys.Service
	// Lookup is the API Keys API over gRPC, for LookupKey only: the REST
	// keys:lookupKey would put the key string in its URL. Required when
	// the current key is found from a secret's key string; without it
	// such a lookup fails with gcp.ErrNoLookupClient.
	Lookup  *apikeysapi.Client
	Secrets *secretmanager.Client
	// Access, when set, lets Plan prove the caller's permissions, the APIs
	// and the bound service account with read-only calls; nil skips those
	// checks.
	Access *gcp.AccessClients

	// Log receives progress logs; nil discards them.
	Log *slog.Logger
	// Events, when set, is told about each step (for a progress display).
	Events func(Event)
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// RunID, when set, is the id of the run this rotator works for (see
	// NewID): the new rotations it starts take it as their id (and key
	// ids), and it holds their leases under it, so that the rotation
	// record, the lease holder and a caller's logs and reports name one
	// id. Empty: a fresh id per rotation.
	RunID string
	// PollInterval is the first wait between polls of a long-running
	// operation (default 250ms, doubling to 5s).
	PollInterval time.Duration
	// ProbeInterval and ProbeMaxInterval bound the backoff between live
	// probes of a new key (defaults DefaultProbeInterval and
	// DefaultProbeMaxInterval).
	ProbeInterval, ProbeMaxInterval time.Duration
	// Shards is how many processes rotate slots of the same projects at
	// once, this one included (a job split with rotate.Shard, each
	// process paced with its share of the quotas); 0 or 1: this process
	// alone. Each process leads its own probes of a project's new keys, so
	// n of them probe it n times as often as one: the probes of a
	// project's waiting keys are spaced n times further apart, until a key
	// nears the age at which keys of this run's projects were seen to
	// work (see probeAt).
	Shards int
	// Retry is how API calls are retried; the zero value is gcp.DefaultRetry.
	Retry gcp.RetryPolicy
	// CleanupTimeout bounds what a run does after it stopped (its context
	// ended, or a step failed): releasing its lease or clearing its lock.
	// That runs on a context of its own, for the run's may have ended. It
	// ends CleanupTimeout after it began and, when the run's context has
	// a deadline, at the latest CleanupTimeout past that deadline, however
	// late the run noticed it: a caller with a deadline for the whole
	// process gives the run's context a deadline that much before its own.
	// Zero is DefaultCleanupTimeout.
	CleanupTimeout time.Duration

	// QuotaProject is the project the API Keys and Secret Manager calls
	// are charged to when the clients send one (x-goog-user-project); ""
	// when they do not, and each call is charged as its credentials say.
	// It decides whose quota a slot's calls are paced under
	// (ChargedProject).
	QuotaProject string

	// Monitoring, when set, is Cloud Monitoring: Status and Plan show
	// who uses each key (usage.go). nil shows nothing.
	Monitoring *monitoring.MetricClient
	// UsageDelay is how late Cloud Monitoring may report a call: the drain
	// gate trusts only data at least this old. Zero trusts what it reports
	// at once (an emulator without ingestion delay); keyrotate's
	// configuration defaults to 30 minutes.
	UsageDelay time.Duration
	// DrainPoll is how often the drain gate reads Cloud Monitoring
	// (DefaultDrainPoll).
	DrainPoll time.Duration
	// Sleep waits until Now reads until, or until ctx ends; nil waits on a
	// real timer. A test that drives Now by hand moves its clock here (an
	// absolute time, so that gates sleeping together move a shared clock
	// to the same instant, not once each).
	Sleep func(ctx context.Context, until time.Time) error

	// drain schedules the drain gates' reads per project (drain.go).
	drain drainPoller
	// retiring bounds the rotations past their drain gate that retire at
	// once (drain.go).
	retiring retireLimit
	// LeakUsageTimeout bounds how long FindLeak waits for Cloud
	// Monitoring's answer on who calls with a leaked key (zero:
	// DefaultLeakUsageTimeout); past it the leak is answered without.
	LeakUsageTimeout time.Duration

	// usage holds the request counts read, by project (usage.go).
	usage usageCache

	// prop is how long new keys took to work, per project, shared by the
	// rotations of this Rotator (a fleet run).
	prop propagation

	// keyLists are the projects' key lists that the rotations of this
	// Rotator share (keylist.go).
	keyLists keyLists
}

// ChargedProject returns the project whose quota the API Keys and Secret
// Manager calls for slot are charged to: the quota project when one is
// set, else the slot's project (the API Keys calls act on it; a Secret
// Manager secret in another project is still paced on the slot's budget,
// the stricter choice). Many slots under one quota project share one
// budget.
func (r *Rotator) ChargedProject(slot *Slot) string {
	if r.QuotaProject != "" {
		return r.QuotaProject
	}
	return slot.Project
}

// Probe timing defaults. The interval between probes of a new key grows
// from 2s to at most 10s: a key that starts working is noticed within 10s
// (a minute's propagation becomes at most 70s, not 90s as with a 30s cap),
// at one probe — a cheap read — per 10s per key.
const (
	DefaultProbeInterval    = 2 * time.Second
	DefaultProbeMaxInterval = 10 * time.Second
)

// DefaultCleanupTimeout is Rotator.CleanupTimeout's default: a lease
// release is one write; when it cannot be made in that time the API is
// unreachable, and the lease expires (or, on this host, is taken over as
// soon as this process is gone).
const DefaultCleanupTimeout = 5 * time.Second

// Step names a step of a run: in its events (Event.Step), its logs and
// the CLI's output. A rotation has seven steps, StepPreflight to
// StepRetire in this order, then ends with StepDone (or StepStop).
type Step string

// The steps of a rotation, in order.
const (
	StepPreflight  Step = "preflight"  // read only: what the slot and its places hold
	StepLock       Step = "lock"       // the rotation record written on the secret
	StepCreate     Step = "create"     // the new key, its settings copied from the old one
	StepVerify     Step = "verify"     // the new key proven to work live
	StepDistribute Step = "distribute" // the new key written to the secret, then every target
	StepReadback   Step = "readback"   // every place read back: it holds the new key
	StepRetire     Step = "retire"     // the old key deleted, or kept for its grace period
)

// The other names events carry.
const (
	StepDone     Step = "done"     // the run ended: what it put in place, or why it did nothing
	StepStop     Step = "stop"     // the cleanup of a run that stopped part-way
	StepObtain   Step = "obtain"   // an abort or rollback gets back the key it puts in place
	StepFinalize Step = "finalize" // old keys deleted after their grace period
	StepLeaked   Step = "leaked"   // a leaked key's slot rotated at once
	StepRevoke   Step = "revoke"   // a key of no slot deleted
)

// Event reports a step of a rotation.
type Event struct {
	Slot    string
	Step    Step
	Message string
	// Wait is set while the run waits for a new key to start working.
	Wait *Wait
	// Drain is set while the drain gate waits for the old key to be
	// quiet: one event per poll.
	Drain *DrainWait
	// Then, when set, is what comes next for what Message reports (the
	// finalize of a kept key); the caller words it after Message.
	Then Next
}

// Wait describes a wait for propagation.
type Wait struct {
	Key      string // resource name of the key waited for
	Started  time.Time
	Deadline time.Time
	Attempt  int
	Last     string // why the last probe failed
}

// Options change one run.
type Options struct {
	// Force rotates even when the key is not due (--now).
	Force bool
	// Grace, when not nil, overrides the slot's grace period, and means
	// RetireGrace unless Retire says otherwise.
	Grace *time.Duration
	// Retire, when set, overrides the slot's Retire.
	Retire RetireMode
	// Again rotates with Force even when the current key was made by a
	// rotation less than the lease TTL ago. Without it such a forced run
	// is taken for a retry of that rotation (a job rerun after its process
	// died before reporting) and does nothing.
	Again bool
	// RequestedAt, when set with Force, is when the rotation was asked for
	// (a Secret Manager SECRET_ROTATE event): a current key made at or
	// after it already answers the request, and the run does nothing
	// (SkipRetry). A request delivered twice, or handled by two processes
	// one after the other, so makes one new key, however late the second
	// delivery comes.
	RequestedAt time.Time
	// WaitForLease, when positive, is how long a run that finds the slot
	// held by another live run waits for it (polling the lease with
	// backoff) before it runs again; the Result then says what became of
	// that run (Waited). Zero stops at once with a HeldError.
	WaitForLease time.Duration
}

// KeyRef names a key and its fingerprint.
type KeyRef struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// TargetResult tells what happened to one target.
type TargetResult struct {
	Target      string `json:"target"`
	Action      string `json:"action"` // "written", "already current"
	Fingerprint string `json:"fingerprint"`
}

// Result is the outcome of a rotation.
type Result struct {
	Slot    string `json:"slot"`
	Kind    string `json:"kind"` // rotate, abort or rollback
	Rotated bool   `json:"rotated"`
	Reason  string `json:"reason,omitempty"` // why nothing was done
	// Skip names the kind of Reason: SkipNotDue, SkipRetry or SkipNoDrift.
	Skip       string         `json:"skip,omitempty"`
	RotationID string         `json:"rotation_id,omitempty"`
	Resumed    bool           `json:"resumed,omitempty"`
	OldKey     KeyRef         `json:"old_key"`
	NewKey     KeyRef         `json:"new_key,omitempty"`
	NewVersion string         `json:"new_version,omitempty"`
	Targets    []TargetResult `json:"targets,omitempty"`
	// Retired says what happened to the old key: "deleted", kept until
	// DeleteAfter, or (an abort of a rotation that stopped before
	// creating its key) RetiredNeverCreated.
	Retired     string     `json:"retired,omitempty"`
	DeleteAfter *time.Time `json:"delete_after,omitempty"`
	// KeptReason says why an old key was kept other than for its grace:
	// still in use at the drain timeout, or its use unknown.
	KeptReason string `json:"kept_reason,omitempty"`
	// Drain is what the drain gate saw of the old key (retire: quiet).
	Drain *Drain `json:"drain,omitempty"`
	// Propagation is how long the new key took to start working.
	Propagation time.Duration `json:"-"` // JSON: propagation_seconds (json.go)
	Probes      int           `json:"probes,omitempty"`
	// Finalized lists old keys whose grace period ended, handled first.
	Finalized []Finalized `json:"finalized,omitempty"`
	// Waited is set when the run waited for another run that held the slot
	// (Options.WaitForLease).
	Waited *Waited `json:"waited,omitempty"`

	// madeBy is the rotation id annotated on the current key found by the
	// preflight, "" when none.
	madeBy string
}

// Waited tells about another run that held the slot and that a run waited
// for: which rotation, its holder, how long the wait took, and its outcome.
type Waited struct {
	Kind     string        `json:"kind"`
	ID       string        `json:"rotation_id"`
	Holder   Holder        `json:"holder"`
	Duration time.Duration `json:"waited_ns"`
	// Outcome is "rotated" (it made the current key), "resumed" (it
	// stopped part-way and this run resumed it) or "not rotated" (it
	// ended without changing the current key: undone or failed).
	Outcome string `json:"outcome"`
}

func (r *Rotator) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC()
	}
	return time.Now().UTC()
}

func (r *Rotator) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return discardLog
}

// discardLog is the log of a Rotator without one: one for all, as a
// rotation asks for its log at each step and call (a new Logger each time
// was a heap object each: TestRotatorLogAllocs).
var discardLog = slog.New(slog.DiscardHandler)

func (r *Rotator) event(slot string, step Step, format string, args ...any) {
	r.eventThen(slot, step, Next{}, format, args...)
}

// eventThen reports a step whose outcome then needs what next says.
func (r *Rotator) eventThen(slot string, step Step, next Next, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.log().Info(msg, "slot", slot, "step", string(step))
	if r.Events != nil {
		r.Events(Event{Slot: slot, Step: step, Message: msg, Then: next})
	}
}

// sharedAPIs are the API wrappers the rotations of one Fleet run share
// (Fleet.Run puts them in its context): a rotation holds its pair for its
// whole run, 240 bytes each, the same for every rotation of the Rotator
// (TestFleetHeapPerRotation).
type sharedAPIs struct {
	r  *Rotator
	ka *gcp.Keys
	sa *gcp.Secrets
}

type sharedAPIsKey struct{}

// withSharedAPIs returns ctx carrying r's API wrappers, for the rotations
// run under it to share.
func (r *Rotator) withSharedAPIs(ctx context.Context) context.Context {
	ka, sa := r.apis()
	return context.WithValue(ctx, sharedAPIsKey{}, &sharedAPIs{r: r, ka: ka, sa: sa})
}

// apisFor returns the API wrappers ctx carries for r, else new ones.
func (r *Rotator) apisFor(ctx context.Context) (*gcp.Keys, *gcp.Secrets) {
	if s, ok := ctx.Value(sharedAPIsKey{}).(*sharedAPIs); ok && s.r == r {
		return s.ka, s.sa
	}
	return r.apis()
}

func (r *Rotator) apis() (*gcp.Keys, *gcp.Secrets) {
	retry := r.Retry
	if retry.Log == nil {
		retry.Log = r.log()
	}
	return &gcp.Keys{Service: r.Keys, LookupClient: r.Lookup, Poll: r.PollInterval, Retry: retry}, &gcp.Secrets{Client: r.Secrets, Retry: retry}
}

// keyID derives the new key's id from the rotation id, so that a retried
// CreateKey finds the key of the first attempt instead of making another:
// "<slot>-<rotation id>", within the API's 63 characters.
func keyID(slot, rotationID string) string {
	if len(slot) > 38 {
		slot = slot[:38]
	}
	return slot + "-" + rotationID
}

// Rotate runs the rotation protocol for one slot: preflight, lock, create,
// verify, distribute, readback, retire (docs/design.md). When the slot's
// secret holds a rotation record, the rotation it names is resumed.
//
// Errors: ErrInvalidTarget or ErrBadConfig (nothing changed, a usage
// problem); ErrRotationInProgress (another run holds the slot);
// ErrVerifyFailed (the new key never worked and was removed);
// ErrStoppedPartWay (both keys work, run again to resume); any other error
// means nothing was changed.
//
// With opts.WaitForLease, a slot held by another live run is waited for,
// then rotated (or not) as the protocol decides: most often nothing is
// left to do because that run rotated it; Result.Waited says so.
func (r *Rotator) Rotate(ctx context.Context, slot *Slot, opts Options) (*Result, error) {
	ctx = gcp.WithProject(ctx, r.ChargedProject(slot))
	if opts.WaitForLease <= 0 {
		return r.rotate(ctx, slot, opts)
	}
	return r.rotateWaiting(ctx, slot, opts)
}

// rotateWaiting is Rotate with opts.WaitForLease. Not inlined: see
// Rotator.rotate.
//
//go:noinline
func (r *Rotator) rotateWaiting(ctx context.Context, slot *Slot, opts Options) (*Result, error) {
	start := r.now()
	deadline := start.Add(opts.WaitForLease)
	var waited *Waited
	for {
		res, err := r.rotate(ctx, slot, opts)
		var held *HeldError
		switch {
		case errors.Is(err, errChangedWhileLocking) && r.now().Before(deadline):
			continue // another run changed the slot as this one locked it: look again
		case errors.As(err, &held):
			if err := r.waitLease(ctx, slot, &held.Record, deadline); err != nil {
				return nil, err
			}
			waited = &Waited{Kind: held.Kind(), ID: held.Record.ID, Holder: held.Record.Holder}
			continue
		case err != nil || waited == nil:
			return res, err
		}
		waited.Duration = r.now().Sub(start)
		switch {
		case res.madeBy == waited.ID && !res.Rotated:
			waited.Outcome = "rotated"
		case res.Resumed && res.RotationID == waited.ID:
			waited.Outcome = "resumed"
		default:
			waited.Outcome = "not rotated"
		}
		res.Waited = waited
		return res, nil
	}
}

// waitLease waits until the lease of rec, held by another live run, is no
// longer held by that run: the record was cleared or replaced, released,
// or may be taken over (expired, or its process gone). It polls the secret
// with exponential backoff (1s growing to 15s), and fails at deadline with
// the HeldError of what holds the slot then, or when ctx ends.
func (r *Rotator) waitLease(ctx context.Context, slot *Slot, rec *Record, deadline time.Time) error {
	_, sa := r.apis()
	b := &backoff.ExponentialBackOff{
		InitialInterval:     time.Second,
		RandomizationFactor: backoff.DefaultRandomizationFactor,
		Multiplier:          backoff.DefaultMultiplier,
		MaxInterval:         15 * time.Second,
	}
	b.Reset()
	r.event(slot.Name, StepLock, "waiting for %s %s held by %s (until %s at most)", rec.kind(), rec.ID, rec.Holder, deadline.Format(time.RFC3339))
	last := *rec
	for {
		rest := deadline.Sub(r.now())
		if rest <= 0 {
			return errhint.With(fmt.Errorf("slot %s: waited until %s: %w", slot.Name, deadline.Format(time.RFC3339), &HeldError{Record: last}),
				"the other run is still at work; its outcome shows on the slot when it ends")
		}
		t := time.NewTimer(min(b.NextBackOff(), rest))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("slot %s: waiting for %s %s: %w", slot.Name, rec.kind(), rec.ID, context.Cause(ctx))
		case <-t.C:
		}
		sec, err := sa.Get(ctx, slot.Secret)
		if err != nil {
			return fmt.Errorf("slot %s: waiting for %s %s: %w", slot.Name, rec.kind(), rec.ID, err)
		}
		cur, err := parseRecord(sec)
		if err != nil {
			return err
		}
		if cur == nil || cur.ID != rec.ID || cur.Holder.Run != rec.Holder.Run || takeable(cur.Holder, cur.Expires, r.now()) {
			return nil
		}
		last = *cur
	}
}

// rotate runs one rotation: the preflight, then begin, then the steps
// past the lock. It is kept small on purpose, as are the frames below it:
// its frame stays on the goroutine's stack for the whole rotation, under
// every call, and at 10,000 rotations in flight a stack that grows past 16
// KiB (to 32) costs more than all else a rotation holds
// (TestFleetStackDepth).
func (r *Rotator) rotate(ctx context.Context, slot *Slot, opts Options) (*Result, error) {
	pre, finalized, err := r.preflightFinalized(ctx, slot)
	if err != nil {
		return nil, err
	}
	st, res, err := r.begin(ctx, slot, opts, pre, finalized)
	if st == nil {
		return res, err
	}
	return st.drive(ctx)
}

// begin decides whether the slot rotates and, if so, locks it: it returns
// the run past the lock, or no run and the result (nothing to do) or the
// error. Not inlined: its large frame (the record, the run being built) is
// gone from the stack once the steps run.
//
//go:noinline
func (r *Rotator) begin(ctx context.Context, slot *Slot, opts Options, pre *preflight, finalized []Finalized) (*run, *Result, error) {
	ka, sa := r.apisFor(ctx)
	res := &Result{Slot: slot.Name, Kind: KindRotate, OldKey: KeyRef{Name: pre.oldName, Fingerprint: pre.oldKey.Fingerprint()}, Finalized: finalized}
	if pre.old != nil {
		res.madeBy = pre.old.Annotations[annRotation]
	}
	if pre.rec == nil {
		if res.Skip, res.Reason = r.skip(slot, pre, opts); res.Skip != "" {
			r.event(slot.Name, StepDone, "nothing to do: %s", res.Reason)
			return nil, res, nil
		}
		if err := canRotate(slot, pre); err != nil {
			return nil, nil, err
		}
	}
	r.logDrift(slot, pre)
	l, grace, err := r.lockRotation(ctx, sa, slot, pre, opts, res)
	if err != nil {
		return nil, nil, err
	}
	return r.newRun(slot, opts, pre, l, res, ka, sa, grace), res, nil
}

// newRun is the rotation of slot past the lock l. Not inlined: see
// Rotator.rotate.
//
//go:noinline
func (r *Rotator) newRun(slot *Slot, opts Options, pre *preflight, l *lease, res *Result, ka *gcp.Keys, sa *gcp.Secrets, grace time.Duration) *run {
	st := &run{Rotator: r, kind: KindRotate, slot: slot, pre: pre, lease: l, res: res, ka: ka, sa: sa, grace: grace,
		mode: retireMode(slot, opts, grace), from: oldKeyRef(pre.old)}
	// The lease holds the secret as it now stands; the preflight's copy
	// and the record parsed from it are done with.
	pre.sec, pre.rec = nil, nil
	rec := l.record()
	st.rec, st.undeleted = newRunRecord(rec), rec.Undeleted
	st.fromVersion = st.rec.OldVersion
	if res.Resumed && grace > 0 && opts.Retire == "" {
		st.mode = RetireGrace // the rotation was started with a grace period
	}
	return st
}

// preflightFinalized runs the preflight and, when old keys kept for a grace
// period are due, deletes them first (Finalize) and runs the preflight
// again. It returns what finalize did.
func (r *Rotator) preflightFinalized(ctx context.Context, slot *Slot) (*preflight, []Finalized, error) {
	pre, err := r.preflight(ctx, slot)
	if err != nil {
		return nil, nil, err
	}
	if pre.rec != nil || !pendingKeys(pre.sec).due(r.now()) {
		return pre, nil, nil
	}
	fin, err := r.Finalize(ctx, slot, FinalizeOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("finalize slot %s: %w", slot.Name, err)
	}
	if pre, err = r.preflight(ctx, slot); err != nil {
		return nil, nil, err
	}
	return pre, fin.Keys, nil
}

// canRotate refuses to start a rotation from a current key that is gone,
// unrestricted, or that cannot be bound as the slot asks.
func canRotate(slot *Slot, pre *preflight) error {
	if pre.old == nil {
		return fmt.Errorf("slot %s: current key %s: %w", slot.Name, pre.oldName, ErrKeyNotFound)
	}
	if !restricted(pre.old.Restrictions) {
		return errhint.With(fmt.Errorf("slot %s: key %s has no restrictions: %w", slot.Name, pre.oldName, ErrUnrestricted),
			"restrict the current key first (API restriction generativelanguage.googleapis.com), then rotate; "+
				"keyrotate copies restrictions and will not mint an unrestricted key")
	}
	_, err := bindingRestrictions(slot, pre.old)
	return err
}

// lockRotation takes the slot's lease with a new rotation record, or
// resumes the rotation whose record it finds, and fills res's rotation id.
// It returns the lease and the grace period of the rotation: opts.Grace,
// else the resumed rotation's, else the slot's.
func (r *Rotator) lockRotation(ctx context.Context, sa *gcp.Secrets, slot *Slot, pre *preflight, opts Options, res *Result) (*lease, time.Duration, error) {
	l, resumed, err := acquire(ctx, sa, pre.sec, r.rotationRecord(slot, pre, opts), slot.LeaseTTL, r.now, r.RunID)
	if err != nil {
		return nil, 0, fmt.Errorf("lock slot %s: %w", slot.Name, err)
	}
	return l, r.locked(slot, l, resumed, opts, res), nil
}

// optsGrace is the grace period a rotation of slot with opts starts with.
func optsGrace(slot *Slot, opts Options) time.Duration {
	if opts.Grace != nil {
		return *opts.Grace
	}
	return slot.Grace
}

// rotationRecord is lockRotation's next record (see acquire): the one it
// finds, resumed, or a new one.
func (r *Rotator) rotationRecord(slot *Slot, pre *preflight, opts Options) func(old *Record) (Record, bool, error) {
	grace := optsGrace(slot, opts)
	return func(old *Record) (Record, bool, error) {
		if old != nil {
			if old.kind() != KindRotate {
				return Record{}, false, withNext(fmt.Errorf("slot %s: %w: an unfinished %s (%s) holds the slot", slot.Name, ErrRotationInProgress, old.kind(), old.ID),
					"finish it first", Next{Action: NextFinishFirst, Slot: slot.Name, Kind: old.kind()})
			}
			return *old, true, nil
		}
		id := r.runID()
		return Record{
			ID: id, Slot: slot.Name, Phase: PhaseLocked,
			OldKey: pre.oldName, OldVersion: pre.latest.Name, OldFP: pre.oldKey.Fingerprint(),
			NewKeyID: keyID(slot.Name, id), Started: r.now(), Grace: grace.String(),
		}, false, nil
	}
}

// locked reports the lock l and fills res's rotation id; it returns the
// rotation's grace period. Not inlined: see Rotator.rotate.
//
//go:noinline
func (r *Rotator) locked(slot *Slot, l *lease, resumed bool, opts Options, res *Result) time.Duration {
	grace := optsGrace(slot, opts)
	rec := l.record()
	res.RotationID, res.Resumed = rec.ID, resumed
	if resumed {
		res.OldKey = KeyRef{Name: rec.OldKey, Fingerprint: rec.OldFP}
		r.event(slot.Name, StepLock, "resuming rotation %s (phase %s)", rec.ID, rec.Phase)
		if g, err := time.ParseDuration(rec.Grace); err == nil && opts.Grace == nil {
			grace = g
		}
	} else {
		r.event(slot.Name, StepLock, "locked slot (rotation %s)", rec.ID)
	}
	return grace
}

// Kinds of "nothing to do", in Result.Skip and Plan.Skip.
const (
	SkipNotDue  = "not-due" // the key is younger than the max age, and the run not forced
	SkipRetry   = "retry"   // a forced run taken for a retry of the rotation that made the current key, or whose request (RequestedAt) that key answers
	SkipNoDrift = "no-drift"
)

// skip says why a run with opts does nothing to a slot with no rotation in
// progress (kind and reason), or "" when it rotates. Plan and Rotate both
// decide by it, so that plan predicts rotate.
func (r *Rotator) skip(slot *Slot, pre *preflight, opts Options) (kind, reason string) {
	if reason := r.recentlyRotated(slot, pre, opts); reason != "" {
		return SkipRetry, reason
	}
	if !opts.Force && !pre.due(slot, r.now()) {
		return SkipNotDue, fmt.Sprintf("not due until %s (max age %s)", pre.dueAt(slot).Format(time.RFC3339), human(slot.MaxAge))
	}
	return "", ""
}

// recentlyRotated explains why a forced run does nothing: the current key
// was made by a rotation that finished less than the lease TTL ago, so the
// run is most likely a retry of it (a job whose process died after the
// rotation completed but before it reported). Unforced runs need no such
// guard: the fresh key is not due. A run that finds drift (the secret or a
// target not holding the current key) is no retry: the rotation that made
// the key left every place holding it, so something changed since, and the
// run acts on it.
func (r *Rotator) recentlyRotated(slot *Slot, pre *preflight, opts Options) string {
	if !opts.Force || opts.Again || pre.old == nil || pre.drift() {
		return ""
	}
	id := pre.old.Annotations[annRotation]
	made := pre.created()
	if !opts.RequestedAt.IsZero() && !made.IsZero() && !made.Before(opts.RequestedAt) {
		return fmt.Sprintf("the rotation requested at %s is done: the current key %s was made at %s, and the secret and every target hold it",
			opts.RequestedAt.UTC().Format(time.RFC3339), pre.oldName, made.Format(time.RFC3339))
	}
	if id == "" || r.now().Sub(made) >= slot.LeaseTTL {
		return ""
	}
	return fmt.Sprintf("retry of rotation %s: it made the current key %s at %s, less than the lease TTL (%s) ago, and the secret and every target hold it",
		id, pre.oldName, made.Format(time.RFC3339), human(slot.LeaseTTL))
}

// step is one step of a run under the slot's lease.
type step struct {
	name Step // the step its events are reported under
	do   func(context.Context) error
}

// drive runs steps in order under the lease l, which it keeps alive while
// they run: a lease lost cancels their context. When a step fails, drive
// stops and returns what fail makes of the error; fail gets the steps'
// context, which may have ended (a cleanup derives a context of its own).
// Rotations, undos and finalize all run their locked steps through it.
func drive(ctx context.Context, l *lease, steps []step, fail func(context.Context, error) error) error {
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l.keepAlive(runCtx, cancel)
	for _, s := range steps {
		err := s.do(runCtx)
		if err == nil {
			continue
		}
		if cause := context.Cause(runCtx); cause != nil && !errors.Is(err, cause) && errors.Is(cause, ErrRotationInProgress) {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
		return fail(runCtx, err)
	}
	return nil
}

// drive runs the steps past the lock and, when one fails, undoes what can
// be undone or leaves the record for the next run.
func (st *run) drive(ctx context.Context) (*Result, error) {
	// A resumed record may already name a created key; an abort or a
	// rollback changes things from its first write.
	st.mayHaveCreated = st.res.Resumed || st.kind != KindRotate
	if err := drive(ctx, st.lease, st.steps(), st.fail); err != nil {
		return nil, err
	}
	return st.res, nil
}

// fail ends a run that failed with err past the lock: it undoes what can be
// undone, or leaves the record for the next run.
func (st *run) fail(ctx context.Context, err error) error {
	// The cleanup's time limit starts when its stop event says it
	// begins, not before: on a loaded machine the event came tens of
	// milliseconds after the limit had started.
	cleanup := func() (context.Context, context.CancelFunc) {
		return cleanupContext(ctx, st.CleanupTimeout)
	}
	l, slot := st.lease, st.slot
	switch {
	case errors.Is(err, errLeaseLost):
		l.stopRenewal()
		return errhint.With(fmt.Errorf("%w: %w", ErrStoppedPartWay, err), "another run took over this slot; let it finish")
	case !st.mayHaveCreated:
		st.event(slot.Name, StepStop, "clearing the lock")
		bg, stop := cleanup()
		defer stop()
		if cerr := l.clear(bg, nil); cerr != nil {
			return errhint.With(fmt.Errorf("%w: %w (and clearing the lock failed: %v)", ErrStoppedPartWay, err, cerr),
				"nothing was changed but the lock remains; run again to clear it, or wait for it to expire")
		}
		return err
	case st.undone:
		return err
	default:
		st.event(slot.Name, StepStop, "releasing the lease")
		bg, stop := cleanup()
		defer stop()
		if rerr := l.release(bg); rerr != nil {
			st.log().Warn("could not release the lease; the next run takes it over when it expires", "slot", slot.Name, "error", rerr)
		}
		return withNext(fmt.Errorf("%w: slot %s, %s %s: %w", ErrStoppedPartWay, slot.Name, st.kind, st.rec.ID, err),
			st.stoppedState(bg), Next{Action: NextResume, Slot: slot.Name, Kind: st.kind})
	}
}

// stoppedState says what works after a run stopped past its create step:
// both keys, unless the old key's delete was sent and the key is deleted
// (read again when the delete's answer was lost or refused).
func (st *run) stoppedState(ctx context.Context) string {
	both := "both keys still work and every target holds one of them"
	if st.from == nil || !st.deleteSent {
		return both
	}
	gone := "is deleted"
	if st.res.Retired != "deleted" {
		k, err := st.ka.Get(ctx, st.from.Name)
		switch {
		case err == nil && k.DeleteTime == "":
			return both
		case err != nil && !errors.Is(err, ErrKeyNotFound):
			gone = "may be deleted (its delete was sent)"
		}
	}
	stays := st.rec.NewKey
	if st.newKey != nil {
		stays = st.newKey.Name
	}
	return fmt.Sprintf("key %s %s, undelete restores it for 30 days; key %s works and every target holds it", st.from.Name, gone, stays)
}

// run is the state of one rotation past the lock.
type run struct {
	*Rotator
	kind  string // KindRotate, KindAbort or KindRollback
	slot  *Slot
	pre   *preflight
	lease *lease
	rec   runRecord
	res   *Result
	ka    *gcp.Keys
	sa    *gcp.Secrets
	grace time.Duration
	// mode is what a rotation does with the old key (retireMode); ""
	// keeps it for grace when grace > 0, else deletes it.
	mode RetireMode

	// from is the key being retired (nil when it never existed), and
	// fromVersion the secret version that holds it.
	from        *runKey
	fromVersion string

	mayHaveCreated bool // a CreateKey was sent, in this run or an earlier one
	undone         bool // the new key was removed again and the lock cleared
	undeleted      bool // the record's Undeleted: this run or the one it resumes undeleted the new key

	newKey *runKey
	// deleteSent: the old key's delete was sent (deleteOld); a stop
	// after it cannot say that both keys work.
	deleteSent bool
	// turn: the run holds a turn to retire past its drain gate
	// (Rotator.retiring), given back when retire returns.
	turn    bool
	newStr  secret.Key
	version string
}

// runRecord is what a run keeps of its rotation record as the lock left
// it: the fields its steps read. The lease holds the whole record, and
// writes it; a second whole copy (400 bytes, its holder and times among
// them) was the largest part of a run (TestFleetHeapPerRotation).
type runRecord struct {
	ID, Phase                 string
	OldKey, OldVersion, OldFP string
	NewKeyID, NewKey, NewFP   string
	CreateOp                  string
	Aborted                   *Record
}

func newRunRecord(r Record) runRecord {
	return runRecord{ID: r.ID, Phase: r.Phase, OldKey: r.OldKey, OldVersion: r.OldVersion, OldFP: r.OldFP,
		NewKeyID: r.NewKeyID, NewKey: r.NewKey, NewFP: r.NewFP, CreateOp: r.CreateOp, Aborted: r.Aborted}
}

// runKey is what a run keeps of a key past its create step: its name,
// uid, etag and times, and, of the key it retires, its annotations
// (oldKeyRef). A key as read (apikeys.V2Key, 224 bytes) carries its
// display name, restrictions, binding and annotations too, a kilobyte or
// more, which at 10,000 rotations in flight is worth dropping once copied
// (TestFleetHeapPerRotation).
type runKey struct {
	Name, Uid, Etag, CreateTime, DeleteTime string
	Annotations                             map[string]string
}

// keyRef returns what a run keeps of k; nil stays nil.
func keyRef(k *apikeys.V2Key) *runKey {
	if k == nil {
		return nil
	}
	return &runKey{Name: k.Name, Uid: k.Uid, Etag: k.Etag, CreateTime: k.CreateTime, DeleteTime: k.DeleteTime}
}

// oldKeyRef is what a run keeps of the key it retires: keyRef and the
// key's annotations. A key kept for finalize is annotated with an
// UpdateKey whose mask, "annotations", replaces the whole map, so the run
// sends the annotations the key had (its owner's, the rotation's that made
// it) with its own; and a delete-after an earlier attempt wrote is kept
// (keepOld). nil stays nil.
func oldKeyRef(k *apikeys.V2Key) *runKey {
	ref := keyRef(k)
	if ref != nil {
		ref.Annotations = k.Annotations
	}
	return ref
}

// steps are a rotation's steps past the lock. An abort or a rollback
// obtains the key it puts back in place instead of creating one.
func (st *run) steps() []step {
	obtain := step{StepCreate, st.create}
	if st.kind != KindRotate {
		obtain = step{StepObtain, st.adopt}
	}
	return []step{
		obtain,
		{StepVerify, st.verifyLive},
		{StepDistribute, st.distribute},
		{StepReadback, st.readBack},
		{StepRetire, st.retire},
	}
}

// create makes the new key, or adopts the one an earlier attempt made.
func (st *run) create(ctx context.Context) error {
	var key *apikeys.V2Key
	if st.pre.old != nil {
		var err error
		if key, err = st.createKey(ctx); err != nil {
			return err
		}
	}
	if key == nil || key.Name == "" {
		// Made by an earlier attempt: adopt it if it is ours.
		var err error
		if key, err = st.earlierKey(ctx); err != nil {
			return err
		}
		st.event(st.slot.Name, StepCreate, "adopted key %s created by an earlier attempt", key.Name)
	}
	st.newStr = secret.New(key.KeyString)
	key.KeyString = ""
	st.newKey = keyRef(key)
	// Its restrictions and binding are copied: the old key as read is done
	// with; from keeps what retiring it takes.
	st.pre.old = nil
	if st.newStr.IsZero() {
		k, err := st.ka.KeyString(ctx, key.Name)
		if err != nil {
			return err
		}
		st.newStr = k
	}
	st.res.NewKey = KeyRef{Name: key.Name, Fingerprint: st.newStr.Fingerprint()}
	return nil
}

// followCreate follows the create operation op that an earlier run's
// create was accepted with, but not followed to its end, rather than
// create again; it returns the key, or nil when that fails (the operation
// expired or failed): creating again with the same key id is still safe.
// Not inlined: see Rotator.rotate.
//
//go:noinline
func (st *run) followCreate(ctx context.Context, op string) *apikeys.V2Key {
	k, err := st.ka.Resume(ctx, op)
	if err != nil {
		st.log().Warn("could not follow the earlier create; creating with the same key id", "slot", st.slot.Name, "operation", op, "error", err)
		return nil
	}
	if k.Name == "" {
		return nil
	}
	st.event(st.slot.Name, StepCreate, "followed operation %s of an earlier attempt to key %s", op, k.Name)
	return k
}

// createKey creates the new key with the old key's restrictions, binding
// and display name, or follows the create an earlier attempt sent. It
// returns no key (and no error) when an earlier attempt made it already.
func (st *run) createKey(ctx context.Context) (*apikeys.V2Key, error) {
	parent := keyParent(st.rec.OldKey)
	restrictions, err := bindingRestrictions(st.slot, st.pre.old)
	if err != nil {
		return nil, err
	}
	spec := &apikeys.V2Key{
		DisplayName:         st.pre.old.DisplayName,
		Restrictions:        restrictions,
		ServiceAccountEmail: serviceAccountOf(st.slot, st.pre.old),
		Annotations: map[string]string{
			annSlot: st.slot.Name, annRotation: st.rec.ID, annSupersedes: st.rec.OldKey,
		},
	}
	st.mayHaveCreated = true
	if op := st.rec.CreateOp; op != "" {
		if k := st.followCreate(ctx, op); k != nil {
			return k, nil
		}
	}
	key, err := st.ka.Create(ctx, parent, st.rec.NewKeyID, spec)
	if op := gcp.AcceptedOp(err); op != "" {
		st.lease.note(func(r *Record) { r.CreateOp = op })
	}
	if err != nil && !errors.Is(err, gcp.ErrAlreadyExists) {
		if definiteCreateFailure(err) && !st.res.Resumed {
			st.mayHaveCreated = false
		}
		return nil, err
	}
	if err == nil {
		st.event(st.slot.Name, StepCreate, "created key %s (restrictions, binding and display name copied from %s)", key.Name, st.rec.OldKey)
	}
	return key, nil
}

// earlierKey reads the new key an earlier attempt of the rotation made.
func (st *run) earlierKey(ctx context.Context) (*apikeys.V2Key, error) {
	name := keyParent(st.rec.OldKey) + "/keys/" + st.rec.NewKeyID
	got, err := st.ka.Get(ctx, name)
	if errors.Is(err, ErrKeyNotFound) && st.pre.old == nil {
		return nil, fmt.Errorf("old key %s is gone and new key %s was never created: %w", st.rec.OldKey, name, ErrKeyNotFound)
	}
	if err != nil {
		return nil, err
	}
	if got.Annotations[annRotation] != st.rec.ID {
		return nil, fmt.Errorf("key %s exists but was not made by rotation %s: %w", name, st.rec.ID, ErrBadConfig)
	}
	if got.DeleteTime != "" {
		return nil, st.newKeyGone(ctx, name)
	}
	return got, nil
}

// newKeyGone handles a resumed rotation whose new key was deleted. Before
// distribution that is the cleanup of a failed verification that did not
// get to clear the record: nothing else changed, so clear it. After
// distribution the targets hold that key: only undeleting it helps.
func (st *run) newKeyGone(ctx context.Context, name string) error {
	if st.rec.Phase == PhaseDistributed {
		return errhint.With(fmt.Errorf("new key %s of rotation %s was deleted after it was distributed: %w", name, st.rec.ID, ErrKeyNotFound),
			"undelete it (gcloud services api-keys undelete, within 30 days) and run again")
	}
	if err := st.lease.clear(ctx, nil); err != nil {
		return err
	}
	st.undone = true
	return errhint.With(fmt.Errorf("%w: key %s of rotation %s was deleted after failing verification", ErrVerifyFailed, name, st.rec.ID),
		"the rotation was undone and the old key still works everywhere; run again to start a new one")
}

// definiteCreateFailure reports whether a CreateKey error proves that no key
// was made (as opposed to a lost answer).
func definiteCreateFailure(err error) bool {
	code := gcp.HTTPCode(err)
	return code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
}

// verifyLive probes the new key until it works or the propagation window
// ends. On a definite failure, or at the deadline, it removes the new key.
func (st *run) verifyLive(ctx context.Context) error {
	if st.slot.Prober == nil {
		st.event(st.slot.Name, StepVerify, "live verification is off for this slot (verify: none)")
		return nil
	}
	start := st.now()
	deadline := start.Add(st.slot.PropagationTimeout)
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = orDefault(st.ProbeInterval, DefaultProbeInterval)
	b.MaxInterval = orDefault(st.ProbeMaxInterval, DefaultProbeMaxInterval)
	// steady is b without its randomization: the schedule of a key that
	// leads other keys' wait (see probeAt).
	steady := *b
	steady.RandomizationFactor = 0
	wait := &Wait{Key: st.newKey.Name, Started: start, Deadline: deadline}
	// made is when the key was made, by the API's clock: what keys of one
	// project share (see propagation). Unknown or implausible (clock skew
	// beyond the window): when the wait started.
	made := parseTime(st.newKey.CreateTime)
	if made.IsZero() || made.After(start) || start.Sub(made) > st.slot.PropagationTimeout {
		made = start
	}
	w := st.prop.join(st.slot.Project, made)
	defer st.prop.leave(st.slot.Project, w)
	if pw := st.prop.get(st.slot.Project, w); !pw.leads || (pw.delay > 0 && made.Add(pw.delay).After(start)) {
		// Another key of the project is being probed, or keys of the
		// project took longer than this one's age to work: wait for that
		// rather than probe now.
		if pw.delay > 0 {
			st.event(st.slot.Name, StepVerify, "waiting for key %s to be %s old before the first probe: keys of project %s took that long to work",
				st.newKey.Name, pw.delay.Round(time.Second), st.slot.Project)
		} else {
			st.event(st.slot.Name, StepVerify, "waiting for key %s to work: another key of project %s is being probed, and keys of one project start working together",
				st.newKey.Name, st.slot.Project)
		}
		if err := st.waitProbe(ctx, w, made, start, 0, deadline); err != nil {
			return fmt.Errorf("verify key %s: %w", st.newKey.Name, err)
		}
	}
	var last error
	for {
		wait.Attempt++
		st.res.Probes++
		err := st.slot.Prober.Probe(ctx, st.newStr)
		if err == nil {
			st.res.Propagation = st.now().Sub(start)
			st.prop.observe(st.slot.Project, st.now().Sub(made))
			st.event(st.slot.Name, StepVerify, "key %s works (after %d probe(s), %s)", st.newKey.Name, wait.Attempt, st.res.Propagation.Round(time.Millisecond))
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("verify key %s: %w (last probe: %v)", st.newKey.Name, context.Cause(ctx), err)
		}
		last = err
		var tmp interface{ Temporary() bool }
		if !errors.As(err, &tmp) || !tmp.Temporary() {
			break
		}
		wait.Last = err.Error()
		next, interval := b.NextBackOff(), steady.NextBackOff()
		if st.now().Add(next).After(deadline) {
			if rest := deadline.Sub(st.now()); rest > 0 {
				next = rest
			} else {
				last = fmt.Errorf("still failing after %s (propagation_timeout): %w", st.slot.PropagationTimeout, err)
				break
			}
		}
		st.log().Info("new key not working yet", "slot", st.slot.Name, "key", st.newKey.Name, "attempt", wait.Attempt, "error", err)
		if st.Events != nil {
			w := *wait
			st.Events(Event{Slot: st.slot.Name, Step: StepVerify, Message: "waiting for the new key to work", Wait: &w})
		}
		if err := st.waitProbe(ctx, w, made, st.now().Add(next), interval, deadline); err != nil {
			return fmt.Errorf("verify key %s: %w (last probe: %v)", st.newKey.Name, err, last)
		}
	}
	if st.kind != KindRotate {
		return st.undoVerifyFailed(ctx, last)
	}
	return st.removeNew(ctx, last)
}

// waitProbe waits until the next probe of a key (made at made, last
// probed at the call, due at next by its own backoff, whose interval
// without randomization is interval; 0 before the first probe) is due
// (probeAt), never past deadline. It sleeps through the Rotator's Sleep,
// and wakes only when what its probe time depends on changes
// (propagation).
func (st *run) waitProbe(ctx context.Context, w *waiter, made, next time.Time, interval time.Duration, deadline time.Time) error {
	probed := st.now()
	wasLeader := st.prop.get(st.slot.Project, w).leads
	for {
		sctx, wake := context.WithCancel(ctx)
		pw := st.prop.sleep(st.slot.Project, w, wake)
		at := st.probeAt(pw, wasLeader, made, probed, next, interval)
		if at.After(deadline) {
			at = deadline
		}
		err := st.sleepUntil(sctx, at)
		st.prop.awake(w)
		woken := sctx.Err() != nil
		wake()
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if !woken {
			return err
		}
	}
}

// probeAt returns when a waiting key probes next, given its project's
// state pw (wasLeader: whether it led when its wait began), when it was
// made and last probed, when its own backoff would probe it (next) and that
// backoff's interval without randomization (interval; 0 before the first
// probe).
//
//   - A key alone in its project probes at next: the randomized backoff,
//     2s growing to 10s by default, as any single rotation.
//   - The leader of keys that wait for it probes every interval ÷ (keys
//     waiting), but never more often than every probeFloor, nor less often
//     than at next; no randomization, since one key per project is probed.
//     Its success unblocks them all, and a probe due up to 15s after the
//     key works (a 10s interval ± 50%) would make the whole project see its
//     keys work that much late: now at most probeFloor (1s) late. The
//     project then makes no more probes than its keys, each probed alone,
//     would, and at most one per probeFloor. Its first such gap is longer
//     by the project's phase (projectPhase), so that the leaders of a
//     fleet's projects probe out of step.
//   - Until its project has seen a key work, a leader also probes when its
//     key is as old as a key of another project of the run was when it
//     was seen working (pw.fleet), if that comes first: with the leaders
//     out of step, some project sees a key work soon after it does, and
//     then every project does, not each up to probeFloor late. That probe
//     may come sooner than probeFloor after the one before: once each time
//     the run learns a shorter delay, a few times a run.
//   - A key that takes the lead probes at once.
//   - The other keys probe at most every followerEvery longest intervals
//     (a minute), and no more often, all together, than one per
//     probeFloor: the leader's success tells them when to probe.
//   - Once keys of the project are known to work at some age, a key not
//     probed since reaching that age probes exactly then, earlier or later
//     than otherwise.
//   - In a run that is one of n processes rotating slots of the same
//     projects (Rotator.Shards), each leads its own probes of a project:
//     the leader's floor and the followers' combined pace are n times
//     probeFloor (sharedFloor), so that the project sees about one probe
//     per probeFloor from all n, as from one process. A key would then be
//     seen working up to n × probeFloor late, and the slowest of n shards
//     sets the job's end: so once a key of any project of the run has been
//     seen working at some age d, a leader probes every probeFloor again
//     from age d − n × probeFloor on (that key worked no earlier, having
//     been probed n × probeFloor apart). Keys of one run, made within
//     seconds of each other in every project, work at about the same age;
//     where they do not, a key is seen no later than n × probeFloor after
//     it works.
//
// One probe a second per project, from the leader, is little for the
// Gemini API: the probe is one cheap call (verify.Gemini: countTokens of
// one word, free, by default; or models.list of one model); until the key
// has propagated the API refuses it as API_KEY_INVALID, which we read as
// charged to no project's rate limit, the key naming none yet (not
// documented; Gemini's limits apply per project, not per key:
// ai.google.dev/gemini-api/docs/rate-limits); and a throttled probe (429)
// is only retried. Google gives no figure for how long a new key takes to
// work beyond "a few minutes" (a user of the API Keys API saw about ten:
// googleapis/google-cloud-python#11908), so the leader may probe once a
// second for minutes — and only while other keys of the project wait:
// fewer probes than those keys, each probed alone, would make.
func (st *run) probeAt(pw projectWait, wasLeader bool, made, probed, next time.Time, interval time.Duration) time.Time {
	at := next
	floor, shared := st.probeFloor(), st.sharedFloor()
	switch {
	case pw.leads && !wasLeader:
		at = st.now()
	case pw.leads && pw.waiting > 1 && interval > 0:
		step := interval / time.Duration(pw.waiting)
		gap := max(shared, step)
		at = probed.Add(gap)
		if interval == orDefault(st.ProbeInterval, DefaultProbeInterval) {
			// The first gap of the leader's steady probes: shifted by
			// the project's phase, so that leaders of projects whose
			// keys were made together do not probe in step (see
			// projectPhase).
			at = at.Add(projectPhase(st.slot.Project, gap))
		}
		// Sharded: keys of the run's projects were seen working at
		// pw.fleet, up to shared late; from shared before that age on,
		// this key may work at any probe: back to one per probeFloor.
		if dense := made.Add(pw.fleet - shared); shared > floor && pw.fleet > 0 && at.After(dense) {
			at = later(dense, probed.Add(max(floor, step)))
		}
		at = earlier(next, at)
	case !pw.leads:
		every := max(followerEvery*orDefault(st.ProbeMaxInterval, DefaultProbeMaxInterval), time.Duration(pw.waiting)*shared)
		at = later(next, probed.Add(every))
	}
	if learned := made.Add(pw.delay); pw.delay > 0 && learned.After(probed) {
		at = learned
	} else if seen := made.Add(pw.fleet); pw.leads && pw.delay == 0 && pw.fleet > 0 && seen.After(probed) {
		// Nothing learned in the project yet, but a key of another
		// project of the run worked at pw.fleet: keys of one run, made
		// within seconds of each other, work at about the same age, so
		// the leader probes when its key reaches that age, if its own
		// schedule does not come sooner. Its success tells the project.
		at = earlier(at, seen)
	}
	return at
}

// projectPhase is where in its gap between probes the leader of a
// project's waiting keys probes: a fraction of gap fixed by the project's
// name. In a fleet, the keys of every project are made within a second or
// two, and their leaders would probe in step, each probeFloor: the first
// key seen working anywhere would be seen up to probeFloor late, and
// every project at once. Out of step, one of n projects' leaders probes
// within about probeFloor ÷ n of any moment, and what it sees working
// (propagation.fleet) tells the other projects' leaders when to probe.
func projectPhase(project string, gap time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(project))
	// FNV-1a's last bytes barely reach its high bits ("p0" and "p1"
	// differ by 2^-24 of gap): mixed by splitmix64's finalizer.
	x := h.Sum64()
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	x ^= x >> 31
	return time.Duration(float64(gap) * (float64(x>>11) / (1 << 53)))
}

// probeFloor is the shortest interval between two probes of a key that
// leads its project's wait: the shortest a lone key's backoff ever draws
// (ProbeInterval less its randomization, 1s by default). It scales with
// ProbeInterval, as a time-scaled run sets it.
func (st *run) probeFloor() time.Duration {
	return time.Duration(float64(orDefault(st.ProbeInterval, DefaultProbeInterval)) * (1 - backoff.DefaultRandomizationFactor))
}

// sharedFloor is probeFloor times the processes probing the same
// projects (Rotator.Shards): each leads its own probes of a project, so
// that n of them, each probing once per sharedFloor, probe a project about
// once per probeFloor in all, as one process does.
func (st *run) sharedFloor() time.Duration {
	return st.probeFloor() * time.Duration(max(1, st.Shards))
}

// followerEvery is how many of the longest backoff intervals a key waits
// between probes while another key of its project leads: at most one
// probe a minute by default.
const followerEvery = 6

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// removeNew deletes the new key after a failed verification, clears the
// lock and reports ErrVerifyFailed.
func (st *run) removeNew(ctx context.Context, cause error) error {
	failed := fmt.Errorf("%w: key %s: %w", ErrVerifyFailed, st.newKey.Name, cause)
	st.event(st.slot.Name, StepVerify, "new key failed live verification; deleting it")
	if err := st.lease.update(ctx, func(r *Record) { r.Phase = PhaseFailed; r.NewKey = st.newKey.Name }); err != nil {
		return fmt.Errorf("%w; record the failure: %w", failed, err)
	}
	if err := st.ka.Delete(ctx, st.newKey.Name, ""); err != nil && !errors.Is(err, ErrKeyNotFound) {
		return fmt.Errorf("%w; delete the new key: %w", failed, err)
	}
	if err := st.lease.clear(ctx, nil); err != nil {
		return fmt.Errorf("%w; clear the lock: %w", failed, err)
	}
	st.undone = true
	hint := "the old key still works and nothing was changed; " + hintFor(cause)
	var lk interface{ Leaked() bool }
	if errors.As(cause, &lk) && lk.Leaked() {
		// Before any target held it: something exposes keys as they are
		// made (a log of the create response, a CI output), or the report
		// is false; another new key would likely meet the same fate.
		hint = "Google reported the new key as leaked before anything used it; it was deleted and the old key still works: nothing was changed. " +
			"Find what exposes new keys (logs of the create response, CI output, a tool that copies keys) before rotating again"
	}
	return errhint.Replace(failed, hint)
}

func hintFor(err error) string {
	if h := errhint.Of(err); h != "" {
		return h
	}
	return "check the key's restrictions and project, then run again"
}

// distribute writes the new key to the secret, then to every target.
func (st *run) distribute(ctx context.Context) error {
	if st.pre.latest.Key.Equal(st.newStr) {
		st.version = st.pre.latest.Name
	} else {
		if st.fromVersion == "" && st.pre.latest.Name != "" {
			st.fromVersion = st.pre.latest.Name // an abort: the version holding the key it retires
		}
		v, err := st.sa.Add(ctx, st.slot.Secret, st.newStr)
		if err != nil {
			return err
		}
		st.version = v
		st.event(st.slot.Name, StepDistribute, "added secret version %s", v)
	}
	for i, t := range st.slot.Targets {
		held := st.pre.targets[i]
		if r, ok := t.(Reloader); !st.pre.unreadable[i] && held.Equal(st.newStr) && !(ok && r.Reloads()) {
			st.res.Targets = append(st.res.Targets, TargetResult{Target: t.String(), Action: "already current", Fingerprint: held.Fingerprint()})
			continue
		}
		err := t.Write(ctx, st.newStr)
		if errors.Is(err, ErrTargetChanged) {
			// Another target of this slot may share the file and have
			// written it: if the value itself is as preflight saw it,
			// read again and write on top of that change.
			if again, rerr := t.Read(ctx); rerr == nil && again.Equal(held) {
				err = t.Write(ctx, st.newStr)
			}
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", t, err)
		}
		st.res.Targets = append(st.res.Targets, TargetResult{Target: t.String(), Action: "written", Fingerprint: st.newStr.Fingerprint()})
		st.event(st.slot.Name, StepDistribute, "wrote %s", t)
	}
	return nil
}

// readBack proves that the secret and every target hold the new key.
func (st *run) readBack(ctx context.Context) error {
	want := st.newStr.Fingerprint()
	v, err := st.sa.Access(ctx, st.slot.Secret+"/versions/latest")
	if err != nil {
		return err
	}
	if !v.Key.Equal(st.newStr) {
		return fmt.Errorf("read back %s: latest version %s holds %s, want %s", st.slot.Secret, v.Name, v.Key, want)
	}
	st.version = v.Name
	var done []string
	for _, t := range st.slot.Targets {
		got, err := t.Read(ctx)
		if errors.Is(err, ErrUnreadable) {
			if c, ok := t.(Confirmer); ok {
				if err := c.Confirm(ctx, st.newStr); err != nil {
					return fmt.Errorf("confirm %s: %w", t, err)
				}
				done = append(done, t.String())
				continue
			}
			st.log().Warn("the target cannot be read back; its write is trusted", "slot", st.slot.Name, "target", t.String())
			done = append(done, t.String())
			continue
		}
		if err != nil {
			return fmt.Errorf("read back %s: %w", t, err)
		}
		if !got.Equal(st.newStr) {
			return fmt.Errorf("read back %s: holds %s, want %s", t, got, want)
		}
		done = append(done, t.String())
	}
	st.res.NewVersion = st.version
	st.event(st.slot.Name, StepReadback, "secret and %d target(s) hold %s", len(st.slot.Targets), want)
	return st.lease.update(ctx, func(r *Record) {
		r.Phase, r.NewKey, r.NewFP, r.NewVersion, r.Done = PhaseDistributed, st.newKey.Name, want, st.version, done
		r.OldVersion = st.fromVersion
	})
}

// retire deletes the old key (or marks it for a later finalize), disables
// its secret version once the key is gone, moves the aliases and clears the
// lock. The record write that ends readBack is a compare-and-swap made just
// before, so the lease is known to be ours when the old key goes; a lease
// lost later cancels the run's context through keepAlive.
func (st *run) retire(ctx context.Context) error {
	old := st.from
	var pend *pendingKey
	switch {
	case old == nil && st.kind == KindAbort:
		// The aborted rotation stopped before its new key was created.
		st.res.Retired = RetiredNeverCreated
	case old == nil || old.DeleteTime != "":
		st.res.Retired = "deleted"
	case st.kind == KindRotate && st.mode == RetireQuiet:
		// retireQuiet takes a turn once its gate has ended; the turn is
		// held through the delete, the version disable and the unlock,
		// and given back however retire returns.
		defer st.endTurn()
		var err error
		if pend, err = st.retireQuiet(ctx, old); err != nil {
			return err
		}
	case st.grace > 0 && st.kind == KindRotate && st.mode != RetireNow:
		var err error
		if pend, err = st.keepOld(ctx, old); err != nil {
			return err
		}
	default:
		if err := st.deleteOld(ctx, old); err != nil {
			return err
		}
	}
	// The old version holds a dead key now; never disable the newest.
	oldV := st.fromVersion
	if st.res.Retired == "deleted" && oldV != "" && versionNumber(oldV) != versionNumber(st.version) {
		if err := st.sa.Disable(ctx, oldV); err != nil && !errors.Is(err, ErrSecretNotFound) {
			return err
		}
	}
	if err := st.unlock(ctx, oldV, pend); err != nil {
		return err
	}
	st.res.Rotated = true
	st.event(st.slot.Name, StepDone, "%s", st.doneMessage())
	return nil
}

// keepOld keeps the old key for the grace period: it annotates the key
// with its deletion time (unless an earlier attempt did) and returns the
// entry that indexes it on the secret for a later finalize.
func (st *run) keepOld(ctx context.Context, old *runKey) (*pendingKey, error) {
	// Whole seconds (the annotation's precision), rounded up: never
	// less grace than asked for.
	after := st.now().Add(st.grace + time.Second - 1).Truncate(time.Second)
	if old.Annotations[annDeleteAfter] == "" {
		ann := st.keptAnnotations(old, after)
		if _, err := st.ka.Patch(ctx, &apikeys.V2Key{Name: old.Name, Etag: old.Etag, Annotations: ann}, "annotations"); err != nil {
			return nil, err
		}
	} else if t, err := time.Parse(time.RFC3339, old.Annotations[annDeleteAfter]); err == nil {
		after = t
	}
	st.res.Retired, st.res.DeleteAfter = "kept", &after
	st.eventThen(st.slot.Name, StepRetire, Next{Action: NextFinalize, Slot: st.slot.Name}, "kept old key %s until %s (grace %s, annotated %s)",
		old.Name, after.Format(time.RFC3339), human(st.grace), annDeleteAfter)
	return &pendingKey{Key: old.Name, Fingerprint: st.rec.OldFP, DeleteAfter: after, Version: st.fromVersion}, nil
}

// keptAnnotations are the old key's annotations once kept for finalize
// until after: the slot, the time, its successor and its secret version.
func (st *run) keptAnnotations(old *runKey, after time.Time) map[string]string {
	ann := map[string]string{}
	for k, v := range old.Annotations {
		ann[k] = v
	}
	ann[annSlot] = st.slot.Name
	ann[annDeleteAfter] = after.Format(time.RFC3339)
	ann[annSuperseded] = st.newKey.Name
	if st.fromVersion != "" {
		ann[annVersion] = st.fromVersion
	}
	return ann
}

// deleteOld deletes the old key once no local target holds it, before and
// after the delete (see recheck).
func (st *run) deleteOld(ctx context.Context, old *runKey) error {
	if err := st.recheck(ctx); err != nil {
		return err
	}
	st.deleteSent = true
	if err := st.ka.Delete(ctx, old.Name, old.Etag); err != nil && !errors.Is(err, ErrKeyNotFound) {
		return err
	}
	// Once more after the delete: a writer that ignores keyrotate's
	// lock may have put the key back while the delete was under way.
	// Then the key is undeleted at once, before its deletion reaches
	// the serving path, and the run stops as above.
	if err := st.recheck(ctx); err != nil {
		if _, uerr := st.ka.Undelete(ctx, old.Name); uerr != nil {
			return errhint.With(fmt.Errorf("%w; and undeleting key %s failed: %w", err, old.Name, uerr),
				fmt.Sprintf("undelete key %s now (gcloud services api-keys undelete %s): a target holds it", old.Name, old.Name))
		}
		st.event(st.slot.Name, StepRetire, "undeleted key %s: a target held it again right after its deletion", old.Name)
		return err
	}
	st.res.Retired = "deleted"
	st.event(st.slot.Name, StepRetire, "deleted key %s (soft delete: `undelete` restores it for 30 days)", old.Name)
	return nil
}

// unlock clears the lock and, in the same write, points the version
// aliases current and previous at the new version and at oldV, marks the
// new key current, and indexes pend (the old key kept for its grace).
func (st *run) unlock(ctx context.Context, oldV string, pend *pendingKey) error {
	return st.lease.clear(ctx, func(cur, next *secretmanagerpb.Secret) {
		aliases := map[string]int64{}
		for k, v := range cur.GetVersionAliases() {
			aliases[k] = v
		}
		if n, ok := parseVersion(st.version); ok {
			aliases["current"] = n
		}
		if n, ok := parseVersion(oldV); ok && oldV != st.version {
			aliases["previous"] = n
		}
		next.VersionAliases = aliases
		// The key put in place is current: it waits for no deletion.
		setPending(next, pendingKeys(cur).without(st.newKey.Name).with(pend))
		setCurrent(next, currentKey{Key: st.newKey.Name, Version: st.version, Fingerprint: st.newStr.Fingerprint()})
	}, "version_aliases")
}

// doneMessage says what a finished run put in place of what.
func (st *run) doneMessage() string {
	from := st.res.OldKey.Fingerprint
	switch {
	case st.res.Retired == RetiredNeverCreated:
		return fmt.Sprintf("%s: no new key had been created; %s stays current", doneVerb[st.kind], st.res.NewKey.Fingerprint)
	case from == "":
		from = "key " + keyIDOf(st.res.OldKey.Name) + " (fingerprint unknown)"
	}
	return fmt.Sprintf("%s: %s -> %s", doneVerb[st.kind], from, st.res.NewKey.Fingerprint)
}

// recheck reads every local target (see Local) once more, immediately
// before the key being retired is deleted: something may have put that key
// back since the read-back. A target that holds it again, or that cannot be
// read, keeps the key alive: the run stops (both keys work) and names the
// target. A target that now holds a third key is drift, logged, but does
// not hold the key being deleted.
//
// Files written by other keyrotate runs cannot be the cause: their writes
// merge only their own variable into a file (see package targets).
func (st *run) recheck(ctx context.Context) error {
	// The record holds the fingerprint of the key being retired (the old
	// key of a rotation, the new key of an abort). Unknown: any value but
	// the key put in place counts as holding it.
	fromFP := st.rec.OldFP
	held, err := readLocal(ctx, st.slot.Targets)
	if err != nil {
		return errhint.With(fmt.Errorf("before deleting key %s: %w: %w", st.from.Name, ErrHeldAgain, err),
			"the key was kept because a target could not be read to prove it no longer holds it; fix the target")
	}
	for _, h := range held {
		switch {
		case h.key.Equal(st.newStr):
		case fromFP == "" || h.key.Fingerprint() == fromFP:
			return errhint.With(fmt.Errorf("%s holds key %s (%s) again, after it was written with %s and read back: %w",
				h.target, st.from.Name, h.key.Fingerprint(), st.newStr.Fingerprint(), ErrHeldAgain),
				fmt.Sprintf("something put the old key back into %s after the rotation wrote it "+
					"(a configuration-management run, a sync job, a restored backup?): the key was kept; "+
					"make that source use the new key", h.target))
		default:
			st.log().Warn("a target changed since its read-back: it holds neither key of the rotation",
				"slot", st.slot.Name, "target", h.target.String(), "holds", h.key.Fingerprint(), "want", st.newStr.Fingerprint())
		}
	}
	return nil
}

// heldKey is what one target holds.
type heldKey struct {
	target Target
	key    secret.Key
}

// readLocal reads the local targets among targets (see Local): what they
// hold just before a key is deleted.
func readLocal(ctx context.Context, targets []Target) ([]heldKey, error) {
	var held []heldKey
	for _, t := range targets {
		if l, ok := t.(Local); !ok || !l.Local() {
			continue
		}
		k, err := t.Read(ctx)
		if err != nil {
			return nil, fmt.Errorf("read %s again: %w", t, err)
		}
		held = append(held, heldKey{t, k})
	}
	return held, nil
}

// RetiredNeverCreated is Result.Retired of an abort whose rotation had not
// created its new key: there was nothing to delete.
const RetiredNeverCreated = "never-created"

var doneVerb = map[string]string{KindRotate: "rotated", KindAbort: "aborted", KindRollback: "rolled back"}

// human formats a duration as the config does: "90d", "15m", "1h30m".
func human(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d > 0 && d%day == 0:
		return fmt.Sprintf("%dd", d/day)
	case d > 0 && d%time.Hour == 0:
		return strings.TrimSuffix(d.String(), "0m0s")
	case d > 0 && d%time.Minute == 0:
		return strings.TrimSuffix(d.String(), "0s")
	}
	return d.String()
}

// cleanupContext is the context of what a run does after it stopped
// (releasing its lease, clearing its lock): not ended with ctx, which may
// have ended, but by timeout (zero: DefaultCleanupTimeout) from now and,
// when ctx has a deadline, by timeout past that deadline. A run that sees
// its deadline late (a loaded machine, a slow event sink) still ends its
// cleanup within its share, so that a caller who budgets its whole process
// as the deadline plus the cleanup's share has the rest of its time left
// (cmd/keyrotate's --timeout: the report, then the process's own end).
func cleanupContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	timeout = orDefault(timeout, DefaultCleanupTimeout)
	end := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Add(timeout).Before(end) {
		end = d.Add(timeout)
	}
	return context.WithDeadline(context.WithoutCancel(ctx), end)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
