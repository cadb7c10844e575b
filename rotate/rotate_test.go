package rotate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/targets"
	"github.com/keyrotate/keyrotate/verify"
)

const (
	project    = "acme-prod"
	projectNum = 424242424242
	sa         = "gemini@acme-prod.iam.gserviceaccount.com"
)

// world is one slot on a fresh emulator: a bound, restricted key, its
// secret, and a .env that holds it.
type world struct {
	t       testing.TB
	srv     *emulator.Server
	r       *rotate.Rotator
	slot    *rotate.Slot
	oldName string
	oldKey  string
	envPath string
	envText string
	logs    *bytes.Buffer
	events  *bytes.Buffer
}

type worldOpt func(*apikeys.V2Key, *rotate.Slot)

func newWorld(t testing.TB, opts ...worldOpt) *world {
	t.Helper()
	return newWorldOn(t, emulator.Options{}, opts...)
}

// newWorldOn is newWorld on an emulator started with eo.
func newWorldOn(t testing.TB, eo emulator.Options, opts ...worldOpt) *world {
	t.Helper()
	srv := emutest.Start(t, eo)
	srv.AddProject(project, projectNum)
	spec := &apikeys.V2Key{
		DisplayName: "Gemini (prod)",
		Restrictions: &apikeys.V2Restrictions{
			ApiTargets:            []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}},
			ServerKeyRestrictions: &apikeys.V2ServerKeyRestrictions{AllowedIps: []string{"127.0.0.1", "::1"}},
		},
		ServiceAccountEmail: sa,
	}
	ctx := context.Background()
	keysSvc, err := srv.APIKeysService(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := srv.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sm.Close() })
	lookup, err := srv.APIKeysLookupClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lookup.Close() })
	w := &world{t: t, srv: srv, logs: &bytes.Buffer{}, events: &bytes.Buffer{}}
	w.slot = &rotate.Slot{
		Name: "gemini-prod", Project: project,
		Secret:             "projects/" + project + "/secrets/gemini-api-key",
		PropagationTimeout: 5 * time.Second, LeaseTTL: 15 * time.Minute, MaxAge: 90 * 24 * time.Hour,
		Prober: &verify.Gemini{BaseURL: "http://" + srv.GeminiAddr},
	}
	for _, o := range opts {
		o(spec, w.slot)
	}
	w.oldName, w.oldKey, err = srv.SeedKey(project, "gemini-2026", spec)
	if err != nil {
		t.Fatal(err)
	}
	secretName, err := srv.SeedSecret(project, "gemini-api-key", map[string]string{"owner": "platform"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.SeedSecretVersion(secretName, []byte(w.oldKey)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w.envPath = filepath.Join(dir, ".env")
	w.envText = "# app settings\nAPP_ENV=prod\nexport GEMINI_API_KEY=\"" + w.oldKey + "\" # rotated by keyrotate\nOTHER=1"
	if err := os.WriteFile(w.envPath, []byte(w.envText), 0o640); err != nil {
		t.Fatal(err)
	}
	w.slot.Targets = []rotate.Target{targets.NewDotEnv(w.envPath, "GEMINI_API_KEY")}
	w.r = &rotate.Rotator{
		Keys: keysSvc, Lookup: lookup, Secrets: sm,
		Log:          slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Events:       func(e rotate.Event) { fmt.Fprintf(w.events, "%+v\n", e) },
		PollInterval: time.Millisecond, ProbeInterval: 5 * time.Millisecond, ProbeMaxInterval: 20 * time.Millisecond,
		Retry: gcp.RetryPolicy{Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond, CallTimeout: 5 * time.Second, MaxElapsed: 5 * time.Second},
	}
	srv.ResetCalls()
	return w
}

// updateSecret writes the slot's secret as a test (another writer) does,
// through the rotator's client (updateSecretWith).
func (w *world) updateSecret(req *secretmanagerpb.UpdateSecretRequest) error {
	return updateSecretWith(w.r.Secrets, req)
}

// updateSecretWith writes a secret through c, waiting out Secret Manager's
// per-secret write rate, which the product's own writes keep and a test's
// direct writes do not.
func updateSecretWith(c *secretmanager.Client, req *secretmanagerpb.UpdateSecretRequest) error {
	for {
		_, err := c.UpdateSecret(context.Background(), req)
		if status.Code(err) != codes.ResourceExhausted {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *world) rotate(opts rotate.Options) (*rotate.Result, error) {
	opts.Force = true
	res, err := w.r.Rotate(context.Background(), w.slot, opts)
	w.noLeaks(res, err)
	return res, err
}

// liveKeys returns the keys of the project that are not deleted.
func (w *world) liveKeys() []*apikeys.V2Key {
	var live []*apikeys.V2Key
	for _, k := range w.srv.Keys(project, true) {
		if k.DeleteTime == "" {
			live = append(live, k)
		}
	}
	return live
}

func (w *world) envValue() string {
	b, err := os.ReadFile(w.envPath)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "export GEMINI_API_KEY=\""); ok {
			return v[:strings.IndexByte(v, '"')]
		}
	}
	w.t.Fatalf(".env lost its GEMINI_API_KEY line:\n%s", b)
	return ""
}

func (w *world) latest() string {
	vs := w.srv.SecretVersions(w.slot.Secret)
	p, _ := w.srv.SecretPayload(vs[len(vs)-1].Name)
	return string(p)
}

func (w *world) secret() *secretmanagerpb.Secret {
	s, ok := w.srv.Secret(w.slot.Secret)
	if !ok {
		w.t.Fatal("secret gone")
	}
	return s
}

// invariant checks that every place that holds the key holds one that works.
func (w *world) invariant() {
	w.t.Helper()
	if !w.srv.KeyWorks(w.oldKey) && w.envValue() == w.oldKey {
		w.t.Errorf("the old key is dead but .env still holds it")
	}
	if v := w.envValue(); !w.srv.KeyWorks(v) {
		w.t.Errorf(".env holds a key that does not work (%s)", secret.Fingerprint(v))
	}
	if v := w.latest(); !w.srv.KeyWorks(v) {
		w.t.Errorf("the secret's latest version holds a key that does not work (%s)", secret.Fingerprint(v))
	}
}

// noLeaks asserts that no key string reached logs, events, errors,
// results or annotations.
func (w *world) noLeaks(res *rotate.Result, err error) {
	w.t.Helper()
	var sinks []string
	sinks = append(sinks, w.logs.String(), w.events.String(), fmt.Sprintf("%+v %#v", res, res))
	if err != nil {
		sinks = append(sinks, err.Error(), errhint.Of(err))
	}
	for k, v := range w.secret().Annotations {
		sinks = append(sinks, k+"="+v)
	}
	for _, k := range w.srv.Keys(project, true) {
		for _, v := range k.Annotations {
			sinks = append(sinks, v)
		}
		for _, sink := range sinks {
			if strings.Contains(sink, k.KeyString) {
				w.t.Fatalf("key string of %s leaked into output: %q", k.Name, sink)
			}
		}
	}
}

func TestRotateEndToEnd(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	res, err := w.rotate(rotate.Options{})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if !res.Rotated || res.Resumed {
		t.Errorf("Rotated, Resumed = %t, %t; want true, false", res.Rotated, res.Resumed)
	}
	live := w.liveKeys()
	if len(live) != 1 {
		t.Fatalf("live keys = %d, want exactly 1 (the new key)", len(live))
	}
	nk := live[0]
	old, _ := w.srv.Key(w.oldName)
	if old.DeleteTime == "" {
		t.Errorf("old key %s not deleted", w.oldName)
	}
	if diff := cmp.Diff(old.Restrictions, nk.Restrictions); diff != "" {
		t.Errorf("new key restrictions differ from the old key's (-old +new):\n%s", diff)
	}
	if nk.ServiceAccountEmail != sa || nk.DisplayName != old.DisplayName {
		t.Errorf("new key binding, display name = %q, %q; want %q, %q", nk.ServiceAccountEmail, nk.DisplayName, sa, old.DisplayName)
	}
	if nk.Annotations["keyrotate.slot"] != "gemini-prod" || nk.Annotations["keyrotate.rotation"] != res.RotationID || nk.Annotations["keyrotate.supersedes"] != w.oldName {
		t.Errorf("new key annotations = %v", nk.Annotations)
	}
	if !strings.HasPrefix(nk.Name, "projects/424242424242/locations/global/keys/gemini-prod-") {
		t.Errorf("new key name = %q, want one under the project number, id from the slot", nk.Name)
	}
	if !w.srv.KeyWorks(nk.KeyString) || w.srv.KeyWorks(w.oldKey) {
		t.Errorf("new key works = %t, old key works = %t; want true, false", w.srv.KeyWorks(nk.KeyString), w.srv.KeyWorks(w.oldKey))
	}
	if w.latest() != nk.KeyString {
		t.Errorf("secret latest does not hold the new key")
	}
	want := strings.Replace(w.envText, w.oldKey, nk.KeyString, 1)
	got, _ := os.ReadFile(w.envPath)
	if string(got) != want {
		t.Errorf(".env after rotation differs beyond the value:\n%s", cmp.Diff(want, string(got)))
	}
	if st, _ := os.Stat(w.envPath); st.Mode().Perm() != 0o640 {
		t.Errorf(".env mode = %v, want 0640", st.Mode().Perm())
	}
	sec := w.secret()
	if _, ok := sec.Annotations["keyrotate.rotation"]; ok {
		t.Errorf("rotation record left on the secret: %v", sec.Annotations)
	}
	if sec.Annotations["owner"] != "platform" {
		t.Errorf("other annotations lost: %v", sec.Annotations)
	}
	if diff := cmp.Diff(map[string]int64{"current": 2, "previous": 1}, sec.VersionAliases); diff != "" {
		t.Errorf("aliases (-want +got):\n%s", diff)
	}
	vs := w.srv.SecretVersions(w.slot.Secret)
	if len(vs) != 2 || vs[0].State != secretmanagerpb.SecretVersion_DISABLED || vs[1].State != secretmanagerpb.SecretVersion_ENABLED {
		t.Errorf("versions = %v, want 1 disabled and 2 enabled", vs)
	}
	if n := w.srv.CallsTotal(); n > 15 {
		t.Errorf("API calls per rotation = %d, want at most 15: %v", n, w.srv.CallCounts())
	}
}

// TestTwoVariablesInOneFile: two targets of a slot in one .env; the second
// write finds the file changed by the first, not its own value.
func TestTwoVariablesInOneFile(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	text := w.envText + "\nGOOGLE_API_KEY=" + w.oldKey + "\n"
	if err := os.WriteFile(w.envPath, []byte(text), 0o640); err != nil {
		t.Fatal(err)
	}
	w.slot.Targets = append(w.slot.Targets, targets.NewDotEnv(w.envPath, "GOOGLE_API_KEY"))
	res, err := w.rotate(rotate.Options{})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	got, _ := os.ReadFile(w.envPath)
	want := strings.ReplaceAll(text, w.oldKey, w.latest())
	if string(got) != want || res.NewKey.Fingerprint != secret.Fingerprint(w.latest()) {
		t.Errorf(".env after rotation:\n%s", cmp.Diff(want, string(got)))
	}
}

func TestPlanMakesNoWrites(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p, err := w.r.Plan(context.Background(), w.slot, rotate.Options{Force: true})
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if n := w.srv.MutatingCalls(); n != 0 {
		t.Errorf("Plan made %d mutating calls: %v", n, w.srv.CallCounts())
	}
	if got, _ := os.ReadFile(w.envPath); string(got) != w.envText {
		t.Errorf("Plan changed the .env")
	}
	if !p.WillRotate || p.Current.Name != w.oldName || len(p.Targets) != 1 || p.Targets[0].Holds != "current key" {
		t.Errorf("Plan = %+v", p)
	}
	w.noLeaks(nil, nil)
}

func TestNotDue(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	res, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rotated || res.Reason == "" {
		t.Errorf("Rotate of a fresh key = %+v, want nothing done with a reason", res)
	}
	if n := w.srv.MutatingCalls(); n != 0 {
		t.Errorf("a key not due caused %d mutating calls", n)
	}
}

func TestVerifyFailureRemovesNewKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*world)
		quick bool
	}{
		{"never propagates", func(w *world) { w.srv.SetPropagationDelay(24 * time.Hour) }, false},
		{"service disabled", func(w *world) {
			w.srv.SetServiceEnabled(project, "generativelanguage.googleapis.com", false)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			// Long enough that a definite failure, which writes the
			// secret three times (lock, failed record, release) at
			// Secret Manager's 2 writes a second, is told from a wait
			// for propagation.
			w.slot.PropagationTimeout = 4 * time.Second
			tc.setup(w)
			start := time.Now()
			_, err := w.rotate(rotate.Options{})
			if !errors.Is(err, rotate.ErrVerifyFailed) {
				t.Fatalf("Rotate error = %v, want ErrVerifyFailed", err)
			}
			if tc.quick && time.Since(start) > 3*time.Second {
				t.Errorf("a definite failure took %s; it should not wait for propagation (calls %v)", time.Since(start), w.srv.CallCounts())
			}
			live := w.liveKeys()
			if len(live) != 1 || live[0].Name != w.oldName {
				t.Errorf("live keys = %d (%v), want only the old key", len(live), live)
			}
			if got, _ := os.ReadFile(w.envPath); string(got) != w.envText {
				t.Errorf(".env changed")
			}
			if w.latest() != w.oldKey || len(w.srv.SecretVersions(w.slot.Secret)) != 1 {
				t.Errorf("secret changed")
			}
			if _, ok := w.secret().Annotations["keyrotate.rotation"]; ok {
				t.Errorf("rotation record left behind")
			}
		})
	}
}

