package rotate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
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
// shared by the gates of its slots (drainPoller).
type drainRead struct {
	mu     sync.Mutex
	asOf   time.Time
	window time.Duration
	counts []gcp.RequestCount
	err    error
}

// drainPoller holds each project's latest read, so that the slots of a
// project that wait at the same time share one query per poll.
type drainPoller struct {
	mu sync.Mutex
	by map[string]*drainRead
}

// drainCounts returns project's request counts per minute over window
// before their time, read at or after notBefore (a poll of the grid, or
// the start of the poll interval a gate's first read falls in): a read
// another gate of the project made since then is reused, else Monitoring
// is asked now. So the gates of a project cost one query per poll
// interval, but for a gate's last read, at its drain timeout (off the
// grid).
func (r *Rotator) drainCounts(ctx context.Context, project string, notBefore time.Time, window time.Duration) (*drainRead, error) {
	r.drain.mu.Lock()
	if r.drain.by == nil {
		r.drain.by = map[string]*drainRead{}
	}
	e := r.drain.by[project]
	if e == nil {
		e = &drainRead{}
		r.drain.by[project] = e
	}
	r.drain.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.asOf.IsZero() && !e.asOf.Before(notBefore) && e.window >= window {
		return &drainRead{asOf: e.asOf, window: e.window, counts: e.counts, err: e.err}, nil
	}
	if r.Monitoring == nil {
		return nil, errNoMonitoring
	}
	retry := r.Retry
	if retry.Log == nil {
		retry.Log = r.log()
	}
	u := &gcp.Usage{Client: r.Monitoring, Retry: retry}
	now := r.now()
	counts, err := u.RequestCounts(gcp.WithProject(ctx, project), project, now, window, time.Minute)
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	e.asOf, e.window, e.counts, e.err = now, window, counts, err
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

// drainOld runs the drain gate for the old key: it polls Cloud Monitoring
// (every DrainPoll, on the clock's minute grid, so that the gates of a
// project poll together) until the settled-window rule passes, the drain
// timeout comes, or Monitoring cannot answer.
func (st *run) drainOld(ctx context.Context, uid string) (*Drain, error) {
	start := st.now()
	d := &Drain{Started: start}
	deadline := start.Add(st.slot.DrainTimeout)
	quiet := st.slot.QuietPeriod
	window := drainWindow(st.UsageDelay, quiet)
	poll := orDefault(st.DrainPoll, DefaultDrainPoll)
	// The first read is the project's read of the poll interval the gate
	// starts in, made by whichever gate of the project reached it first
	// (or by this one, at once): gates that start within an interval
	// share it as they share the later polls, on the grid. A read from
	// before the gate started cannot pass it (settledQuiet wants its
	// time minus the usage delay at or after the start), nor end it (the
	// deadline is after it); neither can a read at the start unless the
	// usage delay is 0, when each gate reads at its start (and a quiet
	// key passes there). The first read shows the old key's traffic at
	// once, and finds at once that Monitoring cannot answer. Waiting for
	// the first grid poll at or after start+UsageDelay would save no
	// query of a fleet (its gates poll the grid together) and would leave
	// a terminal blank, and a denied permission unknown, for the usage
	// delay (30m by default).
	notBefore := start
	if st.UsageDelay > 0 {
		notBefore = start.Truncate(poll)
	}
	for {
		read, err := st.drainCounts(ctx, st.slot.Project, notBefore, window)
		if err != nil && !errors.Is(err, errNoMonitoring) {
			return nil, fmt.Errorf("drain old key %s: %w", st.from.Name, err)
		}
		if err == nil {
			err = read.err
		}
		d.Polls++
		if err != nil {
			d.Ended, d.Outcome, d.Reason = st.now(), DrainUnknown, usageReason(err)
			st.log().Warn("Cloud Monitoring cannot tell whether the old key is still in use", "slot", st.slot.Name, "key", st.from.Name, "error", err)
			return d, nil
		}
		pts := keyPoints(read.counts, uid)
		v := settledQuiet(start, read.asOf, st.UsageDelay, quiet, pts)
		d.SettledTo, d.LastOK, d.Usage = v.SettledTo, v.LastOK, methodRates(pts, read.asOf)
		if v.Pass {
			d.Ended, d.Outcome = read.asOf, DrainQuiet
			return d, nil
		}
		if !read.asOf.Before(deadline) {
			d.Ended, d.Outcome = read.asOf, DrainInUse
			switch {
			case !v.LastOK.IsZero():
				d.Reason = fmt.Sprintf("still in use at the drain timeout (%s): last successful call in the minute to %s", human(st.slot.DrainTimeout), v.LastOK.Format(time.RFC3339))
			default:
				d.Reason = fmt.Sprintf("not yet known to be quiet at the drain timeout (%s): Cloud Monitoring's data had settled only to %s (usage delay %s)",
					human(st.slot.DrainTimeout), v.SettledTo.Format(time.RFC3339), human(st.UsageDelay))
			}
			return d, nil
		}
		st.drainEvent(d, v, deadline)
		next := read.asOf.Truncate(poll).Add(poll)
		if next.After(deadline) {
			next = deadline
		}
		if err := st.sleepUntil(ctx, next); err != nil {
			return nil, fmt.Errorf("drain old key %s: %w", st.from.Name, err)
		}
		notBefore = next
	}
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
	var d *Drain
	if old.Uid == "" {
		// Without the key's uid no credential_id can be matched: counting
		// nothing would read as quiet.
		d = &Drain{Started: st.now(), Ended: st.now(), Outcome: DrainUnknown, Reason: "the old key's uid is unknown"}
	} else {
		var err error
		if d, err = st.drainOld(ctx, old.Uid); err != nil {
			return nil, err
		}
	}
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
