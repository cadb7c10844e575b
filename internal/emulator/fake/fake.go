// Package fake holds what the emulator and its sub-fakes (githubfake,
// k8sfake) share, so that a test steers each of them the same way: the
// clock they read (Clock, ManualClock, FastClock) and the failures a test injects
// (Fault, given to each fake's Fail, and Faults, the schedule a fake keeps;
// HTTPCalls, the counters and schedule the HTTP fakes embed).
//
// Every fake counts the calls of each method from 1, since it started or
// since its ResetCalls. Fail(method, n, f) makes call n of method fail with
// f; n may be Next, the next call, and f.Times may make the calls after it
// fail too.
package fake

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
)

// Clock tells a fake the time.
type Clock interface {
	Now() time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now().UTC() }

// Wall is the wall clock, in UTC: a fake's clock unless its Options name
// another.
var Wall Clock = wallClock{}

// ManualClock is a Clock that moves only when told to. It is safe for
// concurrent use.
type ManualClock struct {
	mu sync.Mutex
	t  time.Time
}

// NewManualClock returns a ManualClock set to t.
func NewManualClock(t time.Time) *ManualClock { return &ManualClock{t: t.UTC()} }

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// FastClock is a Clock that runs Speed times faster than the wall clock:
// for a demo that shows in seconds what takes minutes (a quiet period of
// ten minutes, Cloud Monitoring's delay). It reads Go's monotonic clock,
// so it never goes back (a wall-clock step does not move it), and it
// holds no mutable state, so it is safe for concurrent use.
//
// What shares it sees one time: an emulator (Options.Clock) and a caller
// that reads it (a rotate.Rotator's Now) agree on when a call was made and
// when a window is quiet. What sleeps must sleep through it (Sleep, or
// Real for a timer): a wall-clock timer of a clock-time duration waits
// Speed times too long.
type FastClock struct {
	origin time.Time // the clock's time at start
	start  time.Time // the wall clock then, with its monotonic reading
	speed  int
}

// MaxSpeed bounds a FastClock's speed: at most this many times faster
// than the wall clock (a million: a day in about a tenth of a second).
const MaxSpeed = 1_000_000

// NewFastClock returns a clock that reads origin now and runs speed times
// faster than the wall clock from now on. A speed below 1 or above
// MaxSpeed panics.
func NewFastClock(origin time.Time, speed int) *FastClock {
	if speed < 1 || speed > MaxSpeed {
		panic(fmt.Sprintf("fake: FastClock speed %d, want 1 to %d", speed, MaxSpeed))
	}
	return &FastClock{origin: origin.UTC(), start: time.Now(), speed: speed}
}

// Now returns the clock's time: origin plus Speed times the wall time
// since the clock was made.
func (c *FastClock) Now() time.Time {
	return c.origin.Add(time.Since(c.start) * time.Duration(c.speed))
}

// Speed is how many times faster than the wall clock it runs.
func (c *FastClock) Speed() int { return c.speed }

// Real returns the wall time that d of this clock's time takes (d/Speed,
// at least a nanosecond for a positive d).
func (c *FastClock) Real(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return max(d/time.Duration(c.speed), time.Nanosecond)
}

// Sleep waits until the clock has moved on by d, or ctx ends (then it
// returns ctx's cause).
func (c *FastClock) Sleep(ctx context.Context, d time.Duration) error {
	return c.SleepUntil(ctx, c.Now().Add(d))
}