// TestVerifyLeakedNewKey: a new key that the Gemini API answers "reported as
// leaked" (403 with no ErrorInfo) is a definite failure: probed once, not
// retried for the propagation window, deleted, nothing else changed, and
// the error says why.
func TestVerifyLeakedNewKey(t *testing.T) {
	w := newWorld(t)
	w.slot.PropagationTimeout = 5 * time.Second
	// Google's leak detection flags the new key as soon as it exists.
	w.srv.SetHook("gemini.CountTokens", func(context.Context, int) error {
		for _, k := range w.srv.Keys(project, false) {
			if k.Name != w.oldName {
				w.srv.MarkLeaked(k.Name)
			}
		}
		return nil
	})
	before := w.srv.Calls("gemini.CountTokens")
	start := time.Now()
	_, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrVerifyFailed) || !errors.Is(err, verify.ErrLeaked) {
		t.Fatalf("Rotate error = %v, want ErrVerifyFailed caused by verify.ErrLeaked", err)
	}
	if n := w.srv.Calls("gemini.CountTokens") - before; n != 1 {
		t.Errorf("the leaked new key was probed %d times, want 1 (not retried)", n)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a definite failure took %s; it should not wait for propagation", d)
	}
	if h := errhint.Of(err); !strings.Contains(h, "reported the new key as leaked") || !strings.Contains(h, "the old key still works") {
		t.Errorf("hint = %q, want it to say the new key was reported as leaked and the old key still works", h)
	}
	if live := w.liveKeys(); len(live) != 1 || live[0].Name != w.oldName {
		t.Errorf("live keys = %v, want only the old key", live)
	}
	if got, _ := os.ReadFile(w.envPath); string(got) != w.envText {
		t.Errorf(".env changed")
	}
	if w.latest() != w.oldKey || len(w.srv.SecretVersions(w.slot.Secret)) != 1 {
		t.Errorf("secret changed")
	}
}

