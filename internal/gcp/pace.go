package gcp

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// Quota is a per-project rate quota of one Google API: how many read and
// write requests a project may make per window (a minute on Google).
// Zero means the calls of that kind are not paced.
//
// Two other Quota types say other things: config.Quota is what a config
// file raises (zero keeps the documented value; cmd/keyrotate turns it
// into this one), and emulator.Quota is a limit the fake enforces (with
// Secret Manager's accesses, zero unlimited), kept apart so that the fake
// does not agree with the pacer by construction.
type Quota struct {
	Reads  int `json:"reads"`
	Writes int `json:"writes"`
}

// DefaultQuotas are Google's per-project quotas per minute, by API: the API
// Keys API allows 240 reads and 120 writes
// (https://cloud.google.com/api-keys/docs/quotas); Secret Manager 600 reads
// and 600 writes (https://cloud.google.com/secret-manager/quotas; its
// 90,000 accesses a minute are not paced, a rotation makes two); Cloud
// Monitoring 6,000 time series queries (ListTimeSeries, the only
// Monitoring call keyrotate makes: its reads). Google's Monitoring quotas
// page (https://cloud.google.com/monitoring/quotas) sends readers to the
// console for the value; 6,000 is the quota_limit_value of
// QueryRequestsPerMinutePerProject in a published 429 of the live API
// (see internal/emulator/quota.go).
var DefaultQuotas = map[string]Quota{
	APIKeys:       {Reads: 240, Writes: 120},
	SecretManager: {Reads: 600, Writes: 600},
	Monitoring:    {Reads: 6000},
}

// Names of the APIs a Pacer and a Meter know.
const (
	APIKeys       = "apikeys"
	SecretManager = "secretmanager"
	Gemini        = "gemini"
	Monitoring    = "monitoring"
)

// Pacer keeps one process's calls under per-project quotas, so that a
// fleet run is not answered with 429s: before each call it waits until the
// call fits. A call that is answered 429 all the same is retried after the
// error's RetryInfo delay (see RetryPolicy).
//
// Google counts a per-minute quota in synchronized one-minute intervals. A
// client cannot see where those intervals begin, so the Pacer keeps a
// stronger rule that holds whatever their alignment: at most N calls in
// any Window+Margin. That allows a burst of N at once (a fleet's creates go
// out together and propagate together) and N per window after that, the
// full quota. (A token bucket, as in golang.org/x/time/rate, cannot do
// both: with a burst of N it lets up to 2N through in one interval.)
//
// Google counts a call when it arrives, somewhere between its send and its
// answer, and a call let go at t may arrive much later than t (a loaded
// machine's scheduler, a slow network path) while the next ones arrive at
// once. So the Pacer counts each call from its answer: the calls of one
// quota are numbered in the order they are let go, and call k goes only
// Window+Margin after the answer of call k-N (while that call is in
// flight, it waits for the answer), and never before the turn of call k-1
// nor Window+Margin after the turn of call k-N (the earliest times they
// could be let go). Whatever the arrival times,
// then, the calls k, k+N, k+2N, ... arrive at least Window+Margin apart,
// so no interval that long holds more than N arrivals. (The per-secret
// write rates are kept the same way: secretpace.go.)
//
// The zero Pacer paces nothing; a nil *Pacer is valid and paces nothing.
type Pacer struct {
	quotas map[string]Quota
	window time.Duration

	mu   sync.Mutex
	logs map[paceKey]*callLog

	waits  atomic.Int64 // calls that had to wait
	waited atomic.Int64 // total time they waited, ns
	// byKind counts the waits by API and kind ("apikeys write"), under mu.
	byKind map[string]PaceWaits
}

// PaceWaits are the calls of one kind that waited for quota, and how long
// they waited in all.
type PaceWaits struct {
	Calls  int64
	Waited time.Duration
}

type paceKey struct {
	api, project string
	write        bool
}

// NewPacer returns a Pacer for quotas (by API, per window; nil:
// DefaultQuotas), counted over window (0: one minute) plus a margin of a
// sixtieth of it for clock skew and network jitter (one second a minute).
// Several processes sharing the projects (the shards of a job) should each
// get a share of the quota: see Quota.Share.
func NewPacer(quotas map[string]Quota, window time.Duration) *Pacer {
	if quotas == nil {
		quotas = DefaultQuotas
	}
	if window <= 0 {
		window = time.Minute
	}
	return &Pacer{quotas: quotas, window: window + window/60, logs: map[paceKey]*callLog{}}
}

