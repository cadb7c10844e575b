package emulator

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"
	apikeys "google.golang.org/api/apikeys/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// restErrorInfo returns the reason and metadata of the ErrorInfo in a REST
// error body, and its Help link URLs.
func restErrorInfo(t *testing.T, what string, err error) (reason string, md map[string]string, links []string) {
	t.Helper()
	e := wantErr(t, what, err, 403, "PERMISSION_DENIED")
	var body struct {
		Error struct {
			Details []struct {
				Type     string            `json:"@type"`
				Reason   string            `json:"reason"`
				Metadata map[string]string `json:"metadata"`
				Links    []helpLink        `json:"links"`
			} `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(e.Body), &body); err != nil {
		t.Fatalf("%s: error body %q: %v", what, e.Body, err)
	}
	for _, d := range body.Error.Details {
		switch d.Type {
		case typeErrorInfo:
			reason, md = d.Reason, d.Metadata
		case typeHelp:
			for _, l := range d.Links {
				links = append(links, l.URL)
			}
		}
	}
	return reason, md, links
}

// grpcErrorInfo is restErrorInfo for a gRPC status.
func grpcErrorInfo(t *testing.T, what string, err error) (reason string, md map[string]string, links []string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.PermissionDenied {
		t.Fatalf("%s: got %v, want PERMISSION_DENIED", what, err)
	}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason, md = d.GetReason(), d.GetMetadata()
		case *errdetails.Help:
			for _, l := range d.GetLinks() {
				links = append(links, l.GetUrl())
			}
		}
	}
	return reason, md, links
}

func TestRequireQuotaProject(t *testing.T) {
	s, svc, _ := startKeys(t, Options{})
	s.AddProject(smProjectID, smProjectNumber)
	ctx := context.Background()
	sm, err := s.SecretManagerClient(ctx)
	if err != nil {
		t.Fatalf("SecretManagerClient: %v", err)
	}
	defer sm.Close()
	lookup, err := s.APIKeysLookupClient(ctx)
	if err != nil {
		t.Fatalf("APIKeysLookupClient: %v", err)
	}
	defer lookup.Close()
	secret, err := s.SeedSecret(smProjectID, "s", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.RequireQuotaProject(true)

	shared := map[string]string{"consumer": "projects/764086051850", "service": "apikeys.googleapis.com"}
	_, err = svc.Projects.Locations.Keys.List("projects/proj-a/locations/global").Do()
	reason, md, _ := restErrorInfo(t, "ListKeys without a quota project", err)
	if reason != "SERVICE_DISABLED" || !cmp.Equal(md, shared) {
		t.Errorf("ListKeys without a quota project: ErrorInfo %s %v, want SERVICE_DISABLED %v", reason, md, shared)
	}
	if !strings.Contains(err.Error(), "requires a quota project, which is not set by default") {
		t.Errorf("ListKeys without a quota project: message %q, want Google's", err)
	}
	_, err = sm.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: secret})
	reason, md, _ = grpcErrorInfo(t, "GetSecret without a quota project", err)
	if want := map[string]string{"consumer": "projects/764086051850", "service": "secretmanager.googleapis.com"}; reason != "SERVICE_DISABLED" || !cmp.Equal(md, want) {
		t.Errorf("GetSecret without a quota project: ErrorInfo %s %v, want SERVICE_DISABLED %v", reason, md, want)
	}
	_, err = lookup.LookupKey(ctx, &apikeyspb.LookupKeyRequest{KeyString: "AIza" + strings.Repeat("x", 35)})
	if reason, md, _ = grpcErrorInfo(t, "LookupKey without a quota project", err); reason != "SERVICE_DISABLED" || !cmp.Equal(md, shared) {
		t.Errorf("LookupKey without a quota project: ErrorInfo %s %v, want SERVICE_DISABLED %v", reason, md, shared)
	}
	if got := s.MutatingCalls(); got != 0 {
		t.Errorf("MutatingCalls() = %d, want 0", got)
	}

	// With the header: the call goes through.
	call := svc.Projects.Locations.Keys.List("projects/proj-a/locations/global")
	call.Header().Set("X-Goog-User-Project", testProject)
	if _, err := call.Do(); err != nil {
		t.Errorf("ListKeys with a quota project: %v", err)
	}
	if _, err := sm.GetSecret(metadata.AppendToOutgoingContext(ctx, "x-goog-user-project", smProjectID), &secretmanagerpb.GetSecretRequest{Name: secret}); err != nil {
		t.Errorf("GetSecret with a quota project: %v", err)
	}
}

func TestQuotaProjectIsCharged(t *testing.T) {
	s, svc, _ := startKeys(t, Options{Quotas: map[string]Quota{"apikeys": {Writes: 2}, "secretmanager": {Reads: 10}}})
	s.AddProject("billing", 999)
	s.AddProject(smProjectID, smProjectNumber)
	secret, err := s.SeedSecret(smProjectID, "s", nil)
	if err != nil {
		t.Fatal(err)
	}
	create := func(parent string) error {
		c := svc.Projects.Locations.Keys.Create(parent, &apikeys.V2Key{})
		c.Header().Set("X-Goog-User-Project", "billing")
		_, err := c.Do()
		return err
	}
	// Two projects' keys, one quota: the third write is over it.
	if err := create("projects/proj-a/locations/global"); err != nil {
		t.Fatal(err)
	}
	if err := create("projects/" + smProjectID + "/locations/global"); err != nil {
		t.Fatal(err)
	}
	md, _ := restQuotaError(t, "third write", create("projects/proj-a/locations/global"))
	if md["consumer"] != "projects/999" {
		t.Errorf("quota error consumer %q, want projects/999 (the quota project)", md["consumer"])
	}
	if _, w, _ := s.QuotaUsage("apikeys", "billing"); w != 2 {
		t.Errorf("QuotaUsage(apikeys, billing) writes = %d, want 2", w)
	}
	for _, p := range []string{testProject, smProjectID} {
		if _, w, _ := s.QuotaUsage("apikeys", p); w != 0 {
			t.Errorf("QuotaUsage(apikeys, %s) writes = %d, want 0 (the quota project pays)", p, w)
		}
	}
	ctx := context.Background()
	sm, err := s.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Close()
	if _, err := sm.GetSecret(metadata.AppendToOutgoingContext(ctx, "x-goog-user-project", "billing"), &secretmanagerpb.GetSecretRequest{Name: secret}); err != nil {
		t.Fatalf("GetSecret: %v", err)
	}
	if r, _, _ := s.QuotaUsage("secretmanager", "billing"); r != 1 {
		t.Errorf("QuotaUsage(secretmanager, billing) reads = %d, want 1", r)
	}
	if r, _, _ := s.QuotaUsage("secretmanager", smProjectID); r != 0 {
		t.Errorf("QuotaUsage(secretmanager, %s) reads = %d, want 0", smProjectID, r)
	}
}

func TestQuotaProjectRefused(t *testing.T) {
	s, svc, _ := startKeys(t, Options{})
	s.AddProject("billing", 999)
	list := func(up string) error {
		c := svc.Projects.Locations.Keys.List("projects/proj-a/locations/global")
		c.Header().Set("X-Goog-User-Project", up)
		_, err := c.Do()
		return err
	}
	reason, md, links := restErrorInfo(t, "unknown quota project", list("no-such-project"))
	if reason != "USER_PROJECT_DENIED" || md["consumer"] != "projects/no-such-project" {
		t.Errorf("unknown quota project: ErrorInfo %s %v, want USER_PROJECT_DENIED naming it", reason, md)
	}
	if len(links) != 1 || !strings.Contains(links[0], "iam-admin") {
		t.Errorf("unknown quota project: Help links %v, want the IAM page", links)
	}

	s.SetServiceEnabled("billing", "apikeys.googleapis.com", false)
	reason, md, links = restErrorInfo(t, "API disabled in the quota project", list("billing"))
	url := "https://console.developers.google.com/apis/api/apikeys.googleapis.com/overview?project=999"
	want := map[string]string{"activationUrl": url, "consumer": "projects/999", "containerInfo": "999", "service": "apikeys.googleapis.com", "serviceTitle": "API Keys API"}
	if reason != "SERVICE_DISABLED" || !cmp.Equal(md, want) {
		t.Errorf("API disabled in the quota project: ErrorInfo %s %v, want SERVICE_DISABLED %v", reason, md, want)
	}
	if !cmp.Equal(links, []string{url}) {
		t.Errorf("API disabled in the quota project: Help links %v, want %v", links, []string{url})
	}

	s.SetServiceEnabled("billing", "apikeys.googleapis.com", true)
	s.DenyPermission("serviceusage.services.use")
	if reason, _, _ := restErrorInfo(t, "without serviceusage.services.use", list("billing")); reason != "USER_PROJECT_DENIED" {
		t.Errorf("without serviceusage.services.use: reason %s, want USER_PROJECT_DENIED", reason)
	}
}
