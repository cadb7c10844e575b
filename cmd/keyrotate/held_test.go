package main

// A slot held by another live run, through the real binary: abort names
// the holder and how to stop it (issue 12 item 11); --wait-for-lease waits
// for it and reports its outcome (item 12).

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/rotate"
)

// waitHeld waits until the slot's secret holds a rotation record whose
// lease is held by the process pid, and returns that record.
func (cw *crashWorld) waitHeld(t *testing.T, c *child) rotate.Record {
	t.Helper()
	deadline := time.Now().Add(crashTimeout)
	for {
		if sec, ok := cw.srv.Secret(cw.secretName()); ok {
			var rec rotate.Record
			if raw := sec.Annotations["keyrotate.rotation"]; raw != "" && json.Unmarshal([]byte(raw), &rec) == nil && rec.Holder.PID == c.cmd.Process.Pid {
				return rec
			}
		}
		select {
		case <-c.done:
			t.Fatalf("keyrotate ended (exit %d) before holding the slot:\n%s", c.code, c.output())
		default:
		}
		if time.Now().After(deadline) {
			c.kill()
			t.Fatalf("keyrotate did not hold the slot within %s:\n%s", crashTimeout, c.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAbortNamesHolder: abort while another process rotates the slot exits
// 4 and names that process — host, pid, run id, start — and says how to
// stop it (SIGTERM, which makes keyrotate stop at a safe point and release
// the slot) and then abort, or to wait. Following the hint works: the
// holder stops with exit 4, and abort then undoes its rotation.
func TestAbortNamesHolder(t *testing.T) {
	t.Parallel()
	cw := newCrashWorld(t)
	cw.srv.SetPropagationDelay(time.Hour) // the rotation waits for its new key, holding the slot
	holder := cw.start(cw.rotateArgs(false)...)
	rec := cw.waitHeld(t, holder)

	ab := cw.run("--config", cw.w.config, "abort", "gemini-prod")
	if ab.code != 4 {
		t.Fatalf("abort while held: exit %d, want 4\n%s", ab.code, ab.output())
	}
	pid := strconv.Itoa(holder.cmd.Process.Pid)
	for _, want := range []string{
		"host " + rec.Holder.Host,
		"pid " + pid,
		"run " + rec.Holder.Run,
		"started " + rec.Started.Format(time.RFC3339),
		"`kill -TERM " + pid + "` on host " + rec.Holder.Host,
		"then run `keyrotate abort gemini-prod`",
		"or wait for it to finish",
	} {
		if !regexp.MustCompile(`keyrotate: hint: .*` + regexp.QuoteMeta(want)).MatchString(ab.stderr.String()) {
			t.Errorf("abort's hint does not say %q:\n%s", want, ab.stderr.String())
		}
	}
	// plan predicts that rotate stops at the held lock.
	pl := cw.run("--config", cw.w.config, "--output", "json", "plan", "--now")
	var plan struct {
		Plans []struct {
			WillRotate bool   `json:"will_rotate"`
			Blocked    string `json:"blocked"`
		} `json:"plans"`
	}
	if err := json.Unmarshal(pl.stdout.Bytes(), &plan); err != nil || len(plan.Plans) != 1 || plan.Plans[0].WillRotate ||
		!strings.Contains(plan.Plans[0].Blocked, "is held by "+rec.Holder.Host+" pid "+pid) {
		t.Errorf("plan while held = %s (%v); want will_rotate false, naming the holder", pl.stdout.String(), err)
	}
	if holder.stopped() {
		t.Fatalf("the holder ended:\n%s", holder.output())
	}

	// Do what the hint says.
	if err := holder.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := holder.wait(t); code != 4 {
		t.Fatalf("the holder stopped by SIGTERM: exit %d, want 4\n%s", code, holder.output())
	}
	ab = cw.run("--config", cw.w.config, "abort", "gemini-prod")
	if ab.code != 0 {
		t.Fatalf("abort after the holder stopped: exit %d\n%s", ab.code, ab.output())
	}
	if err := cw.invariant(); err != nil {
		t.Error(err)
	}
	if live := liveKeys(cw.srv); len(live) != 1 || live[0].Name != cw.w.keyName {
		t.Errorf("after abort: %d live keys, want only the old key %s", len(live), cw.w.keyName)
	}
}

func (c *child) stopped() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// TestOverlappingShardRunsWait: two processes of the same shard (a retried
// Cloud Run task beside its first attempt) with --wait-for-lease both exit
// 0, each slot's key is rotated exactly once, and a run that waited says
// for whom and what came of it. Without the flag the run that meets a held
// slot exits 4 (shown first, so the overlap is real).
func TestOverlappingShardRunsWait(t *testing.T) {
	t.Parallel()
	world := func() *crashWorld {
		cw := newCrashWorldWith(t, emulator.Options{}, func(srv *emulator.Server, w *seeded) error {
			_, err := seedFleet(srv, w, 1, 2)
			return err
		})
		// Each rotation takes a second or more: the runs overlap.
		cw.srv.SetPropagationDelay(time.Second)
		return cw
	}
	args := func(cw *crashWorld, more ...string) []string {
		return append([]string{"--config", cw.w.config, "rotate", "--now", "--shard", "0/1", "--parallel", "1"}, more...)
	}

	cw := world()
	a := cw.start(args(cw)...)
	cw.waitHeld(t, a)
	b := cw.run(args(cw)...)
	codeA := a.wait(t)
	if codeA != 4 && b.code != 4 {
		t.Fatalf("without --wait-for-lease, overlapping runs: exit %d and %d, want one 4 (the runs did not overlap?)", codeA, b.code)
	}
	for _, c := range []*child{a, b} {
		if c.code == 4 && !regexp.MustCompile("keyrotate: hint: rotate .* is running on host .* as pid \\d+ .*Run `keyrotate rotate --slot \\S+ --wait-for-lease \\d+m` to wait for it").MatchString(c.stderr.String()) {
			t.Errorf("the run that met a held slot does not name the holder and --wait-for-lease:\n%s", c.stderr.String())
		}
	}

	cw = world()
	a = cw.start(args(cw, "--wait-for-lease", "2m")...)
	cw.waitHeld(t, a)
	b = cw.start(args(cw, "--wait-for-lease", "2m")...)
	codeA, codeB := a.wait(t), b.wait(t)
	if codeA != 0 || codeB != 0 {
		t.Fatalf("exit codes %d and %d, want 0 and 0\nfirst:\n%s\nsecond:\n%s", codeA, codeB, a.output(), b.output())
	}
	for _, c := range []*child{a, b} {
		if err := cw.noKeyIn(c.output()); err != nil {
			t.Error(err)
		}
	}
	waited := regexp.MustCompile(`waited \d+s for rotate \S+ held by \S+ pid \d+ \(run \S+\): it rotated the slot`)
	if !waited.MatchString(a.stdout.String()) && !waited.MatchString(b.stdout.String()) {
		t.Errorf("neither run says it waited for the other and that it rotated the slot:\nfirst:\n%s\nsecond:\n%s", a.output(), b.output())
	}
	made := madeKeys(cw.srv)
	if len(made) != 3 {
		t.Fatalf("slots with new keys: %v, want 3", made)
	}
	for slot, n := range made {
		if n != 1 {
			t.Errorf("slot %s: %d new keys, want exactly 1", slot, n)
		}
	}
	if live := liveKeys(cw.srv); len(live) != 1 {
		t.Errorf("demo project: %d live keys, want 1", len(live))
	}
}

// madeKeys counts, per slot, the keys keyrotate made (deleted ones too).
func madeKeys(srv *emulator.Server) map[string]int {
	n := map[string]int{}
	for _, p := range []string{demoProject, "fleet-p00"} {
		for _, k := range srv.Keys(p, true) {
			if s := k.Annotations["keyrotate.slot"]; s != "" && k.Annotations["keyrotate.rotation"] != "" {
				n[s]++
			}
		}
	}
	return n
}
