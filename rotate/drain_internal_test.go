package rotate

import (
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/gcp"
)

// TestSettledQuiet: the settled-window rule. The gate started at S passes
// at T iff T-delay >= S and no successful point ends after
// T-delay-quiet, settled or not.
func TestSettledQuiet(t *testing.T) {
	s := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	const delay, quiet = 5 * time.Minute, 10 * time.Minute
	ok := func(end time.Time) gcp.RequestCount { return gcp.RequestCount{CodeClass: "2xx", End: end, Count: 1} }
	bad := func(end time.Time) gcp.RequestCount { return gcp.RequestCount{CodeClass: "4xx", End: end, Count: 7} }
	m := func(n int) time.Time { return s.Add(time.Duration(n) * time.Minute) }
	for _, tc := range []struct {
		name    string
		now     time.Time
		points  []gcp.RequestCount
		pass    bool
		quietAt time.Time
	}{
		{"no traffic, not settled yet", m(4), nil, false, m(5)},
		{"no traffic, settled to the start", m(5), nil, true, m(5)},
		{"no traffic, at the gate's start", s, nil, false, m(5)},
		{"ok point inside the settled quiet window", m(12), []gcp.RequestCount{ok(m(-2))}, false, m(13)},
		{"ok point just out of the window", m(13), []gcp.RequestCount{ok(m(-2))}, true, m(13)},
		{"ok point on the window's start passes", m(15), []gcp.RequestCount{ok(m(0))}, true, m(15)},
		{"a request just before the gate, reported late", m(5), []gcp.RequestCount{ok(m(-1))}, false, m(14)},
		{"visible point newer than the settled time blocks", m(30), []gcp.RequestCount{ok(m(28))}, false, m(43)},
		{"errors only do not block", m(5), []gcp.RequestCount{bad(m(4)), bad(m(-1))}, true, m(5)},
		{"an old ok point and recent errors", m(20), []gcp.RequestCount{ok(m(-30)), bad(m(19))}, true, m(5)},
		{"zero counts are no calls", m(5), []gcp.RequestCount{{CodeClass: "2xx", End: m(3), Count: 0}}, true, m(5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := settledQuiet(s, tc.now, delay, quiet, tc.points)
			if v.Pass != tc.pass {
				t.Errorf("settledQuiet at %s = pass %v (settled to %s, last ok %s), want %v", tc.now.Format("15:04"), v.Pass,
					v.SettledTo.Format("15:04"), v.LastOK.Format("15:04"), tc.pass)
			}
			if !v.QuietAt.Equal(tc.quietAt) {
				t.Errorf("quiet at = %s, want %s", v.QuietAt.Format("15:04"), tc.quietAt.Format("15:04"))
			}
		})
	}
	if v := settledQuiet(s, s, 0, quiet, nil); !v.Pass {
		t.Errorf("with no delay and no traffic the gate passes at its start: %+v", v)
	}
}

// TestDrainWindow: a read reaches back over the quiet period before the
// settled time and the reported hour.
func TestDrainWindow(t *testing.T) {
	for _, tc := range []struct{ delay, quiet, want time.Duration }{
		{30 * time.Minute, 10 * time.Minute, 91 * time.Minute},
		{0, 10 * time.Minute, 61 * time.Minute},
		{0, 2 * time.Hour, 121 * time.Minute},
		{90 * time.Second, time.Minute, 62 * time.Minute},
	} {
		if got := drainWindow(tc.delay, tc.quiet); got != tc.want {
			t.Errorf("drainWindow(%s, %s) = %s, want %s", tc.delay, tc.quiet, got, tc.want)
		}
	}
}
