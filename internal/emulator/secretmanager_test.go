package emulator

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"regexp"
	"strings"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

const (
	smProjectID     = "my-project"
	smProjectNumber = 123456789012
	smNumberPrefix  = "projects/123456789012/secrets/"
)

var smStart = time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)

func startSecretManager(t *testing.T) (*Server, *secretmanager.Client, context.Context) {
	t.Helper()
	srv, err := Start(Options{Clock: fake.NewManualClock(smStart), NoSecretWriteLimits: true}) // these tests write one secret fast; secretrate_test.go tests the limits
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	srv.AddProject(smProjectID, smProjectNumber)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, err := srv.SecretManagerClient(ctx)
	if err != nil {
		t.Fatalf("SecretManagerClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return srv, c, ctx
}

func automatic() *secretmanagerpb.Replication {
	return &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_Automatic_{
		Automatic: &secretmanagerpb.Replication_Automatic{}}}
}

func crc(b []byte) *int64 {
	v := int64(crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	return &v
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

func TestSecretManagerCreateGet(t *testing.T) {
	srv, c, ctx := startSecretManager(t)

	got, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
		Parent:   "projects/" + smProjectID,
		SecretId: "gemini-api-key",
		Secret: &secretmanagerpb.Secret{
			Replication: automatic(),
			Labels:      map[string]string{"team": "ml"},
			Annotations: map[string]string{"keyrotate.slot": "gemini-prod"},
		},
	})
	if err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	if want := smNumberPrefix + "gemini-api-key"; got.GetName() != want {
		t.Errorf("CreateSecret name = %q, want %q (project number)", got.GetName(), want)
	}
	if !got.GetCreateTime().AsTime().Equal(smStart) {
		t.Errorf("create_time = %v, want %v", got.GetCreateTime().AsTime(), smStart)
	}
	if !regexp.MustCompile(`^"[0-9a-f]+"$`).MatchString(got.GetEtag()) {
		t.Errorf("etag = %q, want a quoted hex string", got.GetEtag())
	}

	for _, name := range []string{
		"projects/" + smProjectID + "/secrets/gemini-api-key",
		smNumberPrefix + "gemini-api-key",
	} {
		g, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
		if err != nil {
			t.Fatalf("GetSecret(%q): %v", name, err)
		}
		if diff := cmp.Diff(got, g, protocmp.Transform()); diff != "" {
			t.Errorf("GetSecret(%q) differs from CreateSecret's answer (-create +get):\n%s", name, diff)
		}
	}
	if inspected, ok := srv.Secret("projects/my-project/secrets/gemini-api-key"); !ok || inspected.GetAnnotations()["keyrotate.slot"] != "gemini-prod" {
		t.Errorf("Secret() = %v, %v, want the created secret", inspected, ok)
	}

	errCases := []struct {
		name   string
		parent string
		id     string
		secret *secretmanagerpb.Secret
		want   codes.Code
	}{
		{"already exists", "projects/123456789012", "gemini-api-key", &secretmanagerpb.Secret{Replication: automatic()}, codes.AlreadyExists},
		{"no replication", "projects/my-project", "other", &secretmanagerpb.Secret{}, codes.InvalidArgument},
		{"no secret", "projects/my-project", "other", nil, codes.InvalidArgument},
		{"bad id", "projects/my-project", "has.dot", &secretmanagerpb.Secret{Replication: automatic()}, codes.InvalidArgument},
		{"id too long", "projects/my-project", strings.Repeat("a", 256), &secretmanagerpb.Secret{Replication: automatic()}, codes.InvalidArgument},
		{"bad parent", "my-project", "other", &secretmanagerpb.Secret{Replication: automatic()}, codes.InvalidArgument},
		{"unknown project", "projects/nope", "other", &secretmanagerpb.Secret{Replication: automatic()}, codes.PermissionDenied},
		{"bad annotation", "projects/my-project", "other", &secretmanagerpb.Secret{
			Replication: automatic(), Annotations: map[string]string{"keyrotate.dev/rotation": "x"}}, codes.InvalidArgument},
		{"user managed without replicas", "projects/my-project", "other", &secretmanagerpb.Secret{
			Replication: &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_UserManaged_{
				UserManaged: &secretmanagerpb.Replication_UserManaged{}}}}, codes.InvalidArgument},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: tc.parent, SecretId: tc.id, Secret: tc.secret})
			if got := status.Code(err); got != tc.want {
				t.Errorf("CreateSecret = %v, want code %v", err, tc.want)
			}
		})
	}

	getCases := []struct {
		name string
		in   string
		want codes.Code
		msg  string
	}{
		{"missing", "projects/my-project/secrets/missing", codes.NotFound, "Secret [projects/123456789012/secrets/missing] not found."},
		{"malformed", "projects/my-project/secret/x", codes.InvalidArgument, ""},
		{"unknown project", "projects/nope/secrets/x", codes.PermissionDenied, ""},
	}
	for _, tc := range getCases {
		t.Run("get "+tc.name, func(t *testing.T) {
			_, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: tc.in})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("GetSecret(%q) = %v, want code %v", tc.in, err, tc.want)
			}
			if tc.msg != "" && status.Convert(err).Message() != tc.msg {
				t.Errorf("GetSecret(%q) message = %q, want %q", tc.in, status.Convert(err).Message(), tc.msg)
			}
		})
	}
}

