package emulator

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func TestSplitName(t *testing.T) {
	for _, tc := range []struct {
		name, pattern string
		want          []string
		ok            bool
	}{
		{"projects/p/locations/global/keys/k", "projects/*/locations/*/keys/*", []string{"p", "global", "k"}, true},
		{"projects/p/locations/global/keys", "projects/*/locations/*/keys", []string{"p", "global"}, true},
		{"projects/p", "projects/*", []string{"p"}, true},
		{"projects", "projects", nil, true},
		{"projects/p/secrets/s", "projects/*/locations/*/secrets/*", nil, false},
		{"projects/p/locations/global/keys/k/x", "projects/*/locations/*/keys/*", nil, false},
		{"projects/p/", "projects/*", nil, false},
		{"projects//locations/l/keys/k", "projects/*/locations/*/keys/*", nil, false},
		{"projects/p/location/l/keys/k", "projects/*/locations/*/keys/*", nil, false},
		{"", "projects/*", nil, false},
		{"", "", nil, true},
		{"projects/p", "projects/*/keys", nil, false},
		{"/projects/p", "projects/*", nil, false},
	} {
		got, ok := splitName(tc.name, tc.pattern)
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("splitName(%q, %q) = %q, %v, want %q, %v", tc.name, tc.pattern, got, ok, tc.want, tc.ok)
		}
	}
}

