package rotate

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
)

// recordAnnotation is the secret annotation that holds the rotation record.
// Secret annotations exist "to let client tools store their own state"; keys
// may not contain "/", hence the dotted name.
const recordAnnotation = "keyrotate.rotation"

// Phases of a rotation, in order. The record names the phase the run has
// reached; a resumed run repeats every step idempotently from the start, so
// the phase is for people and for abort, not for skipping work.
const (
	PhaseLocked      = "locked"      // record written; the new key may not exist yet
	PhaseVerifying   = "verifying"   // new key created, probing it
	PhaseDistributed = "distributed" // every target was read back holding the new key; retiring the old one
	PhaseFailed      = "verify-failed"
)

// Record is the rotation record kept in the secret's annotations. It holds
// resource names and fingerprints, never a key string.
type Record struct {
	// Kind is what the record drives: a rotation ("" or "rotate"), an
	// abort of one, or a rollback of a finished one. In each, OldKey is the
	// key being retired and NewKey the key being put in place. A repair
	// (KindRepair) or a finalize (KindFinalize) puts no new key in place.
	Kind       string `json:"kind,omitempty"`
	ID         string `json:"id"`
	Slot       string `json:"slot"`
	Phase      string `json:"phase"`
	OldKey     string `json:"old_key"`
	OldVersion string `json:"old_version,omitempty"`
	OldFP      string `json:"old_fingerprint,omitempty"`
	NewKeyID   string `json:"new_key_id"`
	// CreateOp is the operation of a CreateKey whose answer this run could
	// not follow; the next run polls it instead of creating again.
	CreateOp   string   `json:"create_op,omitempty"`
	NewKey     string   `json:"new_key,omitempty"`
	NewFP      string   `json:"new_fingerprint,omitempty"`
	NewVersion string   `json:"new_version,omitempty"`
	Done       []string `json:"targets_done,omitempty"`
	Grace      string   `json:"grace,omitempty"`
	// Undeleted is set when this run undeleted NewKey (abort, rollback), so
	// that a failed verification deletes it again.
	Undeleted bool `json:"undeleted,omitempty"`
	// Aborted is the rotation record an abort replaced.
	Aborted *Record   `json:"aborted,omitempty"`
	Started time.Time `json:"started"`
	Holder  Holder    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// Holder identifies the run that holds a lease: the host, the process (pid
// and its start time, so a reused pid is not mistaken for the holder) and a
// run id, since one process may run several rotations one after another.
//
// A pid and a start time name a process only within one pid namespace and
// one boot (and a start time is shown shifted inside a time namespace):
// containers or pods with the same hostname, or `unshare --pid`, reuse pids
// of each other. So the holder also records its boot id and the inodes of
// its pid and time namespaces, and another run judges the holder's process
// only when all of them match its own. Records written without them (older
// versions) are live until they expire.
type Holder struct {
	Host      string `json:"host,omitempty"`
	PID       int    `json:"pid,omitempty"`
	ProcStart string `json:"proc_start,omitempty"`
	Run       string `json:"run,omitempty"`
	// BootID is /proc/sys/kernel/random/boot_id.
	BootID string `json:"boot_id,omitempty"`
	// PIDNS and TimeNS are the targets of /proc/self/ns/pid and
	// /proc/self/ns/time, e.g. "pid:[4026531836]"; TimeNS is "" on
	// kernels without time namespaces (before 5.6).
	PIDNS  string `json:"pid_ns,omitempty"`
	TimeNS string `json:"time_ns,omitempty"`
}

// Kinds of record.
const (
	KindRotate   = "rotate"
	KindAbort    = "abort"
	KindRollback = "rollback"
	// KindRepair puts the current key back into drifted targets: no key
	// changes, so a repair record left by a dead run holds nothing to
	// resume or undo.
	KindRepair = "repair"
	// KindFinalize deletes old keys whose grace period ended.
	KindFinalize = "finalize"
)

func (r *Record) kind() string {
	if r.Kind == "" {
		return KindRotate
	}
	return r.Kind
}

// newKeyName is the resource name of the key the record puts in place.
func (r *Record) newKeyName() string {
	if r.NewKey != "" {
		return r.NewKey
	}
	return keyParent(r.OldKey) + "/keys/" + r.NewKeyID
}

func (h Holder) String() string {
	if h.Run == "" {
		return "nobody"
	}
	s := fmt.Sprintf("%s pid %d (run %s)", h.Host, h.PID, h.Run)
	if e := h.Elsewhere(); e != "" {
		s += " " + e
	}
	return s
}

// Elsewhere says why the holder's pid may not name a process as this
// process sees them on a host of the same name ("in another pid
// namespace", ...), or "" when it does or the host differs.
func (h Holder) Elsewhere() string {
	switch {
	case h.Host != self.Host:
	case h.BootID != "" && h.BootID != self.BootID:
		return "on another boot or machine of that name"
	case h.PIDNS != "" && h.PIDNS != self.PIDNS:
		return "in another pid namespace"
	case h.TimeNS != self.TimeNS && h.PIDNS != "":
		return "in another time namespace"
	}
	return ""
}

func parseRecord(sec *secretmanagerpb.Secret) (*Record, error) {
	raw, ok := sec.GetAnnotations()[recordAnnotation]
	if !ok {
		return nil, nil
	}
	var r Record
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, fmt.Errorf("secret %s: annotation %s is not a rotation record: %v", sec.GetName(), recordAnnotation, err)
	}
	return &r, nil
}

