package rotate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/gcp"
)

// The drain gate (Slot.Retire == RetireQuiet): after the read-back, the old
// key is deleted only once Cloud Monitoring shows it had no successful
// request for the quiet period, in data that has settled. A consumer nobody
// configured still calling with the old key keeps it alive: at the drain
// timeout it is kept for finalize, and the rotation reports who calls.
//
// Monitoring reports a call up to Rotator.UsageDelay late, so what it shows
// at time T is complete only up to T-UsageDelay. The gate started at S
// passes at T when T-UsageDelay >= S (everything up to the gate's start has
// settled, so a call made just before it and reported late is seen) and no
// successful point is visible in (T-UsageDelay-QuietPeriod, T]: the quiet
// window's settled data, and any newer point that happens to be visible
// already. Points are counted per minute; a point covers (End-1m, End], so
// a point whose End is past the window's start blocks even when its calls
// may have been made just before it (the stricter reading). Calls that
// failed (not 2xx) do not block: a key used only by failing calls breaks
// nobody; they are reported.

// DefaultDrainPoll is how often the gate reads Cloud Monitoring
// (Rotator.DrainPoll): its points are per minute.
const DefaultDrainPoll = time.Minute

// drainHistory is how much traffic the gate reports for a key kept in
// use: the last hour, per minute.
const drainHistory = time.Hour

// Annotations on an old key kept because it was still in use, or because
// its use could not be known (usage: required).
const (
	// annKeptInUse holds why: finalize deletes such a key only once the
	// settled-window rule holds from its keyrotate.delete-after time.
	annKeptInUse = "keyrotate.kept-in-use"
)

// Drain outcomes (Drain.Outcome).
const (
	DrainQuiet   = "quiet"         // no successful request in the settled quiet period: deleted
	DrainInUse   = "in-use"        // still called at the drain timeout: kept
	DrainUnknown = "usage-unknown" // Cloud Monitoring did not answer (Drain.Policy says what followed)
)

// Drain is what the drain gate saw of the old key.
type Drain struct {
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason,omitempty"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
	// SettledTo is how far Cloud Monitoring's data was complete at the
	// last poll (its time minus the usage delay).
	SettledTo time.Time `json:"settled_to,omitzero"`
	// LastOK is the end of the latest minute with a successful request
	// seen; zero without one.
	LastOK time.Time `json:"last_ok,omitzero"`
	Polls  int       `json:"polls"`
	// Policy is the usage policy applied when Monitoring did not answer.
	Policy UsagePolicy `json:"policy,omitempty"`
	// Usage is the key's traffic over the last hour by service and
	// method, the busiest first.
	Usage []MethodRate `json:"usage,omitempty"`
	// Attention is set when the old key was kept because it was in use or
	// its use unknown: the run rotated, but someone must act.
	Attention bool `json:"needs_attention,omitempty"`
}

// NeedsAttention reports whether the rotation succeeded but kept its old
// key because the drain gate found it in use (or its use unknown under
// UsagePolicy required): someone must move its caller to the new key.
func (r *Result) NeedsAttention() bool { return r != nil && r.Drain != nil && r.Drain.Attention }

// MethodRate is a key's calls to one method over the last hour.
type MethodRate struct {
	Service  string   `json:"service"`
	Method   string   `json:"method"`
	LastHour Requests `json:"last_hour"`
	// From and To bound the minutes with calls in the hour: From is the
	// start of the earliest, To the end of the latest.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// LastOK is the end of the latest minute with a successful call.
	LastOK time.Time `json:"last_ok,omitzero"`
}

// PerMinute is the mean number of successful and of failed calls per
// minute from From to To: how often the caller calls while it does.
func (m MethodRate) PerMinute() (ok, failed float64) {
	mins := max(m.To.Sub(m.From).Minutes(), 1)
	return float64(m.LastHour.OK) / mins, float64(m.LastHour.Error) / mins
}

// DrainWait describes one poll of the drain gate (Event.Drain).
type DrainWait struct {
	Key       string    // resource name of the old key
	Started   time.Time // when the gate started
	Deadline  time.Time // the drain timeout
	SettledTo time.Time
	LastOK    time.Time // zero: no successful call seen
	// QuietAt is the earliest time the gate could pass if no successful
	// call follows.
	QuietAt time.Time
	Usage   []MethodRate
}

