package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemoStory runs `keyrotate demo` and checks the story it tells
// (issue 14 item 7): its clock says how much faster it runs; a forgotten
// consumer calls with the old key; the rotation puts the new key in place
// but keeps the old one, naming the caller's method and rate, and shows
// rotate's exit 5 (needs attention); the consumer moves to the new key;
// finalize at once skips the old key (not quiet yet) and, after the quiet
// period and Monitoring's delay, deletes it; the old key is then refused
// and the new one works — in seconds of real time, the demo exits 0.
func TestDemoStory(t *testing.T) {
	var stdout, stderr bytes.Buffer
	app := newApp(&stdout, &stderr)
	start := time.Now()
	err := runApp(context.Background(), app, []string{"keyrotate", "demo"})
	took := time.Since(start)
	out := stdout.String()
	if code := reportRun(app, &stderr, err); code != exitOK {
		t.Fatalf("demo: exit %d\n%s\nstderr:\n%s", code, out, stderr.String())
	}
	t.Logf("demo took %s", took.Round(time.Millisecond))
	if took > 30*time.Second {
		t.Errorf("demo took %s, want at most 30s", took.Round(time.Second))
	}
	const oldKey = "projects/123456789012/locations/global/keys/gemini-prod-2026"
	steps := []string{
		`the demo's clock runs 240× faster than the wall clock: a minute passes in 250ms`,
		`quiet for 10m \(quiet_period\), waiting at most 15m \(drain_timeout\)`,
		`A forgotten VM that no config names calls generateContent with the key every 1m \(consumer c1`,
		`(?m)^  usage +1h [1-9][0-9]* ok;.* GenerateContent [1-9][0-9]* ok$`,
		`(?m)^\$ keyrotate rotate --now`,
		`(?m)^gemini-prod +readback +secret and 1 target\(s\) hold `,
		`(?m)^gemini-prod +retire +waiting for old key ` + oldKey + ` to be quiet for 10m: last successful call`,
		`(?m)^gemini-prod +retire +kept old key ` + oldKey + `: still in use at the drain timeout \(15m\).*: generativelanguage\.googleapis\.com GenerateContent: [1-9][0-9]* ok in the last hour \([0-9.]+/min ok`,
		`(?m)^keyrotate: attention: slot gemini-prod: rotated, but old key ` + oldKey + ` was kept: still in use`,
		`(?m)^keyrotate: hint: .*keyrotate finalize --slot gemini-prod`,
		`\(keyrotate rotate exits 5: rotated, but an old key is kept in use and needs attention`,
		`consumer c1 stopped after [1-9][0-9]* call\(s\) with the old key \(0 failed\); consumer c2 calls with the new key sha256:`,
		`(?m)^\$ keyrotate finalize   \(at once`,
		`(?m)^gemini-prod: skipped +` + oldKey + ` \(kept in use since .*not quiet for 10m yet`,
		`(?m)^\$ keyrotate finalize$`,
		`(?m)^gemini-prod +finalize +deleted key ` + oldKey + ` `,
		`(?m)^  old key sha256:[0-9a-f]{12}: rejected \(`,
		`(?m)^  new key sha256:[0-9a-f]{12}: works$`,
		`the VM, on the new key: [1-9][0-9]* call\(s\), 0 failed`,
	}
	at := 0
	for _, s := range steps {
		loc := regexp.MustCompile(s).FindStringIndex(out[at:])
		if loc == nil {
			t.Fatalf("after offset %d the demo does not say %s:\n%s", at, s, out)
		}
		at += loc[1]
	}
	if strings.Contains(out, "retire     deleted key "+oldKey) {
		t.Errorf("the rotation deleted the old key while the consumer called:\n%s", out)
	}
}
