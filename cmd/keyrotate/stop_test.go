package main

// How keyrotate stops when the APIs are gone: --timeout bounds the whole
// process (the lease release included), a SIGTERM ends it within the
// cleanup's share, a second SIGINT ends it at once; and each leaves a state
// from which the next run resumes. Through the real binary (crash_test.go's
// harness), against an emulator whose every call hangs once the lock was
// written.

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/rotate"
)

// syncBuffer is a bytes.Buffer that a test may read while a child writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// outage makes every API call hang, once the rotation's lock write (the
// first UpdateSecret) landed, until the caller gives up or the outage
// ends: the network gone in the middle of a rotation.
type outage struct {
	srv     *emulator.Server
	gone    atomic.Bool
	hung    chan string // a method, each time a call starts hanging
	over    chan struct{}
	endOnce sync.Once
	// first is when the first call came (its UnixNano; 0: none yet).
	first atomic.Int64
}

// firstCall returns when the first call came: the child was running its
// main by then, past the loading and start of its binary.
func (o *outage) firstCall() time.Time {
	return time.Unix(0, o.first.Load())
}

func newOutage(t *testing.T, srv *emulator.Server) *outage {
	o := &outage{srv: srv, hung: make(chan string, 100), over: make(chan struct{})}
	all, _ := emulator.Methods()
	for _, m := range all {
		srv.SetHook(m, func(ctx context.Context, n int) error {
			o.first.CompareAndSwap(0, time.Now().UnixNano())
			if m == "secretmanager.UpdateSecret" && n == 1 {
				o.gone.Store(true) // the lock lands; nothing after it does
				return nil
			}
			if !o.gone.Load() {
				return nil
			}
			select {
			case o.hung <- m:
			default:
			}
			select {
			case <-ctx.Done():
			case <-o.over:
			}
			return status.Error(codes.Unavailable, "the API is gone")
		})
	}
	t.Cleanup(o.end)
	return o
}

// end ends the outage: calls go through again.
func (o *outage) end() {
	o.endOnce.Do(func() {
		all, _ := emulator.Methods()
		for _, m := range all {
			o.srv.SetHook(m, nil)
		}
		close(o.over)
	})
}

// waitHung waits until a call hangs: the child is past its lock.
func (o *outage) waitHung(t *testing.T, c *child) {
	t.Helper()
	select {
	case <-o.hung:
	case <-c.done:
		t.Fatalf("keyrotate ended (exit %d) before a call hung:\n%s", c.code, c.output())
	case <-time.After(crashTimeout):
		t.Fatal("no call hung")
	}
}