// gateVerdict is what the settled-window rule says at one time.
type gateVerdict struct {
	Pass      bool
	Settled   bool      // T-delay >= the gate's start
	SettledTo time.Time // T-delay
	LastOK    time.Time // end of the latest successful point, zero if none
	// QuietAt is the earliest time the rule can pass if no newer
	// successful point appears.
	QuietAt time.Time
}

// settledQuiet applies the settled-window rule: the gate that started at
// start passes at now iff now-delay >= start and no successful point of
// the key (points: its request counts, any class) ends after
// now-delay-quiet. See the file comment.
func settledQuiet(start, now time.Time, delay, quiet time.Duration, points []gcp.RequestCount) gateVerdict {
	v := gateVerdict{SettledTo: now.Add(-delay)}
	v.Settled = !v.SettledTo.Before(start)
	for _, p := range points {
		if p.CodeClass == "2xx" && p.Count > 0 && p.End.After(v.LastOK) {
			v.LastOK = p.End
		}
	}
	v.QuietAt = start.Add(delay)
	if q := v.LastOK.Add(delay + quiet); !v.LastOK.IsZero() && q.After(v.QuietAt) {
		v.QuietAt = q
	}
	v.Pass = v.Settled && !v.LastOK.After(v.SettledTo.Add(-quiet))
	return v
}

// methodRates sums a key's points over the hour before now by service and
// method, the busiest first.
func methodRates(points []gcp.RequestCount, now time.Time) []MethodRate {
	by := map[[2]string]*MethodRate{}
	for _, p := range points {
		if !p.End.After(now.Add(-drainHistory)) {
			continue
		}
		k := [2]string{p.Service, p.Method}
		m := by[k]
		if m == nil {
			m = &MethodRate{Service: p.Service, Method: p.Method}
			by[k] = m
		}
		m.LastHour.add(p.CodeClass, p.Count)
		if from := p.End.Add(-time.Minute); m.From.IsZero() || from.Before(m.From) {
			m.From = from
		}
		if p.End.After(m.To) {
			m.To = p.End
		}
		if p.CodeClass == "2xx" && p.End.After(m.LastOK) {
			m.LastOK = p.End
		}
	}
	out := make([]MethodRate, 0, len(by))
	for _, m := range by {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.LastHour.Total() != b.LastHour.Total() {
			return a.LastHour.Total() > b.LastHour.Total()
		}
		return a.Service+" "+a.Method < b.Service+" "+b.Method
	})
	return out
}

// failingOnly returns the rates with failed calls.
func failingOnly(rates []MethodRate) []MethodRate {
	var out []MethodRate
	for _, m := range rates {
		if m.LastHour.Error > 0 {
			out = append(out, m)
		}
	}
	return out
}

// ratesText words rates for people: "generativelanguage.googleapis.com
// GenerateContent: 26 ok, 1 failed in the last hour (1.0/min ok from
// 10:00 to 10:26)".
func ratesText(rates []MethodRate) string {
	var parts []string
	for _, m := range rates {
		ok, failed := m.PerMinute()
		s := fmt.Sprintf("%s %s: %d ok", m.Service, shortMethod(m.Method), m.LastHour.OK)
		if m.LastHour.Error > 0 {
			s += fmt.Sprintf(", %d failed", m.LastHour.Error)
		}
		s += fmt.Sprintf(" in the last hour (%.1f/min ok", ok)
		if m.LastHour.Error > 0 {
			s += fmt.Sprintf(", %.1f/min failed", failed)
		}
		s += fmt.Sprintf(", %s to %s)", m.From.Format("15:04Z"), m.To.Format("15:04Z"))
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "no calls in the last hour"
	}
	return strings.Join(parts, "; ")
}

// shortMethod is the last element of a full RPC name.
func shortMethod(m string) string {
	if i := strings.LastIndexByte(m, '.'); i >= 0 {
		return m[i+1:]
	}
	return m
}

// drainRead is one ListTimeSeries of a project at minute resolution,
// shared by the gates of its slots (drainPoller). It does not change once
// made.
type drainRead struct {
	asOf   time.Time
	window time.Duration
	counts []gcp.RequestCount
	err    error
}

// drainPoller schedules the reads of each project, so that the slots of a
// project whose gates wait at the same time share them.
type drainPoller struct {
	mu sync.Mutex
	by map[string]*drainProject
}

// drainProject is one project's latest read and the gates waiting for a
// read. mu is held while a read is made: a gate that wakes meanwhile
// waits for it, and then uses it.
type drainProject struct {
	mu      sync.Mutex
	latest  *drainRead
	waiting []*drainWant
}

