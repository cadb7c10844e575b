package rotate_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/rotate"
)

// TestCleanupTimeoutBoundsStop stops a rotation (its context cancelled)
// while the API hangs: CreateKey and every write after the lock. Releasing
// the lease then hangs too, and Rotator.CleanupTimeout (default
// DefaultCleanupTimeout) bounds it: Rotate returns ErrStoppedPartWay that
// long after the stop, having said what it waited for.
func TestCleanupTimeoutBoundsStop(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cleanup time.Duration
		want    time.Duration
	}{
		{"set", 300 * time.Millisecond, 300 * time.Millisecond},
		{"default", 0, rotate.DefaultCleanupTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.r.CleanupTimeout = tc.cleanup
			w.r.Retry.CallTimeout = time.Minute // the hang outlasts the cleanup
			hung := make(chan struct{}, 10)
			over := make(chan struct{})
			t.Cleanup(func() { close(over) })
			hang := func(ctx context.Context, _ int) error {
				hung <- struct{}{}
				select {
				case <-ctx.Done():
				case <-over:
				}
				return status.Error(codes.Unavailable, "the API is gone")
			}
			w.srv.SetHook("apikeys.CreateKey", hang)
			w.srv.SetHook("secretmanager.UpdateSecret", func(ctx context.Context, n int) error {
				if n == 1 {
					return nil // the lock
				}
				return hang(ctx, n)
			})
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				<-hung
				cancel()
			}()
			start := time.Now()
			var stopped time.Time
			w.r.Events = func(e rotate.Event) {
				if e.Step == "stop" && stopped.IsZero() {
					stopped = time.Now()
				}
				w.events.WriteString(string(e.Step) + " " + e.Message + "\n")
			}
			_, err := w.r.Rotate(ctx, w.slot, rotate.Options{Force: true})
			took := time.Since(stopped)
			if !errors.Is(err, rotate.ErrStoppedPartWay) {
				t.Fatalf("Rotate = %v, want ErrStoppedPartWay", err)
			}
			if stopped.IsZero() || !strings.Contains(w.events.String(), "stop releasing the lease") {
				t.Fatalf("no stop event saying the lease is being released:\n%s", w.events)
			}
			if took < tc.want || took > tc.want+time.Second {
				t.Errorf("Rotate returned %s after the cleanup began, want %s (+1s)", took.Round(time.Millisecond), tc.want)
			}
			t.Logf("stopped after %s, cleanup %s", stopped.Sub(start).Round(time.Millisecond), took.Round(time.Millisecond))
			w.invariant()
		})
	}
}

// TestCleanupEndsByRunDeadline: a run whose context has a deadline ends
// its cleanup within CleanupTimeout of that deadline, even when it reaches
// the cleanup late. A caller that budgets the whole process (cmd's
// --timeout: the steps until the deadline, then the cleanup's share, then
// its report) relies on it: the cleanup's share used to start at the stop
// event, so a run that noticed its deadline late (a loaded machine) ended
// its cleanup that much later, past the caller's budget, and the process's
// own deadline cut its report (cmd TestStopWhenAPIGone, 2 of 12 at load
// 28). Here the stop event's sink takes late: the run's cleanup starts
// that long after the deadline.
func TestCleanupEndsByRunDeadline(t *testing.T) {
	t.Parallel()
	const (
		cleanup = 3 * time.Second
		late    = 1500 * time.Millisecond // < cleanup: the release is still tried
		slack   = time.Second             // < late: a cleanup from the stop event fails
	)
	w := newWorld(t)
	w.r.CleanupTimeout = cleanup
	w.r.Retry.CallTimeout = time.Minute // the hang outlasts the cleanup
	hung := make(chan struct{}, 10)
	released := make(chan struct{}, 10)
	over := make(chan struct{})
	t.Cleanup(func() { close(over) })
	hang := func(ctx context.Context) error {
		select {
		case <-ctx.Done():
		case <-over:
		}
		return status.Error(codes.Unavailable, "the API is gone")
	}
	w.srv.SetHook("apikeys.CreateKey", func(ctx context.Context, _ int) error {
		hung <- struct{}{}
		return hang(ctx)
	})
	w.srv.SetHook("secretmanager.UpdateSecret", func(ctx context.Context, n int) error {
		if n == 1 {
			return nil // the lock
		}
		released <- struct{}{}
		return hang(ctx)
	})
	// The run's deadline is set once it hangs past the lock, so that a
	// slow preflight cannot meet it first.
	ctx := newLateDeadline()
	go func() {
		<-hung
		ctx.set(time.Now().Add(200 * time.Millisecond))
	}()
	w.r.Events = func(e rotate.Event) {
		if e.Step == rotate.StepStop {
			time.Sleep(late)
		}
		w.events.WriteString(string(e.Step) + " " + e.Message + "\n")
	}
	_, err := w.r.Rotate(ctx, w.slot, rotate.Options{Force: true})
	end := time.Now()
	if !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("Rotate = %v, want ErrStoppedPartWay", err)
	}
	if !strings.Contains(w.events.String(), "stop releasing the lease") {
		t.Fatalf("no stop event saying the lease is being released:\n%s", w.events)
	}
	if len(released) == 0 {
		t.Error("the lease release was never tried: the cleanup had no time")
	}
	deadline, _ := ctx.Deadline()
	took := end.Sub(deadline)
	if took < cleanup || took > cleanup+slack {
		t.Errorf("Rotate returned %s after its deadline, its stop event %s late; want %s (+%s): the cleanup ends CleanupTimeout after the deadline",
			took.Round(time.Millisecond), late, cleanup, slack)
	}
	t.Logf("returned %s after the deadline", took.Round(time.Millisecond))
	w.invariant()
}

// lateDeadline is a context whose deadline is set while it is in use.
type lateDeadline struct {
	context.Context // Background: no values
	mu              sync.Mutex
	deadline        time.Time
	done            chan struct{}
}

func newLateDeadline() *lateDeadline {
	return &lateDeadline{Context: context.Background(), done: make(chan struct{})}
}

func (c *lateDeadline) set(d time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = d
	time.AfterFunc(time.Until(d), func() { close(c.done) })
}

func (c *lateDeadline) Deadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline, !c.deadline.IsZero()
}

func (c *lateDeadline) Done() <-chan struct{} { return c.done }

func (c *lateDeadline) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}
