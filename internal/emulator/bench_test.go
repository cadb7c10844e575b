package emulator

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

// BenchmarkSecretManagerCalls measures the emulator's work per Secret
// Manager call of a rotation (the preflight's GetSecret and
// AccessSecretVersion, the lock's UpdateSecret with its etag, the new
// version), with benchKeys/2 secrets in the store, each holding a
// rotation record in its annotations.
func BenchmarkSecretManagerCalls(b *testing.B) {
	s, err := Start(Options{Clock: fake.NewManualClock(t0), NoSecretWriteLimits: true})
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	s.AddProject(testProject, testNumber)
	const secrets = benchKeys / 2
	record := map[string]string{"keyrotate.rotation": strings.Repeat("x", 400)}
	for i := range secrets {
		name, err := s.SeedSecret(testProject, fmt.Sprintf("s-%d", i), record)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.SeedSecretVersion(name, []byte(fmt.Sprintf("AQ.key-%d", i))); err != nil {
			b.Fatal(err)
		}
	}
	sm := &smServer{s: s}
	name := func(i int) string { return fmt.Sprintf("projects/%s/secrets/s-%d", testProject, i%secrets) }
	b.Run("GetSecret", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			callSM(b, s, "GetSecret", &secretmanagerpb.GetSecretRequest{Name: name(i)}, sm.GetSecret)
		}
	})
	b.Run("AccessSecretVersion", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			callSM(b, s, "AccessSecretVersion", &secretmanagerpb.AccessSecretVersionRequest{Name: name(i) + "/versions/latest"}, sm.AccessSecretVersion)
		}
	})
	b.Run("UpdateSecret", func(b *testing.B) {
		// The lock: the record written with the etag last read.
		etags := make([]string, secrets)
		for i := range etags {
			sec, _ := s.Secret(name(i))
			etags[i] = sec.GetEtag()
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			sec := callSM(b, s, "UpdateSecret", &secretmanagerpb.UpdateSecretRequest{
				Secret: &secretmanagerpb.Secret{
					Name:        name(i),
					Annotations: map[string]string{"keyrotate.rotation": strings.Repeat("y", 400)},
					Etag:        etags[i%secrets],
				},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}},
			}, sm.UpdateSecret)
			etags[i%secrets] = sec.GetEtag()
		}
	})
	b.Run("AddSecretVersion", func(b *testing.B) {
		data := []byte("AQ.a-new-key-string-of-the-usual-length-000000")
		crc := checksum(data)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			callSM(b, s, "AddSecretVersion", &secretmanagerpb.AddSecretVersionRequest{
				Parent:  name(i),
				Payload: &secretmanagerpb.SecretPayload{Data: data, DataCrc32C: &crc},
			}, sm.AddSecretVersion)
		}
	})
}

// BenchmarkGeminiCalls measures the emulator's work per Gemini probe, the
// countTokens of one word a rotation sends (verify.Gemini), with its
// usage recorded for Monitoring: with a key that works, and with one not
// yet propagated (400 API_KEY_INVALID, most probes of a fleet).
func BenchmarkGeminiCalls(b *testing.B) {
	s, _, gemini, live := benchServer(b)
	const body = `{"contents":[{"parts":[{"text":"ping"}]}]}`
	probe := func(b *testing.B, key string, want int) {
		r := httptest.NewRequest(http.MethodPost, "/v1beta/models/gemini-3.5-flash-lite:countTokens", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("x-goog-api-key", key)
		w := httptest.NewRecorder()
		gemini.ServeHTTP(w, r)
		if w.Code != want {
			b.Fatalf("countTokens: %d %s, want %d", w.Code, w.Body, want)
		}
	}
	b.Run("CountTokens", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			probe(b, live[i%len(live)], http.StatusOK)
		}
	})
	var pending []string
	for i := range 100 {
		_, ks, err := s.SeedKey(testProject, fmt.Sprintf("pending-%d", i), nil)
		if err != nil {
			b.Fatal(err)
		}
		s.mu.Lock()
		s.keys.byString[ks].validFrom = s.Now().Add(time.Hour) // created, not yet propagated
		s.mu.Unlock()
		pending = append(pending, ks)
	}
	b.Run("CountTokensNotYetValid", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			probe(b, pending[i%len(pending)], http.StatusBadRequest)
		}
	})
}