// self is this process's identity as a lease holder.
var self = func() Holder {
	host, _ := os.Hostname()
	h := Holder{Host: host, PID: os.Getpid()}
	// /proc may be mounted for another pid namespace than ours (unshare
	// --pid without a new /proc): then its pids are not ours, and neither
	// this process nor any other can be judged by it.
	if me, err := os.Readlink("/proc/self"); err != nil || me != strconv.Itoa(h.PID) {
		return h
	}
	h.ProcStart, _ = procStart(h.PID)
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	h.BootID = strings.TrimSpace(string(boot))
	h.PIDNS, _ = os.Readlink("/proc/self/ns/pid")
	h.TimeNS, _ = os.Readlink("/proc/self/ns/time")
	return h
}()

// errNoStart: /proc/PID/stat was read but holds no start time.
var errNoStart = errors.New("no start time in /proc stat")

// procStart returns a process's start time in clock ticks since boot, from
// /proc/PID/stat. The error wraps fs.ErrNotExist when no such process
// exists (in this process's pid namespace, as mounted on /proc).
func procStart(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	// The command name (field 2) may contain spaces; fields after ")" are fixed.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", errNoStart
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", errNoStart
	}
	return f[19], nil // field 22: starttime
}

// runs lists the run ids this process has used, with how many of its
// leases are in flight under each (one run of the CLI holds the leases of
// all its slots under its one id; 0 once they all ended). Run ids are
// random, so a record naming one of them was written by this very process,
// whatever /proc can tell.
var runs = struct {
	sync.Mutex
	m map[string]int
}{m: map[string]int{}}

// ownRun reports whether run is one of this process's runs and whether it
// is still in flight.
func ownRun(run string) (mine, inFlight bool) {
	runs.Lock()
	defer runs.Unlock()
	n, mine := runs.m[run]
	return mine, n > 0
}

// setRun counts a lease of run in flight (true) or ended (false).
func setRun(run string, inFlight bool) {
	runs.Lock()
	defer runs.Unlock()
	switch {
	case inFlight:
		runs.m[run]++
	case runs.m[run] > 0:
		runs.m[run]--
	default:
		runs.m[run] = 0
	}
}

// NewID returns a fresh run id: UTC time and 8 random base32 characters,
// e.g. 20261130041502-3kq7zx2m. It is valid in an API key id after the
// slot name.
func NewID(now time.Time) string { return newID(now) }

// runID is the id the rotator's new records and leases take: its RunID,
// or a fresh one per record.
func (r *Rotator) runID() string {
	if r.RunID != "" {
		return r.RunID
	}
	return newID(r.now())
}

// takeable reports whether a run may take over a lease held by h that
// expires at exp.
func takeable(h Holder, exp, now time.Time) bool {
	return canTakeOver(h, self, exp, now, ownRun, procStart)
}

