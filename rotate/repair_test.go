package rotate_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/rotate"
)

// TestRepair: Repair puts the current key back into a drifted target —
// after a live probe of it, under the lease, read back — and makes no key;
// it refuses (writing nothing) when the current key does not work or a
// rotation is unfinished, and does nothing without drift.
func TestRepair(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		drift   bool
		setup   func(w *world)
		wantErr error
		// repaired: the .env is back to its seeded bytes
		repaired bool
	}{
		{name: "drift", drift: true, repaired: true},
		{name: "no drift"},
		{name: "dead current key", drift: true, setup: func(w *world) { w.srv.SuspendKey(w.oldName) }, wantErr: rotate.ErrKeyDead},
		{name: "unfinished rotation", drift: true, setup: func(w *world) {
			w.putRecord(w.seededRecord(rotate.Holder{}, time.Now().Add(-time.Minute)))
		}, wantErr: rotate.ErrRotationInProgress},
		{name: "live rotation", drift: true, setup: func(w *world) {
			w.putRecord(w.seededRecord(rotate.Holder{Host: "other-host", PID: 7, Run: "x"}, time.Now().Add(time.Hour)))
		}, wantErr: rotate.ErrRotationInProgress},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			drifted := w.envText
			if tc.drift {
				_, other, err := w.srv.SeedKey(project, "someone-else", &apikeys.V2Key{DisplayName: "another"})
				if err != nil {
					t.Fatal(err)
				}
				drifted = strings.Replace(w.envText, w.oldKey, other, 1)
				if err := os.WriteFile(w.envPath, []byte(drifted), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			if tc.setup != nil {
				tc.setup(w)
			}
			w.srv.ResetCalls()
			res, err := w.r.Repair(context.Background(), w.slot)
			w.noLeaks(res, err)
			b, _ := os.ReadFile(w.envPath)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Repair = %+v, %v; want %v", res, err, tc.wantErr)
				}
				if n := w.srv.MutatingCalls(); n != 0 || string(b) != drifted {
					t.Errorf("a refused repair made %d mutating calls, .env changed: %v", n, string(b) != drifted)
				}
				if h := errhint.Of(err); strings.Contains(h, "keyrotate") {
					t.Errorf("the library's hint names a command: %q", h)
				}
			case err != nil:
				t.Fatalf("Repair: %v", err)
			case tc.repaired:
				if string(b) != w.envText {
					t.Errorf(".env after repair is not the seeded file with the current key")
				}
				if res.Skip != "" || len(res.Targets) != 1 || res.Targets[0].Action != "written" {
					t.Errorf("Repair = %+v, want the target written", res)
				}
				if n := w.srv.Calls("apikeys.CreateKey") + w.srv.Calls("apikeys.DeleteKey"); n != 0 {
					t.Errorf("repair made or deleted %d key(s)", n)
				}
				if w.secret().Annotations["keyrotate.rotation"] != "" {
					t.Errorf("repair left its record on the secret")
				}
			default:
				if res.Skip != rotate.SkipNoDrift || w.srv.MutatingCalls() != 0 {
					t.Errorf("Repair without drift = %+v, %d mutating calls; want nothing done", res, w.srv.MutatingCalls())
				}
			}
		})
	}
}

// TestWaitForLease: a run that finds the slot held by a live run on another
// host waits for it with Options.WaitForLease: it ends with its context,
// fails with the HeldError at the end of the wait, and once the holder
// releases its lease (stopped part-way) resumes that rotation and says so.
func TestWaitForLease(t *testing.T) {
	held := func(w *world) *rotate.Record {
		rec := w.seededRecord(rotate.Holder{Host: "other-host", PID: 7, Run: "x"}, time.Now().Add(time.Hour))
		w.putRecord(rec)
		return rec
	}
	t.Run("context", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t)
		held(w)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := w.r.Rotate(ctx, w.slot, rotate.Options{Force: true, WaitForLease: time.Hour})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Errorf("Rotate = %v after %s; want the context's end, at once", err, time.Since(start))
		}
	})
	t.Run("deadline", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t)
		held(w)
		start := time.Now()
		_, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{Force: true, WaitForLease: 1500 * time.Millisecond})
		var he *rotate.HeldError
		if !errors.As(err, &he) || he.Record.Holder.Host != "other-host" || time.Since(start) < 1500*time.Millisecond {
			t.Errorf("Rotate = %v after %s; want the HeldError after the wait", err, time.Since(start))
		}
		if n := w.srv.Calls("apikeys.CreateKey"); n != 0 {
			t.Errorf("%d CreateKey calls while the slot was held", n)
		}
	})
	t.Run("released", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t)
		rec := held(w)
		released := *rec
		released.Holder, released.Expires = rotate.Holder{}, time.Now().Add(-time.Second)
		go func() {
			time.Sleep(time.Second)
			w.putRecord(&released)
		}()
		res, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{Force: true, WaitForLease: time.Minute})
		if err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		if !res.Rotated || res.Waited == nil || res.Waited.ID != rec.ID || res.Waited.Outcome != "resumed" || res.Waited.Holder.Host != "other-host" {
			t.Fatalf("Rotate = %+v (waited %+v); want the released rotation resumed after a wait", res, res.Waited)
		}
		w.invariant()
	})
}
