package gcp

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/api/option"
	"google.golang.org/grpc"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// goAt lets a write of key go at the earliest from now, answered at once,
// and returns when it went.
func (p *secretPacer) goAt(key string, limits []writeLimit, now time.Time) time.Time {
	for {
		w, at, _ := p.admit(key, limits, now)
		if w != nil {
			p.answer(key, w, now)
			return now
		}
		now = at
	}
}

// TestSecretPacerReserve: writes to one secret at once go out two per
// 1.1s; another secret and another version have their own budgets; names
// by project id and number are one secret.
func TestSecretPacerReserve(t *testing.T) {
	p := newSecretPacer()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var got []time.Duration
	for _, name := range []string{"projects/acme/secrets/s", "projects/123/secrets/s", "projects/acme/secrets/s", "projects/acme/secrets/s", "projects/acme/secrets/s"} {
		key, _ := secretKey(name, false)
		got = append(got, p.goAt(key, secretWriteLimits, now).Sub(now))
	}
	want := []time.Duration{0, 0, 1100 * time.Millisecond, 1100 * time.Millisecond, 2200 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("write %d waits %v, want %v (all: %v)", i+1, got[i], want[i], got)
		}
	}
	if key, _ := secretKey("projects/acme/secrets/other", false); p.goAt(key, secretWriteLimits, now) != now {
		t.Error("another secret waits for this one's writes")
	}
	v, _ := secretKey("projects/acme/secrets/s/versions/3", true)
	if d := p.goAt(v, versionWriteLimits, now); d != now {
		t.Error("a version's first state change waits")
	}
	if d := p.goAt(v, versionWriteLimits, now).Sub(now); d != 1100*time.Millisecond {
		t.Errorf("a version's second state change waits %v, want 1.1s", d)
	}
	if k, regional := secretKey("projects/acme/locations/us-east1/secrets/s", false); !regional || k != "us-east1/secrets/s" {
		t.Errorf("secretKey(regional) = %q, %t", k, regional)
	}
	// 120 a minute: the 121st write waits for the first to leave 66s.
	p = newSecretPacer()
	var last time.Time
	for range 121 {
		last = p.goAt("k", secretWriteLimits, now)
	}
	if d := last.Sub(now); d != 66*time.Second {
		t.Errorf("121st write at +%v, want +66s", d)
	}
}

// TestSecretPacerCountsFromTheAnswer: a write counts from its answer: two
// writes in flight hold back a third however long they take, and the third
// goes per+10% after the earlier answer.
func TestSecretPacerCountsFromTheAnswer(t *testing.T) {
	p := newSecretPacer()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	w1, _, _ := p.admit("k", secretWriteLimits, now)
	w2, _, _ := p.admit("k", secretWriteLimits, now)
	if w1 == nil || w2 == nil {
		t.Fatal("the first two writes wait")
	}
	w3, at, changed := p.admit("k", secretWriteLimits, now.Add(5*time.Second))
	if w3 != nil || !at.IsZero() {
		t.Fatalf("third write with two in flight: let go %v, wake at %v; want held until an answer", w3 != nil, at)
	}
	p.answer("k", w1, now.Add(3*time.Second))
	select {
	case <-changed:
	default:
		t.Fatal("an answer does not wake the waiting write")
	}
	_, at, _ = p.admit("k", secretWriteLimits, now.Add(3*time.Second))
	if want := now.Add(3*time.Second + 1100*time.Millisecond); !at.Equal(want) {
		t.Errorf("third write wakes at +%v, want +%v (1.1s after the first answer)", at.Sub(now), want.Sub(now))
	}
}

// TestSecretWritesLateArrival: the first of three writes to one secret is
// held up between the pacer and the server for 300ms (a loaded machine's
// scheduler, a slow path) and the others are not: the server, counting
// each write when it arrives, still sees at most two in any second (the
// emulator answers no 429). Counting writes from when they were let go,
// the late first one and a prompt third fell into one server window.
func TestSecretWritesLateArrival(t *testing.T) {
	srv := emutest.Start(t, emulator.Options{})
	srv.AddProject("acme", 123)
	name, err := srv.SeedSecret("acme", "s", nil)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	late := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if n.Add(1) == 1 {
			time.Sleep(300 * time.Millisecond)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	ctx := context.Background()
	sm, err := srv.SecretManagerClient(ctx, option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(late)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sm.Close() })
	for i := range 3 {
		if _, err := addVersion(ctx, sm, RetryPolicy{Initial: time.Millisecond, Max: time.Millisecond, MaxElapsed: time.Millisecond}, name, secret.New("v")); err != nil {
			t.Fatalf("write %d: %v", i+1, err)
		}
	}
	if got := srv.Throttled(); got != 0 {
		t.Errorf("the emulator refused %d writes for the per-secret rate, want 0", got)
	}
}
