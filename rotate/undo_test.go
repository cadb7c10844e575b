package rotate_test

import (
	"context"
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
	"github.com/keyrotate/keyrotate/rotate"
)

// stopAt makes a rotation stop part-way at the n-th call of method.
func (w *world) stopAt(method string, n int) {
	w.t.Helper()
	w.srv.Fail(method, n, fake.Fault{Code: codes.PermissionDenied})
	if _, err := w.rotate(rotate.Options{}); !errors.Is(err, rotate.ErrStoppedPartWay) {
		w.t.Fatalf("Rotate with a fault at %s#%d = %v, want ErrStoppedPartWay", method, n, err)
	}
	w.srv.ClearFaults()
	w.invariant()
}

func (w *world) abort() *rotate.Result {
	w.t.Helper()
	res, err := w.r.Abort(context.Background(), w.slot)
	w.noLeaks(res, err)
	if err != nil {
		w.t.Fatalf("Abort: %v", err)
	}
	return res
}

// checkBackToOld: the old key is the only live key and is in every place;
// every other key keyrotate made is deleted; no record is left.
func (w *world) checkBackToOld() {
	w.t.Helper()
	live := w.liveKeys()
	if len(live) != 1 || live[0].Name != w.oldName || !w.srv.KeyWorks(w.oldKey) {
		w.t.Fatalf("live keys = %d, want only the old key, working", len(live))
	}
	if w.latest() != w.oldKey {
		w.t.Errorf("secret latest does not hold the old key")
	}
	if got, _ := os.ReadFile(w.envPath); string(got) != w.envText {
		w.t.Errorf(".env is not back to its original bytes:\n%s", cmp.Diff(w.envText, string(got)))
	}
	sec := w.secret()
	if _, ok := sec.Annotations["keyrotate.rotation"]; ok {
		w.t.Errorf("record left behind")
	}
	vs := w.srv.SecretVersions(w.slot.Secret)
	if last := vs[len(vs)-1]; last.State != secretmanagerpb.SecretVersion_ENABLED {
		w.t.Errorf("newest version %s is %v", last.Name, last.State)
	}
	for _, v := range vs[:len(vs)-1] {
		p, _ := w.srv.SecretPayload(v.Name)
		if string(p) != w.oldKey && v.State == secretmanagerpb.SecretVersion_ENABLED {
			w.t.Errorf("version %s holds a deleted key and is still enabled", v.Name)
		}
	}
}

func TestAbort(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		method string
		n      int
	}{
		{"after create", "secretmanager.AddSecretVersion", 1},
		{"after distribution", "secretmanager.UpdateSecret", 2},
		{"before deleting the old key", "apikeys.DeleteKey", 1},
		{"after deleting the old key", "secretmanager.DisableSecretVersion", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each case has its own emulator
			w := newWorld(t)
			w.stopAt(tc.method, tc.n)
			res := w.abort()
			if !res.Rotated || res.Kind != rotate.KindAbort || res.NewKey.Name != w.oldName {
				t.Errorf("Abort = %+v, want the old key put back", res)
			}
			w.checkBackToOld()
			if n := len(w.srv.Keys(project, true)); n != 2 {
				t.Errorf("keys = %d, want the old one and the aborted one", n)
			}
			// The slot is usable again.
			if _, err := w.rotate(rotate.Options{}); err != nil {
				t.Errorf("Rotate after Abort: %v", err)
			}
		})
	}
}

func TestAbortNothingToDo(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	res := w.abort()
	if res.Rotated || !strings.Contains(res.Reason, "nothing to abort") {
		t.Errorf("Abort = %+v, want nothing done", res)
	}
	if n := w.srv.MutatingCalls(); n != 0 {
		t.Errorf("%d mutating calls", n)
	}
}

// TestAbortResumes: an abort that stops part-way is finished by the next.
func TestAbortResumes(t *testing.T) {
	t.Parallel() // its own emulator(s); mostly waiting out per-secret write rates
	w := newWorld(t)
	w.stopAt("apikeys.DeleteKey", 1)
	w.srv.Fail("apikeys.DeleteKey", w.srv.Calls("apikeys.DeleteKey")+1, fake.Fault{Code: codes.PermissionDenied})
	if _, err := w.r.Abort(context.Background(), w.slot); !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("Abort with a fault at DeleteKey = %v, want ErrStoppedPartWay", err)
	}
	w.invariant()
	var ne *rotate.NextError
	if _, err := w.rotate(rotate.Options{}); !errors.Is(err, rotate.ErrRotationInProgress) || !errors.As(err, &ne) ||
		ne.Next != (rotate.Next{Action: rotate.NextFinishFirst, Slot: w.slot.Name, Kind: rotate.KindAbort}) {
		t.Errorf("Rotate during an unfinished abort = %v (hint %q), want ErrRotationInProgress pointing at abort", err, errhint.Of(err))
	}
	res := w.abort()
	if !res.Resumed {
		t.Errorf("second Abort did not resume")
	}
	w.checkBackToOld()
}

