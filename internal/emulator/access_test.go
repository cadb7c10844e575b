package emulator

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/cloudresourcemanager/v3"
	"google.golang.org/api/googleapi"
	iamapi "google.golang.org/api/iam/v1"
	"google.golang.org/api/serviceusage/v1"
)

// TestAccessAPIs: Google's Resource Manager, Service Usage, IAM and Secret
// Manager clients read the emulator's permission, service and
// service-account state, with the public APIs' shapes, and change nothing.
func TestAccessAPIs(t *testing.T) {
	s, _, _ := startKeys(t, Options{})
	ctx := context.Background()
	opts := s.AccessClientOptions()
	crm, err := cloudresourcemanager.NewService(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	su, err := serviceusage.NewService(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ia, err := iamapi.NewService(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := s.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Close()
	s.DenyPermission("apikeys.keys.delete")
	s.SetServiceEnabled(testProject, "secretmanager.googleapis.com", false)
	s.AddServiceAccount(testSA)

	// Resource Manager: the subset held; an unknown project is denied.
	tp, err := crm.Projects.TestIamPermissions("projects/"+testProject, &cloudresourcemanager.TestIamPermissionsRequest{
		Permissions: []string{"apikeys.keys.create", "apikeys.keys.delete"}}).Do()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"apikeys.keys.create"}, tp.Permissions); diff != "" {
		t.Errorf("project permissions (-want +got):\n%s", diff)
	}
	if _, err := crm.Projects.TestIamPermissions("projects/nope", &cloudresourcemanager.TestIamPermissionsRequest{Permissions: []string{"x.y.z"}}).Do(); httpCode(err) != http.StatusForbidden {
		t.Errorf("unknown project: %v, want 403", err)
	}

	// Service Usage: states by project number.
	bg, err := su.Services.BatchGet("projects/"+testProject).Names(
		"projects/"+testProject+"/services/apikeys.googleapis.com",
		"projects/"+testProject+"/services/secretmanager.googleapis.com").Do()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sv := range bg.Services {
		got = append(got, sv.Name+" "+sv.Parent+" "+sv.State)
	}
	want := []string{"projects/123/services/apikeys.googleapis.com projects/123 ENABLED", "projects/123/services/secretmanager.googleapis.com projects/123 DISABLED"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	s.DenyPermission("serviceusage.services.get")
	if _, err := su.Services.BatchGet("projects/" + testProject).Names("projects/" + testProject + "/services/apikeys.googleapis.com").Do(); httpCode(err) != http.StatusForbidden {
		t.Errorf("batchGet without serviceusage.services.get: %v, want 403", err)
	}

	// IAM: a known account, an unknown one (404), and actAs.
	acct, err := ia.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + testSA).Do()
	if err != nil {
		t.Fatal(err)
	}
	if acct.Email != testSA || acct.ProjectId != testProject || acct.Name != "projects/"+testProject+"/serviceAccounts/"+testSA || len(acct.UniqueId) != 21 {
		t.Errorf("service account = %+v", acct)
	}
	if _, err := ia.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/ghost@proj-a.iam.gserviceaccount.com").Do(); httpCode(err) != http.StatusNotFound {
		t.Errorf("unknown account: %v, want 404", err)
	}
	s.DenyPermission("iam.serviceAccounts.actAs")
	sp, err := ia.Projects.ServiceAccounts.TestIamPermissions("projects/-/serviceAccounts/"+testSA,
		&iamapi.TestIamPermissionsRequest{Permissions: []string{"iam.serviceAccounts.actAs"}}).Do()
	if err != nil || len(sp.Permissions) != 0 {
		t.Errorf("actAs denied: %v, %v; want no permissions", sp, err)
	}

	// Secret Manager: the subset on a secret; none (no error) for one
	// that does not exist.
	s.SetServiceEnabled(testProject, "secretmanager.googleapis.com", true)
	name, err := s.SeedSecret(testProject, "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.DenyPermission("secretmanager.versions.add")
	held, err := sm.IAM(name).TestPermissions(ctx, []string{"secretmanager.versions.add", "secretmanager.secrets.update"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"secretmanager.secrets.update"}, held); diff != "" {
		t.Errorf("secret permissions (-want +got):\n%s", diff)
	}
	held, err = sm.IAM("projects/"+testProject+"/secrets/absent").TestPermissions(ctx, []string{"secretmanager.secrets.update"})
	if err != nil || len(held) != 0 {
		t.Errorf("absent secret: %v, %v; want no permissions and no error", held, err)
	}
	if n := s.MutatingCalls(); n != 0 {
		t.Errorf("%d mutating calls", n)
	}
}

func httpCode(err error) int {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	return 0
}
