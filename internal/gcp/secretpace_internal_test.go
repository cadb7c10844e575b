package gcp

import (
	"testing"
	"time"
)

// TestSecretPacerReserve: writes to one secret at once go out two per
// 1.1s; another secret and another version have their own budgets; names
// by project id and number are one secret.
func TestSecretPacerReserve(t *testing.T) {
	p := &secretPacer{logs: map[string][]time.Time{}}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var got []time.Duration
	for _, name := range []string{"projects/acme/secrets/s", "projects/123/secrets/s", "projects/acme/secrets/s", "projects/acme/secrets/s", "projects/acme/secrets/s"} {
		key, _ := secretKey(name, false)
		got = append(got, p.reserve(key, secretWriteLimits, now).Sub(now))
	}
	want := []time.Duration{0, 0, 1100 * time.Millisecond, 1100 * time.Millisecond, 2200 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("write %d waits %v, want %v (all: %v)", i+1, got[i], want[i], got)
		}
	}
	if key, _ := secretKey("projects/acme/secrets/other", false); p.reserve(key, secretWriteLimits, now) != now {
		t.Error("another secret waits for this one's writes")
	}
	v, _ := secretKey("projects/acme/secrets/s/versions/3", true)
	if d := p.reserve(v, versionWriteLimits, now); d != now {
		t.Error("a version's first state change waits")
	}
	if d := p.reserve(v, versionWriteLimits, now).Sub(now); d != 1100*time.Millisecond {
		t.Errorf("a version's second state change waits %v, want 1.1s", d)
	}
	if k, regional := secretKey("projects/acme/locations/us-east1/secrets/s", false); !regional || k != "us-east1/secrets/s" {
		t.Errorf("secretKey(regional) = %q, %t", k, regional)
	}
	// 120 a minute: the 121st write waits for the first to leave 66s.
	p = &secretPacer{logs: map[string][]time.Time{}}
	var last time.Time
	for range 121 {
		last = p.reserve("k", secretWriteLimits, now)
	}
	if d := last.Sub(now); d != 66*time.Second {
		t.Errorf("121st write at +%v, want +66s", d)
	}
}
