package fake

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestFaultsSchedule(t *testing.T) {
	var fs Faults
	fs.Add("m", 2, 0, Fault{Status: 500})
	fs.Add("m", Next, 3, Fault{Status: 502, Times: 2}) // calls 4 and 5
	fs.Add("outage", Next, 0, Fault{Status: 503, Times: Always})
	want := map[int]int{1: 0, 2: 500, 3: 0, 4: 502, 5: 502, 6: 0}
	for n := 1; n <= 6; n++ {
		f, ok := fs.Take("m", n)
		if got := f.Status; got != want[n] || ok != (want[n] != 0) {
			t.Errorf("call %d: Take = %d, %v; want %d", n, got, ok, want[n])
		}
	}
	if _, ok := fs.Take("m", 2); ok {
		t.Error("a fault for one call was taken twice")
	}
	for n := 1; n <= 100; n += 33 {
		if f, ok := fs.Take("outage", n); !ok || f.Status != 503 {
			t.Errorf("outage call %d: Take = %v, %v", n, f, ok)
		}
	}
	fs.Clear()
	if _, ok := fs.Take("outage", 101); ok {
		t.Error("Clear left the outage")
	}
}

func TestManualClock(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 10, 0, 0, 0, time.FixedZone("x", 3600))
	c := NewManualClock(t0)
	c.Advance(time.Minute)
	if got := c.Now(); !got.Equal(t0.Add(time.Minute)) || got.Location() != time.UTC {
		t.Errorf("Now = %v, want %v in UTC", got, t0.Add(time.Minute))
	}
}

func TestHTTPCalls(t *testing.T) {
	var c HTTPCalls
	c.Name = "test"
	c.Enter("Get")
	c.Fail("Get", Next, Fault{Status: 503})        // call 2
	c.Fail("Put", 1, Fault{Status: 409, Times: 2}) // calls 1 and 2
	if f, ok := c.Take("Get", c.Enter("Get")); !ok || f.Status != 503 {
		t.Errorf("Get call 2: fault %v %v, want 503", f, ok)
	}
	if _, ok := c.Take("Get", c.Enter("Get")); ok {
		t.Error("Get call 3 failed: the fault was for call 2 only")
	}
	c.ResetCalls()
	for n := 1; n <= 3; n++ {
		_, ok := c.Take("Put", c.Enter("Put"))
		if ok != (n <= 2) {
			t.Errorf("Put call %d after ResetCalls: failed %v", n, ok)
		}
	}
	if got := c.Calls(""); got != 3 {
		t.Errorf("Calls(\"\") = %d, want 3 since ResetCalls", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("a Fault without a Status did not panic")
		}
	}()
	c.Fail("Get", 1, Fault{})
}

// TestFastClock: the clock starts at its origin and runs Speed times
// faster than the wall clock, within the wall-clock readings around it.
func TestFastClock(t *testing.T) {
	origin := time.Date(2026, 12, 6, 7, 0, 0, 0, time.FixedZone("CET", 3600))
	for _, speed := range []int{1, 120, 600} {
		t.Run(fmt.Sprint(speed), func(t *testing.T) {
			before := time.Now()
			c := NewFastClock(origin, speed)
			got := c.Now()
			if since := time.Since(before); got.Location() != time.UTC || got.Before(origin) || got.Sub(origin) > since*time.Duration(speed) {
				t.Errorf("Now() at start = %v, want %v in UTC (at most %s × %d later)", got, origin.UTC(), since, speed)
			}
			for range 3 {
				w0 := time.Now()
				c0 := c.Now()
				time.Sleep(20 * time.Millisecond)
				c1 := c.Now()
				w1 := time.Now()
				// c0 was read after w0 and c1 before w1: the clock's
				// elapsed time is at most speed × (w1-w0); and at least
				// speed × the 20ms slept between the reads.
				got := c1.Sub(c0)
				if lo, hi := 20*time.Millisecond*time.Duration(speed), w1.Sub(w0)*time.Duration(speed); got < lo || got > hi {
					t.Errorf("speed %d: %s of the clock over %s of wall time, want %s to %s", speed, got, w1.Sub(w0), lo, hi)
				}
			}
			if c.Speed() != speed {
				t.Errorf("Speed() = %d, want %d", c.Speed(), speed)
			}
			if got, want := c.Real(10*time.Minute), 10*time.Minute/time.Duration(speed); got != want {
				t.Errorf("Real(10m) = %s, want %s", got, want)
			}
		})
	}
}

// TestFastClockMonotonic: concurrent readers each see the clock never go
// back (run with -race: it has no state to race on).
func TestFastClockMonotonic(t *testing.T) {
	c := NewFastClock(time.Now(), 1000)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			last := c.Now()
			for range 20000 {
				now := c.Now()
				if now.Before(last) {
					errs <- fmt.Sprintf("went back from %v to %v", last, now)
					return
				}
				last = now
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestFastClockSleep: Sleep(d) returns once the clock moved on by d
// (SleepUntil once it reads a time),
// after about d/Speed of wall time, and early with the context's cause.
func TestFastClockSleep(t *testing.T) {
	c := NewFastClock(time.Now(), 600)
	start, w0 := c.Now(), time.Now()
	if err := c.Sleep(context.Background(), 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := c.Now().Sub(start); got < 10*time.Minute {
		t.Errorf("Sleep(10m) returned after %s of the clock", got)
	}
	if wall := time.Since(w0); wall < time.Second || wall > 10*time.Second {
		t.Errorf("Sleep(10m) at 600x took %s of wall time, want about 1s", wall)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("stopped")
	time.AfterFunc(10*time.Millisecond, func() { cancel(stop) })
	w0 = time.Now()
	if err := c.Sleep(ctx, 24*time.Hour); !errors.Is(err, stop) {
		t.Errorf("Sleep with an ended context = %v, want its cause", err)
	}
	if wall := time.Since(w0); wall > 5*time.Second {
		t.Errorf("Sleep(24h) with a context ended after 10ms took %s", wall)
	}
	if err := c.Sleep(context.Background(), -time.Second); err != nil {
		t.Errorf("Sleep(-1s) = %v", err)
	}
	until := c.Now().Add(5 * time.Minute)
	if err := c.SleepUntil(context.Background(), until); err != nil || c.Now().Before(until) {
		t.Errorf("SleepUntil(%v) = %v at %v", until, err, c.Now())
	}
}

func TestFastClockSpeedBounds(t *testing.T) {
	for _, speed := range []int{0, -1, MaxSpeed + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewFastClock(speed %d) did not panic", speed)
				}
			}()
			NewFastClock(time.Now(), speed)
		}()
	}
}