// takeableBy is takeable for the run run, which counts itself in flight
// while it acquires: a lease of that same run that is not one of its
// others in flight is a finished one's.
func takeableBy(run string, h Holder, exp, now time.Time) bool {
	own := func(r string) (mine, inFlight bool) {
		runs.Lock()
		defer runs.Unlock()
		n, mine := runs.m[r]
		if r == run {
			n-- // this acquisition
		}
		return mine, n > 0
	}
	return canTakeOver(h, self, exp, now, own, procStart)
}

// canTakeOver decides whether the run me may take over a lease held by h
// that expires at exp: when the lease was released or has expired, or when
// me can be sure that the holder's process is gone. own reports whether a
// run id is this process's and whether that run is still in flight; start
// reads a process's start time as procStart does.
//
// Sure means: same host, same boot, same pid and time namespaces (so that
// h's pid and start time mean the same process to me as to the holder),
// and the pid no longer exists or belongs to a process started at another
// time. A run of this very process is known by its run id (own). Anything
// less — a record without these fields, another namespace, another boot,
// /proc unreadable — leaves the lease live until it expires.
func canTakeOver(h, me Holder, exp, now time.Time, own func(run string) (mine, inFlight bool), start func(pid int) (string, error)) bool {
	if h.Run == "" || !now.Before(exp) {
		return true // released or expired
	}
	if mine, inFlight := own(h.Run); mine {
		return !inFlight // a finished run of this very process
	}
	if h.Host != me.Host || h.BootID == "" || h.BootID != me.BootID || h.PIDNS == "" || h.PIDNS != me.PIDNS || h.TimeNS != me.TimeNS {
		return false // live, and not provably in our view of processes
	}
	if h.PID <= 0 || h.ProcStart == "" || me.ProcStart == "" {
		return false
	}
	if h.PID == me.PID && h.ProcStart == me.ProcStart {
		return true // this very process, and no run of it in flight under that id
	}
	st, err := start(h.PID)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true // the holder process is gone
	case err != nil:
		return false // cannot tell
	}
	return st != h.ProcStart // the pid now belongs to another process
}

func newID(now time.Time) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return now.UTC().Format("20060102150405") + "-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// lease is a held rotation record. Every write of the record goes through it,
// as a compare-and-swap on the secret's etag; it renews itself in the
// background until released.
type lease struct {
	api  *gcp.Secrets
	ttl  time.Duration
	now  func() time.Time
	lost context.CancelCauseFunc

	mu  sync.Mutex
	sec secretView // as last written by us
	rec Record

	renewal *renewal // keepAlive's; nil when not renewing
	ended   bool     // stopRenewal ran
}

// renewal is a lease's timer of renewals. It holds no goroutine between
// renewals (a fleet holds thousands of leases at once, each mostly idle):
// the timer's function renews and sets the timer again.
type renewal struct {
	mu      sync.Mutex // held while a renewal runs
	timer   *time.Timer
	stopped bool
}

// HeldError is the error of a run that found its slot held by another live
// run: Record is that run's rotation record, naming its holder (host, pid,
// process start, run id), its start and its lease's expiry. It matches
// ErrRotationInProgress.
type HeldError struct {
	Record Record
}

