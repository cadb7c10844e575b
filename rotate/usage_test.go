package rotate_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/rotate"
)

const (
	generate   = "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"
	listModels = "google.ai.generativelanguage.v1beta.ModelService.ListModels"
	gemini     = "generativelanguage.googleapis.com"
)

// withMonitoring gives the world's Rotator a Cloud Monitoring client.
func (w *world) withMonitoring() {
	w.t.Helper()
	c, err := w.srv.MonitoringClient(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { c.Close() })
	w.r.Monitoring = c
}

// recordCalls records n calls of method with key at ago before now.
func (w *world) recordCalls(key, method string, code int, ago time.Duration, n int) {
	w.t.Helper()
	for range n {
		if err := w.srv.RecordRequest(key, method, code, w.srv.Now().Add(-ago)); err != nil {
			w.t.Fatal(err)
		}
	}
}

// TestStatusShowsUsage: the current key and the key kept for grace each
// show their own calls, per window and method, split by success and error,
// read with one ListTimeSeries for the project.
func TestStatusShowsUsage(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	g := 24 * time.Hour
	if _, err := w.rotate(rotate.Options{Grace: &g}); err != nil {
		t.Fatal(err)
	}
	st0 := w.status()
	if len(st0.OldKeys) != 1 {
		t.Fatalf("old keys = %+v, want the one kept for grace", st0.OldKeys)
	}
	cur := st0.Current.Name
	// The old key: still called by a forgotten consumer.
	w.recordCalls(w.oldName, generate, 200, 10*time.Minute, 3)
	w.recordCalls(w.oldName, generate, 429, 2*time.Hour, 1)
	w.recordCalls(w.oldName, listModels, 200, 3*24*time.Hour, 5)
	w.recordCalls(w.oldName, listModels, 200, 8*24*time.Hour, 7) // outside 7 days
	// The current key: the rotation's live probe (a success), then
	// failing calls.
	w.recordCalls(cur, generate, 403, 5*time.Minute, 2)
	// Another key of the project, not the slot's: not shown.
	other, _, err := w.srv.SeedKey(project, "unrelated", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.recordCalls(other, generate, 200, time.Minute, 9)

	w.withMonitoring()
	st := w.status()
	if n := w.srv.Calls("monitoring.ListTimeSeries"); n != 1 {
		t.Errorf("ListTimeSeries calls = %d, want 1 for the project", n)
	}
	if st.UsageUnknown != "" {
		t.Fatalf("usage unknown: %s", st.UsageUnknown)
	}
	oldU, curU := st.OldKeys[0].Usage, st.Current.Usage
	if oldU == nil || curU == nil {
		t.Fatalf("usage missing: old %v, current %v", oldU, curU)
	}
	type counts struct{ Hour, Day, Week rotate.Requests }
	got := map[string]counts{
		"old":     {oldU.LastHour, oldU.LastDay, oldU.LastWeek},
		"current": {curU.LastHour, curU.LastDay, curU.LastWeek},
	}
	want := map[string]counts{
		"old":     {rotate.Requests{OK: 3}, rotate.Requests{OK: 3, Error: 1}, rotate.Requests{OK: 8, Error: 1}},
		"current": {rotate.Requests{OK: 1, Error: 2}, rotate.Requests{OK: 1, Error: 2}, rotate.Requests{OK: 1, Error: 2}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	var methods []string
	for _, m := range oldU.ByMethod {
		methods = append(methods, m.Service+" "+m.Method)
	}
	if d := cmp.Diff([]string{gemini + " " + listModels, gemini + " " + generate}, methods); d != "" {
		t.Errorf("old key's methods, most called first (-want +got):\n%s", d)
	}
	if oldU.ByMethod[1].LastHour.OK != 3 || oldU.ByMethod[1].LastWeek.Error != 1 {
		t.Errorf("old key's GenerateContent = %+v, want 3 ok in the hour and 1 error in the week", oldU.ByMethod[1])
	}
	if ago := oldU.AsOf.Sub(oldU.LastSeen); ago != 0 {
		t.Errorf("old key last seen %s before the view, want within its last hour", ago)
	}

	// A second slot of the same project in the same view: no new query.
	if _, err := w.r.Status(context.Background(), w.slot); err != nil {
		t.Fatal(err)
	}
	if n := w.srv.Calls("monitoring.ListTimeSeries"); n != 1 {
		t.Errorf("ListTimeSeries calls after a second status = %d, want still 1", n)
	}
	b, _ := json.Marshal(st)
	for _, f := range []string{`"usage":{"as_of":`, `"last_hour":{"ok":3,"error":0}`, `"last_7d":{"ok":8,"error":1}`, `"by_method":[`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("JSON lacks %s: %s", f, b)
		}
	}
	if strings.Contains(string(b), "usage_unknown") {
		t.Errorf("JSON has usage_unknown while usage is known: %s", b)
	}
}

// TestUsageWithoutMonitoring: no client, no usage and no trace in JSON.
func TestUsageWithoutMonitoring(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.recordCalls(w.oldName, generate, 200, time.Minute, 1)
	st := w.status()
	b, _ := json.Marshal(st)
	if st.Current.Usage != nil || strings.Contains(string(b), "usage") {
		t.Errorf("usage without a Monitoring client: %s", b)
	}
	if n := w.srv.Calls("monitoring.ListTimeSeries"); n != 0 {
		t.Errorf("ListTimeSeries calls = %d without a client", n)
	}
}

// TestUsageUnknown: Monitoring refuses, status still succeeds and says why
// in one line naming the role or the API.
func TestUsageUnknown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(w *world)
		want  []string
	}{
		{"permission denied", func(w *world) { w.srv.DenyPermission("monitoring.timeSeries.list") },
			[]string{"monitoring.timeSeries.list", "roles/monitoring.viewer"}},
		{"API disabled", func(w *world) { w.srv.SetServiceEnabled(project, "monitoring.googleapis.com", false) },
			[]string{"Cloud Monitoring API", "monitoring.googleapis.com", "not enabled"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.withMonitoring()
			tc.setup(w)
			st := w.status()
			if st.Current.Usage != nil {
				t.Errorf("usage = %+v, want none", st.Current.Usage)
			}
			for _, s := range tc.want {
				if !strings.Contains(st.UsageUnknown, s) {
					t.Errorf("UsageUnknown = %q, want it to name %q", st.UsageUnknown, s)
				}
			}
			if strings.Contains(st.UsageUnknown, "\n") {
				t.Errorf("UsageUnknown is not one line: %q", st.UsageUnknown)
			}
			p, err := w.r.Plan(context.Background(), w.slot, rotate.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if p.UsageUnknown != st.UsageUnknown {
				t.Errorf("plan's UsageUnknown = %q, want status's %q", p.UsageUnknown, st.UsageUnknown)
			}
		})
	}
}

// TestUsageRetriesAndOutage: a transient failure of ListTimeSeries is
// retried under the Rotator's policy; an outage that outlasts it leaves
// status complete, with usage unknown and the API's error.
func TestUsageRetriesAndOutage(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.withMonitoring()
	w.recordCalls(w.oldName, generate, 200, time.Minute, 2)
	w.srv.Fail("monitoring.ListTimeSeries", fake.Next, fake.Fault{Code: codes.Unavailable})
	st := w.status()
	if st.Current.Usage == nil || st.Current.Usage.LastHour.OK != 2 {
		t.Fatalf("usage after a retried UNAVAILABLE = %+v (unknown: %q), want 2 ok in the hour", st.Current.Usage, st.UsageUnknown)
	}
	if n := w.srv.Calls("monitoring.ListTimeSeries"); n != 2 {
		t.Errorf("ListTimeSeries calls = %d, want 2 (one retry)", n)
	}

	w2 := newWorld(t)
	w2.withMonitoring()
	w2.srv.Fail("monitoring.ListTimeSeries", fake.Next, fake.Fault{Code: codes.Internal, Message: "backend exploded", Times: fake.Always})
	st = w2.status()
	if st.Current.Usage != nil || !strings.Contains(st.UsageUnknown, "backend exploded") {
		t.Errorf("usage = %+v, unknown %q; want none, and the API's error", st.Current.Usage, st.UsageUnknown)
	}
}
