package rotate

import (
	"context"
	"testing"
	"time"
)

func TestHuman(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{90 * 24 * time.Hour, "90d"}, {15 * time.Minute, "15m"}, {2 * time.Hour, "2h"},
		{90 * time.Minute, "1h30m"}, {1500 * time.Millisecond, "1.5s"}, {0, "0s"},
	} {
		if got := human(tc.d); got != tc.want {
			t.Errorf("human(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// lateTimer is a context whose deadline has passed but whose timer has not
// fired yet: what a loaded machine shows a call that gRPC refused for want
// of time.
type lateTimer struct{ context.Context }

func (lateTimer) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestOutOfTime: a deadline that has come counts as out of time even before
// ctx.Err() says so (TestLeakTrafficUnknown/hung saw "DeadlineExceeded"
// without "did not answer within" in CI).
func TestOutOfTime(t *testing.T) {
	if outOfTime(context.Background()) {
		t.Error("a context without a deadline is out of time")
	}
	if !outOfTime(lateTimer{context.Background()}) {
		t.Error("a passed deadline is not out of time while ctx.Err() is nil")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if !outOfTime(ctx) {
		t.Error("a cancelled context is not out of time")
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if outOfTime(ctx) {
		t.Error("an hour left is out of time")
	}
}
