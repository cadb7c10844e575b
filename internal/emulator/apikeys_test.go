package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"github.com/google/go-cmp/cmp"
	apikeys "google.golang.org/api/apikeys/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

const (
	testProject = "proj-a"
	testNumber  = 123
	testSA      = "rotator@proj-a.iam.gserviceaccount.com"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// startKeys starts an emulator with project proj-a (number 123) on a fake
// clock and returns it with an API Keys client.
func startKeys(t *testing.T, opts Options) (*Server, *apikeys.Service, *fake.ManualClock) {
	t.Helper()
	clock := fake.NewManualClock(t0)
	if opts.Clock == nil {
		opts.Clock = clock
	}
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	s.AddProject(testProject, testNumber)
	svc, err := s.APIKeysService(context.Background())
	if err != nil {
		t.Fatalf("APIKeysService: %v", err)
	}
	return s, svc, clock
}

// wait polls an operation until it is done and returns its result key.
func wait(t *testing.T, svc *apikeys.Service, op *apikeys.Operation) *apikeys.V2Key {
	t.Helper()
	for i := 0; !op.Done; i++ {
		if i > 10 {
			t.Fatalf("operation %s not done after %d polls", op.Name, i)
		}
		var err error
		if op, err = svc.Operations.Get(op.Name).Do(); err != nil {
			t.Fatalf("Operations.Get(%s): %v", op.Name, err)
		}
	}
	if op.Error != nil {
		t.Fatalf("operation %s failed: %+v", op.Name, op.Error)
	}
	var k apikeys.V2Key
	if err := json.Unmarshal(op.Response, &k); err != nil {
		t.Fatalf("decode operation response: %v", err)
	}
	var typ struct {
		Type string `json:"@type"`
	}
	_ = json.Unmarshal(op.Response, &typ)
	if want := "type.googleapis.com/google.api.apikeys.v2.Key"; typ.Type != want {
		t.Errorf("operation response @type = %q, want %q", typ.Type, want)
	}
	return &k
}

// gerr returns err as a *googleapi.Error with the status name and the
// ErrorInfo reason ("" if none) of its body.
func gerr(t *testing.T, err error) (e *googleapi.Error, status, reason string) {
	t.Helper()
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *googleapi.Error", err, err)
	}
	var body struct {
		Error struct {
			Status  string            `json:"status"`
			Details []json.RawMessage `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(e.Body), &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", e.Body, err)
	}
	for _, d := range body.Error.Details {
		var info struct {
			Type   string `json:"@type"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(d, &info) == nil && info.Type == typeErrorInfo {
			reason = info.Reason
		}
	}
	return e, body.Error.Status, reason
}

// wantErr checks err's HTTP code and status name.
func wantErr(t *testing.T, what string, err error, code int, status string) *googleapi.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got success, want %d %s", what, code, status)
	}
	e, st, _ := gerr(t, err)
	if e.Code != code || st != status {
		t.Fatalf("%s: got %d %s (%s), want %d %s", what, e.Code, st, e.Message, code, status)
	}
	return e
}

var (
	standardKeyRE = regexp.MustCompile(`^AIza[A-Za-z0-9_-]{35}$`)
	authKeyRE     = regexp.MustCompile(`^AQ\.[A-Za-z0-9_-]{50}$`)
	uuidRE        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	etagRE        = regexp.MustCompile(`^W/"[A-Za-z0-9+/]{22}=="$`)
)

