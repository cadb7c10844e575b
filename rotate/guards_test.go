package rotate_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/targets"
)

// The tests in this file each make one of the rotation's safety checks the
// only thing between the run and deleting a key that something configured
// still holds: a concurrent writer of the secret, a target that claims a
// write it did not make. Each fails when its check is removed (see
// .ci/mutants for the mutation run that proves it).

// canary is a key-shaped string that is no API key: a place that holds it
// holds a key that does not work, and it must never be printed.
const canary = "AIzaSyCANARY-0123456789abcdefghijklmnopq"

// liar is a target whose Write reports success but which holds something
// else afterwards: an old value it never replaced, or a value of its own.
type liar struct {
	held   secret.Key
	keep   bool       // Write changes nothing
	other  secret.Key // else Write stores this instead of the key given
	writes int
}

func (l *liar) String() string                           { return "liar:app/config" }
func (l *liar) Read(context.Context) (secret.Key, error) { return l.held, nil }
func (l *liar) Write(_ context.Context, _ secret.Key) error {
	l.writes++
	if !l.keep {
		l.held = l.other
	}
	return nil
}

var _ rotate.Target = (*liar)(nil)

// noKeyMaterial fails when text holds any of keys, or any 10 characters
// in a row of one: a mismatch is told by fingerprints only.
func noKeyMaterial(t *testing.T, what, text string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		for i := 0; i+10 <= len(k); i++ {
			if strings.Contains(text, k[i:i+10]) {
				t.Fatalf("%s holds key material (%s, from offset %d): %q", what, secret.Fingerprint(k), i, text)
			}
		}
	}
}

// oldKeyKept checks that a run that stopped did not touch the old key.
func (w *world) oldKeyKept() {
	w.t.Helper()
	if n := w.srv.Calls("apikeys.DeleteKey"); n != 0 {
		w.t.Errorf("DeleteKey called %d times; want none: the old key is still held", n)
	}
	if !w.srv.KeyWorks(w.oldKey) {
		w.t.Errorf("the old key %s no longer works", secret.Fingerprint(w.oldKey))
	}
}

// TestReadBackCatchesLyingTarget: a target whose Write succeeds but which
// then holds the old key, or a key-shaped value of its own. Only the
// per-target read-back comparison tells; without it the old key is deleted
// while the target still holds it. The run stops part-way, names the
// target and what it holds by fingerprint, and prints no key material.
func TestReadBackCatchesLyingTarget(t *testing.T) {
	t.Parallel() // its own emulator(s); mostly waiting out per-secret write rates
	for _, tc := range []struct {
		name string
		keep bool // else the target stores the canary
	}{
		{"keeps the old key", true},
		{"holds another value", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			l := &liar{held: secret.New(w.oldKey), keep: tc.keep, other: secret.New(canary)}
			w.slot.Targets = append(w.slot.Targets, l)
			res, err := w.rotate(rotate.Options{})
			if !errors.Is(err, rotate.ErrStoppedPartWay) {
				t.Fatalf("Rotate = %+v, %v; want ErrStoppedPartWay", res, err)
			}
			if l.writes != 1 {
				t.Errorf("the lying target was written %d times, want 1", l.writes)
			}
			w.oldKeyKept()
			msg := err.Error()
			// The read-back names the target, what it holds and what it
			// should hold, by fingerprints.
			newFP := secret.Fingerprint(w.latest())
			for _, want := range []string{"read back " + l.String(), "holds " + l.held.Fingerprint(), "want " + newFP} {
				if !strings.Contains(msg, want) {
					t.Errorf("error does not say %q: %v", want, err)
				}
			}
			keys := []string{w.oldKey, w.latest(), canary}
			noKeyMaterial(t, "error", msg, keys...)
			noKeyMaterial(t, "hint", errhint.Of(err), keys...)
			noKeyMaterial(t, "logs", w.logs.String(), keys...)
			noKeyMaterial(t, "events", w.events.String(), keys...)
			// The .env was written and holds the new key; the record stays
			// for the next run.
			if w.envValue() != w.latest() {
				t.Errorf(".env does not hold the new key")
			}
			if _, ok := w.secret().Annotations["keyrotate.rotation"]; !ok {
				t.Errorf("no rotation record left for the next run")
			}
			w.invariant()

			// Once the target tells the truth, the next run resumes and
			// finishes; only then is the old key deleted.
			l.keep, l.other = false, secret.New(w.latest())
			if res, err := w.rotate(rotate.Options{}); err != nil || !res.Rotated || !res.Resumed {
				t.Fatalf("second Rotate = %+v, %v; want a resumed, finished rotation", res, err)
			}
			if w.srv.KeyWorks(w.oldKey) || !l.held.Equal(secret.New(w.latest())) {
				t.Errorf("after the resumed run: old key works = %t, target holds the new key = %t; want false, true",
					w.srv.KeyWorks(w.oldKey), l.held.Equal(secret.New(w.latest())))
			}
		})
	}
}