func TestSecretManagerList(t *testing.T) {
	srv, c, ctx := startSecretManager(t)
	srv.AddProject("other-project", 999)
	var want []string
	for i := range 5 {
		name, err := srv.SeedSecret(smProjectID, fmt.Sprintf("s%d", i), nil)
		if err != nil {
			t.Fatalf("SeedSecret: %v", err)
		}
		want = append(want, name)
	}
	if _, err := srv.SeedSecret("other-project", "elsewhere", nil); err != nil {
		t.Fatalf("SeedSecret: %v", err)
	}

	var got []string
	it := c.ListSecrets(ctx, &secretmanagerpb.ListSecretsRequest{Parent: "projects/my-project", PageSize: 2})
	for {
		s, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatalf("ListSecrets: %v", err)
		}
		got = append(got, s.GetName())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListSecrets names (-want +got):\n%s", diff)
	}

	// One page at a time: 2 + 2 + 1, then no token.
	it = c.ListSecrets(ctx, &secretmanagerpb.ListSecretsRequest{Parent: "projects/123456789012", PageSize: 2})
	var sizes []int
	for i := 0; i < 3; i++ {
		_, err := it.Next()
		if err != nil {
			t.Fatalf("ListSecrets: %v", err)
		}
		resp := it.Response.(*secretmanagerpb.ListSecretsResponse)
		sizes = append(sizes, len(resp.GetSecrets()))
		if resp.GetTotalSize() != 5 {
			t.Errorf("total_size = %d, want 5", resp.GetTotalSize())
		}
		for range len(resp.GetSecrets()) - 1 {
			it.Next()
		}
		if i == 2 && resp.GetNextPageToken() != "" {
			t.Errorf("last page next_page_token = %q, want empty", resp.GetNextPageToken())
		}
	}
	if diff := cmp.Diff([]int{2, 2, 1}, sizes); diff != "" {
		t.Errorf("page sizes (-want +got):\n%s", diff)
	}

	_, err := c.ListSecrets(ctx, &secretmanagerpb.ListSecretsRequest{Parent: "projects/my-project", PageToken: "!!"}).Next()
	wantCode(t, "ListSecrets with a bad token", err, codes.InvalidArgument)
	_, err = c.ListSecrets(ctx, &secretmanagerpb.ListSecretsRequest{Parent: "projects/nope"}).Next()
	wantCode(t, "ListSecrets in an unknown project", err, codes.PermissionDenied)
	srv.SetServiceEnabled(smProjectID, "secretmanager.googleapis.com", false)
	_, err = c.ListSecrets(ctx, &secretmanagerpb.ListSecretsRequest{Parent: "projects/my-project"}).Next()
	wantCode(t, "ListSecrets with the API disabled", err, codes.PermissionDenied)
	if _, ok := srv.Secret(want[0]); !ok {
		t.Errorf("Secret(%q) with the API disabled = false, want the inspection helper to still see it", want[0])
	}
}

