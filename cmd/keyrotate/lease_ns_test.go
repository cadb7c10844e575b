package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keyrotate/keyrotate/rotate"
)

// TestLeaseAcrossNamespaces: a live run holds the slot's lease from inside
// another namespace on this host (same hostname, as in containers or pods
// of one node): a pid namespace, where its pid names some other process out
// here, or a time namespace, where its start time reads differently. A run
// out here must see the lease as live (exit 4, no write), not take it over
// as a dead holder's; the holder then finishes its rotation undisturbed.
// The holder reaches this process's emulator over loopback: unshare keeps
// the network namespace.
func TestLeaseAcrossNamespaces(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wrap []string
		// differs says how the holder's record must differ from what a
		// process out here records, for the case to test what it says.
		differs func(holder, here rotate.Holder) bool
		says    string // what the refusal says about the holder
	}{
		{"pid namespace", []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"},
			func(h, here rotate.Holder) bool { return h.PIDNS != "" && h.PIDNS != here.PIDNS },
			"in another pid namespace"},
		{"time namespace", []string{"unshare", "--time", "--boottime", "100000", "--fork", "--kill-child"},
			func(h, here rotate.Holder) bool {
				return h.TimeNS != "" && h.TimeNS != here.TimeNS && h.PIDNS == here.PIDNS
			},
			"in another time namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if out, err := exec.Command(tc.wrap[0], append(tc.wrap[1:], "true")...).CombinedOutput(); err != nil {
				t.Skipf("skipped: this machine does not let the test run %s (needs root or user namespaces): %v: %s",
					strings.Join(tc.wrap, " "), err, strings.TrimSpace(string(out)))
			}
			cw := newCrashWorld(t)
			reached, release := make(chan struct{}), make(chan struct{})
			released := false
			t.Cleanup(func() {
				if !released {
					close(release)
				}
			})
			cw.srv.SetHook("secretmanager.AddSecretVersion", func(_ context.Context, n int) error {
				if n == 1 {
					close(reached)
					<-release
				}
				return nil
			})

			cw.wrap = tc.wrap
			holder := cw.start(cw.rotateArgs(false)...)
			cw.wrap = nil
			t.Cleanup(holder.kill)
			select {
			case <-reached:
			case <-holder.done:
				t.Fatalf("the run in the namespace exited %d before adding the secret version:\n%s", holder.code, holder.output())
			case <-time.After(crashTimeout):
				t.Fatalf("the run in the namespace did not reach AddSecretVersion within %s", crashTimeout)
			}

			rec := cw.record()
			here := thisProcess(t)
			if rec == nil || rec.Holder.Run == "" || !time.Now().Before(rec.Expires) {
				t.Fatalf("record while the run in the namespace is in the middle = %+v, want a live lease", rec)
			}
			if rec.Holder.Host != here.Host || !tc.differs(rec.Holder, here) {
				t.Fatalf("holder %+v, here %+v: not the case this test is about", rec.Holder, here)
			}

			creates := cw.srv.Calls("apikeys.CreateKey")
			writes := cw.srv.MutatingCalls()
			second := cw.run(cw.rotateArgs(false)...)
			if second.code != exitPartWay || !strings.Contains(second.stderr.String(), "rotation in progress") {
				t.Errorf("run outside the namespace exited %d, want %d (rotation in progress):\n%s", second.code, exitPartWay, second.output())
			}
			if !strings.Contains(second.stderr.String(), tc.says) {
				t.Errorf("refusal does not say the holder is %s:\n%s", tc.says, second.stderr.String())
			}
			if got := cw.srv.MutatingCalls() - writes; got != 0 {
				t.Errorf("run outside the namespace made %d writes, want 0 while the lease is live: %v", got, cw.srv.CallCounts())
			}
			if got := cw.srv.Calls("apikeys.CreateKey"); got != creates {
				t.Errorf("CreateKey calls = %d, want %d: the run outside created a key", got, creates)
			}
			if after := cw.record(); after == nil || after.Holder != rec.Holder || after.ID != rec.ID {
				t.Errorf("record after the run outside = %+v, want the holder's untouched (%+v)", after, rec.Holder)
			}
			if err := cw.invariant(); err != nil {
				t.Errorf("invariant while the holder is in the middle: %v", err)
			}

			released = true
			close(release)
			if code := holder.wait(t); code != 0 {
				t.Fatalf("the run in the namespace exited %d, want 0:\n%s", code, holder.output())
			}
			if err := cw.noKeyIn(holder.output()); err != nil {
				t.Error(err)
			}
			if err := cw.invariant(); err != nil {
				t.Error(err)
			}
			if diff := cmp.Diff(cw.wantEnd(false), cw.endState()); diff != "" {
				t.Errorf("end state after the holder finished (-want +got), want one rotation:\n%s", diff)
			}
		})
	}
}

// record returns the rotation record on the demo secret, or nil.
func (cw *crashWorld) record() *rotate.Record {
	cw.t.Helper()
	s, ok := cw.srv.Secret(cw.secretName())
	raw := s.GetAnnotations()["keyrotate.rotation"]
	if !ok || raw == "" {
		return nil
	}
	var rec rotate.Record
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		cw.t.Fatalf("rotation record %q: %v", raw, err)
	}
	return &rec
}

// thisProcess is what a holder out here records about its namespaces.
func thisProcess(t *testing.T) rotate.Holder {
	t.Helper()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	h := rotate.Holder{Host: host, PID: os.Getpid()}
	h.PIDNS, _ = os.Readlink("/proc/self/ns/pid")
	h.TimeNS, _ = os.Readlink("/proc/self/ns/time")
	return h
}