// waitOutput waits until the child's stderr holds want.
func waitOutput(t *testing.T, c *child, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(c.stderr.String(), want) {
		select {
		case <-c.done:
			t.Fatalf("keyrotate ended (exit %d) without saying %q:\n%s", c.code, want, c.output())
		default:
		}
		if time.Now().After(deadline) {
			c.kill()
			t.Fatalf("keyrotate did not say %q within %s:\n%s", want, within, c.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStopWhenAPIGone: with every API call hanging after the lock,
//   - --timeout 20s ends the whole process within 20s plus slack (with 3s
//     it used to take 33s: the lease release had its own 30s), having
//     reported the stop: the cleanup ends in its share, 4s after the
//     steps' deadline, leaving 1s for the report;
//   - a SIGTERM ends it within the cleanup's share (5s) plus slack (it took
//     30s), saying what it waits for;
//   - a second SIGINT while the lease is being released ends it at once,
//     exit 4, saying the state is safe (it was ignored).
//
// Each exits 4 and leaves the invariant whole; once the API is back, the
// next run resumes the rotation and ends as an uninterrupted one.
func TestStopWhenAPIGone(t *testing.T) {
	t.Parallel()
	// 20s, not 3s: the child must reach its lock before the steps'
	// deadline, which comes a fifth and a tenth of --timeout before the
	// process's (the cleanup's share and the report's margin). Under
	// -race at load 35-40, 8 of 32 children with 3s (the deadline 2.1s
	// after the process's start) and 1 of 16 with 10s (7s) were still
	// in their preflight then, and ended exit 1 with no call hung.
	const timeout = 20 * time.Second
	for _, tc := range []struct {
		name   string
		args   []string
		stop   func(t *testing.T, c *child) time.Time // signals the child; returns from when its end is timed
		within time.Duration
		say    []string // on stderr
	}{{
		name:   "--timeout " + timeout.String(),
		args:   []string{"--timeout", timeout.String()},
		stop:   func(*testing.T, *child) time.Time { return time.Time{} },
		within: timeout + 6*time.Second,
		say:    []string{"keyrotate: error: rotation stopped part-way"},
	}, {
		name: "SIGTERM",
		stop: func(t *testing.T, c *child) time.Time {
			if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			return time.Now()
		},
		within: 5*time.Second + 3*time.Second,
		say: []string{
			"keyrotate: stopping on SIGTERM: waiting for the running steps to stop and their leases to be released (press Ctrl-C again to stop at once; the state is safe)",
			"keyrotate: stopping: releasing the lease of slot gemini-prod (press Ctrl-C again to stop at once; the state is safe)",
		},
	}, {
		name: "second SIGINT",
		stop: func(t *testing.T, c *child) time.Time {
			if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			// The first signal stopped the step; the lease release hangs.
			waitOutput(t, c, "keyrotate: stopping: releasing the lease of slot gemini-prod", 5*time.Second)
			if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			return time.Now()
		},
		within: 1500 * time.Millisecond,
		say: []string{
			"keyrotate: stopping on SIGINT",
			"keyrotate: error: stopped at once on a second signal (SIGINT)",
			"keyrotate: hint: the state is safe",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cw := newCrashWorld(t)
			o := newOutage(t, cw.srv)
			start := time.Now()
			c := cw.start(append(append([]string{"--config", cw.w.config}, tc.args...), "rotate", "--now")...)
			o.waitHung(t, c)
			from := tc.stop(t, c)
			if from.IsZero() {
				// --timeout counts from the process's start, not from
				// the test's exec of it: loading and starting a -race
				// binary took more than the slack on a loaded machine
				// (it ended 9.1-10.9s after the exec, its lease release
				// 3s after its rotation began). Count from its first
				// call, which comes after its main started.
				from = o.firstCall()
				t.Logf("first call %s after the exec", from.Sub(start).Round(10*time.Millisecond))
			}
			select {
			case <-c.done:
			case <-time.After(crashTimeout):
				c.kill()
				t.Fatalf("keyrotate did not end within %s:\n%s", crashTimeout, c.output())
			}
			took := time.Since(from)
			t.Logf("ended %s after %s (exit %d); stderr:\n%s", tc.name, took.Round(10*time.Millisecond), c.code, c.stderr.String())
			if took > tc.within {
				t.Errorf("keyrotate ended %s after it was stopped, want within %s", took.Round(10*time.Millisecond), tc.within)
			}
			if c.code != exitPartWay {
				t.Errorf("exit code %d, want %d (stopped part-way, safe)", c.code, exitPartWay)
			}
			for _, s := range tc.say {
				if !strings.Contains(c.stderr.String(), s) {
					t.Errorf("stderr does not say %q", s)
				}
			}
			if err := cw.noKeyIn(c.output()); err != nil {
				t.Error(err)
			}
			if err := cw.invariant(); err != nil {
				t.Errorf("after the stop: %v", err)
			}

			o.end()
			again := cw.run(cw.rotateArgs(false)...)
			if again.code != exitOK || !strings.Contains(again.stdout.String(), "resumed") {
				t.Fatalf("the next run exited %d, want 0 having resumed the rotation:\n%s", again.code, again.output())
			}
			if diff := cmp.Diff(cw.wantEnd(false), cw.endState()); diff != "" {
				t.Errorf("end state after the resumed run (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBudget: the shares of --timeout, from the process's start. The
// steps end first; the cleanup, the webhook post and the report fit before
// the deadline.
func TestBudget(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		timeout         time.Duration
		webhook         bool
		work            time.Duration // after start
		cleanup, notify time.Duration
	}{
		{90 * time.Minute, false, 90*time.Minute - 6*time.Second, 5 * time.Second, 0},
		{90 * time.Minute, true, 90*time.Minute - 16*time.Second, 5 * time.Second, 10 * time.Second},
		{3 * time.Second, false, 2100 * time.Millisecond, 600 * time.Millisecond, 0},
		{3 * time.Second, true, 1500 * time.Millisecond, 600 * time.Millisecond, 600 * time.Millisecond},
		{25 * time.Second, false, 25*time.Second - 6*time.Second, 5 * time.Second, 0},
	} {
		b := newBudget(start, tc.timeout, tc.webhook)
		got := [4]time.Duration{b.deadline.Sub(start), b.work.Sub(start), b.cleanup, b.notify}
		if want := [4]time.Duration{tc.timeout, tc.work, tc.cleanup, tc.notify}; got != want {
			t.Errorf("newBudget(%s, webhook %v) = deadline, work, cleanup, notify %v, want %v", tc.timeout, tc.webhook, got, want)
		}
		if end := b.work.Add(b.cleanup + b.notify); !end.Before(b.deadline) {
			t.Errorf("newBudget(%s, webhook %v): the steps, cleanup and post end at %s, not before the deadline %s", tc.timeout, tc.webhook, end.Sub(start), tc.timeout)
		}
	}
}

// TestProcess drives the process's stop logic in-process (exit is a
// stand-in): the first signal ends the context and says what it waits
// for, a cleanup's event is named, the second signal ends the process with
// exit 4; the deadline ends it too; after finish nothing does.
func TestProcess(t *testing.T) {
	newTestProcess := func() (*process, *syncBuffer, chan int) {
		var out syncBuffer
		exits := make(chan int, 2)
		return newProcess(&out, func(code int) { exits <- code }), &out, exits
	}
	t.Run("signals", func(t *testing.T) {
		p, out, exits := newTestProcess()
		p.arm(time.Hour)
		defer p.finish()
		ctx, cancel := context.WithCancelCause(context.Background())
		events := p.events(nil)
		events(rotate.Event{Slot: "a", Step: "stop", Message: "releasing the lease"})
		if out.String() != "" {
			t.Errorf("before any signal, a stop event printed %q", out.String())
		}
		p.signal(syscall.SIGTERM, cancel)
		if !errors.Is(context.Cause(ctx), context.Canceled) || !strings.Contains(context.Cause(ctx).Error(), "SIGTERM") {
			t.Errorf("after a signal the context's cause is %v, want context.Canceled naming SIGTERM", context.Cause(ctx))
		}
		events(rotate.Event{Slot: "a", Step: "stop", Message: "releasing the lease"})
		events(rotate.Event{Slot: "a", Step: "create", Message: "created"})
		p.signal(syscall.SIGINT, cancel)
		want := "keyrotate: stopping on SIGTERM: waiting for the running steps to stop and their leases to be released (" + stopAtOnce + ")\n" +
			"keyrotate: stopping: releasing the lease of slot a (" + stopAtOnce + ")\n" +
			"keyrotate: error: stopped at once on a second signal (SIGINT)\n"
		if got := out.String(); !strings.HasPrefix(got, want) || !strings.Contains(got, "keyrotate: hint: the state is safe") {
			t.Errorf("output:\n%s\nwant it to start with:\n%s and give a hint", got, want)
		}
		if code := <-exits; code != exitPartWay {
			t.Errorf("exit(%d), want exit(%d)", code, exitPartWay)
		}
		p.signal(syscall.SIGINT, cancel)
		if len(exits) != 0 {
			t.Error("a signal after the end exited again")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		p, out, exits := newTestProcess()
		p.arm(50 * time.Millisecond)
		select {
		case code := <-exits:
			if code != exitPartWay || !strings.HasPrefix(out.String(), "keyrotate: error: --timeout 50ms reached; stopped at once\n") {
				t.Errorf("exit(%d) saying:\n%s\nwant exit(%d), --timeout reached", code, out.String(), exitPartWay)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the deadline did not end the process")
		}
	})
	t.Run("finished", func(t *testing.T) {
		p, out, exits := newTestProcess()
		p.arm(50 * time.Millisecond)
		p.finish()
		_, cancel := context.WithCancelCause(context.Background())
		p.signal(syscall.SIGINT, cancel)
		time.Sleep(150 * time.Millisecond)
		if len(exits) != 0 || out.String() != "" {
			t.Errorf("after finish: %d exit(s), output %q; want none", len(exits), out.String())
		}
	})
}