func TestSecretManagerUpdate(t *testing.T) {
	srv, c, ctx := startSecretManager(t)
	name, err := srv.SeedSecret(smProjectID, "slot", map[string]string{"keep": "me"})
	if err != nil {
		t.Fatalf("SeedSecret: %v", err)
	}
	for i := range 3 {
		if _, err := srv.SeedSecretVersion(name, fmt.Appendf(nil, "key-%d", i+1)); err != nil {
			t.Fatalf("SeedSecretVersion: %v", err)
		}
	}
	if _, err := c.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: name + "/versions/1"}); err != nil {
		t.Fatalf("DestroySecretVersion: %v", err)
	}
	manyAliases := map[string]int64{}
	for i := range 51 {
		manyAliases[fmt.Sprintf("a%d", i)] = 2
	}

	cases := []struct {
		name   string
		mask   []string
		secret *secretmanagerpb.Secret
		want   codes.Code
		check  func(t *testing.T, got *secretmanagerpb.Secret)
	}{
		{
			name:   "annotations",
			mask:   []string{"annotations"},
			secret: &secretmanagerpb.Secret{Annotations: map[string]string{"keyrotate.rotation": `{"phase":"lock"}`}},
			check: func(t *testing.T, got *secretmanagerpb.Secret) {
				want := map[string]string{"keyrotate.rotation": `{"phase":"lock"}`}
				if diff := cmp.Diff(want, got.GetAnnotations()); diff != "" {
					t.Errorf("annotations (-want +got):\n%s", diff)
				}
			},
		},
		{
			name:   "aliases and labels",
			mask:   []string{"version_aliases", "labels"},
			secret: &secretmanagerpb.Secret{VersionAliases: map[string]int64{"current": 3, "previous": 2}, Labels: map[string]string{"env": "prod"}},
			check: func(t *testing.T, got *secretmanagerpb.Secret) {
				if diff := cmp.Diff(map[string]int64{"current": 3, "previous": 2}, got.GetVersionAliases()); diff != "" {
					t.Errorf("version_aliases (-want +got):\n%s", diff)
				}
				if got.GetLabels()["env"] != "prod" {
					t.Errorf("labels = %v, want env=prod", got.GetLabels())
				}
				if got.GetAnnotations()["keyrotate.rotation"] == "" {
					t.Errorf("annotations = %v, want them untouched by a mask without annotations", got.GetAnnotations())
				}
			},
		},
		{name: "empty mask", mask: nil, secret: &secretmanagerpb.Secret{}, want: codes.InvalidArgument},
		{name: "immutable replication", mask: []string{"replication"}, secret: &secretmanagerpb.Secret{Replication: automatic()}, want: codes.InvalidArgument},
		{name: "unknown path", mask: []string{"colour"}, secret: &secretmanagerpb.Secret{}, want: codes.InvalidArgument},
		{name: "annotation key with slash", mask: []string{"annotations"},
			secret: &secretmanagerpb.Secret{Annotations: map[string]string{"keyrotate.dev/rotation": "x"}}, want: codes.InvalidArgument},
		{name: "annotation key ends with dot", mask: []string{"annotations"},
			secret: &secretmanagerpb.Secret{Annotations: map[string]string{"keyrotate.": "x"}}, want: codes.InvalidArgument},
		{name: "annotation key too long", mask: []string{"annotations"},
			secret: &secretmanagerpb.Secret{Annotations: map[string]string{strings.Repeat("k", 64): "x"}}, want: codes.InvalidArgument},
		{name: "annotations 16 KiB", mask: []string{"annotations"},
			secret: &secretmanagerpb.Secret{Annotations: map[string]string{"k": strings.Repeat("v", 16*1024-1)}}, want: codes.InvalidArgument},
		{name: "annotations just under 16 KiB", mask: []string{"annotations"},
			secret: &secretmanagerpb.Secret{Annotations: map[string]string{"k": strings.Repeat("v", 16*1024-2)}}},
		{name: "alias latest", mask: []string{"version_aliases"},
			secret: &secretmanagerpb.Secret{VersionAliases: map[string]int64{"Latest": 2}}, want: codes.InvalidArgument},
		{name: "alias NEW", mask: []string{"version_aliases"},
			secret: &secretmanagerpb.Secret{VersionAliases: map[string]int64{"NEW": 2}}, want: codes.InvalidArgument},
		{name: "alias starting with a digit", mask: []string{"version_aliases"},
			secret: &secretmanagerpb.Secret{VersionAliases: map[string]int64{"1st": 2}}, want: codes.InvalidArgument},
		{name: "alias to a missing version", mask: []string{"version_aliases"},
			secret: &secretmanagerpb.Secret{VersionAliases: map[string]int64{"next": 4}}, want: codes.InvalidArgument},
		{name: "alias to a destroyed version", mask: []string{"version_aliases"},
			secret: &secretmanagerpb.Secret{VersionAliases: map[string]int64{"old": 1}}, want: codes.InvalidArgument},
		{name: "51 aliases", mask: []string{"version_aliases"},
			secret: &secretmanagerpb.Secret{VersionAliases: manyAliases}, want: codes.InvalidArgument},
		{name: "bad label", mask: []string{"labels"},
			secret: &secretmanagerpb.Secret{Labels: map[string]string{"Env": "prod"}}, want: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := srv.Secret(name)
			tc.secret.Name = name
			got, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
				Secret:     tc.secret,
				UpdateMask: &fieldmaskpb.FieldMask{Paths: tc.mask},
			})
			if code := status.Code(err); code != tc.want {
				t.Fatalf("UpdateSecret = %v, want code %v", err, tc.want)
			}
			after, _ := srv.Secret(name)
			if err != nil {
				if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
					t.Errorf("a failed UpdateSecret changed the secret (-before +after):\n%s", diff)
				}
				return
			}
			if got.GetEtag() == before.GetEtag() {
				t.Errorf("etag after update = %q, want a new one", got.GetEtag())
			}
			if diff := cmp.Diff(after, got, protocmp.Transform()); diff != "" {
				t.Errorf("UpdateSecret answer differs from the stored secret (-stored +answer):\n%s", diff)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

func TestSecretManagerEtagCompareAndSwap(t *testing.T) {
	srv, c, ctx := startSecretManager(t)
	name, err := srv.SeedSecret(smProjectID, "slot", nil)
	if err != nil {
		t.Fatal(err)
	}
	read, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	lock := func(etag, holder string) (*secretmanagerpb.Secret, error) {
		return c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
			Secret:     &secretmanagerpb.Secret{Name: name, Etag: etag, Annotations: map[string]string{"keyrotate.lease": holder}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}},
		})
	}
	won, err := lock(read.GetEtag(), "run-a")
	if err != nil {
		t.Fatalf("UpdateSecret with the current etag: %v", err)
	}
	if won.GetEtag() == read.GetEtag() {
		t.Errorf("etag after update = %q, want it changed from %q", won.GetEtag(), read.GetEtag())
	}

	_, err = lock(read.GetEtag(), "run-b") // a second run with the stale etag
	wantCode(t, "UpdateSecret with a stale etag", err, codes.FailedPrecondition)
	now, _ := srv.Secret(name)
	if got := now.GetAnnotations()["keyrotate.lease"]; got != "run-a" {
		t.Errorf("lease holder after the stale update = %q, want %q", got, "run-a")
	}
	if now.GetEtag() != won.GetEtag() {
		t.Errorf("etag after the failed update = %q, want %q", now.GetEtag(), won.GetEtag())
	}

	if _, err := lock("", "run-c"); err != nil {
		t.Errorf("UpdateSecret without an etag = %v, want success (no precondition)", err)
	}

	err = c.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: name, Etag: won.GetEtag()})
	wantCode(t, "DeleteSecret with a stale etag", err, codes.FailedPrecondition)
	cur, _ := srv.Secret(name)
	if err := c.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: name, Etag: cur.GetEtag()}); err != nil {
		t.Fatalf("DeleteSecret with the current etag: %v", err)
	}
	if _, ok := srv.Secret(name); ok {
		t.Errorf("Secret(%q) exists after DeleteSecret", name)
	}
}

