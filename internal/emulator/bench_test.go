package emulator

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

// benchKeys is how many keys BenchmarkAPIKeysCalls seeds: a fleet of
// 10,000 slots after one rotation holds 10,000 live keys and 10,000
// soft-deleted ones.
const benchKeys = 20000

// benchServer starts an emulator with benchKeys keys in one project, every
// other one soft-deleted through the API, and returns it with the REST
// handlers of API Keys and Gemini (called in process, so that a
// benchmark measures the emulator's work per call, not a transport's)
// and the key strings of the live keys.
func benchServer(b *testing.B) (s *Server, keysREST, gemini http.Handler, live []string) {
	b.Helper()
	s, err := Start(Options{Clock: fake.NewManualClock(t0), NoSecretWriteLimits: true})
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	s.AddProject(testProject, testNumber)
	keysREST, gemini = s.apiKeysREST(), s.geminiHandler()
	for i := 0; i < benchKeys; i++ {
		_, ks, err := s.SeedKey(testProject, fmt.Sprintf("k-%d", i), nil)
		if err != nil {
			b.Fatal(err)
		}
		if i%2 == 1 {
			serveBench(b, keysREST, http.MethodDelete, fmt.Sprintf("/v2/projects/%s/locations/global/keys/k-%d", testProject, i), "")
			continue
		}
		live = append(live, ks)
	}
	return s, keysREST, gemini, live
}

// serveBench makes one REST call to h and returns the answer's body; a
// status other than 200 fails the benchmark.
func serveBench(b *testing.B, h http.Handler, method, target, body string) string {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return serveBenchReq(b, h, r)
}

func serveBenchReq(b *testing.B, h http.Handler, r *http.Request) string {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		b.Fatalf("%s %s: %d %s", r.Method, r.URL, w.Code, w.Body)
	}
	return w.Body.String()
}

// opName is the operation's name in an operation answer.
func opName(b *testing.B, body string) string {
	_, after, ok := strings.Cut(body, `"name":"`)
	name, _, ok2 := strings.Cut(after, `"`)
	if !ok || !ok2 {
		b.Fatalf("no operation name in %s", body)
	}
	return name
}

// BenchmarkAPIKeysCalls measures the emulator's work per call of what a
// rotation makes, with many keys in the store: no call should cost in
// proportion to the number of keys.
func BenchmarkAPIKeysCalls(b *testing.B) {
	s, keysREST, gemini, live := benchServer(b)
	lookup := &apiKeysGRPC{s: s}
	lookupInfo := &grpc.UnaryServerInfo{FullMethod: "/google.api.apikeys.v2.ApiKeys/LookupKey"}
	lookupHandler := func(ctx context.Context, req any) (any, error) {
		return lookup.LookupKey(ctx, req.(*apikeyspb.LookupKeyRequest))
	}
	b.Run("GetKey", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			serveBench(b, keysREST, http.MethodGet, fmt.Sprintf("/v2/projects/%s/locations/global/keys/k-%d", testProject, 2*(i%(benchKeys/2))), "")
		}
	})
	b.Run("LookupKey", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			req := &apikeyspb.LookupKeyRequest{KeyString: live[i%len(live)]}
			if _, err := s.checkFieldBehavior(context.Background(), req, lookupInfo, lookupHandler); err != nil {
				b.Fatal(err)
			}
		}
	})
	created := 0 // key ids new-N are unique across runs
	b.Run("CreateDelete", func(b *testing.B) {
		// One key's life: CreateKey, its GetOperation, DeleteKey, its
		// GetOperation.
		b.ReportAllocs()
		for b.Loop() {
			created++
			i := created
			parent := "/v2/projects/" + testProject + "/locations/global/keys"
			op := opName(b, serveBench(b, keysREST, http.MethodPost, fmt.Sprintf("%s?keyId=new-%d", parent, i), `{"displayName":"x"}`))
			serveBench(b, keysREST, http.MethodGet, "/v2/"+op, "")
			op = opName(b, serveBench(b, keysREST, http.MethodDelete, fmt.Sprintf("%s/new-%d", parent, i), ""))
			serveBench(b, keysREST, http.MethodGet, "/v2/"+op, "")
		}
	})
	// A project of 100 keys beside the 20,000 of proj-a.
	s.AddProject("proj-small", 789)
	for i := range 100 {
		if _, _, err := s.SeedKey("proj-small", fmt.Sprintf("k-%d", i), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("ListKeysSmallProject", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			serveBench(b, keysREST, http.MethodGet, "/v2/projects/proj-small/locations/global/keys", "")
		}
	})
	b.Run("GeminiListModels", func(b *testing.B) {
		// The probe, with its usage recorded.
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			r := httptest.NewRequest(http.MethodGet, "/v1beta/models?pageSize=1", nil)
			r.Header.Set("x-goog-api-key", live[i%len(live)])
			serveBenchReq(b, gemini, r)
		}
	})
}

// BenchmarkSecretManagerChecks measures the emulator's work per Secret
// Manager call outside the call itself: the field-behaviour check of a
// request, and the rotation schedule's look for due secrets (every
// rotationTick) with many secrets, none due.
func BenchmarkSecretManagerChecks(b *testing.B) {
	s, err := Start(Options{Clock: fake.NewManualClock(t0), NoSecretWriteLimits: true})
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	s.AddProject(testProject, testNumber)
	for i := 0; i < benchKeys/2; i++ {
		if _, err := s.SeedSecret(testProject, fmt.Sprintf("s-%d", i), nil); err != nil {
			b.Fatal(err)
		}
	}
	noop := func(context.Context, any) (any, error) { return nil, nil }
	b.Run("FieldBehavior/UpdateSecret", func(b *testing.B) {
		info := &grpc.UnaryServerInfo{FullMethod: "/google.cloud.secretmanager.v1.SecretManagerService/UpdateSecret"}
		req := &secretmanagerpb.UpdateSecretRequest{
			Secret: &secretmanagerpb.Secret{
				Name:        "projects/" + testProject + "/secrets/s-1",
				Annotations: map[string]string{"keyrotate.rotation": strings.Repeat("x", 400)},
				Etag:        `"abc"`,
			},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}},
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.checkFieldBehavior(context.Background(), req, info, noop); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("FieldBehavior/AddSecretVersion", func(b *testing.B) {
		info := &grpc.UnaryServerInfo{FullMethod: "/google.cloud.secretmanager.v1.SecretManagerService/AddSecretVersion"}
		crc := int64(1)
		req := &secretmanagerpb.AddSecretVersionRequest{
			Parent:  "projects/" + testProject + "/secrets/s-1",
			Payload: &secretmanagerpb.SecretPayload{Data: []byte("AQ.payload"), DataCrc32C: &crc},
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.checkFieldBehavior(context.Background(), req, info, noop); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("FireDueRotations", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if n := s.FireDueRotations(); n != 0 {
				b.Fatalf("FireDueRotations = %d, want 0", n)
			}
		}
	})
}
