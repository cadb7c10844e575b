package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// TestStatusShowsWhoUsesEachKey: an unconfigured consumer keeps calling
// with the old key kept for grace; status shows its calls under that key,
// split by success and error, reading Cloud Monitoring once per project
// whatever the number of slots; when Monitoring refuses, status still
// succeeds and names the role or the API.
func TestStatusShowsWhoUsesEachKey(t *testing.T) {
	t.Parallel()
	fw := newFleetWorld(t, emulator.Options{}, 2, 3)
	if c := fw.run(t, nil, fw.config("rotate", "--slot", "gemini-prod", "--now", "--grace", "24h")...); c.wait(t) != 0 {
		t.Fatalf("rotate: %s", c.output())
	}
	// The forgotten consumer: some calls with the old key, then it stops.
	ok, failed := consume(t, fw.srv, fw.w.key, 3)

	fw.srv.ResetCalls()
	c := fw.run(t, nil, fw.config("--output", "json", "status")...)
	if code := c.wait(t); code != 0 {
		t.Fatalf("status exit %d: %s", code, c.output())
	}
	if n := fw.srv.Calls("monitoring.ListTimeSeries"); n != len(fw.projects) {
		t.Errorf("ListTimeSeries calls = %d for %d slots, want one per project (%d)", n, len(fw.slots), len(fw.projects))
	}
	var doc struct {
		Slots []*struct {
			Slot    string `json:"slot"`
			Current struct {
				Usage *rotate.KeyUsage `json:"usage"`
			} `json:"current_key"`
			OldKeys []struct {
				Name  string           `json:"name"`
				Usage *rotate.KeyUsage `json:"usage"`
			} `json:"old_keys"`
		} `json:"slots"`
	}
	if err := json.Unmarshal([]byte(c.stdout.String()), &doc); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, c.stdout.String())
	}
	var found bool
	for _, s := range doc.Slots {
		if s.Current.Usage == nil {
			t.Errorf("slot %s: no usage for the current key", s.Slot)
		}
		if s.Slot != "gemini-prod" {
			continue
		}
		if len(s.OldKeys) != 1 || s.OldKeys[0].Name != fw.w.keyName || s.OldKeys[0].Usage == nil {
			t.Fatalf("gemini-prod old keys = %+v, want %s with usage", s.OldKeys, fw.w.keyName)
		}
		found = true
		u := s.OldKeys[0].Usage
		want := rotate.Requests{OK: int64(ok), Error: int64(failed)}
		if u.LastHour != want || u.LastWeek != want {
			t.Errorf("old key's usage: last hour %+v, 7 days %+v, want the consumer's %+v", u.LastHour, u.LastWeek, want)
		}
		if len(u.ByMethod) != 1 || !strings.HasSuffix(u.ByMethod[0].Method, ".GenerateContent") {
			t.Errorf("old key's methods = %+v, want GenerateContent only", u.ByMethod)
		}
	}
	if !found {
		t.Fatal("no gemini-prod in the status")
	}

	text := fw.run(t, nil, fw.config("status", "--slot", "gemini-prod")...)
	if !strings.Contains(text.output(), "usage of gemini-prod-2026: 1h "+requestsString(rotate.Requests{OK: int64(ok), Error: int64(failed)})) {
		t.Errorf("status text lacks the old key's usage:\n%s", text.output())
	}

	for _, tc := range []struct {
		name  string
		setup func()
		want  []string
	}{
		{"permission denied", func() { fw.srv.DenyPermission("monitoring.timeSeries.list") },
			[]string{"usage         unknown: the caller lacks monitoring.timeSeries.list on project", "roles/monitoring.viewer"}},
		{"API disabled", func() { fw.srv.SetServiceEnabled(demoProject, "monitoring.googleapis.com", false) },
			[]string{"usage         unknown: the Cloud Monitoring API (monitoring.googleapis.com) is not enabled in project"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			defer fw.srv.AllowPermission("monitoring.timeSeries.list")
			defer fw.srv.SetServiceEnabled(demoProject, "monitoring.googleapis.com", true)
			c := fw.run(t, nil, fw.config("status", "--slot", "gemini-prod")...)
			if code := c.wait(t); code != 0 {
				t.Fatalf("status exit %d, want 0: %s", code, c.output())
			}
			for _, w := range tc.want {
				if !strings.Contains(c.stdout.String(), w) {
					t.Errorf("status lacks %q:\n%s", w, c.output())
				}
			}
			if strings.Contains(c.stdout.String(), "usage of ") {
				t.Errorf("status shows usage it could not read:\n%s", c.output())
			}
		})
	}
}

// consume runs a consumer calling GenerateContent with key until it made
// n good calls, then stops it and returns its good and failed calls.
func consume(t *testing.T, srv *emulator.Server, key secret.Key, n int) (ok, failed int) {
	t.Helper()
	cons := srv.StartConsumer(key, 20*time.Millisecond, emulator.ConsumeGenerate)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ok, _, _ := cons.Calls(); ok >= n || time.Now().After(deadline) {
			break
		}
	}
	cons.Stop()
	ok, failed, _ = cons.Calls()
	if ok < n {
		t.Fatalf("consumer made %d good calls, want at least %d", ok, n)
	}
	return ok, failed
}