func TestSecretManagerVersions(t *testing.T) {
	srv, c, ctx := startSecretManager(t)
	name, err := srv.SeedSecret(smProjectID, "slot", nil)
	if err != nil {
		t.Fatal(err)
	}
	idName := "projects/my-project/secrets/slot"

	add := func(data []byte, sum *int64) (*secretmanagerpb.SecretVersion, error) {
		return c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{
			Parent:  idName,
			Payload: &secretmanagerpb.SecretPayload{Data: data, DataCrc32C: sum},
		})
	}
	v1, err := add([]byte("AQ.one"), crc([]byte("AQ.one")))
	if err != nil {
		t.Fatalf("AddSecretVersion with a correct CRC32C: %v", err)
	}
	if v1.GetName() != name+"/versions/1" || v1.GetState() != secretmanagerpb.SecretVersion_ENABLED || !v1.GetClientSpecifiedPayloadChecksum() {
		t.Errorf("version 1 = %v, want %s/versions/1, ENABLED, client_specified_payload_checksum", v1, name)
	}

	addErrs := []struct {
		name string
		data []byte
		sum  *int64
		msg  string
	}{
		{"wrong checksum", []byte("AQ.two"), crc([]byte("AQ.tw0")), "checksum"},
		{"empty payload", nil, nil, "payload"},
		{"too large", make([]byte, 64*1024+1), nil, "64KiB"},
	}
	for _, tc := range addErrs {
		t.Run(tc.name, func(t *testing.T) {
			_, err := add(tc.data, tc.sum)
			wantCode(t, "AddSecretVersion", err, codes.InvalidArgument)
			if msg := status.Convert(err).Message(); !strings.Contains(strings.ToLower(msg), strings.ToLower(tc.msg)) {
				t.Errorf("AddSecretVersion message = %q, want it to mention %q", msg, tc.msg)
			}
		})
	}
	if n := len(srv.SecretVersions(name)); n != 1 {
		t.Fatalf("after failed adds: %d versions, want 1", n)
	}

	v2, err := add([]byte("AQ.two"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if v2.GetClientSpecifiedPayloadChecksum() {
		t.Errorf("version 2 client_specified_payload_checksum = true, want false (none sent)")
	}
	if _, err := add([]byte("AQ.three"), crc([]byte("AQ.three"))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
		Secret:     &secretmanagerpb.Secret{Name: idName, VersionAliases: map[string]int64{"current": 2, "previous": 1}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"version_aliases"}},
	}); err != nil {
		t.Fatal(err)
	}

	access := func(v string) (*secretmanagerpb.AccessSecretVersionResponse, error) {
		return c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: idName + "/versions/" + v})
	}
	accessCases := []struct {
		version  string
		wantName string
		wantData string
		wantCode codes.Code
	}{
		{"latest", name + "/versions/3", "AQ.three", codes.OK},
		{"1", name + "/versions/1", "AQ.one", codes.OK},
		{"current", name + "/versions/2", "AQ.two", codes.OK},
		{"previous", name + "/versions/1", "AQ.one", codes.OK},
		{"9", "", "", codes.NotFound},
		{"nosuchalias", "", "", codes.NotFound},
		{"0", "", "", codes.InvalidArgument},
		{"bad.alias", "", "", codes.InvalidArgument},
	}
	for _, tc := range accessCases {
		t.Run("access "+tc.version, func(t *testing.T) {
			got, err := access(tc.version)
			if code := status.Code(err); code != tc.wantCode {
				t.Fatalf("AccessSecretVersion(%s) = %v, want code %v", tc.version, err, tc.wantCode)
			}
			if err != nil {
				return
			}
			if got.GetName() != tc.wantName || string(got.GetPayload().GetData()) != tc.wantData {
				t.Errorf("AccessSecretVersion(%s) = %s %q, want %s %q", tc.version, got.GetName(), got.GetPayload().GetData(), tc.wantName, tc.wantData)
			}
			if sum := got.GetPayload().DataCrc32C; sum == nil || *sum != *crc([]byte(tc.wantData)) {
				t.Errorf("AccessSecretVersion(%s) data_crc32c = %v, want %d", tc.version, sum, *crc([]byte(tc.wantData)))
			}
		})
	}

	// Versions list newest first, two at a time.
	var listed []string
	it := c.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: idName, PageSize: 2})
	for {
		v, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatalf("ListSecretVersions: %v", err)
		}
		listed = append(listed, v.GetName())
	}
	if diff := cmp.Diff([]string{name + "/versions/3", name + "/versions/2", name + "/versions/1"}, listed); diff != "" {
		t.Errorf("ListSecretVersions (-want +got):\n%s", diff)
	}

	// Disabling the newest version makes latest fail: never the older one.
	v3, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: idName + "/versions/3"})
	if err != nil {
		t.Fatalf("DisableSecretVersion: %v", err)
	}
	_, err = access("latest")
	wantCode(t, "AccessSecretVersion(latest) with the newest disabled", err, codes.FailedPrecondition)
	if want := "Secret Version [" + name + "/versions/3] is in DISABLED state."; status.Convert(err).Message() != want {
		t.Errorf("message = %q, want %q", status.Convert(err).Message(), want)
	}
	gv, err := c.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: idName + "/versions/latest"})
	if err != nil || gv.GetState() != secretmanagerpb.SecretVersion_DISABLED {
		t.Errorf("GetSecretVersion(latest) = %v, %v, want version 3 DISABLED", gv, err)
	}
	_, err = c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: idName + "/versions/3", Etag: v1.GetEtag()})
	wantCode(t, "EnableSecretVersion with a wrong etag", err, codes.FailedPrecondition)
	if _, err := c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: idName + "/versions/3", Etag: v3.GetEtag()}); err != nil {
		t.Fatalf("EnableSecretVersion with the current etag: %v", err)
	}
	if _, err := access("latest"); err != nil {
		t.Errorf("AccessSecretVersion(latest) after enable: %v", err)
	}

	// Destroy: payload gone, alias removed, state final.
	d, err := c.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: idName + "/versions/current"})
	if err != nil {
		t.Fatalf("DestroySecretVersion: %v", err)
	}
	if d.GetName() != name+"/versions/2" || d.GetState() != secretmanagerpb.SecretVersion_DESTROYED || d.GetDestroyTime() == nil {
		t.Errorf("destroyed version = %v, want version 2 DESTROYED with destroy_time", d)
	}
	if _, ok := srv.SecretPayload(name + "/versions/2"); ok {
		t.Errorf("SecretPayload(version 2) still present after destroy")
	}
	sec, _ := srv.Secret(name)
	if diff := cmp.Diff(map[string]int64{"previous": 1}, sec.GetVersionAliases()); diff != "" {
		t.Errorf("aliases after destroying version 2 (-want +got):\n%s", diff)
	}
	_, err = access("2")
	wantCode(t, "AccessSecretVersion of a destroyed version", err, codes.FailedPrecondition)
	if !strings.Contains(status.Convert(err).Message(), "DESTROYED") {
		t.Errorf("message = %q, want it to say DESTROYED", status.Convert(err).Message())
	}
	_, err = c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: idName + "/versions/2"})
	wantCode(t, "EnableSecretVersion of a destroyed version", err, codes.FailedPrecondition)

	if p, ok := srv.SecretPayload(name + "/versions/previous"); !ok || string(p) != "AQ.one" {
		t.Errorf("SecretPayload(previous) = %q, %v, want %q", p, ok, "AQ.one")
	}
	if vs := srv.SecretVersions(name); len(vs) != 3 || vs[0].GetName() != name+"/versions/1" {
		t.Errorf("SecretVersions = %v, want 3 versions, oldest first", vs)
	}
}

