package rotate_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

func TestLeakedCurrentKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	slots := []*rotate.Slot{w.slot}
	leak, err := w.r.FindLeak(ctx, secret.New(w.oldKey), slots)
	w.noLeaks(nil, err)
	if err != nil {
		t.Fatal(err)
	}
	want := &rotate.Leak{Key: w.oldName, Project: "projects/424242424242", Fingerprint: secret.Fingerprint(w.oldKey),
		DisplayName: "Gemini (prod)", Slot: "gemini-prod", Role: "current",
		HeldBy: []string{"secretmanager:" + w.slot.Secret, w.slot.Targets[0].String()}}
	if diff := cmp.Diff(want, leak); diff != "" {
		t.Errorf("FindLeak (-want +got):\n%s", diff)
	}
	w.slot.Grace = 24 * time.Hour // the slot's grace does not apply to a leak
	w.respondDeletes(leak)
	if live := w.liveKeys(); len(live) != 1 || live[0].KeyString != w.envValue() || w.latest() != live[0].KeyString {
		t.Errorf("want one live key, in the secret and the .env")
	}
}

func TestLeakedOldKeyInGrace(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	g := 24 * time.Hour
	if _, err := w.rotate(rotate.Options{Grace: &g}); err != nil {
		t.Fatal(err)
	}
	leak, err := w.r.FindLeak(ctx, secret.New(w.oldKey), []*rotate.Slot{w.slot})
	if err != nil {
		t.Fatal(err)
	}
	if leak.Role != "old" || leak.Slot != "gemini-prod" || leak.DeleteAfter == nil || len(leak.HeldBy) != 0 {
		t.Fatalf("FindLeak = %+v, want an old key in grace, held nowhere", leak)
	}
	w.srv.ResetCalls()
	resp, err := w.r.RespondToLeak(ctx, leak, w.slot)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rotation != nil {
		t.Errorf("rotated although no place held the leaked old key")
	}
	if k, _ := w.srv.Key(w.oldName); k.DeleteTime == "" {
		t.Errorf("leaked old key not deleted")
	}
	if n := w.srv.Calls("apikeys.CreateKey"); n != 0 {
		t.Errorf("CreateKey calls = %d, want 0", n)
	}
	if _, ok := w.secret().Annotations["keyrotate.pending"]; ok {
		t.Errorf("the deleted key is still indexed as pending")
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.r.Revoke(ctx, w.oldName, []*rotate.Slot{w.slot}); !errors.Is(err, rotate.ErrKeyInUse) {
		t.Fatalf("Revoke of the current key = %v, want a refusal", err)
	}
	if k, _ := w.srv.Key(w.oldName); k.DeleteTime != "" {
		t.Fatalf("the current key was deleted")
	}
	info, err := w.r.Revoke(ctx, w.oldName, nil)
	if err != nil || !info.Deleted {
		t.Fatalf("Revoke without slots = %+v, %v", info, err)
	}
}

// TestLeakReportsTraffic: before the leaked key is deleted, FindLeak reads
// who still calls with it (one ListTimeSeries, filtered to its uid), per
// method, with rates, ok and error, and when last seen; the delete then
// goes on as before.
func TestLeakReportsTraffic(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.withMonitoring()
	ctx := context.Background()
	w.recordCalls(w.oldName, generate, 200, 5*time.Minute, 30)
	w.recordCalls(w.oldName, generate, 429, 20*time.Minute, 6)
	w.recordCalls(w.oldName, listModels, 200, 3*time.Hour, 4) // a nightly job, say: outside the hour
	other, _, err := w.srv.SeedKey(project, "unrelated", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.recordCalls(other, generate, 200, time.Minute, 9)
	// Monitoring is read before the delete.
	var readBeforeDelete int
	w.srv.SetHook("apikeys.DeleteKey", func(context.Context, int) error {
		readBeforeDelete = w.srv.Calls("monitoring.ListTimeSeries")
		return nil
	})
	leak, err := w.r.FindLeak(ctx, secret.New(w.oldKey), []*rotate.Slot{w.slot})
	if err != nil {
		t.Fatal(err)
	}
	if n := w.srv.Calls("monitoring.ListTimeSeries"); n != 1 {
		t.Errorf("ListTimeSeries calls = %d, want 1", n)
	}
	tr := leak.Traffic
	if tr == nil {
		t.Fatalf("no traffic (usage unknown: %q)", leak.UsageUnknown)
	}
	type row struct {
		Method         string
		Hour, Day      rotate.Requests
		PerMin         float64
		Peak           int64
		SeenMinutesAgo int
	}
	rowOf := func(m string, c rotate.TrafficCounts) row {
		return row{m, c.LastHour, c.LastDay, c.PerMinute, c.PeakPerMinute, int(tr.AsOf.Sub(c.LastSeen) / time.Minute)}
	}
	got := []row{rowOf("all", tr.TrafficCounts)}
	for _, m := range tr.ByMethod {
		if m.Service != gemini {
			t.Errorf("service = %q, want %q", m.Service, gemini)
		}
		got = append(got, rowOf(m.Method, m.TrafficCounts))
	}
	want := []row{
		{"all", rotate.Requests{OK: 30, Error: 6}, rotate.Requests{OK: 34, Error: 6}, 0.6, 30, 5},
		{generate, rotate.Requests{OK: 30, Error: 6}, rotate.Requests{OK: 30, Error: 6}, 0.6, 30, 5},
		{listModels, rotate.Requests{}, rotate.Requests{OK: 4}, 0, 0, 180},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("traffic (-want +got):\n%s", d)
	}
	w.respondDeletes(leak)
	if readBeforeDelete != 1 {
		t.Errorf("ListTimeSeries calls before the delete = %d, want 1", readBeforeDelete)
	}
	b, _ := json.Marshal(leak)
	for _, f := range []string{`"traffic":{"as_of":`, `"last_hour":{"ok":30,"error":6}`, `"per_minute":0.6`, `"peak_per_minute":30`, `"by_method":[`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("JSON lacks %s: %s", f, b)
		}
	}
	if strings.Contains(string(b), w.oldKey) {
		t.Errorf("JSON holds the key string")
	}
}

// TestLeakTrafficUnknown: Monitoring denied, disabled, failing or hung —
// the leaked key is deleted anyway, at once, and UsageUnknown says why in
// one line (naming the role or the API).
func TestLeakTrafficUnknown(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(w *world)
		want  []string
	}{
		{"permission denied", func(w *world) { w.srv.DenyPermission("monitoring.timeSeries.list") },
			[]string{"monitoring.timeSeries.list", "roles/monitoring.viewer"}},
		{"API disabled", func(w *world) { w.srv.SetServiceEnabled(project, "monitoring.googleapis.com", false) },
			[]string{"monitoring.googleapis.com", "not enabled"}},
		{"outage", func(w *world) {
			w.srv.Fail("monitoring.ListTimeSeries", fake.Next, fake.Fault{Code: codes.Unavailable, Times: fake.Always})
		}, []string{"Unavailable"}},
		{"hung", func(w *world) {
			w.srv.SetHook("monitoring.ListTimeSeries", func(ctx context.Context, _ int) error {
				<-ctx.Done()
				return ctx.Err()
			})
		}, []string{"did not answer within 300ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.withMonitoring()
			w.r.LeakUsageTimeout = 300 * time.Millisecond
			w.recordCalls(w.oldName, generate, 200, time.Minute, 3)
			tc.setup(w)
			ctx := context.Background()
			start := time.Now()
			leak, err := w.r.FindLeak(ctx, secret.New(w.oldKey), []*rotate.Slot{w.slot})
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("FindLeak took %s with Monitoring %s", d, tc.name)
			}
			if leak.Traffic != nil {
				t.Errorf("traffic = %+v, want none", leak.Traffic)
			}
			for _, s := range tc.want {
				if !strings.Contains(leak.UsageUnknown, s) {
					t.Errorf("UsageUnknown = %q, want it to name %q", leak.UsageUnknown, s)
				}
			}
			if strings.Contains(leak.UsageUnknown, "\n") {
				t.Errorf("UsageUnknown is not one line: %q", leak.UsageUnknown)
			}
			w.respondDeletes(leak)
		})
	}
}

// respondDeletes responds to leak, which must delete the world's key.
func (w *world) respondDeletes(leak *rotate.Leak) {
	w.t.Helper()
	resp, err := w.r.RespondToLeak(context.Background(), leak, w.slot)
	w.noLeaks(resp.Rotation, err)
	if err != nil {
		w.t.Fatal(err)
	}
	if k, _ := w.srv.Key(w.oldName); k.DeleteTime == "" {
		w.t.Errorf("leaked key not deleted")
	}
}