// TestVerifyFailureCleanupResumes: when removing a new key that failed
// verification is itself interrupted, the run stops part-way, and the next
// run finishes the cleanup and reports the verification failure.
func TestVerifyFailureCleanupResumes(t *testing.T) {
	t.Parallel() // its own emulator(s); mostly waiting out per-secret write rates
	for _, tc := range []struct {
		method string
		n      int
	}{
		{"apikeys.DeleteKey", 1},          // deleting the new key
		{"secretmanager.UpdateSecret", 3}, // clearing the record after the delete
	} {
		t.Run(tc.method, func(t *testing.T) {
			w := newWorld(t)
			w.slot.PropagationTimeout = 100 * time.Millisecond
			w.srv.SetPropagationDelay(24 * time.Hour)
			w.srv.Fail(tc.method, tc.n, fake.Fault{Code: codes.PermissionDenied})
			_, err := w.rotate(rotate.Options{})
			if !errors.Is(err, rotate.ErrStoppedPartWay) {
				t.Fatalf("first Rotate = %v, want ErrStoppedPartWay", err)
			}
			w.invariant()
			_, err = w.rotate(rotate.Options{})
			if !errors.Is(err, rotate.ErrVerifyFailed) || errors.Is(err, rotate.ErrStoppedPartWay) {
				t.Fatalf("second Rotate = %v, want ErrVerifyFailed alone", err)
			}
			if live := w.liveKeys(); len(live) != 1 || live[0].Name != w.oldName {
				t.Errorf("live keys = %d, want only the old key", len(live))
			}
			if _, ok := w.secret().Annotations["keyrotate.rotation"]; ok {
				t.Errorf("rotation record left behind")
			}
			if got, _ := os.ReadFile(w.envPath); string(got) != w.envText {
				t.Errorf(".env changed")
			}
		})
	}
}