func TestSecretManagerLatestWithoutVersions(t *testing.T) {
	srv, c, ctx := startSecretManager(t)
	if _, err := srv.SeedSecret(smProjectID, "empty", nil); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{
		"projects/my-project/secrets/empty/versions/latest",
		"projects/my-project/secrets/missing/versions/latest",
	} {
		_, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: in})
		wantCode(t, "AccessSecretVersion("+in+")", err, codes.NotFound)
		if !strings.HasSuffix(status.Convert(err).Message(), "not found or has no versions.") {
			t.Errorf("AccessSecretVersion(%s) message = %q, want \"... not found or has no versions.\"", in, status.Convert(err).Message())
		}
	}
}

func TestSecretManagerFaults(t *testing.T) {
	srv, c, ctx := startSecretManager(t)
	name, err := srv.SeedSecret(smProjectID, "slot", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Fail("secretmanager.GetSecret", 2, fake.Fault{Code: codes.Internal})
	for i, want := range []codes.Code{codes.OK, codes.Internal, codes.OK} {
		_, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
		if got := status.Code(err); got != want {
			t.Errorf("GetSecret call %d = %v, want code %v", i+1, err, want)
		}
	}
	if got := srv.Calls("secretmanager.GetSecret"); got != 3 {
		t.Errorf("Calls(GetSecret) = %d, want 3", got)
	}

	// An injected fault on a write leaves the state unchanged.
	srv.Fail("secretmanager.AddSecretVersion", fake.Next, fake.Fault{Code: codes.Aborted})
	_, err = c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{
		Parent: name, Payload: &secretmanagerpb.SecretPayload{Data: []byte("x")}})
	wantCode(t, "AddSecretVersion with an injected fault", err, codes.Aborted)
	if n := len(srv.SecretVersions(name)); n != 0 {
		t.Errorf("versions after a failed add = %d, want 0", n)
	}
	if got := srv.Calls("secretmanager.AddSecretVersion"); got != 1 {
		t.Errorf("Calls(AddSecretVersion) = %d, want 1", got)
	}
	// Seeding counts no calls.
	if got := srv.Calls("secretmanager.CreateSecret"); got != 0 {
		t.Errorf("Calls(CreateSecret) after SeedSecret = %d, want 0", got)
	}

	// A hook sees the call number and can fail the call.
	srv.SetHook("secretmanager.ListSecrets", func(ctx context.Context, n int) error {
		return status.Errorf(codes.Unavailable, "hook saw call %d", n)
	})
	_, err = c.ListSecrets(ctx, &secretmanagerpb.ListSecretsRequest{Parent: "projects/my-project"}).Next()
	wantCode(t, "ListSecrets with a failing hook", err, codes.Unavailable)
}