// Share returns the part of q that one of n processes may use: q divided by
// n, rounded down, but at least 1 for a paced kind.
func (q Quota) Share(n int) Quota {
	if n <= 1 {
		return q
	}
	div := func(v int) int {
		if v <= 0 {
			return v
		}
		return max(1, v/n)
	}
	return Quota{Reads: div(q.Reads), Writes: div(q.Writes)}
}

// wait blocks until a call of api in project fits its quota, or ctx ends,
// and returns the call's place, to be told the call's answer, whatever it
// was (pacedCall.answered): the calls after it count from then. When it
// fails, the call is not sent and counts as answered at once.
func (p *Pacer) wait(ctx context.Context, api, project string, write bool) (pacedCall, error) {
	l := p.log(api, project, write)
	if l == nil {
		return pacedCall{}, nil
	}
	start := time.Now()
	p.mu.Lock()
	t := l.take(start, p.window)
	p.mu.Unlock()
	c := pacedCall{p: p, l: l, seq: t.seq}
	blocked, err := t.await(ctx, p.window)
	if blocked {
		d := time.Since(start)
		p.waits.Add(1)
		p.waited.Add(int64(d))
		p.count(api, write, d)
	}
	if err != nil {
		c.answered()
		kind := "read"
		if write {
			kind = "write"
		}
		return pacedCall{}, fmt.Errorf("waiting for the %s %s quota of project %s (the call was not sent): %w", api, kind, project, err)
	}
	return c, nil
}

// pacedCall is a call the Pacer let go (the zero pacedCall: one it does
// not pace). A value, not a callback: a fleet's burst meters 60,000
// calls, and a closure per call was a heap object each
// (TestMeterCallAllocs).
type pacedCall struct {
	p   *Pacer
	l   *callLog
	seq uint64
}

// answered records that the call was answered, whatever the answer.
func (c pacedCall) answered() {
	if c.l == nil {
		return
	}
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.l.answer(c.seq, time.Now())
}

// log returns the callLog of the calls of api in project of that kind;
// nil when they are not paced.
func (p *Pacer) log(api, project string, write bool) *callLog {
	if p == nil || project == "" {
		return nil
	}
	q := p.quotas[api]
	n := q.Reads
	if write {
		n = q.Writes
	}
	if n <= 0 {
		return nil
	}
	k := paceKey{api, project, write}
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.logs[k]
	if l == nil {
		l = &callLog{limit: n}
		p.logs[k] = l
	}
	return l
}