// TestSecretAnswersNeverChange: Secret Manager answers hand out the stored
// secret itself for gRPC to encode after the lock is released, so a stored
// secret must never change in place: a later update, or a destroy that
// removes a version alias, leaves an earlier answer as it was.
func TestSecretAnswersNeverChange(t *testing.T) {
	s, err := Start(Options{NoSecretWriteLimits: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AddProject(testProject, testNumber)
	name, err := s.SeedSecret(testProject, "s", map[string]string{"a": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SeedSecretVersion(name, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	sm := &smServer{s: s}
	ctx := context.Background()
	update := func(ann map[string]string, aliases map[string]int64) *secretmanagerpb.Secret {
		t.Helper()
		sec, err := sm.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
			Secret:     &secretmanagerpb.Secret{Name: name, Annotations: ann, VersionAliases: aliases},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations", "version_aliases"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return sec
	}
	req := map[string]string{"a": "2"}
	updated := update(req, map[string]int64{"current": 1})
	req["a"] = "changed by the caller after the call"
	got, err := sm.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(got).(*secretmanagerpb.Secret)
	if got.GetAnnotations()["a"] != "2" {
		t.Errorf("the stored secret shares the request's annotations: %v", got.GetAnnotations())
	}
	// A destroy that removes the alias, then another update.
	if _, err := sm.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: name + "/versions/1"}); err != nil {
		t.Fatal(err)
	}
	update(map[string]string{"a": "3"}, nil)
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("an earlier GetSecret answer changed after later writes (-before +after):\n%s", diff)
	}
	if updated.GetAnnotations()["a"] != "2" || updated.GetVersionAliases()["current"] != 1 {
		t.Errorf("an earlier UpdateSecret answer changed after later writes: %v", updated)
	}
	now, _ := s.Secret(name)
	if now.GetAnnotations()["a"] != "3" || len(now.GetVersionAliases()) != 0 || now.GetEtag() == got.GetEtag() {
		t.Errorf("after the writes the secret is %v, want annotation a=3, no alias, a new etag", now)
	}
}

// TestKeyWireNotChangedByUpdate: a key's JSON form shares its
// restrictions and annotations (wire), so an update must replace them, not
// change them in place: a form taken before an update stays as it was.
func TestKeyWireNotChangedByUpdate(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AddProject(testProject, testNumber)
	name, _, err := s.SeedKey(testProject, "k", &apikeys.V2Key{
		Annotations:  map[string]string{"a": "1"},
		Restrictions: &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	k, err := s.resolveKey(name)
	before := k.wire(false)
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(before)
	h := s.apiKeysREST()
	for _, c := range []struct{ mask, body string }{
		{"restrictions.apiTargets", `{"restrictions":{"apiTargets":[{"service":"x.googleapis.com"}]}}`},
		{"restrictions", `{"restrictions":{"browserKeyRestrictions":{"allowedReferrers":["a"]}}}`},
		{"annotations", `{"annotations":{"a":"2"}}`},
	} {
		r := httptest.NewRequest(http.MethodPatch, "/v2/"+name+"?updateMask="+c.mask, strings.NewReader(c.body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("UpdateKey %s: %d %s", c.mask, w.Code, w.Body)
		}
	}
	if got, _ := json.Marshal(before); string(got) != string(want) {
		t.Errorf("a key's JSON form taken before updates changed:\n got %s\nwant %s", got, want)
	}
}

// TestCallAllocs: the emulator's own work in a rotation's calls allocates
// no more than it needs (a stand-in for Google's servers that shares the
// rotator's cores): splitName allocates only its variables, GetSecret
// hands out the stored secret (never changed in place) instead of a copy,
// and UpdateSecret copies the secret once, not three times. On main they
// allocated 3, 19 and 47 times.
func TestCallAllocs(t *testing.T) {
	s, err := Start(Options{NoSecretWriteLimits: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AddProject(testProject, testNumber)
	name, err := s.SeedSecret(testProject, "s", map[string]string{"keyrotate.rotation": strings.Repeat("x", 400)})
	if err != nil {
		t.Fatal(err)
	}
	sm := &smServer{s: s}
	sec, _ := s.Secret(name)
	etag := sec.GetEtag()
	for _, tc := range []struct {
		what string
		max  float64
		call func()
	}{
		{"splitName", 1, func() {
			if _, ok := splitName("projects/p/locations/global/keys/k", "projects/*/locations/*/keys/*"); !ok {
				t.Fatal("splitName: no match")
			}
		}},
		{"GetSecret", 12, func() {
			callSM(t, s, "GetSecret", &secretmanagerpb.GetSecretRequest{Name: name}, sm.GetSecret)
		}},
		{"UpdateSecret", 36, func() {
			sec := callSM(t, s, "UpdateSecret", &secretmanagerpb.UpdateSecretRequest{
				Secret:     &secretmanagerpb.Secret{Name: name, Annotations: map[string]string{"keyrotate.rotation": "{}"}, Etag: etag},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}},
			}, sm.UpdateSecret)
			etag = sec.GetEtag()
		}},
	} {
		if got := testing.AllocsPerRun(100, tc.call); got > tc.max {
			t.Errorf("%s allocates %v times a call, want at most %v", tc.what, got, tc.max)
		}
	}
}

// callSM calls a Secret Manager method in process through the
// interceptors a gRPC call goes through.
func callSM[Req, Resp any](t testing.TB, s *Server, method string, req Req, h func(context.Context, Req) (Resp, error)) Resp {
	t.Helper()
	info := &grpc.UnaryServerInfo{FullMethod: "/google.cloud.secretmanager.v1.SecretManagerService/" + method}
	resp, err := s.checkFieldBehavior(context.Background(), req, info, func(ctx context.Context, req any) (any, error) {
		return smResource(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			return h(ctx, req.(Req))
		})
	})
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return resp.(Resp)
}

// TestSecretAnswersEncodedWhileWritten: gRPC encodes a GetSecret answer
// (the stored secret itself) after the lock is released, while other
// calls update the secret. Under the race detector, a write in place would
// be reported here.
func TestSecretAnswersEncodedWhileWritten(t *testing.T) {
	s, err := Start(Options{NoSecretWriteLimits: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AddProject(testProject, testNumber)
	name, err := s.SeedSecret(testProject, "s", map[string]string{"a": "0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SeedSecretVersion(name, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := s.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			if _, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
				Secret:     &secretmanagerpb.Secret{Name: name, Annotations: map[string]string{"a": strconv.Itoa(i)}, VersionAliases: map[string]int64{"current": 1}},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations", "version_aliases"}},
			}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
}