// drainWant is what a gate waits for: a read made at or after from,
// reaching back window. It is due at due (from <= due: the earliest time
// a read could change what the gate sees, see drainOld) and would rather
// not wait past by.
type drainWant struct {
	from, due, by time.Time
	window        time.Duration
}

// project returns project's schedule.
func (dp *drainPoller) project(project string) *drainProject {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	return entry(&dp.by, project)
}

// serves reports whether the latest read will do for w.
func (p *drainProject) serves(w *drainWant) bool {
	return p.latest != nil && !p.latest.asOf.Before(w.from) && p.latest.window >= w.window
}

// next returns when the project's next read is to be made, and how far
// back it reaches: the earliest by of the gates the latest read does not
// serve bounds it, and within that it waits for the latest due time, so
// that gates due within a poll interval of each other cost one read, and
// none waits past its by. The read reaches back as far as any waiting gate
// wants.
func (p *drainProject) next() (at time.Time, window time.Duration) {
	var by time.Time
	for _, w := range p.waiting {
		window = max(window, w.window)
		if !p.serves(w) && (by.IsZero() || w.by.Before(by)) {
			by = w.by
		}
	}
	for _, w := range p.waiting {
		if !p.serves(w) && !w.due.After(by) && w.due.After(at) {
			at = w.due
		}
	}
	return at, window
}

// awaitRead returns a read of project that serves want: the latest read,
// when it was made at or after want.from and reaches back far enough;
// else the project's next read (drainProject.next), made by whichever of
// its waiting gates wakes for it first, the others sleeping
// (Rotator.Sleep) until then. A gate sleeps until the time planned when
// it went to sleep, which is within its by: a gate that joins later either
// moves the plan later (still within every waiting gate's by), or makes a
// read itself sooner, which serves those it covers when they wake, by
// their by still. So no gate needs waking early.
func (r *Rotator) awaitRead(ctx context.Context, project string, want *drainWant) (*drainRead, error) {
	if r.Monitoring == nil {
		return nil, errNoMonitoring
	}
	p := r.drain.project(project)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiting = append(p.waiting, want)
	defer func() { p.waiting = slices.DeleteFunc(p.waiting, func(w *drainWant) bool { return w == want }) }()
	for !p.serves(want) {
		at, window := p.next()
		if now := r.now(); !now.Before(at) {
			read, err := r.readDrain(ctx, project, now, window)
			if err != nil {
				return nil, err
			}
			p.latest = read
			continue
		}
		p.mu.Unlock()
		err := r.sleepUntil(ctx, at)
		p.mu.Lock()
		if err != nil {
			return nil, err
		}
	}
	return p.latest, nil
}

// readDrain reads project's request counts per minute over window before
// now. A read that fails is returned as such (drainRead.err), to be shared
// as a successful one is; only a run that stopped returns an error.
func (r *Rotator) readDrain(ctx context.Context, project string, now time.Time, window time.Duration) (*drainRead, error) {
	retry := r.Retry
	if retry.Log == nil {
		retry.Log = r.log()
	}
	u := &gcp.Usage{Client: r.Monitoring, Retry: retry}
	counts, err := u.RequestCounts(gcp.WithProject(ctx, project), project, now, window, time.Minute)
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	return &drainRead{asOf: now, window: window, counts: counts, err: err}, nil
}

// errNoMonitoring is the gate's answer without a Monitoring client.
var errNoMonitoring = errors.New("no Cloud Monitoring client: the old key's use cannot be known")

// drainWindow is how far back a gate's read must reach: the quiet period
// before the settled time, and the hour its report shows, in whole
// minutes.
func drainWindow(delay, quiet time.Duration) time.Duration {
	w := delay + max(quiet, drainHistory) + time.Minute
	return w.Truncate(time.Minute)
}

// keyPoints returns the counts of the key with uid.
func keyPoints(counts []gcp.RequestCount, uid string) []gcp.RequestCount {
	cred := "apikey:" + uid
	var out []gcp.RequestCount
	for _, c := range counts {
		if c.CredentialID == cred {
			out = append(out, c)
		}
	}
	return out
}

