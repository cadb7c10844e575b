package rotate_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	apikeysapi "cloud.google.com/go/apikeys/apiv2"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// chargeTo gives the world's Rotator clients that name quotaProject in
// x-goog-user-project, as keyrotate's do with a quota project.
func chargeTo(t *testing.T, w *world, quotaProject string) {
	t.Helper()
	ctx := context.Background()
	keys, err := apikeys.NewService(ctx, option.WithEndpoint("http://"+w.srv.APIKeysAddr+"/"),
		option.WithHTTPClient(&http.Client{Transport: userProjectTransport{quotaProject, http.DefaultTransport}}))
	if err != nil {
		t.Fatal(err)
	}
	grpcOpts := []option.ClientOption{option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithGRPCDialOption(userProjectDial(quotaProject))}
	sm, err := secretmanager.NewClient(ctx, append(grpcOpts, option.WithEndpoint(w.srv.SecretManagerAddr))...)
	if err != nil {
		t.Fatal(err)
	}
	sm.CallOptions = &secretmanager.CallOptions{}
	t.Cleanup(func() { sm.Close() })
	lookup, err := apikeysapi.NewClient(ctx, append(grpcOpts, option.WithEndpoint(w.srv.APIKeysAddr))...)
	if err != nil {
		t.Fatal(err)
	}
	lookup.CallOptions = &apikeysapi.CallOptions{}
	t.Cleanup(func() { lookup.Close() })
	w.r.Keys, w.r.Secrets, w.r.Lookup = keys, sm, lookup
}

// TestConsumerRefusals: a rotation under user credentials without a quota
// project, or charged to a quota project where an API is off or that the
// caller may not use, fails before any write with a ConsumerError whose
// hint names the charged project and the fix; charged to a usable quota
// project, the same rotation succeeds.
func TestConsumerRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		setup        func(w *world)
		quotaProject string
		wantReason   string
		wantConsumer string
		wantHint     []string
	}{
		{
			name:         "user credentials without a quota project",
			setup:        func(w *world) { w.srv.RequireQuotaProject(true) },
			wantReason:   gcp.ReasonServiceDisabled,
			wantConsumer: "projects/764086051850",
			wantHint:     []string{"764086051850", "shared client project", "gcloud auth application-default set-quota-project " + project},
		},
		{
			name: "Secret Manager API off in the quota project",
			setup: func(w *world) {
				w.srv.AddProject("billing-proj", 999)
				w.srv.SetServiceEnabled("billing-proj", "secretmanager.googleapis.com", false)
			},
			quotaProject: "billing-proj",
			wantReason:   gcp.ReasonServiceDisabled,
			wantConsumer: "projects/999",
			wantHint: []string{"secretmanager.googleapis.com is not enabled in project 999", "gcloud services enable secretmanager.googleapis.com --project 999",
				"https://console.developers.google.com/apis/api/secretmanager.googleapis.com/overview?project=999"},
		},
		{
			name: "API Keys API off in the quota project",
			setup: func(w *world) {
				w.srv.AddProject("billing-proj", 999)
				w.srv.SetServiceEnabled("billing-proj", "apikeys.googleapis.com", false)
			},
			quotaProject: "billing-proj",
			wantReason:   gcp.ReasonServiceDisabled,
			wantConsumer: "projects/999",
			wantHint:     []string{"apikeys.googleapis.com is not enabled in project 999", "gcloud services enable apikeys.googleapis.com --project 999"},
		},
		{
			name:         "a quota project the caller may not use",
			quotaProject: "not-my-project",
			wantReason:   gcp.ReasonUserProjectDenied,
			wantConsumer: "projects/not-my-project",
			wantHint:     []string{"quota project not-my-project", "roles/serviceusage.serviceUsageConsumer"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			if tc.setup != nil {
				tc.setup(w)
			}
			if tc.quotaProject != "" {
				chargeTo(t, w, tc.quotaProject)
			}
			_, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{Force: true})
			var ce *gcp.ConsumerError
			if !errors.As(err, &ce) {
				t.Fatalf("Rotate: %v (%T), want a *gcp.ConsumerError", err, err)
			}
			if ce.Reason != tc.wantReason || ce.Consumer != tc.wantConsumer {
				t.Errorf("ConsumerError = %s %s, want %s %s", ce.Reason, ce.Consumer, tc.wantReason, tc.wantConsumer)
			}
			hint := errhint.Of(err)
			for _, want := range tc.wantHint {
				if !strings.Contains(hint, want) {
					t.Errorf("hint %q does not say %q", hint, want)
				}
			}
			if strings.Contains(hint, "keyrotate") || strings.Contains(hint, "--quota-project") {
				t.Errorf("hint %q names keyrotate's own commands or flags; the library must not", hint)
			}
			if n := w.srv.MutatingCalls(); n != 0 {
				t.Errorf("%d writes, want none", n)
			}
			if b, _ := os.ReadFile(w.envPath); string(b) != w.envText {
				t.Errorf(".env changed")
			}
		})
	}
	t.Run("with a usable quota project", func(t *testing.T) {
		w := newWorld(t)
		w.srv.RequireQuotaProject(true)
		chargeTo(t, w, project)
		w.r.QuotaProject = project
		res, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{Force: true})
		if err != nil || !res.Rotated {
			t.Fatalf("Rotate charged to %s: %v", project, err)
		}
	})
}

// TestPlanChecksAPIsWhereCharged: with a quota project, plan checks that
// the APIs are enabled there, the project the calls are charged to
// (ChargedProject), not in the slot's project.
func TestPlanChecksAPIsWhereCharged(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.withAccess()
	w.srv.AddProject("billing-proj", 999)
	w.srv.SetServiceEnabled("billing-proj", "secretmanager.googleapis.com", false)
	chargeTo(t, w, "billing-proj")
	w.r.QuotaProject = "billing-proj"
	if got := w.r.ChargedProject(w.slot); got != "billing-proj" {
		t.Fatalf("ChargedProject = %q, want billing-proj", got)
	}
	checks, _, err := w.planChecks()
	if !errors.Is(err, rotate.ErrAccessMissing) {
		t.Errorf("Plan error = %v, want ErrAccessMissing", err)
	}
	var failed []string
	for _, c := range checks {
		if c.Status == rotate.CheckFail {
			failed = append(failed, c.Name+" "+c.Fix)
		}
	}
	if want := "secretmanager.googleapis.com gcloud services enable secretmanager.googleapis.com --project=billing-proj"; len(failed) != 1 || failed[0] != want {
		t.Errorf("failed checks %q, want only %q", failed, want)
	}
	if n := w.srv.MutatingCalls(); n != 0 {
		t.Errorf("plan made %d writes", n)
	}
}