func (e *HeldError) Error() string {
	r := &e.Record
	return fmt.Sprintf("slot %s: %s: %s %s (phase %s) is held by %s until %s",
		r.Slot, ErrRotationInProgress, r.kind(), r.ID, r.Phase, r.Holder, r.Expires.Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrRotationInProgress) hold.
func (e *HeldError) Is(target error) bool { return target == ErrRotationInProgress }

// Hint says what a user can do without naming a command: the holder
// renews its lease while it runs and releases it when it stops.
func (e *HeldError) Hint() string {
	return "wait for it to finish; a holder that stops releases the slot, and one that dies leaves it to be taken over when its lease expires"
}

// Kind is what the holding run does: rotate, abort, rollback, repair or
// finalize.
func (e *HeldError) Kind() string { return e.Record.kind() }

// errChangedWhileLocking: the secret changed between the preflight and the
// lock write, and nobody holds it now; the run must start over.
var errChangedWhileLocking = fmt.Errorf("%w: the secret changed while this run was locking it", ErrRotationInProgress)

// errLeaseLost: another run took the lease over; this run must stop.
var errLeaseLost = fmt.Errorf("%w: the lease was taken over by another run", ErrRotationInProgress)

// acquire takes the slot's lease. next decides, from the record found on
// the secret (nil when none), which record to hold and whether that resumes
// an earlier run; it is only asked about records that no live run holds.
func acquire(ctx context.Context, api *gcp.Secrets, sec *secretmanagerpb.Secret, next func(old *Record) (Record, bool, error),
	ttl time.Duration, now func() time.Time, run string) (*lease, bool, error) {
	if run == "" {
		run = newID(now())
	}
	// The run is active from before its lock write lands: another run of
	// this process that reads the record in between must not take it for a
	// finished run's.
	setRun(run, true)
	held := false
	defer func() {
		if !held {
			setRun(run, false)
		}
	}()
	var wrote *lease // our last lock write
	for attempt := 0; ; attempt++ {
		old, err := parseRecord(sec)
		if err != nil {
			return nil, false, err
		}
		if wrote != nil && old != nil && old.Holder.Run == run && old.ID == wrote.rec.ID && old.Expires.Equal(wrote.rec.Expires) {
			// Our own lock write landed though its answer was lost. (The
			// run id alone does not tell: the leases of one run's slots
			// share it.)
			held = true
			wrote.sec = leaseView(sec)
			wrote.rec = *old
			return wrote, old.kind() == KindRotate && old.Phase != PhaseLocked, nil
		}
		if old != nil && !takeableBy(run, old.Holder, old.Expires, now()) {
			return nil, false, heldError(old)
		}
		if attempt > 0 {
			// The secret changed since the preflight read it and nobody
			// holds it now: another run may have finished or released a
			// rotation in between, so the current key, versions and
			// targets the preflight saw may be stale. Going on would
			// rotate from a stale view (a second new key); start over.
			return nil, false, errhint.With(
				fmt.Errorf("slot %s: %w", sec.GetName(), errChangedWhileLocking),
				"another run probably changed the slot at the same moment; run again")
		}
		if old != nil && old.kind() == KindRepair {
			old = nil // a repair that ended without clearing its record
		}
		l, resumed, err := newLease(api, sec, next, old, ttl, now, run)
		if err != nil {
			return nil, false, err
		}
		wrote = l
		err = l.write(ctx)
		if isCode(err, codes.FailedPrecondition) || isCode(err, codes.Aborted) {
			// Someone wrote the secret since we read it: look again.
			if sec, err = api.Get(ctx, sec.GetName()); err != nil {
				return nil, false, err
			}
			continue
		}
		if err != nil {
			return nil, false, err
		}
		held = true
		return l, resumed, nil
	}
}

// newLease is the lease acquire writes: the record next makes of old,
// held by run until ttl from now. Not inlined, as heldError: a record is a
// few hundred bytes, and acquire's frame stays on the stack under the lock
// write (see Rotator.rotate).
//
//go:noinline
func newLease(api *gcp.Secrets, sec *secretmanagerpb.Secret, next func(old *Record) (Record, bool, error), old *Record,
	ttl time.Duration, now func() time.Time, run string) (*lease, bool, error) {
	l := &lease{api: api, ttl: ttl, now: now, sec: leaseView(sec)}
	var (
		resumed bool
		err     error
	)
	if l.rec, resumed, err = next(old); err != nil {
		return nil, false, err
	}
	l.rec.Holder = self
	l.rec.Holder.Run = run
	l.rec.Expires = now().Add(ttl)
	return l, resumed, nil
}

//go:noinline
func heldError(rec *Record) error { return &HeldError{Record: *rec} }

// secretView is what a lease keeps of its secret between writes: the name
// and etag (the compare-and-swap), the annotations but the record (write
// and clear rebuild it from l.rec) and the version aliases (clear's set
// reads them). The whole secret, kept for the whole rotation, held the
// record's JSON twice over and its replication and times besides; a
// secretmanagerpb.Secret of these four fields alone was 208 bytes
// (TestFleetHeapPerRotation).
type secretView struct {
	name, etag  string
	aliases     map[string]int64
	annotations map[string]string
}

func leaseView(sec *secretmanagerpb.Secret) secretView {
	v := secretView{name: sec.GetName(), etag: sec.GetEtag(), aliases: sec.GetVersionAliases()}
	for k, val := range sec.GetAnnotations() {
		if k == recordAnnotation {
			continue
		}
		if v.annotations == nil {
			v.annotations = map[string]string{}
		}
		v.annotations[k] = val
	}
	return v
}

// secret returns the view as a Secret, for clear's set.
func (v secretView) secret() *secretmanagerpb.Secret {
	return &secretmanagerpb.Secret{Name: v.name, Etag: v.etag, VersionAliases: v.aliases, Annotations: v.annotations}
}

// write stores l.rec with a compare-and-swap. Call with l.mu held or before
// the lease is shared.
func (l *lease) write(ctx context.Context) error {
	b, err := json.Marshal(l.rec)
	if err != nil {
		return err
	}
	ann := map[string]string{}
	for k, v := range l.sec.annotations {
		ann[k] = v
	}
	ann[recordAnnotation] = string(b)
	out, err := l.api.Update(ctx, &secretmanagerpb.Secret{Name: l.sec.name, Etag: l.sec.etag, Annotations: ann}, "annotations")
	if err != nil {
		return err
	}
	l.sec = leaseView(out)
	return nil
}

// update changes the record with f and writes it (see put). The record's
// expiry stays the one the secret is known to hold when the write fails:
// clear judges by it whether its lease was still live.
func (l *lease) update(ctx context.Context, f func(*Record)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.rec)
	held := l.rec.Expires
	l.rec.Expires = l.now().Add(l.ttl)
	err := l.put(ctx, l.rec.ID, l.rec.Holder.Run)
	if err != nil {
		l.rec.Expires = held
	}
	return err
}

