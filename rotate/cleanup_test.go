package rotate_test

import (
	"context"
	"errors"
	"strings"
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
