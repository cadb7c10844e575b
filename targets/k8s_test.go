package targets

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emulator/k8sfake"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

const k8sNS, k8sSecret, k8sKey = "prod", "gemini", "GEMINI_API_KEY"

// k8sWorld is a fake API server holding secret prod/gemini (the old key
// and another key) and deployments api (2 replicas) and worker (1).
func k8sWorld(t *testing.T) *k8sfake.Server {
	t.Helper()
	f := emutest.StartK8s(t, k8sfake.Options{})
	f.SetSecret(k8sNS, k8sSecret, map[string]string{k8sKey: oldKey + "\n", "OTHER": "unrelated"})
	f.AddDeployment(k8sNS, "api", 2)
	f.AddDeployment(k8sNS, "worker", 1)
	return f
}

func newK8sTarget(f *k8sfake.Server, restart ...string) *K8s {
	return NewK8s(K8sConfig{Namespace: k8sNS, Name: k8sSecret, Key: k8sKey, Restart: restart,
		Poll: 5 * time.Millisecond, RolloutTimeout: 2 * time.Second,
		REST: &rest.Config{Host: f.URL, BearerToken: k8sfake.Token, TLSClientConfig: rest.TLSClientConfig{CAData: f.CAData()}}})
}

func TestK8sRotate(t *testing.T) {
	f := k8sWorld(t)
	ctx := context.Background()
	// Through a kubeconfig file and a named context, as the CLI does.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := f.Kubeconfig(kc, "default"); err != nil {
		t.Fatal(err)
	}
	tg := NewK8s(K8sConfig{Kubeconfig: kc, Context: "fake", Namespace: k8sNS, Name: k8sSecret, Key: k8sKey})
	if got, want := tg.String(), "k8s:prod/gemini#GEMINI_API_KEY"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	got, err := tg.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(secret.New(oldKey)) {
		t.Fatalf("Read = %v, want the old key (trailing newline trimmed)", got)
	}
	if f.MutatingCalls() != 0 {
		t.Fatalf("Read made %d mutating calls", f.MutatingCalls())
	}
	if n := f.Calls(k8sfake.AccessReview); n != 1 {
		t.Errorf("Read made %d access reviews, want 1 (update on the secret)", n)
	}
	if err := tg.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Value(k8sNS, k8sSecret, k8sKey); v != newKey {
		t.Fatalf("secret holds %d characters, want the new key", len(v))
	}
	if v, _ := f.Value(k8sNS, k8sSecret, "OTHER"); v != "unrelated" {
		t.Errorf("other key of the secret changed")
	}
	got, err = tg.Read(ctx)
	if err != nil || !got.Equal(secret.New(newKey)) {
		t.Fatalf("read back = %v, %v; want the new key", got, err)
	}
	// Idempotent: writing the same key again updates nothing.
	before := f.Calls(k8sfake.UpdateSecret)
	if err := tg.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if f.Calls(k8sfake.UpdateSecret) != before {
		t.Errorf("a second Write of the same key updated the secret")
	}
	// And back (abort).
	if err := tg.Write(ctx, secret.New(oldKey)); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Value(k8sNS, k8sSecret, k8sKey); v != oldKey {
		t.Fatalf("secret does not hold the old key after writing it back")
	}
}

func TestK8sRestart(t *testing.T) {
	f := k8sWorld(t)
	ctx := context.Background()
	tg := newK8sTarget(f, "api", "worker")
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	tg.now = func() time.Time { return at }
	if _, err := tg.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if n := f.Calls(k8sfake.AccessReview); n != 3 {
		t.Errorf("Read made %d access reviews, want 3 (update secret, patch 2 deployments)", n)
	}
	if err := tg.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"api", "worker"} {
		if got := f.RestartedAt(k8sNS, name); got != "2026-11-30T04:00:00Z" {
			t.Errorf("%s restartedAt = %q", name, got)
		}
		d, _ := f.Deployment(k8sNS, name)
		if done, state, err := rolloutDone(&d); !done || err != nil {
			t.Errorf("%s: Write returned before the rollout finished: %s %v", name, state, err)
		}
		if d.Generation != 2 {
			t.Errorf("%s generation = %d, want 2", name, d.Generation)
		}
		if fp := d.Spec.Template.Annotations[K8sFingerprintAnnotation]; fp != secret.New(newKey).Fingerprint() {
			t.Errorf("%s fingerprint annotation = %q", name, fp)
		}
	}
	// A resumed run writing the same key restarts nothing again.
	patches := f.Calls(k8sfake.PatchDeployment)
	if _, err := tg.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tg.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if f.Calls(k8sfake.PatchDeployment) != patches {
		t.Errorf("a second Write of the same key restarted the deployments again")
	}
	// Writing the old key back restarts them again.
	if err := tg.Write(ctx, secret.New(oldKey)); err != nil {
		t.Fatal(err)
	}
	if got := f.Calls(k8sfake.PatchDeployment); got != patches+2 {
		t.Errorf("patches = %d, want %d", got, patches+2)
	}
}