// sleepUntil waits until the Rotator's clock reads until (Sleep), or
// until ctx ends.
func (r *Rotator) sleepUntil(ctx context.Context, until time.Time) error {
	if r.Sleep != nil {
		return r.Sleep(ctx, until)
	}
	d := until.Sub(r.now())
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// drainOld runs the drain gate for the old key: it reads Cloud Monitoring,
// sharing its project's reads (awaitRead), until the settled-window rule
// passes, the drain timeout comes, or Monitoring cannot answer. After each
// read the gate is due again at the earliest of the time the rule could
// pass it (gateVerdict.QuietAt), a poll interval after the read (to see
// new traffic, and show it), and its deadline; its project's next read
// comes at that time, or up to a poll interval later when other gates of
// the project are due by then (one read for them all, at the latest of
// their due times).
func (st *run) drainOld(ctx context.Context, uid string) (*Drain, error) {
	// The frames under the gate's sleep stay small (the gate's state is
	// on the heap, its evaluation in gateSaw), so that a gate parked for
	// the usage delay holds an 8 KiB stack, not 16
	// (TestFleetStackPerParkedGate).
	g := st.startGate(uid)
	for {
		read, err := st.awaitRead(ctx, st.slot.Project, &g.want)
		if err != nil && !errors.Is(err, errNoMonitoring) {
			return nil, st.drainStopped(err)
		}
		if st.gateSaw(g, read, err) {
			return g.d, nil
		}
	}
}

// drainGate is one gate's state from read to read.
type drainGate struct {
	d        *Drain
	uid      string
	deadline time.Time
	window   time.Duration
	poll     time.Duration
	// want is the read the gate waits for next.
	want drainWant
}

// startGate starts the gate of the old key with uid now.
func (st *run) startGate(uid string) *drainGate {
	start := st.now()
	g := &drainGate{d: &Drain{Started: start}, uid: uid, deadline: start.Add(st.slot.DrainTimeout),
		window: drainWindow(st.UsageDelay, st.slot.QuietPeriod), poll: orDefault(st.DrainPoll, DefaultDrainPoll)}
	// The first read is at once, or the project's latest read when
	// another gate of the project made it within the last poll interval:
	// gates that start within an interval share it as they share the later
	// reads. A read from before the gate started cannot pass it
	// (settledQuiet wants its time minus the usage delay at or after the
	// start), nor end it (the deadline is after it); neither can a read at
	// the start unless the usage delay is 0, when each gate reads at its
	// start (and a quiet key passes there). The first read shows the old
	// key's traffic at once, and finds at once that Monitoring cannot
	// answer. Waiting until start+UsageDelay, when a read could first pass
	// the gate, would save a fleet at most a read or two a project and
	// would leave a terminal blank, and a denied permission unknown, for
	// the usage delay (30m by default). A gate with no drain timeout
	// checks once, at its start.
	g.want = drainWant{from: start, due: start, by: start, window: g.window}
	if st.UsageDelay > 0 && st.slot.DrainTimeout > 0 {
		g.want.from = start.Add(time.Nanosecond - g.poll)
	}
	return g
}

// drainStopped is the error of a gate whose run stopped.
func (st *run) drainStopped(err error) error {
	return fmt.Errorf("drain old key %s: %w", st.from.Name, err)
}

// gateSaw applies the settled-window rule to read (or its failure, err)
// and reports whether the gate has ended (g.d says how); if not, g.want is
// the read it waits for next.
func (st *run) gateSaw(g *drainGate, read *drainRead, err error) bool {
	d := g.d
	if err == nil {
		err = read.err
	}
	d.Polls++
	if err != nil {
		d.Ended, d.Outcome, d.Reason = st.now(), DrainUnknown, usageReason(err)
		st.log().Warn("Cloud Monitoring cannot tell whether the old key is still in use", "slot", st.slot.Name, "key", st.from.Name, "error", err)
		return true
	}
	pts := keyPoints(read.counts, g.uid)
	v := settledQuiet(d.Started, read.asOf, st.UsageDelay, st.slot.QuietPeriod, pts)
	d.SettledTo, d.LastOK, d.Usage = v.SettledTo, v.LastOK, methodRates(pts, read.asOf)
	if v.Pass {
		d.Ended, d.Outcome = read.asOf, DrainQuiet
		return true
	}
	if !read.asOf.Before(g.deadline) {
		d.Ended, d.Outcome = read.asOf, DrainInUse
		switch {
		case !v.LastOK.IsZero():
			d.Reason = fmt.Sprintf("still in use at the drain timeout (%s): last successful call in the minute to %s", human(st.slot.DrainTimeout), v.LastOK.Format(time.RFC3339))
		default:
			d.Reason = fmt.Sprintf("not yet known to be quiet at the drain timeout (%s): Cloud Monitoring's data had settled only to %s (usage delay %s)",
				human(st.slot.DrainTimeout), v.SettledTo.Format(time.RFC3339), human(st.UsageDelay))
		}
		return true
	}
	st.drainEvent(d, v, g.deadline)
	// v.QuietAt, and the deadline, are after the read: it did not pass
	// the gate, nor end it.
	due := earliest(v.QuietAt, read.asOf.Add(g.poll), g.deadline)
	g.want = drainWant{from: due, due: due, by: due.Add(g.poll), window: g.window}
	return false
}

// earliest returns the earliest of ts.
func earliest(ts ...time.Time) time.Time {
	return slices.MinFunc(ts, time.Time.Compare)
}

// drainEvent reports one poll of the gate: one line that a terminal
// updates in place.
func (st *run) drainEvent(d *Drain, v gateVerdict, deadline time.Time) {
	last := "no successful call seen"
	if !v.LastOK.IsZero() {
		last = "last successful call in the minute to " + v.LastOK.Format("15:04:05Z")
	}
	msg := fmt.Sprintf("waiting for old key %s to be quiet for %s: %s; %s; data settled to %s; %s left",
		st.from.Name, human(st.slot.QuietPeriod), last, ratesText(d.Usage), v.SettledTo.Format("15:04:05Z"),
		deadline.Sub(st.now()).Round(time.Second))
	st.log().Info(msg, "slot", st.slot.Name, "step", string(StepRetire), "polls", d.Polls)
	if st.Events != nil {
		st.Events(Event{Slot: st.slot.Name, Step: StepRetire, Message: msg, Drain: &DrainWait{
			Key: st.from.Name, Started: d.Started, Deadline: deadline, SettledTo: v.SettledTo,
			LastOK: v.LastOK, QuietAt: v.QuietAt, Usage: d.Usage,
		}})
	}
}

// retireQuiet runs the drain gate for the old key and acts on what it saw:
// quiet, the key is deleted; still in use (or not yet known quiet) at the
// drain timeout, it is kept for finalize; Monitoring unable to answer, the
// slot's usage policy decides (required keeps it; best-effort falls back
// to the grace period). It returns the index entry of a kept key.
func (st *run) retireQuiet(ctx context.Context, old *runKey) (*pendingKey, error) {
	if old.Uid == "" {
		// Without the key's uid no credential_id can be matched: counting
		// nothing would read as quiet.
		return st.retireDrained(ctx, old, &Drain{Started: st.now(), Ended: st.now(), Outcome: DrainUnknown, Reason: "the old key's uid is unknown"})
	}
	d, err := st.drainOld(ctx, old.Uid)
	if err != nil {
		return nil, err
	}
	// The gate has ended: wait for a turn to retire (retireLimit), parked
	// here, on the frames of the gate's sleep and fewer (a waiting
	// rotation holds an 8 KiB stack: TestFleetStackPerWaitingTurn). The
	// targets are read again after the wait, immediately before the
	// delete (deleteOld), as without it.
	if err := st.retiring.acquire(ctx); err != nil {
		return nil, fmt.Errorf("wait for a turn to retire old key %s: %w", old.Name, err)
	}
	st.turn = true
	return st.retireDrained(ctx, old, d)
}

// endTurn gives back the run's turn to retire, if it holds one.
func (st *run) endTurn() {
	if st.turn {
		st.turn = false
		st.retiring.release()
	}
}

// defaultRetiring is how many rotations of a Rotator may retire at once
// once past their drain gate (retireLimit).
//
// A rotation's retire work (the targets read again, DeleteKey and its
// operation, the version disable, the unlock) is a few calls made one
// after another: about one call in flight a rotation. In the fleet
// benchmark with the gate (100 projects × 100 slots, 2 cores, the
// emulator beside the rotator) that work is CPU-bound at about 7,400
// calls a second, so at its 100 ms a call about 740 calls in flight keep
// the CPU busy; 2,000 keep it busy up to about 270 ms a call (Google's
// own latency, or a slower machine), and more would add only waiting
// calls. What they hold is the reason for a limit at all: the gates of a
// project pass on one shared read, and the fleet's passes come
// together, so about 7,000 rotations were retiring at once there, each
// with its call's buffers, HTTP/2 stream goroutine and a stack grown
// for the call, 37 KB a rotation in flight on average where 30 was the
// goal; a rotation waiting for its turn holds its state (about 5 KB) and
// an 8 KiB stack.
const defaultRetiring = 2000

// retireLimit bounds the rotations of a Rotator that are past their drain
// gate and retiring at once (defaultRetiring, or max when set). It is
// taken only there: before the gate a rotation's calls are paced by the
// quotas, and a gate waits on its project's shared reads. A rotation
// waiting for a turn still holds its lease, which its timer keeps
// renewing (lease.keepAlive) from outside the wait; a lease lost cancels
// the run's context, which ends the wait. Turns go in the order asked
// (a channel's waiting senders are served first in, first out).
type retireLimit struct {
	once sync.Once
	// max is the limit; 0 is defaultRetiring. Set before the first
	// rotation.
	max int
	sem chan struct{}
	// waiting counts the rotations waiting for a turn.
	waiting atomic.Int32
}

// acquire waits for a turn, or until ctx ends.
func (l *retireLimit) acquire(ctx context.Context) error {
	l.once.Do(func() {
		n := l.max
		if n <= 0 {
			n = defaultRetiring
		}
		l.sem = make(chan struct{}, n)
	})
	select {
	case l.sem <- struct{}{}:
		return nil
	default:
	}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// release gives a turn back.
func (l *retireLimit) release() { <-l.sem }

// retireDrained acts on what the drain gate saw of old (retireQuiet).
func (st *run) retireDrained(ctx context.Context, old *runKey, d *Drain) (*pendingKey, error) {
	st.res.Drain = d
	switch d.Outcome {
	case DrainQuiet:
		msg := fmt.Sprintf("old key %s is quiet: no successful request for %s in Cloud Monitoring's settled data (to %s; %d poll(s))",
			old.Name, human(st.slot.QuietPeriod), d.SettledTo.Format(time.RFC3339), d.Polls)
		if failing := failingOnly(d.Usage); len(failing) > 0 {
			// Failing calls break nobody, but someone still holds the key.
			msg += "; failed calls with it in the last hour: " + ratesText(failing)
		}
		st.event(st.slot.Name, StepRetire, "%s", msg)
		return nil, st.deleteOld(ctx, old)
	case DrainUnknown:
		d.Policy = st.slot.Usage
		if d.Policy == "" {
			d.Policy = UsageBestEffort
		}
		if d.Policy == UsageRequired {
			d.Attention = true
			return st.keepInUse(ctx, old, d, "its use is unknown ("+d.Reason+"), and usage is required")
		}
		fallback := "deleting it at once (no grace period)"
		if st.grace > 0 {
			fallback = "keeping it for the grace period (" + human(st.grace) + ")"
		}
		st.event(st.slot.Name, StepRetire, "warning: Cloud Monitoring cannot tell whether old key %s is still in use (%s); usage: best-effort falls back to the grace period: %s",
			old.Name, d.Reason, fallback)
		if st.grace > 0 {
			return st.keepOld(ctx, old)
		}
		return nil, st.deleteOld(ctx, old)
	}
	d.Attention = true
	return st.keepInUse(ctx, old, d, d.Reason)
}

// keepInUse keeps the old key for finalize because it is in use, or its use
// unknown: it annotates the key with the time it was kept (delete-after:
// from then on finalize deletes it once the settled-window rule holds) and
// why, and returns the entry that indexes it on the secret.
func (st *run) keepInUse(ctx context.Context, old *runKey, d *Drain, reason string) (*pendingKey, error) {
	// Whole seconds, rounded up: the rule's start is never earlier than
	// the keep.
	kept := st.now().Add(time.Second - 1).Truncate(time.Second)
	ann := st.keptAnnotations(old, kept)
	ann[annKeptInUse] = d.Outcome
	if _, err := st.ka.Patch(ctx, &apikeys.V2Key{Name: old.Name, Etag: old.Etag, Annotations: ann}, "annotations"); err != nil {
		return nil, err
	}
	st.res.Retired, st.res.DeleteAfter, st.res.KeptReason = "kept", &kept, reason
	msg := fmt.Sprintf("kept old key %s: %s", old.Name, reason)
	if len(d.Usage) > 0 {
		msg += "; its calls in the last hour: " + ratesText(d.Usage)
	}
	st.eventThen(st.slot.Name, StepRetire, Next{Action: NextFinalizeWhenQuiet, Slot: st.slot.Name}, "%s", msg)
	return &pendingKey{Key: old.Name, Fingerprint: st.rec.OldFP, DeleteAfter: kept, Version: st.fromVersion}, nil
}