// TestResumeFollowsRecordedOperation: a create whose operation could not be
// followed is followed by the next run, not repeated.
func TestResumeFollowsRecordedOperation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.srv.Fail("apikeys.GetOperation", 1, fake.Fault{Code: codes.PermissionDenied})
	if _, err := w.rotate(rotate.Options{}); !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("first Rotate = %v, want ErrStoppedPartWay", err)
	}
	if rec := w.secret().Annotations["keyrotate.rotation"]; !strings.Contains(rec, `"create_op":"operations/`) {
		t.Fatalf("record = %s, want the create operation recorded", rec)
	}
	res, err := w.rotate(rotate.Options{})
	if err != nil || !res.Rotated {
		t.Fatalf("second Rotate = %+v, %v", res, err)
	}
	if n := w.srv.Calls("apikeys.CreateKey"); n != 1 {
		t.Errorf("CreateKey calls = %d, want 1: the second run follows the recorded operation", n)
	}
	if !strings.Contains(w.events.String(), "followed operation") {
		t.Errorf("events do not say the operation was followed:\n%s", w.events)
	}
}

func TestRefusesUnrestrictedKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(k *apikeys.V2Key, _ *rotate.Slot) { k.Restrictions = nil })
	_, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrUnrestricted) {
		t.Fatalf("Rotate error = %v, want ErrUnrestricted", err)
	}
	if n := w.srv.MutatingCalls(); n != 0 {
		t.Errorf("%d mutating calls for a refused rotation", n)
	}
}

func TestMigratesStandardKeyToAuthKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(k *apikeys.V2Key, s *rotate.Slot) {
		k.ServiceAccountEmail = ""
		s.ServiceAccount = sa
	})
	if strings.HasPrefix(w.oldKey, "AQ.") {
		t.Fatalf("seeded a standard key, got an auth key")
	}
	if _, err := w.rotate(rotate.Options{}); err != nil {
		t.Fatal(err)
	}
	live := w.liveKeys()
	if len(live) != 1 || live[0].ServiceAccountEmail != sa || !strings.HasPrefix(live[0].KeyString, "AQ.") {
		t.Errorf("new key = %+v, want an auth key bound to %s", live, sa)
	}
}

