package main

// The all-kinds world of the crash and fault tests: the demo slot with,
// besides its .env, one target of every kind whose value can be read back
// or confirmed: a further Secret Manager secret in another project, a
// regional secret (europe-west1), a compose file, an exec command (a script storing stdin to a file, with a
// verify script), a GitHub Actions repository secret on the GitHub API
// fake, a Kubernetes Secret on the API server fake (restart: [api], so a
// rollout follows the write) and a Cloud Run service whose container env var
// holds the key as a plain value. The invariant then covers every target:
// each holds a key that works.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/run/apiv2/runpb"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"

	"github.com/keyrotate/keyrotate/internal/emulator/githubfake"
	"github.com/keyrotate/keyrotate/internal/emulator/k8sfake"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/targets"
)

const (
	kindsSecretID = "gemini-copy" // in vaultProject, and regional in demoProject
	kindsRegion   = "europe-west1"
	kindsGHRepo   = "acme/chat-app"
	kindsGHName   = "GEMINI_API_KEY"
	kindsGHToken  = "ghp_krCrashCanaryToken0123456789abcdefABCD"
	kindsK8sNS    = "prod"
	kindsK8sName  = "gemini"
	kindsK8sKey   = "GEMINI_API_KEY"
	kindsRunVar   = "GEMINI_API_KEY" // of runService (cloudrun_test.go)
)

// kindsWorld is the part of a crashWorld that the all-kinds targets add.
type kindsWorld struct {
	gh      *githubfake.Server
	ghProxy *httptest.Server // in front of gh: keyrotate's base_url

	mu      sync.Mutex
	puts    int         // PUTs through the proxy
	putHook func(n int) // called before the n-th PUT is forwarded
	putFail int         // when not 0, every PUT answers this status

	extraSecret            string // projects/vault-project/secrets/gemini-copy
	regionalSecret         string // projects/demo-project/locations/europe-west1/secrets/gemini-eu
	compose, stored, fail  string // the compose file; where store.sh keeps the key; if it exists, store.sh fails
	composeSeeded, execDir string

	k8s     *k8sfake.Server
	k8sPuts int         // Secret PUTs that reached the fake (under mu)
	k8sHook func(n int) // called before the n-th Secret PUT is applied
}

const kindsCompose = `# The chat stack.
services:
  api:
    image: ghcr.io/acme/chat-api:1.4.2
    environment:
      APP_ENV: production
      GEMINI_API_KEY: @KEY@  # rotated by keyrotate
  worker:
    image: ghcr.io/acme/chat-worker:1.4.2
    environment:
      - "GEMINI_API_KEY=@KEY@"
`

// store.sh keeps the key read on stdin in $1 (atomically: a reader never
// sees half a key), unless the file $2 exists: then it fails, as a broken
// hook does. If the file block exists next to $1, it removes it, creates
// reached and waits for release before storing.
const kindsStore = `#!/bin/sh
read -r key
if [ -e "$2" ]; then echo "store: refusing (fail marker present)" >&2; exit 1; fi
d=$(dirname "$1")
if [ -e "$d/block" ]; then
	rm -f "$d/block"
	: > "$d/reached"
	while [ ! -e "$d/release" ]; do sleep 0.01; done
fi
printf '%s\n' "$key" > "$1.tmp" && mv "$1.tmp" "$1"
`

// The kill points of the all-kinds world that are not emulator calls.
const (
	kindsExecStore = "exec store.sh"
	kindsGitHubPut = "github PutSecret"
	kindsK8sPut    = "k8s Secret PUT"
)

