package emulator

import (
	"context"
	"regexp"
	"testing"

	"cloud.google.com/go/run/apiv2/runpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

func runWorld(t *testing.T) (*Server, string) {
	t.Helper()
	return runWorldRevision(t, "")
}

// runWorldRevision seeds the service with its template naming revision rev
// ("" : none), as gcloud and the console leave it.
func runWorldRevision(t *testing.T, rev string) (*Server, string) {
	t.Helper()
	srv, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	srv.AddProject("run-project", 424242)
	name, err := srv.SeedRunService("run-project", "europe-west1", "api", &runpb.Service{
		Template: &runpb.RevisionTemplate{Revision: rev, Containers: []*runpb.Container{{
			Image: "gcr.io/x/api",
			Env:   []*runpb.EnvVar{{Name: "GEMINI_API_KEY", Values: &runpb.EnvVar_Value{Value: "old"}}},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv, name
}

var revRE = regexp.MustCompile(`^api-0000[0-9]-[a-z]{3}$`)

func TestRunGetAndUpdateService(t *testing.T) {
	srv, name := runWorld(t)
	ctx := context.Background()
	c, err := srv.RunClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if name != "projects/424242/locations/europe-west1/services/api" {
		t.Fatalf("seeded name = %s", name)
	}
	svc, err := c.GetService(ctx, &runpb.GetServiceRequest{Name: "projects/run-project/locations/europe-west1/services/api"})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Name != name || !revRE.MatchString(svc.LatestReadyRevision) || svc.LatestReadyRevision != svc.LatestCreatedRevision ||
		svc.TerminalCondition.GetState() != runpb.Condition_CONDITION_SUCCEEDED || svc.Etag == "" ||
		len(svc.TrafficStatuses) != 1 || svc.TrafficStatuses[0].Percent != 100 || svc.TrafficStatuses[0].Revision != svc.LatestReadyRevision {
		t.Fatalf("seeded service = %v", svc)
	}
	first := svc.LatestReadyRevision

	// A stale etag is ABORTED.
	stale := proto.Clone(svc).(*runpb.Service)
	stale.Etag = `"1"`
	if _, err := c.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: stale}); status.Code(err) != codes.Aborted {
		t.Fatalf("stale etag: %v, want Aborted", err)
	}

	svc.Template.Containers[0].Env[0].Values = &runpb.EnvVar_Value{Value: "new"}
	op, err := c.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	if op.Done() {
		t.Fatal("operation done on first return")
	}
	mid, _ := srv.RunService(name)
	if !mid.Reconciling || mid.LatestCreatedRevision == first || mid.LatestReadyRevision != first {
		t.Fatalf("while deploying: reconciling=%v created=%s ready=%s", mid.Reconciling, mid.LatestCreatedRevision, mid.LatestReadyRevision)
	}
	got, err := op.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.LatestReadyRevision == first || got.LatestReadyRevision != got.LatestCreatedRevision || got.Reconciling ||
		got.Template.Containers[0].Env[0].GetValue() != "new" || got.TrafficStatuses[0].Revision != got.LatestReadyRevision {
		t.Fatalf("after deploy: %v", got)
	}
	if !revRE.MatchString(got.LatestReadyRevision) || got.LatestReadyRevision[:10] != "api-00002-" {
		t.Fatalf("new revision name %s", got.LatestReadyRevision)
	}
	if srv.Calls("run.UpdateService") != 2 || srv.Calls("run.GetOperation") < 2 {
		t.Fatalf("calls %v", srv.CallCounts())
	}

	// An unchanged template makes no revision, unless forced.
	cur, _ := c.GetService(ctx, &runpb.GetServiceRequest{Name: name})
	op, err = c.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: cur})
	if err != nil {
		t.Fatal(err)
	}
	if got, err = op.Wait(ctx); err != nil || got.LatestCreatedRevision != cur.LatestCreatedRevision {
		t.Fatalf("no-op update: %v %v", got.GetLatestCreatedRevision(), err)
	}
	op, err = c.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: got, ForceNewRevision: true})
	if err != nil {
		t.Fatal(err)
	}
	if got2, err := op.Wait(ctx); err != nil || got2.LatestReadyRevision == got.LatestReadyRevision {
		t.Fatalf("forced revision: %v %v", got2.GetLatestReadyRevision(), err)
	}
}

