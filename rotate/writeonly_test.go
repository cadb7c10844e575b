package rotate_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// sink is a write-only target: it takes keys but never shows them.
type sink struct {
	held      secret.Key
	writes    int
	confirmed secret.Key
}

func (s *sink) String() string { return "sink:test" }
func (s *sink) Read(context.Context) (secret.Key, error) {
	return secret.Key{}, fmt.Errorf("sink: %w", rotate.ErrUnreadable)
}
func (s *sink) Write(_ context.Context, k secret.Key) error {
	s.held, s.writes = k, s.writes+1
	return nil
}
func (s *sink) Confirm(_ context.Context, k secret.Key) error {
	if !s.held.Equal(k) {
		return fmt.Errorf("sink holds %s, want %s", s.held, k)
	}
	s.confirmed = k
	return nil
}

var _ rotate.Confirmer = (*sink)(nil)

func TestWriteOnlyTarget(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := &sink{}
	w.slot.Targets = append(w.slot.Targets, s)
	ctx := context.Background()
	p, err := w.r.Plan(ctx, w.slot, rotate.Options{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Targets[1].Holds; got != "unknown (write-only) key" {
		t.Errorf("plan says the sink holds %q", got)
	}
	res, err := w.rotate(rotate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.writes != 1 || s.held.Fingerprint() != res.NewKey.Fingerprint || !s.confirmed.Equal(s.held) {
		t.Errorf("sink: %d writes, holds %s, confirmed %s; want 1 write of %s, confirmed", s.writes, s.held, s.confirmed, res.NewKey.Fingerprint)
	}
	v, err := w.r.CheckHealth(ctx, w.slot)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Healthy {
		t.Errorf("verify with a write-only target is unhealthy: %+v", v.Checks)
	}
}

// reloading holds the key readably but must be written (reloaded) on every
// run, even when it already holds the new key.
type reloading struct {
	sink
}

func (r *reloading) Read(context.Context) (secret.Key, error) { return r.held, nil }
func (r *reloading) Reloads() bool                            { return true }

func TestReloaderWrittenWhenCurrent(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := &reloading{sink{held: secret.New(w.oldKey)}}
	w.slot.Targets = append(w.slot.Targets, r)
	// A run that stopped after this target's write but before its reload:
	// simulate by stopping after distribution, then resuming.
	w.stopAt("secretmanager.UpdateSecret", 2)
	if r.writes != 1 {
		t.Fatalf("writes after the first run = %d, want 1", r.writes)
	}
	if _, err := w.rotate(rotate.Options{}); err != nil {
		t.Fatal(err)
	}
	if r.writes != 2 {
		t.Errorf("writes after the resumed run = %d, want 2: a reloading target is written although it holds the key", r.writes)
	}
}