// SleepUntil waits until the clock reads until, or ctx ends (then it
// returns ctx's cause): a rotate.Rotator's Sleep.
func (c *FastClock) SleepUntil(ctx context.Context, until time.Time) error {
	for {
		left := until.Sub(c.Now())
		if left <= 0 {
			return nil
		}
		t := time.NewTimer(c.Real(left))
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

// Next, as the call number given to a fake's Fail, is the method's next
// call.
const Next = 0

// Always, as a Fault's Times, fails every call from the first on, until the
// fake's ClearFaults: an outage.
const Always = -1

// Fault is an injected failure: what the failed calls answer, and how many
// calls in a row fail.
type Fault struct {
	// Code is the gRPC code, for the emulator (its REST APIs answer the
	// HTTP status Google maps the code to).
	Code codes.Code
	// Status is the HTTP status, for the HTTP fakes (githubfake, k8sfake).
	Status int
	// Message defaults to each fake's own words for an injected failure.
	Message string
	// RetryDelay, when set, makes the emulator add a google.rpc.RetryInfo
	// asking the caller to wait that long before retrying (as quota errors
	// do).
	RetryDelay time.Duration
	// Times is how many calls in a row fail, from the first: 0 means one;
	// Always means every call until ClearFaults.
	Times int
}

// Faults is the schedule of a fake's pending faults, by method. Its zero
// value is empty. It is not safe for concurrent use: a fake calls it under
// its own lock.
type Faults struct {
	pending map[string][]pending
}

// pending is a Fault for calls from..from+f.Times-1 of a method.
type pending struct {
	from int
	f    Fault
}

func (p pending) covers(n int) bool {
	return n >= p.from && (p.f.Times < 0 || n < p.from+max(p.f.Times, 1))
}

func (p pending) last(n int) bool { return p.f.Times >= 0 && n == p.from+max(p.f.Times, 1)-1 }

// Add schedules f for call n of method (Next: the call after the calls
// made so far).
func (fs *Faults) Add(method string, n, calls int, f Fault) {
	if n == Next {
		n = calls + 1
	}
	if fs.pending == nil {
		fs.pending = map[string][]pending{}
	}
	fs.pending[method] = append(fs.pending[method], pending{from: n, f: f})
}

// Take returns the fault scheduled for call n of method, if any, the first
// added when several cover it, and forgets a fault once its last call has
// come.
func (fs *Faults) Take(method string, n int) (Fault, bool) {
	ps := fs.pending[method]
	for i, p := range ps {
		if p.covers(n) {
			if p.last(n) {
				fs.pending[method] = append(ps[:i:i], ps[i+1:]...)
			}
			return p.f, true
		}
	}
	return Fault{}, false
}

// Clear forgets every pending fault.
func (fs *Faults) Clear() { fs.pending = nil }

// HTTPCalls is what an HTTP fake (githubfake, k8sfake) keeps of its calls:
// the count per method and the faults injected into them. A fake embeds it,
// which gives it Fail, ClearFaults, Calls and ResetCalls, and calls Enter
// and Take as a request comes in. The zero value, with Name set, is ready
// for use; it is safe for concurrent use.
type HTTPCalls struct {
	// Name is the fake's, for the panic of a Fault without a Status.
	Name string

	mu     sync.Mutex
	calls  map[string]int
	faults Faults
}

// Fail makes call n of method (1-based, counted since the fake started or
// since ResetCalls; Next: the next call) answer f.Status, and with f.Times
// the calls after it too, in the fake's error shape (the message defaults
// to the fake's own). A fault without an HTTP Status of 400 or more panics.
func (c *HTTPCalls) Fail(method string, n int, f Fault) {
	if f.Status < 400 {
		panic(c.Name + ": a Fault needs an HTTP Status of 400 or more")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults.Add(method, n, c.calls[method], f)
}

// ClearFaults removes every pending fault.
func (c *HTTPCalls) ClearFaults() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults.Clear()
}

// Calls returns how many times method was called; "" counts every call.
func (c *HTTPCalls) Calls(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if method != "" {
		return c.calls[method]
	}
	n := 0
	for _, k := range c.calls {
		n += k
	}
	return n
}

// ResetCalls zeroes the call counters. Pending faults keep their call
// numbers, so reset before injecting.
func (c *HTTPCalls) ResetCalls() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = nil
}

// Enter counts a call of method and returns its number.
func (c *HTTPCalls) Enter(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[method]++
	return c.calls[method]
}

// Take returns the fault scheduled for call n of method, if any (see
// Faults.Take).
func (c *HTTPCalls) Take(method string, n int) (Fault, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.faults.Take(method, n)
}