// TestReadBackCatchesConcurrentSecretWriter: another writer adds a version
// to the secret between this run's AddSecretVersion and its read-back (a
// sync job putting the old key back, or a person storing a key of their
// own). Only the check that the latest version holds the new key tells:
// without it the old key is deleted while the secret's latest version
// holds it. The run stops part-way naming the secret and the version.
func TestReadBackCatchesConcurrentSecretWriter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		payload func(w *world) string
	}{
		{"puts the old key back", func(w *world) string { return w.oldKey }},
		{"stores another value", func(*world) string { return canary }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			var foreign string // the version the other writer added
			w.srv.SetHook("secretmanager.AccessSecretVersion", func(ctx context.Context, n int) error {
				if foreign != "" || w.srv.Calls("secretmanager.AddSecretVersion") == 0 {
					return nil
				}
				v, err := w.srv.SeedSecretVersion(w.slot.Secret, []byte(tc.payload(w)))
				if err != nil {
					t.Error(err)
				}
				foreign = v
				return nil
			})
			res, err := w.rotate(rotate.Options{})
			if foreign == "" {
				t.Fatalf("the secret was never read after the run added its version (Rotate = %+v, %v)", res, err)
			}
			if !errors.Is(err, rotate.ErrStoppedPartWay) {
				t.Fatalf("Rotate = %+v, %v; want ErrStoppedPartWay", res, err)
			}
			w.oldKeyKept()
			msg := err.Error()
			for _, want := range []string{"read back " + w.slot.Secret, foreign, "holds " + secret.Fingerprint(tc.payload(w))} {
				if !strings.Contains(msg, want) {
					t.Errorf("error does not say %q: %v", want, err)
				}
			}
			vs := w.srv.SecretVersions(w.slot.Secret)
			ours, _ := w.srv.SecretPayload(vs[len(vs)-2].Name)
			keys := []string{w.oldKey, string(ours), canary}
			noKeyMaterial(t, "error", msg, keys...)
			noKeyMaterial(t, "hint", errhint.Of(err), keys...)
			if _, ok := w.secret().Annotations["keyrotate.rotation"]; !ok {
				t.Errorf("no rotation record left for the next run")
			}
		})
	}
}

// dud is a write-only target whose Write reports success but lands
// nowhere: only Confirm tells.
type dud struct{ sink }

func (d *dud) Write(context.Context, secret.Key) error { d.writes++; return nil }

// TestReadBackCatchesFailedConfirm: for a target that cannot be read back,
// Confirm is the read-back. A write that did not land fails it, and the
// old key is kept; without the check it is deleted while the target may
// still hold it.
func TestReadBackCatchesFailedConfirm(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := &dud{}
	w.slot.Targets = append(w.slot.Targets, d)
	res, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("Rotate = %+v, %v; want ErrStoppedPartWay", res, err)
	}
	if d.writes != 1 || !d.confirmed.IsZero() {
		t.Errorf("write-only target: %d writes, confirmed %s; want 1 write, nothing confirmed", d.writes, d.confirmed)
	}
	w.oldKeyKept()
	if msg := err.Error(); !strings.Contains(msg, "confirm "+d.String()) {
		t.Errorf("error does not name the target that failed to confirm: %v", err)
	}
	noKeyMaterial(t, "error", err.Error(), w.oldKey, w.latest())
}

// TestDistributeKeepsAnotherWritersValue: between preflight and the write,
// something else puts a value of its own into the variable. The run must
// not write over it (the variable is not as preflight saw it: a person or
// a tool is changing it); it stops, and the old key stays.
func TestDistributeKeepsAnotherWritersValue(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	theirs := strings.Replace(w.envText, w.oldKey, canary, 1)
	w.srv.SetHook("secretmanager.AddSecretVersion", func(context.Context, int) error {
		// After preflight read the .env, before distribute writes it.
		if err := os.WriteFile(w.envPath, []byte(theirs), 0o640); err != nil {
			t.Error(err)
		}
		return nil
	})
	res, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrStoppedPartWay) || !errors.Is(err, rotate.ErrTargetChanged) {
		t.Fatalf("Rotate = %+v, %v; want ErrStoppedPartWay wrapping ErrTargetChanged", res, err)
	}
	w.oldKeyKept()
	if got, _ := os.ReadFile(w.envPath); string(got) != theirs {
		t.Errorf("the other writer's value was overwritten:\n%s", cmp.Diff(theirs, string(got)))
	}
	noKeyMaterial(t, "error", err.Error(), w.oldKey, w.latest(), canary)
}

// vanishing is a target that cannot be read once it was written (its file
// removed, its server gone).
type vanishing struct {
	liar
	err error
}