// TestAbortWhenOldKeyFails: an old key that no longer works is not put
// back; the rotation stays resumable.
func TestAbortWhenOldKeyFails(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.stopAt("secretmanager.UpdateSecret", 2)
	w.srv.SuspendKey(w.oldName)
	_, err := w.r.Abort(context.Background(), w.slot)
	if err == nil || errors.Is(err, rotate.ErrStoppedPartWay) || !strings.Contains(err.Error(), "does not work") {
		t.Fatalf("Abort with a dead old key = %v, want a plain failure", err)
	}
	rec := w.secret().Annotations["keyrotate.rotation"]
	if !strings.Contains(rec, `"phase":"distributed"`) || strings.Contains(rec, `"kind":"abort"`) {
		t.Errorf("record after the failed abort = %s, want the rotation's, released", rec)
	}
	res, err := w.rotate(rotate.Options{})
	if err != nil || !res.Resumed {
		t.Fatalf("Rotate after the failed abort = %v, %+v; want the rotation resumed", err, res)
	}
}

func TestRollback(t *testing.T) {
	t.Parallel() // its own emulator(s); mostly waiting out per-secret write rates
	w := newWorld(t)
	first, err := w.rotate(rotate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.r.Rollback(context.Background(), w.slot, rotate.RollbackOptions{})
	w.noLeaks(res, err)
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if res.NewKey.Name != w.oldName || res.OldKey.Name != first.NewKey.Name {
		t.Errorf("Rollback went from %s to %s, want %s to %s", res.OldKey.Name, res.NewKey.Name, first.NewKey.Name, w.oldName)
	}
	w.checkBackToOld()
	if got := w.secret().VersionAliases; got["current"] != 3 || got["previous"] != 2 {
		t.Errorf("aliases = %v, want current 3, previous 2", got)
	}
	if k, _ := w.srv.Key(first.NewKey.Name); k.DeleteTime == "" {
		t.Errorf("the newer key was not deleted")
	}
	// The rollback noted the key it put back: the next rotation starts
	// from it without a LookupKey.
	w.srv.ResetCalls()
	next, err := w.rotate(rotate.Options{Again: true})
	if err != nil {
		t.Fatal(err)
	}
	if next.OldKey.Name != w.oldName || w.srv.Calls("apikeys.LookupKey") != 0 {
		t.Errorf("rotation after rollback went from %s with %d LookupKey calls, want from %s with none", next.OldKey.Name, w.srv.Calls("apikeys.LookupKey"), w.oldName)
	}
}

func TestRollbackVerifyFailure(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	first, err := w.rotate(rotate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env, _ := os.ReadFile(w.envPath)
	w.srv.SuspendKey(w.oldName)
	_, err = w.r.Rollback(context.Background(), w.slot, rotate.RollbackOptions{})
	if !errors.Is(err, rotate.ErrVerifyFailed) {
		t.Fatalf("Rollback to a suspended key = %v, want ErrVerifyFailed", err)
	}
	if k, _ := w.srv.Key(w.oldName); k.DeleteTime == "" {
		t.Errorf("the old key was undeleted and left so")
	}
	live := w.liveKeys()
	if len(live) != 1 || live[0].Name != first.NewKey.Name {
		t.Errorf("live keys = %d, want only the current one", len(live))
	}
	if got, _ := os.ReadFile(w.envPath); string(got) != string(env) {
		t.Errorf(".env changed")
	}
	if _, ok := w.secret().Annotations["keyrotate.rotation"]; ok {
		t.Errorf("record left behind")
	}
}

func TestFinalize(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	now := time.Now()
	w.r.Now = func() time.Time { return now }
	g := time.Hour
	if _, err := w.rotate(rotate.Options{Grace: &g}); err != nil {
		t.Fatal(err)
	}
	fin := func(opts rotate.FinalizeOptions) *rotate.FinalizeResult {
		t.Helper()
		res, err := w.r.Finalize(context.Background(), w.slot, opts)
		w.noLeaks(nil, err)
		if err != nil {
			t.Fatalf("Finalize: %v", err)
		}
		return res
	}
	res := fin(rotate.FinalizeOptions{Scan: true})
	if len(res.Keys) != 1 || res.Keys[0].Action != "kept" || res.Keys[0].Key != w.oldName {
		t.Fatalf("Finalize within grace = %+v, want the old key kept", res.Keys)
	}
	// A leftover of a failed rotation, and one still held by a target.
	leftover, _, err := w.srv.SeedKey(project, "gemini-prod-leftover", &apikeys.V2Key{
		Annotations: map[string]string{"keyrotate.slot": "gemini-prod", "keyrotate.rotation": "20260101000000-aaaaaaaa"}})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	w.srv.ResetCalls()
	res = fin(rotate.FinalizeOptions{Scan: true, DryRun: true})
	if n := w.srv.MutatingCalls(); n != 0 {
		t.Errorf("dry run made %d mutating calls", n)
	}
	var got []string
	for _, k := range res.Keys {
		got = append(got, string(k.Action)+" "+k.Key)
	}
	want := []string{"would delete " + w.oldName, "would delete " + leftover}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dry run (-want +got):\n%s", diff)
	}
	res = fin(rotate.FinalizeOptions{Scan: true, ConfirmRevocation: true})
	for _, k := range res.Keys {
		if k.Action != "deleted" {
			t.Errorf("Finalize: %s %s (%s), want deleted", k.Action, k.Key, k.Reason)
		}
	}
	if live := w.liveKeys(); len(live) != 1 {
		t.Errorf("live keys = %d, want only the current one", len(live))
	}
	vs := w.srv.SecretVersions(w.slot.Secret)
	if vs[0].State != secretmanagerpb.SecretVersion_DISABLED || vs[1].State != secretmanagerpb.SecretVersion_ENABLED {
		t.Errorf("versions after finalize: %v %v, want the old one disabled", vs[0].State, vs[1].State)
	}
	sec := w.secret()
	if _, ok := sec.Annotations["keyrotate.pending"]; ok {
		t.Errorf("pending index not emptied: %v", sec.Annotations)
	}
	if _, ok := sec.Annotations["keyrotate.rotation"]; ok {
		t.Errorf("finalize left its lock")
	}
	if res := fin(rotate.FinalizeOptions{Scan: true}); len(res.Keys) != 0 {
		t.Errorf("second Finalize found %+v", res.Keys)
	}
}

// TestRotateFinalizesDueKeys: rotate deletes old keys whose grace ended,
// at no extra API call while none is due.
func TestRotateFinalizesDueKeys(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	now := time.Now()
	w.r.Now = func() time.Time { return now }
	g := time.Hour
	if _, err := w.rotate(rotate.Options{Grace: &g}); err != nil {
		t.Fatal(err)
	}
	w.srv.ResetCalls()
	if res, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{}); err != nil || res.Rotated || len(res.Finalized) != 0 {
		t.Fatalf("Rotate while nothing is due = %+v, %v", res, err)
	}
	if n := w.srv.MutatingCalls(); n != 0 {
		t.Errorf("%d mutating calls while nothing is due", n)
	}
	now = now.Add(2 * time.Hour)
	res, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Finalized) != 1 || res.Finalized[0].Key != w.oldName || res.Finalized[0].Action != "deleted" {
		t.Errorf("Rotate's finalize = %+v, want the old key deleted", res.Finalized)
	}
	if k, _ := w.srv.Key(w.oldName); k.DeleteTime == "" {
		t.Errorf("old key not deleted")
	}
}

// TestFinalizeSkipsHeldKey: a key a target still holds is never deleted.
func TestFinalizeSkipsHeldKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	name, ks, err := w.srv.SeedKey(project, "gemini-prod-stray", &apikeys.V2Key{
		Annotations: map[string]string{"keyrotate.slot": "gemini-prod"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.envPath, []byte(strings.Replace(w.envText, w.oldKey, ks, 1)), 0o640); err != nil {
		t.Fatal(err)
	}
	res, err := w.r.Finalize(context.Background(), w.slot, rotate.FinalizeOptions{Scan: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Keys) != 1 || res.Keys[0].Key != name || res.Keys[0].Action != "skipped" || !strings.Contains(res.Keys[0].Reason, "dotenv:") {
		t.Errorf("Finalize = %+v, want the held key skipped, naming the target", res.Keys)
	}
	if k, _ := w.srv.Key(name); k.DeleteTime != "" {
		t.Errorf("a key held by a target was deleted")
	}
}