func TestCreateKey(t *testing.T) {
	tests := []struct {
		name       string
		parent     string
		keyID      string
		key        *apikeys.V2Key
		wantName   string // regexp
		wantString *regexp.Regexp
		wantCode   int
		wantStatus string
		wantReason string
	}{
		{
			name:       "standard key by project id",
			parent:     "projects/proj-a/locations/global",
			keyID:      "gemini-1",
			key:        &apikeys.V2Key{DisplayName: "Gemini"},
			wantName:   `^projects/123/locations/global/keys/gemini-1$`,
			wantString: standardKeyRE,
		},
		{
			name:       "auth key by project number",
			parent:     "projects/123/locations/global",
			keyID:      "bound",
			key:        &apikeys.V2Key{ServiceAccountEmail: testSA},
			wantName:   `^projects/123/locations/global/keys/bound$`,
			wantString: authKeyRE,
		},
		{
			name:       "generated id",
			parent:     "projects/proj-a/locations/global",
			key:        &apikeys.V2Key{},
			wantName:   `^projects/123/locations/global/keys/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`,
			wantString: standardKeyRE,
		},
		{name: "key id with capitals", parent: "projects/proj-a/locations/global", keyID: "Bad_ID", key: &apikeys.V2Key{}, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "key id ends with dash", parent: "projects/proj-a/locations/global", keyID: "abc-", key: &apikeys.V2Key{}, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "key id too long", parent: "projects/proj-a/locations/global", keyID: "a" + strings.Repeat("b", 63), key: &apikeys.V2Key{}, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "uuid-like key id", parent: "projects/proj-a/locations/global", keyID: "abcdef01-2345-4789-8bcd-ef0123456789", key: &apikeys.V2Key{}, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "existing key id", parent: "projects/proj-a/locations/global", keyID: "seeded", key: &apikeys.V2Key{}, wantCode: 409, wantStatus: "ALREADY_EXISTS"},
		{name: "soft-deleted key id", parent: "projects/proj-a/locations/global", keyID: "deleted", key: &apikeys.V2Key{}, wantCode: 409, wantStatus: "ALREADY_EXISTS"},
		{name: "unknown project", parent: "projects/nope/locations/global", keyID: "x", key: &apikeys.V2Key{}, wantCode: 403, wantStatus: "PERMISSION_DENIED", wantReason: "CONSUMER_INVALID"},
		{name: "regional location", parent: "projects/proj-a/locations/us-central1", keyID: "x", key: &apikeys.V2Key{}, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, svc, _ := startKeys(t, Options{OperationPolls: 2})
			if _, _, err := s.SeedKey(testProject, "seeded", nil); err != nil {
				t.Fatal(err)
			}
			name, _, err := s.SeedKey(testProject, "deleted", nil)
			if err != nil {
				t.Fatal(err)
			}
			wait(t, svc, mustDo(t, svc.Projects.Locations.Keys.Delete(name).Do))

			call := svc.Projects.Locations.Keys.Create(tt.parent, tt.key)
			if tt.keyID != "" {
				call = call.KeyId(tt.keyID)
			}
			op, err := call.Do()
			if tt.wantCode != 0 {
				wantErr(t, "Create", err, tt.wantCode, tt.wantStatus)
				if _, _, reason := gerr(t, err); reason != tt.wantReason {
					t.Errorf("Create: reason %q, want %q", reason, tt.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if op.Done {
				t.Fatalf("Create returned a done operation, want one still running")
			}
			if want := regexp.MustCompile(`^operations/akmf\.p7-123-[0-9a-f-]{36}$`); !want.MatchString(op.Name) {
				t.Errorf("operation name %q, want match %s", op.Name, want)
			}
			polls := s.Calls("apikeys.GetOperation")
			k := wait(t, svc, op)
			if got := s.Calls("apikeys.GetOperation") - polls; got != 2 {
				t.Errorf("operation done after %d polls, want 2 (OperationPolls)", got)
			}
			if !regexp.MustCompile(tt.wantName).MatchString(k.Name) {
				t.Errorf("key name %q, want match %s", k.Name, tt.wantName)
			}
			if !tt.wantString.MatchString(k.KeyString) {
				t.Errorf("key string of %s has the wrong form (len %d), want match %s", k.Name, len(k.KeyString), tt.wantString)
			}
			if !uuidRE.MatchString(k.Uid) {
				t.Errorf("uid %q, want a UUID", k.Uid)
			}
			if !etagRE.MatchString(k.Etag) {
				t.Errorf("etag %q, want W/\"<base64>\"", k.Etag)
			}
			if want := formatTime(t0); k.CreateTime != want || k.UpdateTime != want {
				t.Errorf("createTime, updateTime = %s, %s, want %s", k.CreateTime, k.UpdateTime, want)
			}
			if k.DisplayName != tt.key.DisplayName || k.ServiceAccountEmail != tt.key.ServiceAccountEmail {
				t.Errorf("displayName, serviceAccountEmail = %q, %q, want %q, %q", k.DisplayName, k.ServiceAccountEmail, tt.key.DisplayName, tt.key.ServiceAccountEmail)
			}
			got, ok := s.Key(k.Name)
			if !ok || got.KeyString != k.KeyString {
				t.Errorf("Key(%s) = %v, %v; want the created key with the same key string", k.Name, got != nil, ok)
			}
		})
	}
}

// mustDo runs a client call and fails the test on error.
func mustDo[T any](t *testing.T, do func(...googleapi.CallOption) (T, error)) T {
	t.Helper()
	v, err := do()
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	return v
}

func TestCreateBoundKeyBlockedByOrgPolicy(t *testing.T) {
	s, svc, _ := startKeys(t, Options{})
	s.BlockBoundKeyCreation(testProject, true)

	_, err := svc.Projects.Locations.Keys.Create("projects/123/locations/global", &apikeys.V2Key{ServiceAccountEmail: testSA}).KeyId("bound").Do()
	e := wantErr(t, "Create bound key", err, 400, "FAILED_PRECONDITION")
	if !strings.Contains(e.Message, "constraints/iam.managed.disableServiceAccountApiKeyCreation") {
		t.Errorf("message %q does not name the constraint", e.Message)
	}
	if !strings.Contains(e.Body, `"type":"constraints/iam.managed.disableServiceAccountApiKeyCreation"`) {
		t.Errorf("body %s has no PreconditionFailure violation for the constraint", e.Body)
	}

	// Standard keys are not affected; lifting the policy allows bound keys.
	wait(t, svc, mustDo(t, svc.Projects.Locations.Keys.Create("projects/proj-a/locations/global", &apikeys.V2Key{}).KeyId("std").Do))
	s.BlockBoundKeyCreation(testProject, false)
	k := wait(t, svc, mustDo(t, svc.Projects.Locations.Keys.Create("projects/proj-a/locations/global", &apikeys.V2Key{ServiceAccountEmail: testSA}).KeyId("bound").Do))
	if !authKeyRE.MatchString(k.KeyString) {
		t.Errorf("bound key string has the wrong form (len %d)", len(k.KeyString))
	}
}

func TestGetKeyAndKeyString(t *testing.T) {
	s, svc, _ := startKeys(t, Options{})
	restr := &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}}}
	name, ks, err := s.SeedKey(testProject, "k1", &apikeys.V2Key{DisplayName: "one", Restrictions: restr, Annotations: map[string]string{"keyrotate.slot": "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "projects/123/locations/global/keys/k1"; name != want {
		t.Errorf("SeedKey name = %q, want %q", name, want)
	}
	for _, addr := range []string{"projects/proj-a/locations/global/keys/k1", "projects/123/locations/global/keys/k1"} {
		t.Run(addr, func(t *testing.T) {
			k, err := svc.Projects.Locations.Keys.Get(addr).Do()
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if k.Name != name {
				t.Errorf("Get name = %q, want %q", k.Name, name)
			}
			if k.KeyString != "" {
				t.Errorf("Get returned a key string, want none")
			}
			if diff := cmp.Diff(restr, k.Restrictions); diff != "" {
				t.Errorf("restrictions (-want +got):\n%s", diff)
			}
			if got, want := k.Annotations["keyrotate.slot"], "prod"; got != want {
				t.Errorf("annotation keyrotate.slot = %q, want %q", got, want)
			}
			got, err := svc.Projects.Locations.Keys.GetKeyString(addr).Do()
			if err != nil {
				t.Fatalf("GetKeyString: %v", err)
			}
			if got.KeyString != ks {
				t.Errorf("GetKeyString returned another key string than SeedKey")
			}
		})
	}
	t.Run("missing key", func(t *testing.T) {
		_, err := svc.Projects.Locations.Keys.Get("projects/123/locations/global/keys/nope").Do()
		wantErr(t, "Get", err, 404, "NOT_FOUND")
		_, err = svc.Projects.Locations.Keys.GetKeyString("projects/123/locations/global/keys/nope").Do()
		wantErr(t, "GetKeyString", err, 404, "NOT_FOUND")
	})
	t.Run("unknown project", func(t *testing.T) {
		_, err := svc.Projects.Locations.Keys.Get("projects/999/locations/global/keys/k1").Do()
		wantErr(t, "Get", err, 403, "PERMISSION_DENIED")
	})
	if got, want := s.Calls("apikeys.GetKey"), 4; got != want {
		t.Errorf("Calls(apikeys.GetKey) = %d, want %d", got, want)
	}
	if got, want := s.Calls("apikeys.GetKeyString"), 3; got != want {
		t.Errorf("Calls(apikeys.GetKeyString) = %d, want %d", got, want)
	}
}

func TestLookupKey(t *testing.T) {
	s, svc, clock := startKeys(t, Options{})
	live, liveString, _ := s.SeedKey(testProject, "live", nil)
	deleted, deletedString, _ := s.SeedKey(testProject, "deleted", nil)
	purged, purgedString, _ := s.SeedKey(testProject, "purged", nil)
	wait(t, svc, mustDo(t, svc.Projects.Locations.Keys.Delete(purged).Do))
	clock.Advance(31 * 24 * time.Hour)
	wait(t, svc, mustDo(t, svc.Projects.Locations.Keys.Delete(deleted).Do))
	lookup, err := s.APIKeysLookupClient(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lookup.Close()

	tests := []struct {
		name       string
		keyString  string
		want       *apikeys.V2LookupKeyResponse
		wantCode   int
		wantStatus string
	}{
		{name: "live key", keyString: liveString, want: &apikeys.V2LookupKeyResponse{Parent: "projects/123/locations/global", Name: live}},
		{name: "soft-deleted key", keyString: deletedString, want: &apikeys.V2LookupKeyResponse{Parent: "projects/123/locations/global", Name: deleted}},
		{name: "purged key has no name", keyString: purgedString, want: &apikeys.V2LookupKeyResponse{Parent: "projects/123/locations/global"}},
		{name: "unknown string", keyString: "AIza" + strings.Repeat("x", 35), wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "no string", keyString: "", wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := svc.Keys.LookupKey().KeyString(tt.keyString).Do()
			if tt.wantCode != 0 {
				e := wantErr(t, "LookupKey", err, tt.wantCode, tt.wantStatus)
				if tt.keyString != "" && strings.Contains(e.Body, tt.keyString) {
					t.Errorf("error body quotes the key string")
				}
				return
			}
			if err != nil {
				t.Fatalf("LookupKey: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "ServerResponse" }, cmp.Ignore())); diff != "" {
				t.Errorf("LookupKey (-want +got):\n%s", diff)
			}
		})
		// The same lookup over gRPC, on the same address.
		t.Run(tt.name+"/grpc", func(t *testing.T) {
			got, err := lookup.LookupKey(context.Background(), &apikeyspb.LookupKeyRequest{KeyString: tt.keyString})
			if tt.wantCode != 0 {
				if status.Code(err) != codes.InvalidArgument {
					t.Fatalf("LookupKey over gRPC: %v, want INVALID_ARGUMENT", err)
				}
				if tt.keyString != "" && strings.Contains(err.Error(), tt.keyString) {
					t.Errorf("error quotes the key string")
				}
				return
			}
			if err != nil {
				t.Fatalf("LookupKey over gRPC: %v", err)
			}
			if got.GetParent() != tt.want.Parent || got.GetName() != tt.want.Name {
				t.Errorf("LookupKey over gRPC = {%q, %q}, want {%q, %q}", got.GetParent(), got.GetName(), tt.want.Parent, tt.want.Name)
			}
		})
	}
	// Five REST lookups carried the key string in the URL; the gRPC ones
	// did not.
	if got := s.KeyStringsInURLs(); got != len(tests) {
		t.Errorf("KeyStringsInURLs() = %d, want %d (the REST lookups only)", got, len(tests))
	}
	if got := s.Calls("apikeys.LookupKey"); got != 2*len(tests) {
		t.Errorf("Calls(apikeys.LookupKey) = %d, want %d (REST and gRPC)", got, 2*len(tests))
	}
}

// TestLookupKeyGRPCFaults: injected faults and denied permissions reach
// the gRPC LookupKey as they reach REST.
func TestLookupKeyGRPCFaults(t *testing.T) {
	s, _, _ := startKeys(t, Options{})
	_, ks, _ := s.SeedKey(testProject, "live", nil)
	lookup, err := s.APIKeysLookupClient(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lookup.Close()
	s.Fail("apikeys.LookupKey", fake.Next, fake.Fault{Code: codes.Unavailable})
	if _, err := lookup.LookupKey(context.Background(), &apikeyspb.LookupKeyRequest{KeyString: ks}); status.Code(err) != codes.Unavailable {
		t.Errorf("LookupKey with a fault = %v, want UNAVAILABLE", err)
	}
	s.DenyPermission("apikeys.keys.lookup")
	if _, err := lookup.LookupKey(context.Background(), &apikeyspb.LookupKeyRequest{KeyString: ks}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("LookupKey without permission = %v, want PERMISSION_DENIED", err)
	}
	s.AllowPermission("apikeys.keys.lookup")
	if _, err := lookup.LookupKey(context.Background(), &apikeyspb.LookupKeyRequest{KeyString: ks}); err != nil {
		t.Errorf("LookupKey: %v", err)
	}
}

func TestListKeysPagingAndShowDeleted(t *testing.T) {
	s, svc, clock := startKeys(t, Options{})
	var names []string
	for _, id := range []string{"e", "d", "c", "b", "a"} {
		name, _, err := s.SeedKey(testProject, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		clock.Advance(time.Second)
	}
	wait(t, svc, mustDo(t, svc.Projects.Locations.Keys.Delete(names[1]).Do))

	list := func(t *testing.T, pageSize int64, showDeleted bool) (got []string, pages int) {
		t.Helper()
		tok := ""
		for {
			call := svc.Projects.Locations.Keys.List("projects/proj-a/locations/global").PageSize(pageSize).ShowDeleted(showDeleted)
			if tok != "" {
				call = call.PageToken(tok)
			}
			resp, err := call.Do()
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			pages++
			for _, k := range resp.Keys {
				if k.KeyString != "" {
					t.Errorf("List returned a key string for %s", k.Name)
				}
				got = append(got, k.Name)
			}
			if tok = resp.NextPageToken; tok == "" {
				return got, pages
			}
		}
	}
	tests := []struct {
		name        string
		pageSize    int64
		showDeleted bool
		want        []string
		wantPages   int
	}{
		{name: "pages of two", pageSize: 2, want: []string{names[0], names[2], names[3], names[4]}, wantPages: 2},
		{name: "show deleted", pageSize: 2, showDeleted: true, want: names, wantPages: 3},
		{name: "default page size", want: []string{names[0], names[2], names[3], names[4]}, wantPages: 1},
		{name: "page size above maximum", pageSize: 5000, showDeleted: true, want: names, wantPages: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, pages := list(t, tt.pageSize, tt.showDeleted)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("listed names (-want +got):\n%s", diff)
			}
			if pages != tt.wantPages {
				t.Errorf("pages = %d, want %d", pages, tt.wantPages)
			}
		})
	}
	t.Run("bad page token", func(t *testing.T) {
		_, err := svc.Projects.Locations.Keys.List("projects/proj-a/locations/global").PageToken("!!").Do()
		wantErr(t, "List", err, 400, "INVALID_ARGUMENT")
	})
	if got := len(s.Keys(testProject, false)); got != 4 {
		t.Errorf("len(Keys(%s, false)) = %d, want 4", testProject, got)
	}
}

// TestListKeysLooksOnlyAtItsProject: listing a project's keys does not
// look at other projects' keys.
func TestListKeysLooksOnlyAtItsProject(t *testing.T) {
	s, svc, _ := startKeys(t, Options{})
	s.AddProject("proj-b", 456)
	for i := range 3 {
		if _, _, err := s.SeedKey(testProject, fmt.Sprintf("a-%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 300 {
		if _, _, err := s.SeedKey("proj-b", fmt.Sprintf("b-%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	visits := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.keys.listVisits
	}
	before := visits()
	resp := mustDo(t, svc.Projects.Locations.Keys.List("projects/proj-a/locations/global").ShowDeleted(true).Do)
	if len(resp.Keys) != 3 {
		t.Fatalf("List(proj-a) = %d keys, want 3", len(resp.Keys))
	}
	if got := visits() - before; got != 3 {
		t.Errorf("List(proj-a) looked at %d keys, want its 3", got)
	}
}

func TestUpdateKey(t *testing.T) {
	gemini := []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}}
	tests := []struct {
		name       string
		mask       string
		in         *apikeys.V2Key
		staleEtag  bool
		want       func(k *apikeys.V2Key) string // "" if fine
		wantCode   int
		wantStatus string
	}{
		{
			name: "display name only",
			mask: "displayName",
			in:   &apikeys.V2Key{DisplayName: "new", Annotations: map[string]string{"x": "y"}},
			want: func(k *apikeys.V2Key) string {
				if k.DisplayName != "new" || k.Annotations["a"] != "b" || k.Annotations["x"] != "" {
					return "want displayName new and annotations unchanged"
				}
				return ""
			},
		},
		{
			name: "several fields, proto spelling",
			mask: "display_name,annotations",
			in:   &apikeys.V2Key{DisplayName: "new", Annotations: map[string]string{"x": "y"}},
			want: func(k *apikeys.V2Key) string {
				if k.DisplayName != "new" || k.Annotations["x"] != "y" || k.Annotations["a"] != "" {
					return "want displayName new and annotations replaced"
				}
				return ""
			},
		},
		{
			name: "star replaces all mutable fields",
			mask: "*",
			in:   &apikeys.V2Key{DisplayName: "new"},
			want: func(k *apikeys.V2Key) string {
				if k.DisplayName != "new" || k.Annotations != nil || k.Restrictions != nil {
					return "want annotations and restrictions cleared"
				}
				return ""
			},
		},
		{
			name: "no mask: fields on the wire",
			in:   &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{ApiTargets: gemini}},
			want: func(k *apikeys.V2Key) string {
				if k.DisplayName != "old" || k.Restrictions == nil || len(k.Restrictions.ApiTargets) != 1 {
					return "want restrictions set and displayName unchanged"
				}
				return ""
			},
		},
		{
			name: "restrictions sub-field",
			mask: "restrictions.apiTargets",
			in:   &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{ApiTargets: gemini}},
			want: func(k *apikeys.V2Key) string {
				if k.Restrictions == nil || len(k.Restrictions.ApiTargets) != 1 || k.Restrictions.ServerKeyRestrictions == nil {
					return "want apiTargets set and server restrictions kept"
				}
				return ""
			},
		},
		{name: "stale etag", mask: "displayName", in: &apikeys.V2Key{DisplayName: "new"}, staleEtag: true, wantCode: 409, wantStatus: "ABORTED"},
		{name: "immutable field", mask: "keyString", in: &apikeys.V2Key{}, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "service account is immutable", mask: "serviceAccountEmail", in: &apikeys.V2Key{}, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
		{name: "unknown field", mask: "displayName,colour", in: &apikeys.V2Key{}, wantCode: 400, wantStatus: "INVALID_ARGUMENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, svc, clock := startKeys(t, Options{})
			name, ks, _ := s.SeedKey(testProject, "k", &apikeys.V2Key{
				DisplayName:  "old",
				Annotations:  map[string]string{"a": "b"},
				Restrictions: &apikeys.V2Restrictions{ServerKeyRestrictions: &apikeys.V2ServerKeyRestrictions{AllowedIps: []string{"10.0.0.1"}}},
			})
			before, _ := s.Key(name)
			clock.Advance(time.Minute)
			in := tt.in
			in.Etag = before.Etag
			if tt.staleEtag {
				in.Etag = `W/"c3RhbGVzdGFsZXN0YWxlIQ=="`
			}
			call := svc.Projects.Locations.Keys.Patch("projects/proj-a/locations/global/keys/k", in)
			if tt.mask != "" {
				call = call.UpdateMask(tt.mask)
			}
			op, err := call.Do()
			if tt.wantCode != 0 {
				wantErr(t, "Patch", err, tt.wantCode, tt.wantStatus)
				if after, _ := s.Key(name); after.Etag != before.Etag {
					t.Errorf("a failed Patch changed the etag")
				}
				return
			}
			if err != nil {
				t.Fatalf("Patch: %v", err)
			}
			k := wait(t, svc, op)
			if k.KeyString != "" {
				t.Errorf("Patch result carries a key string, want none")
			}
			if msg := tt.want(k); msg != "" {
				t.Errorf("Patch result %+v: %s", k, msg)
			}
			after, _ := s.Key(name)
			if after.Etag == before.Etag {
				t.Errorf("etag unchanged after Patch, want a new one")
			}
			if after.KeyString != ks {
				t.Errorf("Patch changed the key string")
			}
			if want := formatTime(t0.Add(time.Minute)); after.UpdateTime != want {
				t.Errorf("updateTime = %s, want %s", after.UpdateTime, want)
			}
		})
	}
}

func TestDeleteUndeleteAndPurge(t *testing.T) {
	s, svc, clock := startKeys(t, Options{})
	name, ks, _ := s.SeedKey(testProject, "k", nil)
	keys := svc.Projects.Locations.Keys
	k0, _ := s.Key(name)

	_, err := keys.Delete(name).Etag(`W/"c3RhbGVzdGFsZXN0YWxlIQ=="`).Do()
	wantErr(t, "Delete with stale etag", err, 409, "ABORTED")

	del := wait(t, svc, mustDo(t, keys.Delete("projects/proj-a/locations/global/keys/k").Etag(k0.Etag).Do))
	if del.DeleteTime != formatTime(t0) {
		t.Errorf("deleted key deleteTime = %q, want %q", del.DeleteTime, formatTime(t0))
	}
	if s.KeyWorks(ks) {
		t.Errorf("KeyWorks = true after Delete, want false")
	}
	got, err := keys.Get(name).Do()
	if err != nil || got.DeleteTime == "" {
		t.Errorf("Get of a soft-deleted key = %v, %v; want the key with deleteTime", got, err)
	}
	_, err = keys.Delete(name).Do()
	wantErr(t, "Delete of a deleted key", err, 404, "NOT_FOUND")
	_, err = keys.Patch(name, &apikeys.V2Key{DisplayName: "x"}).UpdateMask("displayName").Do()
	wantErr(t, "Patch of a deleted key", err, 400, "FAILED_PRECONDITION")

	clock.Advance(29 * 24 * time.Hour)
	un := wait(t, svc, mustDo(t, keys.Undelete(name, &apikeys.V2UndeleteKeyRequest{}).Do))
	if un.DeleteTime != "" {
		t.Errorf("undeleted key deleteTime = %q, want none", un.DeleteTime)
	}
	if !s.KeyWorks(ks) {
		t.Errorf("KeyWorks = false after Undelete, want true")
	}
	_, err = keys.Undelete(name, &apikeys.V2UndeleteKeyRequest{}).Do()
	wantErr(t, "Undelete of a live key", err, 409, "ALREADY_EXISTS")

	wait(t, svc, mustDo(t, keys.Delete(name).Do))
	clock.Advance(30*24*time.Hour - time.Second)
	if _, ok := s.Key(name); !ok {
		t.Fatalf("key purged before 30 days")
	}
	clock.Advance(time.Second)
	if _, ok := s.Key(name); ok {
		t.Errorf("key still there 30 days after deletion, want it purged")
	}
	_, err = keys.Undelete(name, &apikeys.V2UndeleteKeyRequest{}).Do()
	wantErr(t, "Undelete of a purged key", err, 404, "NOT_FOUND")
	// A purged key's id is free again.
	wait(t, svc, mustDo(t, keys.Create("projects/proj-a/locations/global", &apikeys.V2Key{}).KeyId("k").Do))

	for m, want := range map[string]int{"apikeys.DeleteKey": 4, "apikeys.UndeleteKey": 3, "apikeys.CreateKey": 1} {
		if got := s.Calls(m); got != want {
			t.Errorf("Calls(%s) = %d, want %d", m, got, want)
		}
	}
}

// TestPurgeLooksOnlyAtDueKeys: a call does not look at every key to find
// those to purge, only at keys whose thirty days are over.
func TestPurgeLooksOnlyAtDueKeys(t *testing.T) {
	s, svc, clock := startKeys(t, Options{})
	keys := svc.Projects.Locations.Keys
	const n = 200
	var live string
	for i := range n {
		name, _, err := s.SeedKey(testProject, fmt.Sprintf("k-%d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			live = name
			continue
		}
		wait(t, svc, mustDo(t, keys.Delete(name).Do))
	}
	visits := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.keys.purgeVisits
	}
	before := visits()
	for range 20 {
		mustDo(t, keys.Get(live).Do)
	}
	if got := visits() - before; got != 0 {
		t.Errorf("20 GetKey calls with no key due looked at %d keys to purge, want 0", got)
	}
	clock.Advance(purgeAfter)
	before = visits()
	mustDo(t, keys.Get(live).Do)
	if got := visits() - before; got != n/2 {
		t.Errorf("GetKey with %d keys due looked at %d keys to purge, want %d", n/2, got, n/2)
	}
	if got := len(s.Keys(testProject, true)); got != n/2 {
		t.Errorf("%d keys left after the purge, want %d", got, n/2)
	}
}

// TestPurgeExactTimes: each soft-deleted key is purged at the first call
// 30 days after its latest deletion, not a nanosecond earlier, whatever
// happened to it or to other keys before: undeleted and deleted again,
// deleted and undeleted at one instant, undeleted for good, purged and
// its id taken by a new key, and a clock that jumps over several keys'
// times at once.
func TestPurgeExactTimes(t *testing.T) {
	s, svc, clock := startKeys(t, Options{})
	keys := svc.Projects.Locations.Keys
	names := map[string]string{}
	strs := map[string]string{}
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		name, ks, err := s.SeedKey(testProject, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		names[id], strs[id] = name, ks
	}
	del := func(id string) { t.Helper(); wait(t, svc, mustDo(t, keys.Delete(names[id]).Do)) }
	undel := func(id string) {
		t.Helper()
		wait(t, svc, mustDo(t, keys.Undelete(names[id], &apikeys.V2UndeleteKeyRequest{}).Do))
	}
	// at advances the clock to t0+d and checks, through GetKey, which
	// keys are there (soft-deleted or not) and which are purged.
	at := func(d time.Duration, there, purged string) {
		t.Helper()
		if now := clock.Now(); now.After(t0.Add(d)) {
			t.Fatalf("clock at %v, past t0+%v", now, d)
		}
		clock.Advance(t0.Add(d).Sub(clock.Now()))
		for _, id := range strings.Fields(there) {
			if _, err := keys.Get(names[id]).Do(); err != nil {
				t.Errorf("at t0+%v: GetKey(%s) = %v, want the key (not purged)", d, id, err)
			}
		}
		for _, id := range strings.Fields(purged) {
			_, err := keys.Get(names[id]).Do()
			if err == nil {
				t.Errorf("at t0+%v: GetKey(%s) found the key, want it purged", d, id)
				continue
			}
			wantErr(t, fmt.Sprintf("at t0+%v: GetKey(%s)", d, id), err, 404, "NOT_FOUND")
		}
	}
	const day = 24 * time.Hour
	del("a")
	del("d") // deleted, undeleted and deleted again at one instant
	undel("d")
	del("d")
	del("e")
	at(time.Hour, "a d e", "")
	del("b") // undeleted, deleted again later
	del("c") // undeleted for good
	at(2*time.Hour, "", "")
	undel("b")
	undel("c")
	at(3*time.Hour, "", "")
	del("b")

	at(purgeAfter-time.Nanosecond, "a b c d e", "")
	at(purgeAfter, "b c", "a d e")
	// e's id is free again: a new key e, deleted an hour later, is
	// purged on its own time, not on its predecessor's.
	wait(t, svc, mustDo(t, keys.Create("projects/proj-a/locations/global", &apikeys.V2Key{}).KeyId("e").Do))
	at(purgeAfter+time.Hour, "b c e", "a d")
	del("e")
	// b's first deletion (t0+1h) no longer counts; its second (t0+3h) does.
	at(purgeAfter+time.Hour+time.Nanosecond, "b c e", "")
	at(purgeAfter+3*time.Hour-time.Nanosecond, "b c e", "")
	at(purgeAfter+3*time.Hour, "c e", "b")
	at(2*purgeAfter+time.Hour-time.Nanosecond, "c e", "")
	at(2*purgeAfter+time.Hour, "c", "e")

	// A clock jump over several keys' times purges them all at the next
	// call, and only them.
	del("f")
	at(2*purgeAfter+2*time.Hour, "c f", "")
	del("g")
	at(2*purgeAfter+3*time.Hour, "c f g", "")
	del("h")
	at(3*purgeAfter+time.Hour-time.Nanosecond, "c f g h", "")
	at(1000*day, "c", "a b d e f g h")
	// A purged key's string still names its project, and no key.
	for _, id := range []string{"a", "b", "d", "f", "g", "h"} {
		parent, name, err := s.lookupKeyString(strs[id])
		if err != nil || parent != "projects/123/locations/global" || name != "" {
			t.Errorf("lookupKeyString(%s's string) = %q, %q, %v; want the parent only", id, parent, name, err)
		}
	}
}

func TestCheckExistingUsage(t *testing.T) {
	s, svc, clock := startKeys(t, Options{})
	name, ks, _ := s.SeedKey(testProject, "k", nil)
	if code := probe(t, s, ks, nil).code; code != http.StatusOK {
		t.Fatalf("probe: HTTP %d, want 200", code)
	}
	_, err := svc.Projects.Locations.Keys.Delete(name).CheckExistingUsage("CHECK").Do()
	wantErr(t, "Delete CHECK of a key used now", err, 400, "FAILED_PRECONDITION")
	clock.Advance(7 * 24 * time.Hour)
	wait(t, svc, mustDo(t, svc.Projects.Locations.Keys.Delete(name).CheckExistingUsage("CHECK").Do))
}

func TestAPIKeysFaultInjection(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		n          int
		code       codes.Code
		call       func(svc *apikeys.Service) error
		wantHTTP   int
		wantStatus string
		wantReason string
	}{
		{
			name: "unavailable get", method: "apikeys.GetKey", n: 2, code: codes.Unavailable,
			call: func(svc *apikeys.Service) error {
				_, err := svc.Projects.Locations.Keys.Get("projects/123/locations/global/keys/k").Do()
				return err
			},
			wantHTTP: 503, wantStatus: "UNAVAILABLE",
		},
		{
			name: "quota on create", method: "apikeys.CreateKey", n: 2, code: codes.ResourceExhausted,
			call: func(svc *apikeys.Service) error {
				_, err := svc.Projects.Locations.Keys.Create("projects/proj-a/locations/global", &apikeys.V2Key{}).Do()
				return err
			},
			wantHTTP: 429, wantStatus: "RESOURCE_EXHAUSTED", wantReason: "RATE_LIMIT_EXCEEDED",
		},
		{
			name: "deadline on operations.get", method: "apikeys.GetOperation", n: 2, code: codes.DeadlineExceeded,
			call: func(svc *apikeys.Service) error {
				_, err := svc.Operations.Get("operations/akmf.p7-123-none").Do()
				return err
			},
			wantHTTP: 504, wantStatus: "DEADLINE_EXCEEDED",
		},
		{
			name: "internal on lookup", method: "apikeys.LookupKey", n: 2, code: codes.Internal,
			call:     func(svc *apikeys.Service) error { _, err := svc.Keys.LookupKey().KeyString("x").Do(); return err },
			wantHTTP: 500, wantStatus: "INTERNAL",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, svc, _ := startKeys(t, Options{})
			s.SeedKey(testProject, "k", nil)
			s.Fail(tt.method, tt.n, fake.Fault{Code: tt.code})
			if err := tt.call(svc); err != nil && strings.Contains(err.Error(), "injected fault") {
				t.Fatalf("call 1 failed with the injected fault (%v), want it to fail only at call %d", err, tt.n)
			}
			err := tt.call(svc)
			e := wantErr(t, "call 2", err, tt.wantHTTP, tt.wantStatus)
			if !strings.Contains(e.Message, "injected fault") {
				t.Errorf("message %q, want the injected message", e.Message)
			}
			if _, _, reason := gerr(t, err); reason != tt.wantReason {
				t.Errorf("reason %q, want %q", reason, tt.wantReason)
			}
			if tt.code == codes.ResourceExhausted && !strings.Contains(e.Body, typeRetryInfo) {
				t.Errorf("body %s has no RetryInfo", e.Body)
			}
			if got := s.Calls(tt.method); got != 2 {
				t.Errorf("Calls(%s) = %d, want 2", tt.method, got)
			}
			if err := tt.call(svc); err != nil && strings.Contains(err.Error(), "injected fault") {
				t.Errorf("call 3 failed with the injected fault too (%v), want it once", err)
			}
		})
	}
}

func TestAPIKeysUnknownPath(t *testing.T) {
	s, _, _ := startKeys(t, Options{})
	for _, p := range []string{"/v1/projects/proj-a/locations/global/keys", "/v2/projects/proj-a", "/v2/projects/proj-a/locations/global/keys/k/other"} {
		t.Run(p, func(t *testing.T) {
			resp, err := http.Get("http://" + s.APIKeysAddr + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: HTTP %d, want 404", p, resp.StatusCode)
			}
		})
	}
	if n := s.MutatingCalls(); n != 0 {
		t.Errorf("MutatingCalls = %d, want 0", n)
	}
}