func (v *vanishing) Read(ctx context.Context) (secret.Key, error) {
	if v.writes > 0 {
		return secret.Key{}, v.err
	}
	return v.liar.Read(ctx)
}

// TestReadBackStopsOnReadError: a target that cannot be read back stops
// the run with the reason, and the old key stays.
func TestReadBackStopsOnReadError(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	gone := errors.New("liar:app/config: connection refused")
	v := &vanishing{liar: liar{held: secret.New(w.oldKey), other: secret.New(canary)}, err: gone}
	w.slot.Targets = append(w.slot.Targets, v)
	res, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrStoppedPartWay) || !errors.Is(err, gone) {
		t.Fatalf("Rotate = %+v, %v; want ErrStoppedPartWay wrapping the read error", res, err)
	}
	w.oldKeyKept()
	if !strings.Contains(err.Error(), "read back "+v.String()) {
		t.Errorf("error does not name the read-back of the target: %v", err)
	}
}

// TestPreflightRefusesBeforeAnyWrite: what preflight must refuse, it
// refuses before the lock, before any key is made: a target that cannot
// be read or is ambiguous, a key of another project, a secret whose newest
// version consumers cannot read. Each is the only check that stops the run
// there; without it the run fails later, after creating a key, or goes on.
func TestPreflightRefusesBeforeAnyWrite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, w *world)
		is    error  // errors.Is, or nil
		hint  string // in the hint
	}{
		{"target file missing", func(t *testing.T, w *world) {
			w.slot.Targets = append(w.slot.Targets, targets.NewDotEnv(w.envPath+".missing", "GEMINI_API_KEY"))
		}, rotate.ErrInvalidTarget, "create"},
		{"variable defined twice", func(t *testing.T, w *world) {
			if err := os.WriteFile(w.envPath, []byte(w.envText+"\nGEMINI_API_KEY="+w.oldKey+"\n"), 0o640); err != nil {
				t.Fatal(err)
			}
		}, rotate.ErrInvalidTarget, "keep one definition"},
		{"key of another project number", func(t *testing.T, w *world) {
			w.slot.Project = "31337"
		}, rotate.ErrBadConfig, "project:"},
		{"newest secret version disabled", func(t *testing.T, w *world) {
			vs := w.srv.SecretVersions(w.slot.Secret)
			if _, err := w.r.Secrets.DisableSecretVersion(context.Background(),
				&secretmanagerpb.DisableSecretVersionRequest{Name: vs[len(vs)-1].Name}); err != nil {
				t.Fatal(err)
			}
		}, nil, "disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(t, w)
			before, _ := os.ReadFile(w.envPath)
			w.srv.ResetCalls()
			res, err := w.rotate(rotate.Options{})
			if err == nil || errors.Is(err, rotate.ErrStoppedPartWay) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("Rotate = %+v, %v; want a refusal (%v) before any change", res, err, tc.is)
			}
			if h := errhint.Of(err); !strings.Contains(h, tc.hint) {
				t.Errorf("hint = %q, want it to say %q", h, tc.hint)
			}
			if n := w.srv.MutatingCalls(); n != 0 {
				t.Errorf("a refused run made %d mutating calls: %v", n, w.srv.CallCounts())
			}
			if after, _ := os.ReadFile(w.envPath); string(after) != string(before) {
				t.Errorf("a refused run changed the .env")
			}
		})
	}
}

// TestCreateRefusesForeignKeyWithItsID: a key with the rotation's key id
// exists but was not made by the rotation (no rotation annotation). The
// run must not adopt it: it would put a key it knows nothing about (other
// restrictions, another binding) everywhere and delete the old one.
func TestCreateRefusesForeignKeyWithItsID(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var foreign string
	w.srv.SetHook("apikeys.CreateKey", func(context.Context, int) error {
		// The lock is written: its record names the key id to be made.
		var rec struct {
			NewKeyID string `json:"new_key_id"`
		}
		if err := json.Unmarshal([]byte(w.secret().Annotations["keyrotate.rotation"]), &rec); err != nil || rec.NewKeyID == "" {
			t.Errorf("no rotation record before CreateKey: %v", err)
			return nil
		}
		var err error
		if _, foreign, err = w.srv.SeedKey(project, rec.NewKeyID, &apikeys.V2Key{DisplayName: "someone else's"}); err != nil {
			t.Error(err)
		}
		return nil
	})
	res, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrBadConfig) || !strings.Contains(err.Error(), "not made by rotation") {
		t.Fatalf("Rotate = %+v, %v; want ErrBadConfig: the key was not made by this rotation", res, err)
	}
	w.oldKeyKept()
	if w.envValue() == foreign || w.latest() == foreign {
		t.Errorf("the foreign key was distributed")
	}
}

