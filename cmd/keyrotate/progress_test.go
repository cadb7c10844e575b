package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// TestProgressOnTerminal: a multi-slot run on a terminal shows a bar on
// stderr with slots done of total, failures and the slots in flight with
// their step, and prints results and failures above it on stdout.
func TestProgressOnTerminal(t *testing.T) {
	var stdout, stderr bytes.Buffer
	p := &printer{stdout: &stdout, stderr: &stderr, tty: true}
	g := newProgress(p, 3)
	if g == nil {
		t.Fatal("no progress display for 3 slots on a terminal")
	}
	g.start("alpha")
	g.start("beta")
	g.event(rotate.Event{Slot: "alpha", Step: "create"})
	g.event(rotate.Event{Slot: "beta", Step: "verify", Wait: &rotate.Wait{Started: time.Now().Add(-3 * time.Second)}})
	time.Sleep(150 * time.Millisecond) // the bar redraws at most every 100ms
	g.event(rotate.Event{Slot: "alpha", Step: "distribute"})
	if s := stderr.String(); !strings.Contains(s, "alpha (distribute)") || !strings.Contains(s, "beta (propagating 3s)") || !strings.Contains(s, "0/3") {
		t.Errorf("bar does not show the slots in flight and their steps:\n%q", s)
	}
	g.done(rotate.Outcome{Slot: &rotate.Slot{Name: "beta"}, Err: errors.New("verify key k: API_KEY_SERVICE_BLOCKED\nmore")})
	g.above(func() { stdout.WriteString("alpha: rotated\n") })
	g.done(rotate.Outcome{Slot: &rotate.Slot{Name: "alpha"}, Result: &rotate.Result{Rotated: true}})
	g.start("gamma")
	time.Sleep(150 * time.Millisecond)
	g.event(rotate.Event{Slot: "gamma", Step: "lock"})
	if s := stderr.String(); !strings.Contains(s, "1 failed") || !strings.Contains(s, "2/3") {
		t.Errorf("bar does not count done and failed slots:\n%q", s)
	}
	g.done(rotate.Outcome{Slot: &rotate.Slot{Name: "gamma"}, Result: &rotate.Result{}})
	g.finish()
	if want := "beta: FAILED: verify key k: API_KEY_SERVICE_BLOCKED\nalpha: rotated\n"; stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
}

// TestNoProgressOffTerminal: plain lines (nil display) for one slot, for
// JSON output, and off a terminal.
func TestNoProgressOffTerminal(t *testing.T) {
	var b bytes.Buffer
	for _, p := range []*printer{{stdout: &b, stderr: &b}, {stdout: &b, stderr: &b, tty: true, json: true}} {
		if g := newProgress(p, 5); g != nil {
			t.Errorf("progress display for %+v", p)
		}
	}
	if g := newProgress(&printer{stdout: &b, stderr: &b, tty: true}, 1); g != nil {
		t.Error("progress display for one slot")
	}
	var g *progress // nil: every method is a no-op, above just prints
	g.start("a")
	g.event(rotate.Event{Slot: "a"})
	g.done(rotate.Outcome{Slot: &rotate.Slot{Name: "a"}})
	g.above(func() { b.WriteString("x") })
	g.finish()
	if b.String() != "x" {
		t.Errorf("nil progress wrote %q", b.String())
	}
}

// TestRetryingOnTerminal: a retried call shows on the terminal's progress
// line as "retrying …" (one slot: the spinner; a fleet: the bar), with the
// call, the attempt and the next wait; off a terminal the log says it.
func TestRetryingOnTerminal(t *testing.T) {
	r := gcp.Retrying{Call: "secretmanager.versions.access", Resource: "projects/p/secrets/s/versions/latest", Attempt: 2,
		Err: errors.New("rpc error: code = Unavailable desc = boom\nmore"), Wait: 1500 * time.Millisecond, Elapsed: 4 * time.Second}
	want := "retrying secretmanager.versions.access projects/p/secrets/s/versions/latest: attempt 2 failed (rpc error: code = Unavailable desc = boom); next in 1.5s, retrying for 4s"

	var stdout, stderr bytes.Buffer
	p := &printer{stdout: &stdout, stderr: &stderr, tty: true}
	p.retrying(r)
	time.Sleep(150 * time.Millisecond)
	p.retrying(r)
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("spinner does not show the retry:\n%q\nwant %q in it", stderr.String(), want)
	}
	p.event(rotate.Event{Slot: "a", Step: "lock", Message: "locked"}) // the next step ends the spinner
	if stdout.String() != fmt.Sprintf("%-12s %-10s %s\n", "a", "lock", "locked") {
		t.Errorf("stdout = %q, want the step line only", stdout.String())
	}

	stderr.Reset()
	g := newProgress(p, 2)
	g.start("a")
	time.Sleep(150 * time.Millisecond)
	g.retrying(r)
	time.Sleep(150 * time.Millisecond)
	g.event(rotate.Event{Slot: "a", Step: "create"})
	g.retrying(r)
	if !strings.Contains(stderr.String(), "retrying secretmanager.versions.access") {
		t.Errorf("bar does not show the retry:\n%q", stderr.String())
	}
	g.finish()

	var off bytes.Buffer
	(&printer{stdout: &off, stderr: &off}).retrying(r)
	if off.Len() != 0 {
		t.Errorf("off a terminal the printer wrote %q; the log has the retry", off.String())
	}
}