// A revision name is unique and a revision immutable: reusing the name of
// an existing revision with a changed template is ALREADY_EXISTS, on every
// attempt, as on Cloud Run (see run.go for the sources).
func TestRunRevisionNameReuse(t *testing.T) {
	srv, name := runWorldRevision(t, "api-00001-gcl")
	if _, err := srv.SeedRunService("run-project", "europe-west1", "other", &runpb.Service{
		Template: &runpb.RevisionTemplate{Revision: "api-00001-x", Containers: []*runpb.Container{{Image: "i"}}}}); err == nil {
		t.Fatal("seeding a revision name without the service's prefix succeeded")
	}
	ctx := context.Background()
	c, err := srv.RunClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc, _ := srv.RunService(name)
	if svc.Template.Revision != "api-00001-gcl" || svc.LatestReadyRevision != "api-00001-gcl" {
		t.Fatalf("seeded: template revision %q, serving %q", svc.Template.Revision, svc.LatestReadyRevision)
	}

	// The same template under its own name: no new revision, no error.
	op, err := c.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: svc})
	if err != nil {
		t.Fatalf("unchanged update: %v", err)
	}
	if _, err := op.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	for _, force := range []bool{false, true} {
		for attempt := 1; attempt <= 2; attempt++ {
			cur, _ := srv.RunService(name)
			if !force {
				cur.Template.Containers[0].Env[0].Values = &runpb.EnvVar_Value{Value: "new"}
			}
			_, err := c.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: cur, ForceNewRevision: force})
			want := "Revision named 'api-00001-gcl' with different configuration already exists."
			if status.Code(err) != codes.AlreadyExists || status.Convert(err).Message() != want {
				t.Fatalf("force=%v attempt %d: %v, want ALREADY_EXISTS %q", force, attempt, err, want)
			}
		}
	}
	if got, _ := srv.RunService(name); got.LatestCreatedRevision != "api-00001-gcl" || got.Generation != 2 {
		t.Fatalf("a refused update changed the service: created %s, generation %d", got.LatestCreatedRevision, got.Generation)
	}

	// A name without the service's prefix is refused.
	cur, _ := srv.RunService(name)
	cur.Template.Revision = "web-00002-abc"
	if _, err := c.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: cur}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("foreign revision name: %v, want InvalidArgument", err)
	}

	// Cleared, Cloud Run names the revision; a new name is taken as given.
	for _, rev := range []string{"", "api-00003-own"} {
		cur, _ := srv.RunService(name)
		cur.Template.Revision = rev
		cur.Template.Containers[0].Env[0].Values = &runpb.EnvVar_Value{Value: "new-" + rev}
		op, err := c.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: cur})
		if err != nil {
			t.Fatalf("update with revision %q: %v", rev, err)
		}
		got, err := op.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.LatestReadyRevision == "api-00001-gcl" || (rev != "" && got.LatestReadyRevision != rev) {
			t.Fatalf("update with revision %q: serving %s", rev, got.LatestReadyRevision)
		}
	}
}

func TestRunFailedRevisionKeepsOldServing(t *testing.T) {
	srv, name := runWorld(t)
	ctx := context.Background()
	c, err := srv.RunClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc, _ := srv.RunService(name)
	first := svc.LatestReadyRevision
	srv.FailRunRevisions(true)
	svc.Template.Containers[0].Env[0].Values = &runpb.EnvVar_Value{Value: "new"}
	op, err := c.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Wait(ctx); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("wait: %v, want FailedPrecondition", err)
	}
	got, _ := srv.RunService(name)
	if got.LatestReadyRevision != first || got.LatestCreatedRevision == first ||
		got.TerminalCondition.GetState() != runpb.Condition_CONDITION_FAILED || got.TrafficStatuses[0].Revision != first {
		t.Fatalf("after failed deploy: %v", got)
	}
}

func TestRunErrors(t *testing.T) {
	srv, name := runWorld(t)
	ctx := context.Background()
	c, err := srv.RunClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetService(ctx, &runpb.GetServiceRequest{Name: "projects/run-project/locations/europe-west1/services/nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("missing service: %v", err)
	}
	if _, err := c.GetService(ctx, &runpb.GetServiceRequest{Name: "projects/unknown-project/locations/europe-west1/services/api"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("unknown project: %v", err)
	}
	srv.DenyPermission("run.services.get")
	if _, err := c.GetService(ctx, &runpb.GetServiceRequest{Name: name}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("denied: %v", err)
	}
	srv.AllowPermission("run.services.get")
	srv.Fail("run.GetService", fake.Next, fake.Fault{Code: codes.Unavailable})
	if _, err := c.GetService(ctx, &runpb.GetServiceRequest{Name: name}); status.Code(err) != codes.Unavailable {
		t.Fatalf("fault: %v", err)
	}
	if srv.MutatingCalls() != 0 {
		t.Fatalf("mutating calls %d", srv.MutatingCalls())
	}
}