func TestK8sRolloutTimeout(t *testing.T) {
	f := k8sWorld(t)
	f.SetStuck(k8sNS, "api", true)
	tg := newK8sTarget(f, "api")
	tg.cfg.RolloutTimeout = 200 * time.Millisecond
	ctx := context.Background()
	if _, err := tg.Read(ctx); err != nil {
		t.Fatal(err)
	}
	err := tg.Write(ctx, secret.New(newKey))
	if err == nil {
		t.Fatal("Write succeeded with a stuck rollout")
	}
	checkErr(t, err, err) // no key in the error or hint
	for _, want := range []string{"deployment prod/api", "did not finish within 200ms", "old replica(s) still running"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !strings.Contains(rotate.Hint(err), "rollout status deployment/api") {
		t.Errorf("hint = %q", rotate.Hint(err))
	}
	// The secret got the key (the rotation stops part-way; abort restores).
	if v, _ := f.Value(k8sNS, k8sSecret, k8sKey); v != newKey {
		t.Errorf("secret does not hold the new key")
	}
	// The next run (a new process) cannot tell which key the pods run
	// with: Read says unreadable, so the rotation writes again.
	again := newK8sTarget(f, "api")
	_, err = again.Read(ctx)
	if !errors.Is(err, rotate.ErrUnreadable) || !strings.Contains(err.Error(), "restart of api for it did not finish") {
		t.Fatalf("Read with a restart pending = %v, want ErrUnreadable", err)
	}
	noKeyIn(t, "error", err.Error())
	if err := again.Confirm(ctx, secret.New(newKey)); err == nil {
		t.Errorf("Confirm succeeded with a restart pending")
	}
	// The rollout gets unstuck: Write patches nothing again, waits, and
	// clears the mark.
	f.SetStuck(k8sNS, "api", false)
	patches, updates := f.Calls(k8sfake.PatchDeployment), f.Calls(k8sfake.UpdateSecret)
	if err := again.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if f.Calls(k8sfake.PatchDeployment) != patches {
		t.Errorf("api restarted a second time for the same key")
	}
	if f.Calls(k8sfake.UpdateSecret) != updates+1 {
		t.Errorf("updates = %d, want one more (clearing the mark)", f.Calls(k8sfake.UpdateSecret)-updates)
	}
	if err := again.Confirm(ctx, secret.New(newKey)); err != nil {
		t.Errorf("Confirm: %v", err)
	}
	if got, err := again.Read(ctx); err != nil || !got.Equal(secret.New(newKey)) {
		t.Errorf("Read = %v, %v; want the new key", got, err)
	}
}

// A run that stops between the Secret's update and the restart (the patch
// fails, or the process dies) leaves the mark: the next Write restarts.
func TestK8sResumeRestart(t *testing.T) {
	f := k8sWorld(t)
	ctx := context.Background()
	tg := newK8sTarget(f, "api", "worker")
	if _, err := tg.Read(ctx); err != nil {
		t.Fatal(err)
	}
	f.Fail(k8sfake.PatchDeployment, fake.Next, fake.Fault{Status: 500})
	if err := tg.Write(ctx, secret.New(newKey)); err == nil {
		t.Fatal("Write succeeded with a failed patch")
	}
	if f.RestartedAt(k8sNS, "api") != "" || f.RestartedAt(k8sNS, "worker") != "" {
		t.Fatalf("restarted despite the failure")
	}
	next := newK8sTarget(f, "api", "worker")
	if _, err := next.Read(ctx); !errors.Is(err, rotate.ErrUnreadable) {
		t.Fatalf("Read = %v, want ErrUnreadable", err)
	}
	if err := next.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if f.RestartedAt(k8sNS, "api") == "" || f.RestartedAt(k8sNS, "worker") == "" {
		t.Errorf("not restarted by the resumed Write")
	}
	if got, err := next.Read(ctx); err != nil || !got.Equal(secret.New(newKey)) {
		t.Errorf("Read = %v, %v; want the new key", got, err)
	}
	// Without restarts, the mark means nothing: a target without restart
	// reads the value.
	f.SetSecret(k8sNS, "plain", map[string]string{k8sKey: oldKey})
	plain := newK8sTarget(f)
	plain.cfg.Name = "plain"
	if _, err := plain.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if err := plain.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if got, err := plain.Read(ctx); err != nil || !got.Equal(secret.New(newKey)) {
		t.Errorf("Read = %v, %v; want the new key", got, err)
	}
}

func TestK8sPreflight(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		setup   func(f *k8sfake.Server)
		restart []string
		secret  string
		key     string
		want    []string // in the error
		hint    string   // in the hint
	}{
		{name: "missing secret", secret: "nope", want: []string{"secret prod/nope not found"}, hint: "kubectl -n prod create secret generic nope"},
		{name: "missing key", key: "OPENAI_API_KEY", want: []string{"secret prod/gemini has no key OPENAI_API_KEY (it has keys GEMINI_API_KEY, OTHER)"}, hint: "fix the target's key"},
		{name: "missing deployment", restart: []string{"api", "web"}, want: []string{"deployment prod/web not found"}, hint: "restart list"},
		{name: "get forbidden", setup: func(f *k8sfake.Server) { f.Deny("get", "secrets", k8sNS, k8sSecret) },
			want: []string{"forbidden", `cannot get resource "secrets"`}, hint: "get and update on secrets"},
		{name: "update denied", setup: func(f *k8sfake.Server) { f.Deny("update", "secrets", k8sNS, k8sSecret) },
			want: []string{"the caller may not update secrets prod/gemini"}, hint: "get and update on secrets (resourceNames: [gemini]) in namespace prod"},
		{name: "patch denied", restart: []string{"api"}, setup: func(f *k8sfake.Server) { f.Deny("patch", "deployments", k8sNS, "api") },
			want: []string{"the caller may not patch deployments prod/api"}, hint: "get and patch on deployments.apps (resourceNames: [api])"},
		{name: "paused", restart: []string{"api"}, setup: func(f *k8sfake.Server) { f.SetPaused(k8sNS, "api", true) },
			want: []string{"deployment prod/api is paused"}, hint: "rollout resume"},
		{name: "immutable", setup: func(f *k8sfake.Server) { f.SetImmutable(k8sNS, k8sSecret) },
			want: []string{"secret prod/gemini is immutable"}, hint: "immutable: false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := k8sWorld(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			tg := newK8sTarget(f, tc.restart...)
			if tc.secret != "" {
				tg.cfg.Name = tc.secret
			}
			if tc.key != "" {
				tg.cfg.Key = tc.key
			}
			_, err := tg.Read(ctx)
			checkErr(t, err, rotate.ErrInvalidTarget)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if h := rotate.Hint(err); !strings.Contains(h, tc.hint) {
				t.Errorf("hint %q does not say %q", h, tc.hint)
			}
			if f.MutatingCalls() != 0 {
				t.Errorf("preflight made %d mutating calls", f.MutatingCalls())
			}
		})
	}
}