// reserve takes a place for a call of api in project arriving at clock()
// and returns when it may go by the times the calls before it were let go
// (when it is not paced: that time): the first part of wait's rule, for
// tests with a fake clock. The clock is read under the lock: a call's time
// must never be before the last reserved one (callLog), or the call would
// seem to wait for its own predecessor.
func (p *Pacer) reserve(api, project string, write bool, clock func() time.Time) time.Time {
	l := p.log(api, project, write)
	if l == nil {
		return clock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return l.take(clock(), p.window).at
}

// count records a wait of d for a call of api (reserved, so counted in
// full even when the caller stops sooner).
func (p *Pacer) count(api string, write bool, d time.Duration) {
	kind := api + " read"
	if write {
		kind = api + " write"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byKind == nil {
		p.byKind = map[string]PaceWaits{}
	}
	w := p.byKind[kind]
	w.Calls++
	w.Waited += d
	p.byKind[kind] = w
}

// WaitsByKind returns the waits by API and kind ("apikeys write",
// "secretmanager read", ...).
func (p *Pacer) WaitsByKind() map[string]PaceWaits {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.byKind)
}

// Waits returns how many calls had to wait for quota, and for how long in
// all.
func (p *Pacer) Waits() (int64, time.Duration) {
	if p == nil {
		return 0, 0
	}
	return p.waits.Load(), time.Duration(p.waited.Load())
}

// callLog holds the last (up to limit) calls of one kind in one project,
// numbered in the order they were let go: when each was let go at the
// earliest (never decreasing) and when it was answered.
type callLog struct {
	limit int
	calls []loggedCall // ring: call k at calls[k%limit]
	n     uint64       // the calls taken so far
	// late: for a call still in flight when a later one took its place in
	// the ring, where its answer goes (to the call limit after it).
	late map[uint64]*lateAnswer
}

// loggedCall is a call in a callLog: 32 bytes, as a fleet's logs hold a
// few thousand calls a project.
type loggedCall struct {
	at time.Time
	// took is the time from at to the answer, plus 1ns; 0 while in flight.
	took time.Duration
}

// end returns when c was answered; false while it is in flight.
func (c loggedCall) end() (time.Time, bool) {
	if c.took == 0 {
		return time.Time{}, false
	}
	return c.at.Add(c.took - 1), true
}

// lateAnswer is the answer of a call that left the ring in flight.
type lateAnswer struct {
	done chan struct{} // closed at the answer
	end  time.Time
}

// ticket is a call's place in its callLog.
type ticket struct {
	seq uint64
	at  time.Time // when it may go by the times calls were let go
	// gate is when it may go by the answer of the call limit before it
	// (zero: no such call); while that call is in flight, late says when
	// it is answered.
	gate time.Time
	late *lateAnswer
}

// take numbers a call arriving at now: it may go at now if fewer than
// limit calls were let go in the window before, else when the oldest of
// the last limit calls leaves the window, and never before the call before
// it; and, when there were limit calls before it, only window after the
// answer of the call limit before it (the ticket's gate or late).
func (l *callLog) take(now time.Time, window time.Duration) ticket {
	t := ticket{seq: l.n, at: now}
	if l.n > 0 {
		if last := l.calls[(l.n-1)%uint64(l.limit)].at; last.After(t.at) {
			t.at = last // keep the log ordered: a call never jumps the queue
		}
	}
	if l.n >= uint64(l.limit) {
		prev := l.calls[l.n%uint64(l.limit)]
		if e := prev.at.Add(window); e.After(t.at) {
			t.at = e
		}
		if end, ok := prev.end(); ok {
			t.gate = end.Add(window)
		} else {
			if l.late == nil {
				l.late = map[uint64]*lateAnswer{}
			}
			t.late = &lateAnswer{done: make(chan struct{})}
			l.late[l.n-uint64(l.limit)] = t.late
		}
	}
	c := loggedCall{at: t.at}
	if len(l.calls) < l.limit {
		// Not full yet: the ring is still a plain slice from index 0.
		l.calls = append(l.calls, c)
	} else {
		l.calls[l.n%uint64(l.limit)] = c
	}
	l.n++
	return t
}

// reserve takes a place for a call arriving at now and returns when it may
// go by the times calls were let go (take's first rule).
func (l *callLog) reserve(now time.Time, window time.Duration) time.Time {
	return l.take(now, window).at
}

// answer records that call seq was answered at end.
func (l *callLog) answer(seq uint64, end time.Time) {
	if seq+uint64(l.limit) >= l.n { // still in the ring
		c := &l.calls[seq%uint64(l.limit)]
		c.took = max(end.Sub(c.at), 0) + 1
		return
	}
	if w := l.late[seq]; w != nil {
		delete(l.late, seq)
		w.end = end
		close(w.done)
	}
}

// ready returns when the call of t may go; false while the call limit
// before it is in flight. Call it with the Pacer's lock held, or after
// t.late.done is closed.
func (t ticket) ready(window time.Duration) (time.Time, bool) {
	gate := t.gate
	if t.late != nil {
		select {
		case <-t.late.done:
			gate = t.late.end.Add(window)
		default:
			return time.Time{}, false
		}
	}
	if gate.After(t.at) {
		return gate, true
	}
	return t.at, true
}

// await waits until the call of t may go, or ctx ends (then it returns
// ctx's cause); blocked says whether it had to wait.
func (t ticket) await(ctx context.Context, window time.Duration) (blocked bool, err error) {
	if t.late != nil {
		select {
		case <-t.late.done:
		default:
			blocked = true
			select {
			case <-t.late.done:
			case <-ctx.Done():
				return true, context.Cause(ctx)
			}
		}
	}
	at, _ := t.ready(window)
	d := time.Until(at)
	if d <= 0 {
		return blocked, nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true, nil
	case <-ctx.Done():
		return true, context.Cause(ctx)
	}
}