// blockAt blocks the n-th store.sh run (n must be 1), GitHub PUT or
// Kubernetes Secret PUT (its body read, before it is applied): reached
// is closed when it is reached; it goes on once release is closed.
func (k *kindsWorld) blockAt(t *testing.T, what string, n int, reached, release chan struct{}) {
	switch what {
	case kindsGitHubPut:
		k.mu.Lock()
		k.putHook = func(got int) {
			if got == n {
				close(reached)
				<-release
			}
		}
		k.mu.Unlock()
	case kindsK8sPut:
		k.mu.Lock()
		k.k8sHook = func(got int) {
			if got == n {
				close(reached)
				<-release
			}
		}
		k.mu.Unlock()
	case kindsExecStore:
		if n != 1 {
			t.Fatalf("blockAt %s: only the first run can be blocked", what)
		}
		if err := os.WriteFile(filepath.Join(k.execDir, "block"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		go func() {
			deadline := time.Now().Add(crashTimeout)
			for time.Now().Before(deadline) {
				if _, err := os.Stat(filepath.Join(k.execDir, "reached")); err == nil {
					close(reached)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		go func() {
			<-release
			_ = os.WriteFile(filepath.Join(k.execDir, "release"), nil, 0o600)
		}()
	default:
		t.Fatalf("blockAt: unknown kill point %q", what)
	}
}

// check.sh exits 0 when the key on stdin is the one kept in $1.
const kindsCheck = `#!/bin/sh
read -r key
[ "$key" = "$(cat "$1")" ] || { echo "check: the store holds another key" >&2; exit 1; }
`

// addKinds seeds every place of the all-kinds slot with the seeded key and
// rewrites the config with their targets.
func (cw *crashWorld) addKinds() {
	t := cw.t
	t.Helper()
	key := cw.w.key.Reveal()
	k := &kindsWorld{execDir: filepath.Join(cw.w.dir, "hooks")}
	cw.srv.AddProject(vaultProject, vaultProjectNumber)
	name, err := cw.srv.SeedSecret(vaultProject, kindsSecretID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cw.srv.SeedSecretVersion(name, []byte(key)); err != nil {
		t.Fatal(err)
	}
	k.extraSecret = "projects/" + vaultProject + "/secrets/" + kindsSecretID
	name, err = cw.srv.SeedRegionalSecret(demoProject, kindsRegion, kindsSecretID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cw.srv.SeedSecretVersion(name, []byte(key)); err != nil {
		t.Fatal(err)
	}
	k.regionalSecret = "projects/" + demoProject + "/locations/" + kindsRegion + "/secrets/" + kindsSecretID

	k.compose = filepath.Join(cw.w.dir, "app", "docker-compose.yml")
	k.composeSeeded = strings.ReplaceAll(kindsCompose, "@KEY@", key)
	if err := os.WriteFile(k.compose, []byte(k.composeSeeded), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := os.MkdirAll(k.execDir, 0o755); err != nil {
		t.Fatal(err)
	}
	k.stored, k.fail = filepath.Join(k.execDir, "stored"), filepath.Join(k.execDir, "fail")
	for f, content := range map[string]string{"store.sh": kindsStore, "check.sh": kindsCheck} {
		if err := os.WriteFile(filepath.Join(k.execDir, f), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(k.stored, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	k.gh = emutest.StartGitHub(t, githubfake.Options{})
	k.gh.AddToken(kindsGHToken, githubfake.Token{Grant: githubfake.Write})
	k.gh.AddRepo(kindsGHRepo)
	k.gh.SeedSecret(githubfake.RepoScope(kindsGHRepo), kindsGHName, key, "")
	target, err := url.Parse(k.gh.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // a killed child's canceled GETs
	k.ghProxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			// The whole request arrived; it is forwarded even if its
			// sender dies meanwhile, as a request that reached GitHub is.
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			// A context that its sender's death does not cancel, with a
			// Done channel: ReverseProxy otherwise falls back to
			// CloseNotifier, which would cancel it.
			ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
			defer cancel()
			r = r.WithContext(ctx)
			k.mu.Lock()
			k.puts++
			n, hook, fail := k.puts, k.putHook, k.putFail
			k.mu.Unlock()
			if fail != 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(fail)
				fmt.Fprintf(w, `{"message":"Resource not accessible by integration","documentation_url":"https://docs.github.com/rest/actions/secrets","status":"%d"}`, fail)
				return
			}
			if hook != nil {
				hook(n)
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(k.ghProxy.Close)
	cw.env = append(cw.env, "KR_GITHUB_TOKEN="+kindsGHToken)

	k.k8s = emutest.StartK8s(t, k8sfake.Options{})
	k.k8s.SetSecret(kindsK8sNS, kindsK8sName, map[string]string{kindsK8sKey: key, "DATABASE_PASSWORD": "k8s-db-canary-0123456789"})
	k.k8s.AddDeployment(kindsK8sNS, "api", 2)
	k.k8s.AddDeployment(kindsK8sNS, "worker", 1)
	kubeconfig := filepath.Join(cw.w.dir, "kubeconfig")
	if err := k.k8s.Kubeconfig(kubeconfig, "default"); err != nil {
		t.Fatal(err)
	}
	k.k8s.BeforePut(func() {
		k.mu.Lock()
		k.k8sPuts++
		n, hook := k.k8sPuts, k.k8sHook
		k.mu.Unlock()
		if hook != nil {
			hook(n)
		}
	})

	if _, err := cw.srv.SeedRunService(demoProject, runLocation, "chat-api", &runpb.Service{
		Template: &runpb.RevisionTemplate{Containers: []*runpb.Container{{
			Name: "app", Image: "europe-docker.pkg.dev/demo-project/chat/api:1.4.2",
			Env: []*runpb.EnvVar{
				{Name: "APP_ENV", Values: &runpb.EnvVar_Value{Value: "production"}},
				{Name: kindsRunVar, Values: &runpb.EnvVar_Value{Value: key}},
			},
		}}}}); err != nil {
		t.Fatal(err)
	}

	cfg, err := os.ReadFile(cw.w.config)
	if err != nil {
		t.Fatal(err)
	}
	more := fmt.Sprintf(`      - type: secretmanager
        secret: %s
      - type: secretmanager
        secret: %s
      - type: compose
        path: app/docker-compose.yml
        services: [api, worker]
        var: GEMINI_API_KEY
      - type: exec
        command: [%q, %q, %q]
        verify: [%q, %q]
      - type: github
        repo: %s
        name: %s
        token_env: KR_GITHUB_TOKEN
        base_url: %s
      - type: k8s
        kubeconfig: %s
        namespace: %s
        name: %s
        key: %s
        restart: [api]
        timeout: 20s
      - type: cloudrun
        service: %s
        var: %s
`, k.extraSecret, k.regionalSecret, filepath.Join(k.execDir, "store.sh"), k.stored, k.fail,
		filepath.Join(k.execDir, "check.sh"), k.stored, kindsGHRepo, kindsGHName, k.ghProxy.URL,
		kubeconfig, kindsK8sNS, kindsK8sName, kindsK8sKey, runService, kindsRunVar)
	if err := os.WriteFile(cw.w.config, append(cfg, more...), 0o644); err != nil {
		t.Fatal(err)
	}
	cw.kinds = k
}

// kindsValues reads the key each further target holds now, by target.
func (cw *crashWorld) kindsValues() (map[string]string, error) {
	k := cw.kinds
	if k == nil {
		return nil, nil
	}
	vals := map[string]string{}
	p, ok := cw.srv.SecretPayload(k.extraSecret + "/versions/latest")
	if !ok {
		return nil, errors.New("the extra secret has no readable latest version")
	}
	vals["secretmanager"] = string(p)
	if p, ok = cw.srv.SecretPayload(k.regionalSecret + "/versions/latest"); !ok {
		return nil, errors.New("the regional secret has no readable latest version")
	}
	vals["secretmanager-regional"] = string(p)
	ck, err := targets.NewCompose(k.compose, []string{"api", "worker"}, "GEMINI_API_KEY").Read(context.Background())
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	vals["compose"] = ck.Reveal()
	b, err := os.ReadFile(k.stored)
	if err != nil {
		return nil, fmt.Errorf("exec store: %w", err)
	}
	vals["exec"] = strings.TrimSpace(string(b))
	vals["github"] = k.gh.Value(githubfake.RepoScope(kindsGHRepo), kindsGHName)
	v, ok := k.k8s.Value(kindsK8sNS, kindsK8sName, kindsK8sKey)
	if !ok {
		return nil, errors.New("the Kubernetes Secret has no key " + kindsK8sKey)
	}
	vals["k8s"] = v
	v, err = cw.runValue()
	if err != nil {
		return nil, err
	}
	vals["cloudrun"] = v
	return vals, nil
}

// runValue is the plain value of the Cloud Run service's env var in its
// template.
func (cw *crashWorld) runValue() (string, error) {
	svc, ok := cw.srv.RunService(runService)
	if !ok {
		return "", errors.New("the Cloud Run service is gone")
	}
	for _, c := range svc.GetTemplate().GetContainers() {
		for _, e := range c.GetEnv() {
			if e.GetName() == kindsRunVar {
				if e.GetValueSource() != nil {
					return "", errors.New("the Cloud Run service's " + kindsRunVar + " is no longer a plain value")
				}
				return e.GetValue(), nil
			}
		}
	}
	return "", errors.New("the Cloud Run service has no env var " + kindsRunVar)
}

// kindsInvariant: every further target holds a key that works; one that
// holds the old key keeps it alive.
func (cw *crashWorld) kindsInvariant() []error {
	vals, err := cw.kindsValues()
	if err != nil {
		return []error{err}
	}
	var errs []error
	old := cw.w.key.Reveal()
	for _, kind := range sortedKeys(vals) {
		v := vals[kind]
		if !cw.srv.KeyWorks(v) {
			errs = append(errs, fmt.Errorf("the %s target holds a key that does not work", kind))
		}
		if v == old && !cw.srv.KeyWorks(old) {
			errs = append(errs, fmt.Errorf("the old key is dead while the %s target still holds it", kind))
		}
	}
	return errs
}

// kindsSignature adds the extra secret's versions to the emulator's
// signature (its AddSecretVersion is a kill point of its own).
func (cw *crashWorld) kindsSignature() string {
	if cw.kinds == nil {
		return ""
	}
	var b strings.Builder
	for _, name := range []string{cw.kinds.extraSecret, cw.kinds.regionalSecret} {
		for _, v := range cw.srv.SecretVersions(name) {
			fmt.Fprintf(&b, "%s %s;", v.GetName(), v.GetState())
		}
	}
	// The exec store and the GitHub secret (by digest: no key in a message).
	stored, _ := os.ReadFile(cw.kinds.stored)
	gh, _ := cw.kinds.gh.Secret(githubfake.RepoScope(kindsGHRepo), kindsGHName)
	fmt.Fprintf(&b, "exec %x; github %x %s;", sha256.Sum256(stored), sha256.Sum256([]byte(gh.Value)), gh.UpdatedAt)
	// The Kubernetes Secret and deployments, and the Cloud Run service.
	fmt.Fprintf(&b, "k8s %s;", cw.kinds.k8s.ResourceVersion(kindsK8sNS, kindsK8sName))
	for _, d := range []string{"api", "worker"} {
		dep, _ := cw.kinds.k8s.Deployment(kindsK8sNS, d)
		fmt.Fprintf(&b, "deployment %s %d %s;", d, dep.Generation, dep.ResourceVersion)
	}
	if svc, ok := cw.srv.RunService(runService); ok {
		fmt.Fprintf(&b, "run %s %s;", svc.GetEtag(), svc.GetLatestCreatedRevision())
	}
	return b.String()
}

// kindsEnd says which key each further target holds: "kind=new" for the
// key in the slot's secret (a new one), "kind=old" or "kind=other"; the
// compose file must differ from the seeded one in the values only.
func (cw *crashWorld) kindsEnd(latest string) string {
	if cw.kinds == nil {
		return ""
	}
	vals, err := cw.kindsValues()
	if err != nil {
		return "unreadable: " + err.Error()
	}
	var parts []string
	for _, kind := range sortedKeys(vals) {
		which := "other"
		switch vals[kind] {
		case cw.w.key.Reveal():
			which = "old"
		case latest:
			which = "new"
		}
		parts = append(parts, kind+"="+which)
	}
	if b, _ := os.ReadFile(cw.kinds.compose); string(b) != strings.ReplaceAll(cw.kinds.composeSeeded, cw.w.key.Reveal(), latest) {
		parts = append(parts, "compose-not-exact")
	}
	// A restart that was started finished its rollout; the Cloud Run service
	// serves its template (no revision left deploying).
	if d, ok := cw.kinds.k8s.Deployment(kindsK8sNS, "api"); !ok || d.Generation > 1 &&
		(d.Status.ObservedGeneration != d.Generation || d.Status.UpdatedReplicas != *d.Spec.Replicas || d.Status.AvailableReplicas != *d.Spec.Replicas) {
		parts = append(parts, "k8s-api-rollout-unfinished")
	}
	if svc, ok := cw.srv.RunService(runService); !ok || svc.GetReconciling() || svc.GetLatestReadyRevision() != svc.GetLatestCreatedRevision() {
		parts = append(parts, "cloudrun-not-serving-template")
	}
	return strings.Join(parts, " ")
}

const kindsAllNew = "cloudrun=new compose=new exec=new github=new k8s=new secretmanager=new secretmanager-regional=new"

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// failGitHubPuts makes every GitHub PUT answer status (0: none).
func (k *kindsWorld) failGitHubPuts(status int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.putFail = status
}

// TestAllKindsFaults: a further target whose write fails for good stops the
// rotation part-way (exit 4) with the invariant intact over every target;
// rerunning after the fault is fixed finishes the rotation as an
// uninterrupted run would, and abort puts the old key back everywhere.
func TestAllKindsFaults(t *testing.T) {
	t.Parallel()
	t.Run("exec exits 1, fixed, rerun", func(t *testing.T) {
		t.Parallel()
		cw := newCrashWorld(t)
		cw.addKinds()
		if err := os.WriteFile(cw.kinds.fail, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 2; i++ { // the fault is permanent: a rerun stops again
			c := cw.run(cw.rotateArgs(false)...)
			if c.code != 4 {
				t.Fatalf("run %d with the exec command failing: exit %d, want 4\n%s", i, c.code, c.output())
			}
			if !strings.Contains(c.stderr.String(), "store.sh") {
				t.Errorf("run %d: stderr does not name the failing command:\n%s", i, c.stderr.String())
			}
			if err := cw.noKeyIn(c.output()); err != nil {
				t.Error(err)
			}
			if err := cw.invariant(); err != nil {
				t.Fatalf("invariant after run %d: %v", i, err)
			}
			vals, _ := cw.kindsValues()
			if vals["exec"] != cw.w.key.Reveal() || vals["github"] != cw.w.key.Reveal() {
				t.Errorf("run %d: the exec store or the GitHub secret (after it) no longer holds the old key", i)
			}
			if !cw.srv.KeyWorks(cw.w.key.Reveal()) {
				t.Fatalf("run %d: the old key was deleted although a target holds it", i)
			}
		}
		if err := os.Remove(cw.kinds.fail); err != nil {
			t.Fatal(err)
		}
		c := cw.run(cw.rotateArgs(false)...)
		if c.code != 0 {
			t.Fatalf("rerun after the fix: exit %d, want 0\n%s", c.code, c.output())
		}
		if diff := cmp.Diff(cw.wantEnd(false), cw.endState()); diff != "" {
			t.Errorf("end state after the fix (-want +got):\n%s", diff)
		}
	})
	t.Run("github PUT 403, abort", func(t *testing.T) {
		t.Parallel()
		cw := newCrashWorld(t)
		cw.addKinds()
		cw.kinds.failGitHubPuts(http.StatusForbidden)
		c := cw.run(cw.rotateArgs(false)...)
		if c.code != 4 {
			t.Fatalf("rotate with GitHub PUTs failing: exit %d, want 4\n%s", c.code, c.output())
		}
		if !strings.Contains(c.stderr.String(), "403") && !strings.Contains(strings.ToLower(c.stderr.String()), "forbidden") &&
			!strings.Contains(c.stderr.String(), "not accessible") {
			t.Errorf("stderr does not say the PUT was refused:\n%s", c.stderr.String())
		}
		if strings.Contains(c.output(), kindsGHToken) {
			t.Error("the GitHub token appears in the output")
		}
		if err := cw.invariant(); err != nil {
			t.Fatalf("invariant after the failed PUT: %v", err)
		}
		vals, _ := cw.kindsValues()
		_, payloads := cw.versions()
		latest := payloads[len(payloads)-1]
		for _, kind := range []string{"secretmanager", "secretmanager-regional", "compose", "exec"} {
			if vals[kind] != latest || latest == cw.w.key.Reveal() {
				t.Errorf("the %s target (before github) does not hold the new key", kind)
			}
		}
		if vals["github"] != cw.w.key.Reveal() {
			t.Error("the GitHub secret no longer holds the old key")
		}
		cw.kinds.failGitHubPuts(0)
		a := cw.run("--config", cw.w.config, "abort", "gemini-prod")
		if a.code != 0 {
			t.Fatalf("abort: exit %d\n%s", a.code, a.output())
		}
		if err := cw.invariant(); err != nil {
			t.Fatalf("invariant after abort: %v", err)
		}
		es := cw.endState()
		if es.Latest != "old" || !es.OldWorks || es.OldDeleted || es.RecordLeft {
			t.Errorf("after abort: latest %s, old key works %v, deleted %v, record left %v; want old, true, false, false",
				es.Latest, es.OldWorks, es.OldDeleted, es.RecordLeft)
		}
		if got, _ := os.ReadFile(cw.w.dotenv); !bytes.Equal(got, cw.dotenv) {
			t.Error("after abort: the .env is not back to its seeded bytes")
		}
		if want := "cloudrun=old compose=old exec=old github=old k8s=old secretmanager=old secretmanager-regional=old"; es.Targets != want {
			t.Errorf("after abort: targets %q, want %q", es.Targets, want)
		}
		if live := liveKeys(cw.srv); len(live) != 1 || live[0].Name != cw.w.keyName {
			t.Errorf("after abort: %d live keys, want only the old one", len(live))
		}
		for _, name := range []string{cw.kinds.extraSecret, cw.kinds.regionalSecret} {
			vs := cw.srv.SecretVersions(name)
			if st := vs[len(vs)-1].GetState(); st != secretmanagerpb.SecretVersion_ENABLED {
				t.Errorf("after abort: the newest version of %s is %s", name, st)
			}
		}
	})
}
