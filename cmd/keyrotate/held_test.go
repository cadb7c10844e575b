package main

// A slot held by another live run, through the real binary: abort names
// the holder and how to stop it (issue 12 item 11); --wait-for-lease waits
// for it and reports its outcome (item 12).

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

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

var _ = fmt.Sprint
