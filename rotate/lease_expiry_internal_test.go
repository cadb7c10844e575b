package rotate

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/gcp"
)

// TestFailedWriteKeepsKnownExpiry: a renewal or progress write that fails
// leaves the lease's expiry at the one the secret is known to hold, not
// the one it tried to write: clear judges by it whether the lease was
// still live when a record it finds gone may be its own landed clear.
func TestFailedWriteKeepsKnownExpiry(t *testing.T) {
	srv := emutest.Start(t, emulator.Options{})
	srv.AddProject("p", 1)
	name, err := srv.SeedSecret("p", "s", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := srv.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	api := &gcp.Secrets{Client: c, Retry: gcp.RetryPolicy{Initial: time.Millisecond, Max: time.Millisecond, MaxElapsed: time.Second}}
	sec, err := api.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	next := func(*Record) (Record, bool, error) { return Record{ID: "r1", Slot: "s"}, false, nil }
	l, _, err := acquire(ctx, api, sec, next, time.Minute, now, "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.stopRenewal()
	held := l.record().Expires
	clock = clock.Add(30 * time.Second)
	srv.Fail("secretmanager.UpdateSecret", fake.Next, fake.Fault{Code: codes.PermissionDenied})
	if err := l.update(ctx, func(r *Record) { r.Phase = PhaseVerifying }); err == nil {
		t.Fatal("update with UpdateSecret refused = nil, want its error")
	}
	if got := l.record().Expires; !got.Equal(held) {
		t.Errorf("expiry after a failed write = %s, want the one on the secret, %s", got, held)
	}
	if err := l.update(ctx, func(*Record) {}); err != nil {
		t.Fatal(err)
	}
	if got, want := l.record().Expires, clock.Add(time.Minute); !got.Equal(want) {
		t.Errorf("expiry after a renewal = %s, want %s", got, want)
	}
}