// casRefused reports whether a write failed its compare-and-swap on the
// secret's etag: somebody wrote the secret since the lease last read it —
// perhaps this lease itself, in a write that landed though its answer was
// lost (a per-call timeout, a reset connection), which gcp.Secrets.Update
// then retried with the old etag.
func casRefused(err error) bool {
	return isCode(err, codes.FailedPrecondition) || isCode(err, codes.Aborted)
}

// put writes l.rec in place of the record that id and run held. When the
// compare-and-swap is refused it reads the secret again: a record that is
// byte for byte the one it sent is its own write, landed though its answer
// was lost (the record names the rotation, the holder and an expiry to the
// nanosecond: no other run writes those bytes); the record of id and run
// still there means an unrelated change (a label): write again on top of
// it; anything else means the lease was lost. Call with l.mu held.
func (l *lease) put(ctx context.Context, id, run string) error {
	for attempt := 0; ; attempt++ {
		err := l.write(ctx)
		if !casRefused(err) || attempt >= 3 {
			return err
		}
		sec, err := l.api.Get(ctx, l.sec.name)
		if err != nil {
			return err
		}
		if l.landed(sec) {
			l.sec = leaseView(sec)
			return nil
		}
		if err := l.own(sec, id, run); err != nil {
			return err
		}
	}
}

// landed reports whether sec holds l.rec exactly as write sends it.
func (l *lease) landed(sec *secretmanagerpb.Secret) bool {
	raw, ok := sec.GetAnnotations()[recordAnnotation]
	if !ok {
		return false
	}
	b, err := json.Marshal(l.rec)
	return err == nil && raw == string(b)
}

// own checks that sec's record is still the one of id held by run, and
// takes sec as the base of the next write; otherwise the lease was lost.
func (l *lease) own(sec *secretmanagerpb.Secret, id, run string) error {
	cur, err := parseRecord(sec)
	if err != nil {
		return err
	}
	if cur == nil || cur.ID != id || cur.Holder.Run != run {
		if l.lost != nil {
			l.lost(errLeaseLost)
		}
		return errLeaseLost
	}
	l.sec = leaseView(sec)
	return nil
}

// note changes the held record in memory only; the next write (renewal,
// progress, release) stores it.
func (l *lease) note(f func(*Record)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.rec)
}

// record returns a copy of the held record.
func (l *lease) record() Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec
}

