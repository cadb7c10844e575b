package targets

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/run/apiv2/runpb"
	"google.golang.org/protobuf/proto"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

const (
	crOld = "AQ.Ab8RN6cloudrun-old-key-0001"
	crNew = "AQ.Ab8RN6cloudrun-new-key-0002"
)

type crWorld struct {
	srv    *emulator.Server
	secret string // projects/run-project/secrets/gemini
	svc    string // canonical service name
}

// newCloudRunWorld seeds a project, a secret holding crOld as version 1
// and a service whose container's GEMINI_API_KEY is env.
func newCloudRunWorld(t *testing.T, env *runpb.EnvVar, extra ...*runpb.Container) (*crWorld, *CloudRun) {
	t.Helper()
	return newCloudRunWorldRevision(t, "", env, extra...)
}

// newCloudRunWorldRevision is newCloudRunWorld with the template's revision
// name set to rev, as gcloud and the console leave it ("" : none).
func newCloudRunWorldRevision(t *testing.T, rev string, env *runpb.EnvVar, extra ...*runpb.Container) (*crWorld, *CloudRun) {
	t.Helper()
	srv := emutest.Start(t, emulator.Options{})
	srv.AddProject("run-project", 555000111)
	sec, err := srv.SeedSecret("run-project", "gemini", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.SeedSecretVersion(sec, []byte(crOld)); err != nil {
		t.Fatal(err)
	}
	containers := []*runpb.Container{{Name: "app", Image: "gcr.io/x/app", Env: []*runpb.EnvVar{
		{Name: "OTHER", Values: &runpb.EnvVar_Value{Value: "x"}}, env}}}
	containers = append(containers, extra...)
	name, err := srv.SeedRunService("run-project", "europe-west1", "api", &runpb.Service{
		Template: &runpb.RevisionTemplate{Revision: rev, Containers: containers}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rc, err := srv.RunClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	sm, err := srv.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sm.Close() })
	tg := NewCloudRun(rc, sm, "projects/run-project/locations/europe-west1/services/api", "", "GEMINI_API_KEY")
	tg.Poll = 5 * time.Millisecond
	return &crWorld{srv: srv, secret: sec, svc: name}, tg
}

func plainEnv(v string) *runpb.EnvVar {
	return &runpb.EnvVar{Name: "GEMINI_API_KEY", Values: &runpb.EnvVar_Value{Value: v}}
}

func refEnv(secret, version string) *runpb.EnvVar {
	return &runpb.EnvVar{Name: "GEMINI_API_KEY", Values: &runpb.EnvVar_ValueSource{ValueSource: &runpb.EnvVarSource{
		SecretKeyRef: &runpb.SecretKeySelector{Secret: secret, Version: version}}}}
}

func (w *crWorld) env(t *testing.T) (*runpb.Service, *runpb.EnvVar) {
	t.Helper()
	svc, ok := w.srv.RunService(w.svc)
	if !ok {
		t.Fatal("service gone")
	}
	for _, e := range svc.Template.Containers[0].Env {
		if e.Name == "GEMINI_API_KEY" {
			return svc, e
		}
	}
	t.Fatal("variable gone")
	return nil, nil
}

func mustRead(t *testing.T, tg *CloudRun, want string) {
	t.Helper()
	k, err := tg.Read(context.Background())
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if k.Reveal() != want {
		t.Fatalf("Read = %s, want %s", k, secret.New(want))
	}
}

// noKey fails if err's message, hint or the target's name holds a key.
func noKey(t *testing.T, tg *CloudRun, err error) {
	t.Helper()
	s := tg.String()
	if err != nil {
		s += err.Error() + errhint.Of(err)
	}
	for _, k := range []string{crOld, crNew, "Ab8RN6"} {
		if strings.Contains(s, k) {
			t.Fatalf("key material in %q", s)
		}
	}
}

func TestCloudRunPlainValue(t *testing.T) {
	w, tg := newCloudRunWorld(t, plainEnv(crOld))
	ctx := context.Background()
	if got := tg.String(); got != "cloudrun:projects/run-project/locations/europe-west1/services/api#GEMINI_API_KEY" {
		t.Fatalf("String = %s", got)
	}
	mustRead(t, tg, crOld)
	before, _ := w.env(t)
	if w.srv.MutatingCalls() != 0 {
		t.Fatal("Read changed something")
	}
	if err := tg.Write(ctx, secret.New(crNew)); err != nil {
		t.Fatal(err)
	}
	after, env := w.env(t)
	if env.GetValue() != crNew || after.LatestReadyRevision == before.LatestReadyRevision ||
		after.LatestReadyRevision != after.LatestCreatedRevision || after.TrafficStatuses[0].Revision != after.LatestReadyRevision {
		t.Fatalf("after Write: %v", after)
	}
	if after.Template.Containers[0].Env[0].GetValue() != "x" {
		t.Fatal("another variable changed")
	}
	mustRead(t, tg, crNew)
	n := w.srv.Calls("run.UpdateService")
	if err := tg.Write(ctx, secret.New(crNew)); err != nil || w.srv.Calls("run.UpdateService") != n {
		t.Fatalf("second Write: %v, updates %d -> %d", err, n, w.srv.Calls("run.UpdateService"))
	}
	// abort: the old key back
	if err := tg.Write(ctx, secret.New(crOld)); err != nil {
		t.Fatal(err)
	}
	mustRead(t, tg, crOld)
}

// A service deployed with gcloud or the console names its revision in
// template.revision; sending that name back with a changed template is
// ALREADY_EXISTS on every attempt. Write clears it, so Cloud Run names the
// new revision.
func TestCloudRunGcloudRevisionName(t *testing.T) {
	for _, env := range []*runpb.EnvVar{plainEnv(crOld), refEnv("gemini", "1"), refEnv("gemini", "latest")} {
		name := "plain"
		if ref := env.GetValueSource().GetSecretKeyRef(); ref != nil {
			name = "ref-" + ref.Version
		}
		t.Run(name, func(t *testing.T) {
			w, tg := newCloudRunWorldRevision(t, "api-00001-gcl", env)
			ctx := context.Background()
			before, _ := w.env(t)
			if before.Template.Revision != "api-00001-gcl" || before.LatestReadyRevision != "api-00001-gcl" {
				t.Fatalf("seeded template revision %q, serving %q; want api-00001-gcl", before.Template.Revision, before.LatestReadyRevision)
			}
			mustRead(t, tg, crOld)
			if _, err := w.srv.SeedSecretVersion(w.secret, []byte(crNew)); err != nil {
				t.Fatal(err)
			}
			if err := tg.Write(ctx, secret.New(crNew)); err != nil {
				t.Fatalf("Write to a gcloud-deployed service: %v", err)
			}
			after, _ := w.env(t)
			if after.LatestReadyRevision == "api-00001-gcl" || after.LatestReadyRevision != after.LatestCreatedRevision || after.Template.Revision != "" {
				t.Fatalf("after Write: serving %q, created %q, template revision %q; want a new generated revision", after.LatestReadyRevision, after.LatestCreatedRevision, after.Template.Revision)
			}
			mustRead(t, tg, crNew)
		})
	}
}

func TestCloudRunPinnedReference(t *testing.T) {
	w, tg := newCloudRunWorld(t, refEnv("gemini", "1"))
	ctx := context.Background()
	mustRead(t, tg, crOld)
	if _, err := w.srv.SeedSecretVersion(w.secret, []byte(crNew)); err != nil {
		t.Fatal(err)
	}
	mustRead(t, tg, crOld) // pinned: a new version changes nothing
	if err := tg.Write(ctx, secret.New(crNew)); err != nil {
		t.Fatal(err)
	}
	svc, env := w.env(t)
	if ref := env.GetValueSource().GetSecretKeyRef(); ref.GetVersion() != "2" || ref.GetSecret() != "gemini" {
		t.Fatalf("reference after Write: %v", ref)
	}
	if svc.LatestReadyRevision != svc.LatestCreatedRevision || !strings.HasPrefix(svc.LatestReadyRevision, "api-00002-") {
		t.Fatalf("revision after Write: ready %s created %s", svc.LatestReadyRevision, svc.LatestCreatedRevision)
	}
	mustRead(t, tg, crNew)
	// abort adds a version holding the old key; Write re-pins to it
	if _, err := w.srv.SeedSecretVersion(w.secret, []byte(crOld)); err != nil {
		t.Fatal(err)
	}
	if err := tg.Write(ctx, secret.New(crOld)); err != nil {
		t.Fatal(err)
	}
	if _, env := w.env(t); env.GetValueSource().GetSecretKeyRef().GetVersion() != "3" {
		t.Fatalf("abort pinned %v", env)
	}
	// a key no version holds
	err := tg.Write(ctx, secret.New("AQ.Ab8RN6nowhere"))
	if err == nil || !strings.Contains(err.Error(), "no recent enabled version") {
		t.Fatalf("Write of a key in no version: %v", err)
	}
	noKey(t, tg, err)
}

func TestCloudRunLatestReferenceForcesRevision(t *testing.T) {
	w, tg := newCloudRunWorld(t, refEnv("projects/run-project/secrets/gemini", "latest"))
	ctx := context.Background()
	mustRead(t, tg, crOld)
	before, _ := w.env(t)
	time.Sleep(2 * time.Millisecond)
	if _, err := w.srv.SeedSecretVersion(w.secret, []byte(crNew)); err != nil {
		t.Fatal(err)
	}
	// The instances started before the new version: they hold an older key.
	if k, err := tg.Read(ctx); err != nil || !k.IsZero() {
		t.Fatalf("Read before the new revision = %s, %v; want the zero key", k, err)
	}
	if err := tg.Write(ctx, secret.New(crNew)); err != nil {
		t.Fatal(err)
	}
	after, env := w.env(t)
	if env.GetValueSource().GetSecretKeyRef().GetVersion() != "latest" {
		t.Fatalf("reference changed: %v", env)
	}
	if after.LatestReadyRevision == before.LatestReadyRevision || after.LatestReadyRevision != after.LatestCreatedRevision {
		t.Fatalf("no new revision: %s -> %s", before.LatestReadyRevision, after.LatestReadyRevision)
	}
	if after.Template.Annotations[CloudRunFingerprintAnnotation] == "" {
		t.Fatal("no fingerprint annotation")
	}
	mustRead(t, tg, crNew)
	n := w.srv.Calls("run.UpdateService")
	if err := tg.Write(ctx, secret.New(crNew)); err != nil || w.srv.Calls("run.UpdateService") != n {
		t.Fatalf("second Write: %v", err)
	}
}

func TestCloudRunFailedRevision(t *testing.T) {
	w, tg := newCloudRunWorld(t, plainEnv(crOld))
	ctx := context.Background()
	mustRead(t, tg, crOld)
	before, _ := w.env(t)
	w.srv.FailRunRevisions(true)
	err := tg.Write(ctx, secret.New(crNew))
	if err == nil || !strings.Contains(err.Error(), "is not ready and serving") || !strings.Contains(err.Error(), before.LatestReadyRevision+" still serves the old key") {
		t.Fatalf("Write with a failing revision: %v", err)
	}
	noKey(t, tg, err)
	after, _ := w.env(t)
	if after.LatestReadyRevision != before.LatestReadyRevision || after.TrafficStatuses[0].Revision != before.LatestReadyRevision {
		t.Fatalf("the old revision no longer serves: %v", after)
	}
	// The template holds the new key but does not serve: Read says so.
	if k, err := tg.Read(ctx); err != nil || !k.IsZero() {
		t.Fatalf("Read after a failed deploy = %s, %v", k, err)
	}
	// Fixed: writing again deploys a new revision even though the
	// template already holds the key.
	w.srv.FailRunRevisions(false)
	if err := tg.Write(ctx, secret.New(crNew)); err != nil {
		t.Fatal(err)
	}
	mustRead(t, tg, crNew)
}

func TestCloudRunConcurrentChange(t *testing.T) {
	w, tg := newCloudRunWorld(t, plainEnv(crOld))
	ctx := context.Background()
	mustRead(t, tg, crOld)
	rc, _ := w.srv.RunClient(ctx)
	defer rc.Close()
	svc, _ := w.srv.RunService(w.svc)
	svc.Template.Containers[0].Env[1] = plainEnv("AQ.Ab8RN6someone-else")
	op, err := rc.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	err = tg.Write(ctx, secret.New(crNew))
	if !errors.Is(err, rotate.ErrTargetChanged) {
		t.Fatalf("Write after a concurrent change: %v", err)
	}
	noKey(t, tg, err)
}

func TestCloudRunPreflightFailures(t *testing.T) {
	ctx := context.Background()
	w, tg := newCloudRunWorld(t, plainEnv(crOld), &runpb.Container{Name: "sidecar", Image: "gcr.io/x/side"})
	for _, tc := range []struct {
		name      string
		target    *CloudRun
		setup     func()
		msg, hint string
	}{
		{"two containers, none named", tg, nil, "2 containers", "app, sidecar"},
		{"missing container", NewCloudRun(tg.run, tg.sm, tg.service, "web", "GEMINI_API_KEY"), nil, `no container "web"`, "app, sidecar"},
		{"missing variable", NewCloudRun(tg.run, tg.sm, tg.service, "app", "OPENAI_API_KEY"), nil, "OPENAI_API_KEY is not in the environment", "--update-secrets"},
		{"missing service", NewCloudRun(tg.run, tg.sm, "projects/run-project/locations/europe-west1/services/nope", "", "K"), nil, "service projects/run-project/locations/europe-west1/services/nope not found", "gcloud run services list"},
		{"no update permission", NewCloudRun(tg.run, tg.sm, tg.service, "app", "GEMINI_API_KEY"), func() { w.srv.DenyPermission("run.services.update") }, "lacks run.services.update", "roles/run.developer"},
		{"no get permission", NewCloudRun(tg.run, tg.sm, tg.service, "app", "GEMINI_API_KEY"), func() { w.srv.DenyPermission("run.services.get") }, "run.services.get", "roles/run.developer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			_, err := tc.target.Read(ctx)
			if !errors.Is(err, rotate.ErrInvalidTarget) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(errhint.Of(err), tc.hint) {
				t.Fatalf("Read = %v (hint %q); want ErrInvalidTarget with %q, hint with %q", err, errhint.Of(err), tc.msg, tc.hint)
			}
			noKey(t, tc.target, err)
		})
	}
	if w.srv.MutatingCalls() != 0 {
		t.Fatal("preflight changed something")
	}
}

