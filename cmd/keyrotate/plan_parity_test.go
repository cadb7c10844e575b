package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"
)

// TestPlanPredictsRotate: for each state of a slot — fresh, due, not due,
// a retry within lease_ttl, drift — `plan` with rotate's flags predicts
// exactly what `rotate` with the same flags then does: whether it rotates,
// and when it does nothing, the same reason word for word (including
// "retry of rotation X"). Through the real binary.
func TestPlanPredictsRotate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, cw *crashWorld)
		flags []string
		// want: "rotate", or the Skip kind of a nothing-to-do
		want string
	}{
		{name: "fresh", want: "not-due"},
		{name: "fresh/now", flags: []string{"--now"}, want: "rotate"},
		{name: "due", setup: shortMaxAge, want: "rotate"},
		{name: "not-due/after-rotation", setup: rotated, want: "not-due"},
		{name: "retry-within-lease", setup: rotated, flags: []string{"--now"}, want: "retry"},
		// (--retire now: the key just made was probed live a moment ago,
		// which the drain gate would count as traffic.)
		{name: "retry-within-lease/again", setup: rotated, flags: []string{"--now", "--again", "--retire", "now"}, want: "rotate"},
		{name: "drift/now", setup: func(t *testing.T, cw *crashWorld) { rotated(t, cw); drifted(t, cw) }, flags: []string{"--now", "--retire", "now"}, want: "rotate"},
		{name: "drift/not-forced", setup: func(t *testing.T, cw *crashWorld) { rotated(t, cw); drifted(t, cw) }, want: "not-due"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cw := newCrashWorld(t)
			if tc.setup != nil {
				tc.setup(t, cw)
			}
			pl := cw.run(append([]string{"--config", cw.w.config, "--output", "json", "plan"}, tc.flags...)...)
			if pl.code != 0 {
				t.Fatalf("plan: exit %d\n%s", pl.code, pl.output())
			}
			var plan struct {
				Plans []struct {
					WillRotate bool   `json:"will_rotate"`
					Blocked    string `json:"blocked"`
					Skip       string `json:"skip"`
				} `json:"plans"`
			}
			if err := json.Unmarshal(pl.stdout.Bytes(), &plan); err != nil || len(plan.Plans) != 1 {
				t.Fatalf("plan JSON: %v\n%s", err, pl.stdout.String())
			}
			creates := cw.srv.Calls("apikeys.CreateKey")
			ro := cw.run(append([]string{"--config", cw.w.config, "--output", "json", "rotate"}, tc.flags...)...)
			if ro.code != 0 {
				t.Fatalf("rotate: exit %d\n%s", ro.code, ro.output())
			}
			var rot struct {
				Results []struct {
					Rotated bool   `json:"rotated"`
					Reason  string `json:"reason"`
					Skip    string `json:"skip"`
				} `json:"results"`
			}
			if err := json.Unmarshal(ro.stdout.Bytes(), &rot); err != nil || len(rot.Results) != 1 {
				t.Fatalf("rotate JSON: %v\n%s", err, ro.stdout.String())
			}
			p, r := plan.Plans[0], rot.Results[0]
			got := r.Skip
			if r.Rotated {
				got = "rotate"
			}
			if got != tc.want {
				t.Errorf("rotate %v did %q (%s), want %q", tc.flags, got, r.Reason, tc.want)
			}
			if p.WillRotate != r.Rotated || p.Skip != r.Skip || p.Blocked != r.Reason {
				t.Errorf("plan %v predicted will_rotate %v, skip %q, %q; rotate did rotated %v, skip %q, %q",
					tc.flags, p.WillRotate, p.Skip, p.Blocked, r.Rotated, r.Skip, r.Reason)
			}
			if n := cw.srv.Calls("apikeys.CreateKey") - creates; r.Rotated != (n == 1) {
				t.Errorf("rotate made %d key(s), rotated %v", n, r.Rotated)
			}
			if tc.want == "retry" && !strings.HasPrefix(r.Reason, "retry of rotation ") {
				t.Errorf("reason %q, want it to begin with \"retry of rotation \"", r.Reason)
			}
		})
	}
}

// rotated rotates the slot once.
func rotated(t *testing.T, cw *crashWorld) {
	t.Helper()
	if c := cw.run(cw.rotateArgs(false)...); c.code != 0 {
		t.Fatalf("rotate: exit %d\n%s", c.code, c.output())
	}
}

// drifted puts another (working) key into the .env.
func drifted(t *testing.T, cw *crashWorld) {
	t.Helper()
	cw.srv.AddProject("other-project", 987654321098)
	_, k, err := cw.srv.SeedKey("other-project", "stranger", &apikeys.V2Key{DisplayName: "someone else's"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cw.w.dotenv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cw.w.dotenv, []byte(strings.Replace(string(b), envValue(b, "GEMINI_API_KEY"), k, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// shortMaxAge makes the seeded key due: max_age 1s, and a second passes.
func shortMaxAge(t *testing.T, cw *crashWorld) {
	t.Helper()
	b, err := os.ReadFile(cw.w.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cw.w.config, []byte(strings.Replace(string(b), "max_age: 90d", "max_age: 1s", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
}
