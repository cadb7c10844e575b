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

// wait blocks until a call of api in project fits its quota, or ctx ends.
func (p *Pacer) wait(ctx context.Context, api, project string, write bool) error {
	if p == nil || project == "" {
		return nil
	}
	var now time.Time
	at := p.reserve(api, project, write, func() time.Time { now = time.Now(); return now })
	d := at.Sub(now)
	if d <= 0 {
		return nil
	}
	p.waits.Add(1)
	p.count(api, write, d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		p.waited.Add(int64(d))
		return nil
	case <-ctx.Done():
		// Count the time waited, not the time the wait would have taken.
		p.waited.Add(int64(time.Since(now)))
		kind := "read"
		if write {
			kind = "write"
		}
		return fmt.Errorf("waiting for the %s %s quota of project %s (the call was not sent): %w", api, kind, project, context.Cause(ctx))
	}
}

// reserve records a call of api in project arriving at clock() and returns
// when it may go: that time when the call is not paced. Wait passes the
// wall clock, tests a fake one. The clock is read under the lock: a call's
// time must never be before the last reserved one (callLog), or the call
// would seem to wait for its own predecessor.
func (p *Pacer) reserve(api, project string, write bool, clock func() time.Time) time.Time {
	q := p.quotas[api]
	n := q.Reads
	if write {
		n = q.Writes
	}
	if n <= 0 {
		return clock()
	}
	k := paceKey{api, project, write}
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.logs[k]
	if l == nil {
		l = &callLog{limit: n}
		p.logs[k] = l
	}
	return l.reserve(clock(), p.window)
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

// callLog holds the times reserved for the last (up to limit) calls of one
// kind in one project, oldest first; they never decrease.
type callLog struct {
	limit int
	times []time.Time // ring: times[head] is the oldest
	head  int
}

// reserve returns when the next call may go: now if fewer than limit calls
// were reserved in the window before, else when the oldest of the last
// limit calls leaves the window. The call is recorded at that time.
func (l *callLog) reserve(now time.Time, window time.Duration) time.Time {
	at := now
	if n := len(l.times); n > 0 {
		last := l.times[(l.head+n-1)%n]
		if n == l.limit && !l.times[l.head].Add(window).Before(at) {
			at = l.times[l.head].Add(window)
		}
		if last.After(at) {
			at = last // keep the log ordered: a call never jumps the queue
		}
	}
	if len(l.times) < l.limit {
		// Not full yet: the ring is still a plain slice from index 0.
		l.times = append(l.times, at)
		return at
	}
	l.times[l.head] = at
	l.head = (l.head + 1) % l.limit
	return at
}