func TestSecretManagerRegional(t *testing.T) {
	srv, c, ctx := startSecretManager(t)
	const loc = "europe-west1"
	parent := "projects/" + smProjectID + "/locations/" + loc
	regional := "projects/123456789012/locations/" + loc + "/secrets/api-key"

	// A regional secret takes no replication.
	_, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
		Parent: parent, SecretId: "api-key", Secret: &secretmanagerpb.Secret{Replication: automatic()}})
	wantCode(t, "CreateSecret regional with replication", err, codes.InvalidArgument)
	got, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
		Parent: parent, SecretId: "api-key", Secret: &secretmanagerpb.Secret{}})
	if err != nil {
		t.Fatalf("CreateSecret regional: %v", err)
	}
	if got.GetName() != regional {
		t.Fatalf("regional name = %q, want %q", got.GetName(), regional)
	}
	_, err = c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
		Parent: parent, SecretId: "api-key", Secret: &secretmanagerpb.Secret{}})
	wantCode(t, "CreateSecret regional twice", err, codes.AlreadyExists)

	// It lives only in its location: not global, not in another location.
	for _, name := range []string{
		"projects/" + smProjectID + "/secrets/api-key",
		"projects/" + smProjectID + "/locations/us-central1/secrets/api-key",
	} {
		_, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
		wantCode(t, "GetSecret "+name, err, codes.NotFound)
	}
	// A global secret of the same id is another secret.
	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
		Parent: "projects/" + smProjectID, SecretId: "api-key", Secret: &secretmanagerpb.Secret{Replication: automatic()}}); err != nil {
		t.Fatalf("CreateSecret global of the same id: %v", err)
	}

	// Versions: add (by project id), access latest, disable, list.
	data := []byte("regional-value")
	v, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{
		Parent: parent + "/secrets/api-key", Payload: &secretmanagerpb.SecretPayload{Data: data, DataCrc32C: crc(data)}})
	if err != nil {
		t.Fatalf("AddSecretVersion regional: %v", err)
	}
	if v.GetName() != regional+"/versions/1" || v.GetReplicationStatus() != nil {
		t.Fatalf("regional version = %v", v)
	}
	acc, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: regional + "/versions/latest"})
	if err != nil || string(acc.GetPayload().GetData()) != "regional-value" {
		t.Fatalf("AccessSecretVersion regional = %v, %v", acc, err)
	}
	_, err = c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/" + smProjectID + "/secrets/api-key/versions/latest"})
	wantCode(t, "AccessSecretVersion global latest (no versions)", err, codes.NotFound)
	if _, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: regional + "/versions/1"}); err != nil {
		t.Fatalf("DisableSecretVersion regional: %v", err)
	}
	if _, err := c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: regional + "/versions/1"}); err != nil {
		t.Fatalf("EnableSecretVersion regional: %v", err)
	}
	it := c.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: regional})
	n := 0
	for {
		_, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatalf("ListSecretVersions regional: %v", err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("ListSecretVersions regional: %d versions, want 1", n)
	}

	// ListSecrets lists one location, or the global secrets.
	list := func(parent string) []string {
		var names []string
		it := c.ListSecrets(ctx, &secretmanagerpb.ListSecretsRequest{Parent: parent})
		for {
			s, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return names
			}
			if err != nil {
				t.Fatalf("ListSecrets %s: %v", parent, err)
			}
			names = append(names, s.GetName())
		}
	}
	if got, want := list(parent), []string{regional}; !cmp.Equal(got, want) {
		t.Errorf("ListSecrets %s = %v, want %v", parent, got, want)
	}
	if got, want := list("projects/"+smProjectID), []string{smNumberPrefix + "api-key"}; !cmp.Equal(got, want) {
		t.Errorf("ListSecrets global = %v, want %v", got, want)
	}
	if got := list("projects/" + smProjectID + "/locations/us-central1"); len(got) != 0 {
		t.Errorf("ListSecrets us-central1 = %v, want none", got)
	}

	// Bad names.
	for _, name := range []string{
		"projects/" + smProjectID + "/locations//secrets/api-key",
		"projects/" + smProjectID + "/locations/EU/secrets/api-key",
		"projects/" + smProjectID + "/regions/eu/secrets/api-key",
	} {
		_, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
		wantCode(t, "GetSecret "+name, err, codes.InvalidArgument)
	}

	// Seeding and inspection.
	seeded, err := srv.SeedRegionalSecret(smProjectID, "us-east1", "seeded", nil)
	if err != nil || seeded != "projects/123456789012/locations/us-east1/secrets/seeded" {
		t.Fatalf("SeedRegionalSecret = %q, %v", seeded, err)
	}
	if _, err := srv.SeedSecretVersion(seeded, []byte("x")); err != nil {
		t.Fatalf("SeedSecretVersion regional: %v", err)
	}
	if p, ok := srv.SecretPayload("projects/" + smProjectID + "/locations/us-east1/secrets/seeded/versions/latest"); !ok || string(p) != "x" {
		t.Fatalf("SecretPayload regional = %q, %v", p, ok)
	}
	if _, ok := srv.Secret("projects/" + smProjectID + "/secrets/seeded"); ok {
		t.Fatal("a regional secret is visible under its global name")
	}
}