func TestK8sNoCluster(t *testing.T) {
	tg := NewK8s(K8sConfig{Kubeconfig: filepath.Join(t.TempDir(), "missing"), Namespace: k8sNS, Name: k8sSecret, Key: k8sKey})
	_, err := tg.Read(context.Background())
	checkErr(t, err, rotate.ErrInvalidTarget)
	if !strings.Contains(rotate.Hint(err), "kubeconfig") {
		t.Errorf("hint = %q", rotate.Hint(err))
	}
}

func TestK8sConflict(t *testing.T) {
	f := k8sWorld(t)
	ctx := context.Background()
	tg := newK8sTarget(f, "api")
	if _, err := tg.Read(ctx); err != nil {
		t.Fatal(err)
	}
	// Someone else updates the secret between Read and Write.
	f.SetSecret(k8sNS, k8sSecret, map[string]string{k8sKey: oldKey, "OTHER": "changed"})
	err := tg.Write(ctx, secret.New(newKey))
	checkErr(t, err, rotate.ErrTargetChanged)
	if !strings.Contains(err.Error(), "HTTP 409") {
		t.Errorf("error %q does not name the conflict", err)
	}
	if v, _ := f.Value(k8sNS, k8sSecret, k8sKey); v != oldKey {
		t.Errorf("secret changed after a conflict")
	}
	if f.Calls(k8sfake.PatchDeployment) != 0 {
		t.Errorf("deployment restarted after a conflict")
	}
	// A race inside the write itself: the PUT carries the old resourceVersion.
	if _, err := tg.Read(ctx); err != nil {
		t.Fatal(err)
	}
	f.BeforePut(func() {
		f.BeforePut(nil)
		f.SetSecret(k8sNS, k8sSecret, map[string]string{k8sKey: oldKey})
	})
	checkErr(t, tg.Write(ctx, secret.New(newKey)), rotate.ErrTargetChanged)
	// Read again, write again: the rotation's retry.
	if _, err := tg.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tg.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Value(k8sNS, k8sSecret, k8sKey); v != newKey {
		t.Errorf("secret does not hold the new key after the retry")
	}
}