// TestForcedRerunAfterCompletion: a forced run right after a completed
// rotation is taken for a retry of it and does nothing, unless Again.
func TestForcedRerunAfterCompletion(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	first, err := w.rotate(rotate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.srv.ResetCalls()
	res, err := w.rotate(rotate.Options{})
	if err != nil || res.Rotated || !strings.Contains(res.Reason, first.RotationID) {
		t.Fatalf("forced rerun = %+v, %v; want nothing done, naming rotation %s", res, err, first.RotationID)
	}
	if n := w.srv.MutatingCalls(); n != 0 {
		t.Errorf("%d mutating calls", n)
	}
	if res, err := w.rotate(rotate.Options{Again: true}); err != nil || !res.Rotated {
		t.Errorf("rerun with Again = %+v, %v; want a rotation", res, err)
	}
}

// TestRequestAnswered: a forced run with RequestedAt does nothing when
// the current key was made at or after the request, however long ago (a
// Pub/Sub message delivered again long after a rotation answered it), and
// rotates when the current key is older than the request.
func TestRequestAnswered(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	asked := time.Now() // after the seeded key was made
	first, err := w.rotate(rotate.Options{RequestedAt: asked})
	if err != nil || !first.Rotated {
		t.Fatalf("first = %+v, %v; want a rotation", first, err)
	}
	// An hour later: the lease-TTL guard no longer covers the first rotation.
	w.r.Now = func() time.Time { return time.Now().Add(time.Hour) }
	w.srv.ResetCalls()
	res, err := w.rotate(rotate.Options{RequestedAt: asked})
	if err != nil || res.Rotated || res.Skip != rotate.SkipRetry || !strings.Contains(res.Reason, "requested at") {
		t.Fatalf("same request again = %+v, %v; want nothing done (skip %q)", res, err, rotate.SkipRetry)
	}
	if n := w.srv.MutatingCalls(); n != 0 {
		t.Errorf("%d mutating calls, want 0", n)
	}
	res, err = w.rotate(rotate.Options{RequestedAt: time.Now().Add(30 * time.Minute)})
	if err != nil || !res.Rotated {
		t.Errorf("a later request = %+v, %v; want a rotation", res, err)
	}
}

func TestGraceKeepsOldKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	g := 24 * time.Hour
	res, err := w.rotate(rotate.Options{Grace: &g})
	if err != nil {
		t.Fatal(err)
	}
	old, _ := w.srv.Key(w.oldName)
	if old.DeleteTime != "" || !w.srv.KeyWorks(w.oldKey) {
		t.Errorf("old key deleted despite grace")
	}
	da, err := time.Parse(time.RFC3339, old.Annotations["keyrotate.delete-after"])
	if err != nil || res.DeleteAfter == nil || !da.Equal(*res.DeleteAfter) {
		t.Errorf("delete-after = %q (%v), result %v", old.Annotations["keyrotate.delete-after"], err, res.DeleteAfter)
	}
	vs := w.srv.SecretVersions(w.slot.Secret)
	if vs[0].State != secretmanagerpb.SecretVersion_ENABLED {
		t.Errorf("old version disabled while its key still works")
	}
}

// TestKeptOldKeyKeepsItsAnnotations: an old key kept for its grace period
// keeps the annotations it had (its owner's, and those of the rotation
// that made it) beside keyrotate's delete-after: UpdateKey with the mask
// "annotations" replaces the whole map, so the run must send what the key
// held. It sent only its own once the run kept no more of the old key
// than its name, uid, etag and times (keyRef, for the heap a fleet's
// rotation holds).
func TestKeptOldKeyKeepsItsAnnotations(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(k *apikeys.V2Key, _ *rotate.Slot) {
		k.Annotations = map[string]string{"team": "payments"}
	})
	g := 24 * time.Hour
	if _, err := w.rotate(rotate.Options{Grace: &g}); err != nil {
		t.Fatal(err)
	}
	old, _ := w.srv.Key(w.oldName)
	for k, want := range map[string]string{"team": "payments"} {
		if got := old.Annotations[k]; got != want {
			t.Errorf("kept old key's annotation %s = %q, want %q (annotations %v)", k, got, want, old.Annotations)
		}
	}
	if old.Annotations["keyrotate.delete-after"] == "" {
		t.Errorf("kept old key has no delete-after: %v", old.Annotations)
	}
}

func TestLiveLeaseStopsSecondRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	rec := `{"id":"20261130000000-aaaaaaaa","slot":"gemini-prod","phase":"locked","old_key":"` + w.oldName +
		`","new_key_id":"gemini-prod-20261130000000-aaaaaaaa","holder":{"host":"other-host","pid":7,"run":"x"},"expires":"` +
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`
	sec := w.secret()
	sec.Annotations["keyrotate.rotation"] = rec
	if err := w.updateSecret(&secretmanagerpb.UpdateSecretRequest{
		// Only what the mask writes (and the etag): the rest of a read
		// secret is output-only or not written.
		Secret:     &secretmanagerpb.Secret{Name: sec.GetName(), Etag: sec.GetEtag(), Annotations: sec.GetAnnotations()},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}},
	}); err != nil {
		t.Fatal(err)
	}
	w.srv.ResetCalls()
	_, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrRotationInProgress) || !strings.Contains(err.Error(), "other-host") {
		t.Fatalf("Rotate error = %v, want ErrRotationInProgress naming the holder", err)
	}
	if n := w.srv.MutatingCalls(); n != 0 {
		t.Errorf("%d mutating calls while another run holds the lease", n)
	}
}

// TestFaultAtEachMutatingCall fails each mutating call of a rotation once:
// the run stops safely (the old key works, every target holds a working
// key), and a second run finishes the rotation with exactly one new key.
// TestFaultAtEachMutatingCall runs under the emulator's default codes and
// under FAILED_PRECONDITION and INVALID_ARGUMENT for the refusals only a
// key's state explains (SetStateCodes): the resumed run decides by state.
func TestFaultAtEachMutatingCall(t *testing.T) {
	t.Parallel()
	for _, code := range []codes.Code{codes.OK, codes.FailedPrecondition, codes.InvalidArgument} {
		t.Run(code.String(), func(t *testing.T) { t.Parallel(); faultAtEachMutatingCall(t, code) })
	}
}

func faultAtEachMutatingCall(t *testing.T, code codes.Code) {
	for _, tc := range []struct {
		method string
		n      int
		grace  bool
		// wantErr is the named error of the first run; nil: any error
		// that is not one of them (exit 1: nothing changed).
		wantErr error
	}{
		{"secretmanager.UpdateSecret", 1, false, nil},                          // lock
		{"apikeys.CreateKey", 1, false, nil},                                   // create, definite
		{"apikeys.GetOperation", 1, false, rotate.ErrStoppedPartWay},           // create's poll
		{"secretmanager.AddSecretVersion", 1, false, rotate.ErrStoppedPartWay}, // distribute
		{"secretmanager.UpdateSecret", 2, false, rotate.ErrStoppedPartWay},     // record progress
		{"apikeys.DeleteKey", 1, false, rotate.ErrStoppedPartWay},              // retire
		{"secretmanager.DisableSecretVersion", 1, false, rotate.ErrStoppedPartWay},
		{"secretmanager.UpdateSecret", 3, false, rotate.ErrStoppedPartWay}, // aliases and unlock
		{"apikeys.UpdateKey", 1, true, rotate.ErrStoppedPartWay},           // mark delete-after
	} {
		name := fmt.Sprintf("%s#%d", tc.method, tc.n)
		if tc.grace {
			name += "/grace"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each cell has its own emulator; most of a cell is waiting out per-secret write rates
			w := newWorld(t)
			w.srv.SetStateCodes(code)
			var opts rotate.Options
			if tc.grace {
				g := time.Hour
				opts.Grace = &g
			}
			// A permanent failure: transient ones are retried (faults_test.go).
			w.srv.Fail(tc.method, tc.n, fake.Fault{Code: codes.PermissionDenied})
			_, err := w.rotate(opts)
			if err == nil {
				t.Fatalf("Rotate succeeded despite a fault at %s", name)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Rotate error = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && (errors.Is(err, rotate.ErrStoppedPartWay) || errors.Is(err, rotate.ErrVerifyFailed)) {
				t.Errorf("Rotate error = %v, want a plain failure (nothing changed)", err)
			}
			// The hint of a stop part-way says what is true: both
			// keys work only while the old one is not deleted.
			var ne *rotate.NextError
			if errors.As(err, &ne) {
				k, _ := w.srv.Key(w.oldName)
				if deleted := k.DeleteTime != ""; deleted == strings.Contains(ne.Safe, "both keys still work") {
					t.Errorf("old key deleted: %v; the stop's hint says %q", deleted, ne.Safe)
				}
			}
			if tc.wantErr == nil {
				if len(w.liveKeys()) != 1 || w.envValue() != w.oldKey {
					t.Errorf("a failure before any change left changes behind")
				}
			}
			w.invariant()
			res, err := w.rotate(opts)
			if err != nil {
				t.Fatalf("second Rotate: %v", err)
			}
			if !res.Rotated {
				t.Errorf("second Rotate did nothing")
			}
			if res.OldKey.Name != w.oldName || res.OldKey.Fingerprint != secret.Fingerprint(w.oldKey) {
				t.Errorf("second Rotate's old key = %+v, want %s %s", res.OldKey, w.oldName, secret.Fingerprint(w.oldKey))
			}
			w.invariant()
			wantLive := 1
			if tc.grace {
				wantLive = 2
			}
			if live := w.liveKeys(); len(live) != wantLive {
				t.Errorf("live keys after the second run = %d, want %d", len(live), wantLive)
			}
			if n := len(w.srv.Keys(project, true)); n != 2 {
				t.Errorf("keys in all = %d, want 2 (old and exactly one new)", n)
			}
			if vs := w.srv.SecretVersions(w.slot.Secret); len(vs) != 2 {
				t.Errorf("secret versions = %d, want 2 (no duplicate of the new key)", len(vs))
			}
			if _, ok := w.secret().Annotations["keyrotate.rotation"]; ok {
				t.Errorf("rotation record left behind")
			}
		})
	}
}

func BenchmarkRotate(b *testing.B) {
	w := newWorld(b)
	w.r.Log = nil
	w.r.Events = nil
	var calls int
	perMethod := map[string]int{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.srv.ResetCalls()
		if _, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{Force: true, Again: true}); err != nil {
			b.Fatal(err)
		}
		calls += w.srv.CallsTotal()
		for m, n := range w.srv.CallCounts() {
			perMethod[m] += n
		}
	}
	b.ReportMetric(float64(calls)/float64(b.N), "calls/op")
	if testing.Verbose() {
		for m, n := range perMethod {
			b.Logf("%-40s %.1f/op", m, float64(n)/float64(b.N))
		}
	}
}

// TestLaterRotationsSkipLookup: a rotation notes on the secret which key
// its version holds, so the next one needs no LookupKey (14 calls, not
// 15); a version added by anything else is looked up as before.
func TestLaterRotationsSkipLookup(t *testing.T) {
	t.Parallel() // its own emulator(s); mostly waiting out per-secret write rates
	w := newWorld(t)
	if _, err := w.rotate(rotate.Options{}); err != nil {
		t.Fatal(err)
	}
	w.srv.ResetCalls()
	res, err := w.rotate(rotate.Options{Again: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := w.srv.Calls("apikeys.LookupKey"); n != 0 {
		t.Errorf("second rotation made %d LookupKey calls, want 0", n)
	}
	if n := w.srv.CallsTotal(); n != 14 {
		t.Errorf("second rotation made %d calls, want 14: %v", n, w.srv.CallCounts())
	}
	// A version added by hand (the same key string again): the annotation
	// names another version, so the key is looked up.
	cur := w.envValue() // the .env holds the current key
	if _, err := w.srv.SeedSecretVersion(w.slot.Secret, []byte(cur)); err != nil {
		t.Fatal(err)
	}
	w.srv.ResetCalls()
	res2, err := w.rotate(rotate.Options{Again: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := w.srv.Calls("apikeys.LookupKey"); n != 1 {
		t.Errorf("after a version added by hand, %d LookupKey calls, want 1", n)
	}
	if res2.OldKey.Name != res.NewKey.Name {
		t.Errorf("rotated from %s, want %s", res2.OldKey.Name, res.NewKey.Name)
	}
}

// putBackAt writes the .env's original content (the old key) back once,
// just before the n-th call of method lands: what a sync job or
// configuration management would do.
func (w *world) putBackAt(method string, n int) {
	var once sync.Once
	w.srv.SetHook(method, func(ctx context.Context, call int) error {
		if call == n {
			once.Do(func() {
				if err := os.WriteFile(w.envPath, []byte(w.envText), 0o640); err != nil {
					w.t.Error(err)
				}
			})
		}
		return nil
	})
}

// TestOldKeyPutBackBeforeDelete: something (a configuration-management
// run, a sync job) writes the old content of the .env back after the
// read-back proved the new key there and before the old key is deleted.
// The re-read just before the delete must catch it: the old key is kept,
// the run stops part-way naming the target, and the next run writes the
// new key again and finishes. Without that re-read the old key is deleted
// while the file holds it.
func TestOldKeyPutBackBeforeDelete(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// The write that ends the read-back is the second UpdateSecret (the
	// lock is the first): put the old file back just before it lands.
	w.putBackAt("secretmanager.UpdateSecret", 2)
	_, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrHeldAgain) || !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("Rotate = %v, want ErrHeldAgain and ErrStoppedPartWay", err)
	}
	if !strings.Contains(err.Error(), w.envPath) {
		t.Errorf("error %q does not name the target %s", err, w.envPath)
	}
	if !w.srv.KeyWorks(w.oldKey) {
		t.Fatal("the old key was deleted while the .env held it again")
	}
	if w.envValue() != w.oldKey {
		t.Fatal("test broken: the .env should hold the old key again")
	}
	w.invariant()

	w.srv.SetHook("secretmanager.UpdateSecret", nil)
	res, err := w.rotate(rotate.Options{})
	if err != nil {
		t.Fatalf("resume = %v", err)
	}
	if !res.Resumed || !res.Rotated {
		t.Errorf("resume: Resumed %v, Rotated %v, want both", res.Resumed, res.Rotated)
	}
	if w.srv.KeyWorks(w.oldKey) {
		t.Error("the old key still works after the resumed rotation finished")
	}
	if v := w.envValue(); v == w.oldKey || !w.srv.KeyWorks(v) {
		t.Errorf(".env holds %s after the resume, want the new, working key", secret.Fingerprint(v))
	}
	w.invariant()
}

// TestFinalizeKeepsKeyPutBack: finalize reads the targets, takes the lease,
// and reads the local targets once more just before it deletes: a key put
// back in between (here, while the lease is being taken) is kept.
func TestFinalizeKeepsKeyPutBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	g := 24 * time.Hour
	if _, err := w.rotate(rotate.Options{Grace: &g}); err != nil {
		t.Fatal(err)
	}
	w.putBackAt("secretmanager.UpdateSecret", w.srv.Calls("secretmanager.UpdateSecret")+1) // finalize's lock
	res, err := w.r.Finalize(context.Background(), w.slot, rotate.FinalizeOptions{Only: []string{w.oldName}})
	if err != nil {
		t.Fatalf("Finalize = %v", err)
	}
	if !w.srv.KeyWorks(w.oldKey) {
		t.Fatal("finalize deleted the old key while the .env held it again")
	}
	if len(res.Keys) != 1 || res.Keys[0].Action != "skipped" || !strings.Contains(res.Keys[0].Reason, w.envPath) {
		t.Errorf("Finalize result = %+v, want the old key skipped, held again by the .env", res.Keys)
	}
}

// TestOldKeyPutBackDuringDelete: the old content comes back while the
// DeleteKey is under way, after the re-read before it. The re-read after
// the delete catches it: the key is undeleted at once, the run stops
// naming the target, and the next run finishes.
func TestOldKeyPutBackDuringDelete(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.putBackAt("apikeys.DeleteKey", 1)
	_, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrHeldAgain) || !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("Rotate = %v, want ErrHeldAgain and ErrStoppedPartWay", err)
	}
	if !w.srv.KeyWorks(w.oldKey) {
		t.Fatal("the old key stayed deleted while the .env held it again")
	}
	w.invariant()
	w.srv.SetHook("apikeys.DeleteKey", nil)
	res, err := w.rotate(rotate.Options{})
	if err != nil || !res.Rotated {
		t.Fatalf("resume = %+v, %v, want rotated", res, err)
	}
	if w.srv.KeyWorks(w.oldKey) || !w.srv.KeyWorks(w.envValue()) {
		t.Error("after the resume: the old key works or the .env holds a key that does not")
	}
	w.invariant()
}

// TestLookupKeyStringNeverInURL: the rotation finds the current key from
// the secret's key string with LookupKey, and that call goes over gRPC, the
// key string in the request body: no request to the API Keys API carries a
// key string in its URL (the REST keys:lookupKey would, where proxies and
// access logs record it).
func TestLookupKeyStringNeverInURL(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if _, err := w.r.Plan(context.Background(), w.slot, rotate.Options{Force: true}); err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if _, err := w.rotate(rotate.Options{}); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if got := w.srv.Calls("apikeys.LookupKey"); got == 0 {
		t.Fatalf("LookupKey calls = 0, want > 0 (the current key is found from the secret)")
	}
	if got := w.srv.KeyStringsInURLs(); got != 0 {
		t.Errorf("requests with a key string in the URL = %d, want 0", got)
	}
}

// TestProbeExercisesGeneration: the live probe checks the call the
// application makes. A standard new key that the Gemini API lists models
// for but refuses on generation (401 ACCESS_TOKEN_TYPE_UNSUPPORTED) is
// refused by the default probe, where listModels would pass it; a key whose
// apiTargets allow only generation methods (not models.list) passes the
// default probe, where listModels fails it although the application works.
func TestProbeExercisesGeneration(t *testing.T) {
	t.Parallel() // its own emulator(s); mostly waiting out per-secret write rates
	standard := func(spec *apikeys.V2Key, _ *rotate.Slot) { spec.ServiceAccountEmail = "" }
	genOnly := func(spec *apikeys.V2Key, _ *rotate.Slot) {
		spec.Restrictions.ApiTargets = []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com", Methods: []string{
			"google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent",
			"google.ai.generativelanguage.v1beta.GenerativeService.CountTokens",
		}}}
	}
	for _, tc := range []struct {
		name  string
		key   func(*apikeys.V2Key, *rotate.Slot)
		probe verify.ProbeMethod // "": the default
		want  error              // nil: rotated
		calls string
	}{
		{"standard key, default probe refuses it", standard, "", verify.ErrStandardKeyRejected, "gemini.CountTokens"},
		{"standard key, generateContent refuses it", standard, verify.ProbeGenerateContent, verify.ErrStandardKeyRejected, "gemini.GenerateContent"},
		{"standard key, listModels passes it", standard, verify.ProbeListModels, nil, "gemini.ListModels"},
		{"generation-only key, default probe passes it", genOnly, "", nil, "gemini.CountTokens"},
		{"generation-only key, generateContent passes it", genOnly, verify.ProbeGenerateContent, nil, "gemini.GenerateContent"},
		{"generation-only key, listModels refuses it", genOnly, verify.ProbeListModels, verify.ErrServiceBlocked, "gemini.ListModels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, tc.key)
			w.srv.RejectStandardKeysOnGeneration(true)
			w.slot.Prober = w.slot.Prober.(*verify.Gemini).With(tc.probe, "")
			w.slot.PropagationTimeout = 300 * time.Millisecond
			_, err := w.rotate(rotate.Options{})
			if n := w.srv.Calls(tc.calls); n == 0 {
				t.Errorf("the probe made no %s call: %v", tc.calls, w.srv.CallCounts())
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Rotate = %v, want success", err)
				}
				if live := w.liveKeys(); len(live) != 1 || live[0].Name == w.oldName {
					t.Errorf("live keys = %d, want only the new key", len(live))
				}
				return
			}
			if !errors.Is(err, rotate.ErrVerifyFailed) || !errors.Is(err, tc.want) {
				t.Fatalf("Rotate = %v, want ErrVerifyFailed caused by %v", err, tc.want)
			}
			// Back to the old key (which fails the same way for a standard
			// key under this policy: the rotation did not make it worse).
			if live := w.liveKeys(); len(live) != 1 || live[0].Name != w.oldName {
				t.Errorf("live keys = %d, want only the old key", len(live))
			}
			if got, _ := os.ReadFile(w.envPath); string(got) != w.envText || w.latest() != w.oldKey {
				t.Errorf(".env or secret changed")
			}
		})
	}
}