// keepAlive renews the lease every third of its TTL until stopped, and
// cancels the run (through lost) when the lease is lost.
func (l *lease) keepAlive(ctx context.Context, lost context.CancelCauseFunc) {
	l.lost = lost
	r := &renewal{}
	every := l.ttl / 3
	renew := func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.stopped || ctx.Err() != nil {
			return
		}
		next := time.Now().Add(every)
		if err := l.update(ctx, func(*Record) {}); err != nil && err == errLeaseLost {
			return
		}
		r.timer.Reset(max(0, time.Until(next)))
	}
	r.mu.Lock()
	r.timer = time.AfterFunc(every, renew)
	r.mu.Unlock()
	l.renewal = r
}

func (l *lease) stopRenewal() {
	if r := l.renewal; r != nil {
		r.mu.Lock() // after a renewal in progress
		r.stopped = true
		r.timer.Stop()
		r.mu.Unlock()
		l.renewal = nil
	}
	if !l.ended { // once: the run counts its leases in flight
		l.ended = true
		setRun(l.rec.Holder.Run, false)
	}
}

// release keeps the record (so the next run resumes) but gives up the lease.
func (l *lease) release(ctx context.Context) error {
	l.stopRenewal()
	l.mu.Lock()
	defer l.mu.Unlock()
	id, run := l.rec.ID, l.rec.Holder.Run
	l.rec.Holder = Holder{}
	l.rec.Expires = l.now()
	return l.put(ctx, id, run)
}

// clear removes the record, and sets extra secret fields in the same write
// (for example the version aliases): set gets the secret as it stands and
// the one to write; mask names the extra fields.
func (l *lease) clear(ctx context.Context, set func(cur, next *secretmanagerpb.Secret), mask ...string) error {
	l.stopRenewal()
	l.mu.Lock()
	defer l.mu.Unlock()
	for attempt := 0; ; attempt++ {
		ann := map[string]string{}
		for k, v := range l.sec.annotations {
			if k != recordAnnotation {
				ann[k] = v
			}
		}
		next := &secretmanagerpb.Secret{Name: l.sec.name, Etag: l.sec.etag, Annotations: ann}
		if set != nil {
			set(l.sec.secret(), next)
		}
		out, err := l.api.Update(ctx, next, append([]string{"annotations"}, mask...)...)
		if err == nil {
			l.sec = leaseView(out)
			return nil
		}
		if !casRefused(err) || attempt >= 3 {
			return err
		}
		sec, err := l.api.Get(ctx, l.sec.name)
		if err != nil {
			return err
		}
		if l.cleared(sec, next, mask) {
			l.sec = leaseView(sec)
			return nil
		}
		if err := l.own(sec, l.rec.ID, l.rec.Holder.Run); err != nil {
			return err
		}
	}
}

// cleared reports whether sec, read after clear's write of sent was
// refused, is that write landed though its answer was lost. With the
// record gone, nothing on the secret names who removed it, so it takes
// all of these: no record; every field the write set (mask) as it sent
// it; and this lease still live after the read, by its last expiry known
// to be on the secret. A live lease is taken over by no other run
// (canTakeOver: this process is alive), so nobody else can have cleared
// the record; a run that took over an expired one may have finished and
// cleared it, even to the same fields, and then the lease was lost.
func (l *lease) cleared(sec, sent *secretmanagerpb.Secret, mask []string) bool {
	if _, ok := sec.GetAnnotations()[recordAnnotation]; ok {
		return false
	}
	if !maps.Equal(sec.GetAnnotations(), sent.GetAnnotations()) {
		return false
	}
	for _, p := range mask {
		switch p {
		case "version_aliases":
			if !maps.Equal(sec.GetVersionAliases(), sent.GetVersionAliases()) {
				return false
			}
		default:
			return false // a field this cannot compare proves nothing
		}
	}
	return l.now().Before(l.rec.Expires)
}

// restore puts rec back as the slot's record, released, and stops renewal:
// an abort that could not proceed leaves the rotation it meant to undo.
func (l *lease) restore(ctx context.Context, rec Record) error {
	l.stopRenewal()
	l.mu.Lock()
	defer l.mu.Unlock()
	id, run := l.rec.ID, l.rec.Holder.Run
	rec.Holder = Holder{}
	rec.Expires = l.now()
	l.rec = rec
	return l.put(ctx, id, run)
}