// TestNewKeyDeletedAfterDistribution: a rotation stopped after every
// target was read back holding the new key, and then someone deleted the
// new key. The resumed run must not take that for the cleanup of a failed
// verification and clear the record: the targets hold the deleted key and
// only undeleting it helps. It keeps the record and says so.
func TestNewKeyDeletedAfterDistribution(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.stopAt("apikeys.DeleteKey", 1) // after the read-back, at the old key's delete
	newKey := w.latest()
	var newName string
	for _, k := range w.liveKeys() {
		if k.KeyString == newKey {
			newName = k.Name
		}
	}
	svc, err := w.srv.APIKeysService(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Projects.Locations.Keys.Delete(newName).Do(); err != nil {
		t.Fatal(err)
	}
	res, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrKeyNotFound) || errors.Is(err, rotate.ErrVerifyFailed) {
		t.Fatalf("Rotate = %+v, %v; want ErrKeyNotFound (the distributed key was deleted), not a failed verification", res, err)
	}
	if h := errhint.Of(err); !strings.Contains(h, "undelete") {
		t.Errorf("hint = %q, want it to say undelete", h)
	}
	if _, ok := w.secret().Annotations["keyrotate.rotation"]; !ok {
		t.Errorf("the record was cleared although the targets hold the deleted key")
	}
	if !w.srv.KeyWorks(w.oldKey) {
		t.Errorf("the old key was deleted too")
	}
}

// TestCreateThrottledIsUnsure: CreateKey answered 429 until the run gives
// up. A 429 proves only that the last attempt made nothing: an earlier
// attempt whose answer was lost may have made the key (its retries then
// meet the quota before they could meet the existing key). So the run
// keeps its record and stops part-way, and the next run finds or makes
// exactly one key with the same id — it does not clear the record as for a
// definite refusal.
func TestCreateThrottledIsUnsure(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.r.Retry = fastRetry
	w.srv.Fail("apikeys.CreateKey", fake.Next, fake.Fault{Code: codes.ResourceExhausted, RetryDelay: 10 * time.Millisecond, Times: fake.Always})
	// The run gives up (its context ends, as on a deadline or a signal)
	// at CreateKey's third retry: not at a fixed time, which a loaded
	// -race run once reached still locking the slot.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	w.r.Retry.OnRetry = func(r gcp.Retrying) {
		if r.Call == "apikeys.keys.create" && r.Attempt >= 3 {
			cancel(errors.New("the run gave up"))
		}
	}
	res, err := w.r.Rotate(ctx, w.slot, rotate.Options{Force: true})
	w.noLeaks(res, err)
	if !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("Rotate = %+v, %v; want ErrStoppedPartWay (the key may exist)", res, err)
	}
	if _, ok := w.secret().Annotations["keyrotate.rotation"]; !ok {
		t.Fatalf("the record was cleared: the next run would make a second key")
	}
	w.oldKeyKept()
	w.srv.ClearFaults()
	if res, err := w.rotate(rotate.Options{}); err != nil || !res.Resumed {
		t.Fatalf("second Rotate = %+v, %v; want the rotation resumed", res, err)
	}
	if n := len(w.liveKeys()); n != 1 {
		t.Errorf("live keys after the resumed run = %d, want 1", n)
	}
}

// TestLostLeaseStopsRunPromptly: when another run takes the lease over,
// the renewal notices within a renewal period or so and cancels this run's
// call in flight, so that two runs do not write the slot's targets at
// once. (TestLostLease waits up to 10s, longer than the call's own
// timeout, so a renewal that noticed nothing would pass it too.)
func TestLostLeaseStopsRunPromptly(t *testing.T) {
	w := newWorld(t)
	w.slot.LeaseTTL = 300 * time.Millisecond // renewed every 100ms
	started, cancelled, release := blockCall(t, w, "secretmanager.AddSecretVersion")
	done := make(chan error, 1)
	go func() {
		_, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{Force: true})
		done <- err
	}()
	waitFor(t, started, "the run to reach AddSecretVersion")
	thief := *w.record()
	thief.Holder = rotate.Holder{Host: "other-host", PID: 99, ProcStart: "1", Run: "thief"}
	thief.Expires = time.Now().Add(time.Hour).UTC()
	w.putRecord(&thief)
	stolen := time.Now()
	select {
	case <-cancelled:
	case <-time.After(3 * time.Second):
		t.Errorf("the call in flight was not cancelled %s after the lease was lost (renewal every 100ms)", time.Since(stolen).Round(time.Millisecond))
	}
	release()
	if err := <-done; !errors.Is(err, rotate.ErrRotationInProgress) {
		t.Errorf("Rotate after losing its lease = %v, want ErrRotationInProgress", err)
	}
	w.oldKeyKept()
	if w.envValue() != w.oldKey {
		t.Errorf("the run wrote the .env after it lost its lease")
	}
}