func TestK8sWriteWithoutRead(t *testing.T) {
	f := k8sWorld(t)
	err := newK8sTarget(f).Write(context.Background(), secret.New(newKey))
	if err == nil || !strings.Contains(err.Error(), "no earlier Read") {
		t.Fatalf("Write without Read = %v", err)
	}
	if f.MutatingCalls() != 0 {
		t.Errorf("made %d mutating calls", f.MutatingCalls())
	}
}

func TestK8sServerErrors(t *testing.T) {
	f := k8sWorld(t)
	ctx := context.Background()
	tg := newK8sTarget(f, "api")
	if _, err := tg.Read(ctx); err != nil {
		t.Fatal(err)
	}
	f.Fail(k8sfake.UpdateSecret, fake.Next, fake.Fault{Status: 500})
	err := tg.Write(ctx, secret.New(newKey))
	if err == nil || errors.Is(err, rotate.ErrTargetChanged) || errors.Is(err, rotate.ErrInvalidTarget) {
		t.Fatalf("Write with a 500 = %v", err)
	}
	checkErr(t, err, err)
	if v, _ := f.Value(k8sNS, k8sSecret, k8sKey); v != oldKey+"\n" {
		t.Errorf("secret changed after a failed update")
	}
	// A failed restart fails the Write, naming the deployment.
	f.Fail(k8sfake.PatchDeployment, fake.Next, fake.Fault{Status: 503})
	err = tg.Write(ctx, secret.New(newKey))
	if err == nil || !strings.Contains(err.Error(), "restart deployment prod/api") {
		t.Fatalf("Write with a failed patch = %v", err)
	}
	checkErr(t, err, err)
	// Transient errors while waiting are retried.
	f.Fail(k8sfake.GetDeployment, f.Calls(k8sfake.GetDeployment)+2, fake.Fault{Status: 503})
	if err := tg.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if f.RestartedAt(k8sNS, "api") == "" {
		t.Errorf("api not restarted")
	}
}

func TestK8sScrubKey(t *testing.T) {
	k := secret.New(newKey)
	err := scrubKey(fmt.Errorf("webhook said %s is bad: %w", newKey, rotate.ErrInvalidTarget), k)
	if !errors.Is(err, rotate.ErrInvalidTarget) {
		t.Errorf("scrubbed error lost its chain: %v", err)
	}
	noKeyIn(t, "error", err.Error())
	if !strings.Contains(err.Error(), k.Fingerprint()) {
		t.Errorf("error %q does not name the fingerprint", err)
	}
	if scrubKey(nil, k) != nil {
		t.Errorf("scrubKey(nil) != nil")
	}
}

func TestK8sUnauthorized(t *testing.T) {
	f := k8sWorld(t)
	tg := newK8sTarget(f)
	tg.cfg.REST.BearerToken = "wrong-token"
	_, err := tg.Read(context.Background())
	checkErr(t, err, rotate.ErrInvalidTarget)
	if !strings.Contains(err.Error(), "the cluster refused the credentials") || !strings.Contains(rotate.Hint(err), "credentials") {
		t.Errorf("err = %v, hint %q", err, rotate.Hint(err))
	}
	if strings.Contains(err.Error()+rotate.Hint(err), "wrong-token") {
		t.Errorf("the token appears in the error")
	}
}