func TestCloudRunTrafficPinned(t *testing.T) {
	w, tg := newCloudRunWorld(t, plainEnv(crOld))
	ctx := context.Background()
	rc, _ := w.srv.RunClient(ctx)
	defer rc.Close()
	svc, _ := w.srv.RunService(w.svc)
	svc.Traffic = []*runpb.TrafficTarget{{Type: runpb.TrafficTargetAllocationType_TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION, Revision: svc.LatestReadyRevision, Percent: 100}}
	op, err := rc.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: proto.Clone(svc).(*runpb.Service)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = tg.Read(ctx)
	if !errors.Is(err, rotate.ErrInvalidTarget) || !strings.Contains(errhint.Of(err), "--to-latest") {
		t.Fatalf("Read of a pinned-traffic service: %v", err)
	}
}

// A run killed while waiting for the deployment: the next run's Read and
// Write find the deployment finished and do not deploy again.
func TestCloudRunResumeAfterInterruptedWait(t *testing.T) {
	w, tg := newCloudRunWorld(t, plainEnv(crOld))
	ctx, cancel := context.WithCancel(context.Background())
	mustRead(t, tg, crOld)
	w.srv.SetHook("run.GetOperation", func(context.Context, int) error { cancel(); return nil })
	if err := tg.Write(ctx, secret.New(crNew)); err == nil {
		t.Fatal("Write survived its cancelled context")
	}
	w.srv.SetHook("run.GetOperation", nil)
	if svc, _ := w.env(t); !svc.Reconciling {
		t.Fatal("deployment not in progress after the interrupted wait")
	}
	next := NewCloudRun(tg.run, tg.sm, tg.service, "", "GEMINI_API_KEY")
	next.Poll = time.Millisecond
	bg := context.Background()
	if _, err := next.Read(bg); err != nil {
		t.Fatal(err)
	}
	n := w.srv.Calls("run.UpdateService")
	if err := next.Write(bg, secret.New(crNew)); err != nil {
		t.Fatal(err)
	}
	if w.srv.Calls("run.UpdateService") != n {
		t.Fatal("deployed again")
	}
	mustRead(t, next, crNew)
	if svc, _ := w.env(t); !strings.HasPrefix(svc.LatestReadyRevision, "api-00002-") {
		t.Fatalf("serving %s", svc.LatestReadyRevision)
	}
}
