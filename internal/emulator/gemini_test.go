package emulator

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apikeys "google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

// probeResult is a Gemini answer, decoded.
type probeResult struct {
	code     int
	status   string // error.status
	reason   string // ErrorInfo reason
	message  string
	metadata map[string]string
	body     string
	models   []string
	next     string
}

// probe calls GET /v1beta/models with the key in x-goog-api-key (none if
// keyString is ""); edit may change the request.
func probe(t *testing.T, s *Server, keyString string, edit func(*http.Request)) probeResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+s.GeminiAddr+"/v1beta/models?pageSize=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if keyString != "" {
		req.Header.Set("x-goog-api-key", keyString)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
			Details []struct {
				Type     string            `json:"@type"`
				Reason   string            `json:"reason"`
				Domain   string            `json:"domain"`
				Metadata map[string]string `json:"metadata"`
			} `json:"details"`
		} `json:"error"`
		Models []struct {
			Name string `json:"name"`
		} `json:"models"`
		NextPageToken string `json:"nextPageToken"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("body %q is not JSON: %v", b, err)
	}
	r := probeResult{code: resp.StatusCode, status: body.Error.Status, message: body.Error.Message, body: string(b), next: body.NextPageToken}
	if body.Error.Code != 0 && body.Error.Code != resp.StatusCode {
		t.Errorf("error.code %d differs from HTTP status %d", body.Error.Code, resp.StatusCode)
	}
	for _, d := range body.Error.Details {
		if d.Type == typeErrorInfo {
			r.reason, r.metadata = d.Reason, d.Metadata
			if d.Domain != "googleapis.com" {
				t.Errorf("ErrorInfo domain %q, want googleapis.com", d.Domain)
			}
		}
	}
	for _, m := range body.Models {
		r.models = append(r.models, m.Name)
	}
	return r
}

func TestGeminiReasons(t *testing.T) {
	gemini := &apikeys.V2ApiTarget{Service: "generativelanguage.googleapis.com"}
	tests := []struct {
		name       string
		key        *apikeys.V2Key                                 // seeded in proj-a unless nil
		setup      func(s *Server, name, keyString string) string // returns the key string to send
		edit       func(r *http.Request, keyString string)
		wantCode   int
		wantStatus string
		wantReason string
		wantMsg    string
	}{
		{name: "works", key: &apikeys.V2Key{}, wantCode: 200},
		{name: "auth key works under the standard-key policy", key: &apikeys.V2Key{ServiceAccountEmail: testSA},
			setup:    func(s *Server, _, ks string) string { s.RejectStandardKeys(true); return ks },
			wantCode: 200},
		{name: "no key", wantCode: 403, wantStatus: "PERMISSION_DENIED", wantMsg: "Method doesn't allow unregistered callers"},
		{name: "key in the URL is ignored", key: &apikeys.V2Key{},
			edit: func(r *http.Request, ks string) {
				r.Header.Del("x-goog-api-key")
				q := r.URL.Query()
				q.Set("key", ks)
				r.URL.RawQuery = q.Encode()
			},
			wantCode: 403, wantStatus: "PERMISSION_DENIED", wantMsg: "unregistered callers"},
		{name: "unknown key", setup: func(*Server, string, string) string { return "AIza" + strings.Repeat("q", 35) },
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantReason: "API_KEY_INVALID", wantMsg: "API key not valid. Please pass a valid API key."},
		{name: "deleted key", key: &apikeys.V2Key{},
			setup: func(s *Server, name, ks string) string {
				svc, _ := s.APIKeysService(t.Context())
				if _, err := svc.Projects.Locations.Keys.Delete(name).Do(); err != nil {
					t.Fatal(err)
				}
				return ks
			},
			wantCode: 400, wantStatus: "INVALID_ARGUMENT", wantReason: "API_KEY_INVALID"},
		{name: "standard key under the standard-key policy", key: &apikeys.V2Key{},
			setup:    func(s *Server, _, ks string) string { s.RejectStandardKeys(true); return ks },
			wantCode: 401, wantStatus: "UNAUTHENTICATED", wantReason: "ACCESS_TOKEN_TYPE_UNSUPPORTED"},
		{name: "api targets exclude gemini", key: &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "maps-backend.googleapis.com"}}}},
			wantCode: 403, wantStatus: "PERMISSION_DENIED", wantReason: "API_KEY_SERVICE_BLOCKED"},
		{name: "api targets include gemini", key: &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{gemini}}}, wantCode: 200},
		{name: "api disabled", key: &apikeys.V2Key{},
			setup: func(s *Server, _, ks string) string {
				s.SetServiceEnabled(testProject, "generativelanguage.googleapis.com", false)
				return ks
			},
			wantCode: 403, wantStatus: "PERMISSION_DENIED", wantReason: "SERVICE_DISABLED"},
		{name: "suspended", key: &apikeys.V2Key{},
			setup:    func(s *Server, name, ks string) string { s.SuspendKey(name); return ks },
			wantCode: 403, wantStatus: "PERMISSION_DENIED", wantReason: "CONSUMER_SUSPENDED"},
		{name: "referrer missing", key: &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{BrowserKeyRestrictions: &apikeys.V2BrowserKeyRestrictions{AllowedReferrers: []string{"https://app.example.com/*"}}}},
			wantCode: 403, wantStatus: "PERMISSION_DENIED", wantReason: "API_KEY_HTTP_REFERRER_BLOCKED", wantMsg: "Requests from referer <empty> are blocked."},
		{name: "referrer matches", key: &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{BrowserKeyRestrictions: &apikeys.V2BrowserKeyRestrictions{AllowedReferrers: []string{"*.example.com/*"}}}},
			edit: func(r *http.Request, _ string) { r.Header.Set("Referer", "https://app.example.com/page") }, wantCode: 200},
		{name: "ip not allowed", key: &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{ServerKeyRestrictions: &apikeys.V2ServerKeyRestrictions{AllowedIps: []string{"10.0.0.1", "192.168.0.0/16"}}}},
			wantCode: 403, wantStatus: "PERMISSION_DENIED", wantReason: "API_KEY_IP_ADDRESS_BLOCKED"},
		{name: "ip allowed by range", key: &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{ServerKeyRestrictions: &apikeys.V2ServerKeyRestrictions{AllowedIps: []string{"127.0.0.0/8"}}}}, wantCode: 200},
		{name: "android app missing", key: &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{AndroidKeyRestrictions: &apikeys.V2AndroidKeyRestrictions{AllowedApplications: []*apikeys.V2AndroidApplication{{PackageName: "com.example.app", Sha1Fingerprint: "DA:39:A3:EE"}}}}},
			wantCode: 403, wantStatus: "PERMISSION_DENIED", wantReason: "API_KEY_ANDROID_APP_BLOCKED"},
		{name: "android app matches", key: &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{AndroidKeyRestrictions: &apikeys.V2AndroidKeyRestrictions{AllowedApplications: []*apikeys.V2AndroidApplication{{PackageName: "com.example.app", Sha1Fingerprint: "DA:39:A3:EE"}}}}},
			edit: func(r *http.Request, _ string) {
				r.Header.Set("X-Android-Package", "com.example.app")
				r.Header.Set("X-Android-Cert", "da39a3ee")
			},
			wantCode: 200},
		{name: "ios app missing", key: &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{IosKeyRestrictions: &apikeys.V2IosKeyRestrictions{AllowedBundleIds: []string{"com.example.ios"}}}},
			wantCode: 403, wantStatus: "PERMISSION_DENIED", wantReason: "API_KEY_IOS_APP_BLOCKED"},
		{name: "ios app matches", key: &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{IosKeyRestrictions: &apikeys.V2IosKeyRestrictions{AllowedBundleIds: []string{"com.example.ios"}}}},
			edit: func(r *http.Request, _ string) { r.Header.Set("X-Ios-Bundle-Identifier", "com.example.ios") }, wantCode: 200},
		{name: "quota fault", key: &apikeys.V2Key{},
			setup: func(s *Server, _, ks string) string {
				s.Fail("gemini.ListModels", fake.Next, fake.Fault{Code: codes.ResourceExhausted})
				return ks
			},
			wantCode: 429, wantStatus: "RESOURCE_EXHAUSTED", wantMsg: "You exceeded your current quota"},
		{name: "unavailable fault", key: &apikeys.V2Key{},
			setup: func(s *Server, _, ks string) string {
				s.Fail("gemini.ListModels", fake.Next, fake.Fault{Code: codes.Unavailable, Message: "backend down"})
				return ks
			},
			wantCode: 503, wantStatus: "UNAVAILABLE", wantMsg: "backend down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := startKeys(t, Options{})
			var name, ks string
			if tt.key != nil {
				var err error
				if name, ks, err = s.SeedKey(testProject, "", tt.key); err != nil {
					t.Fatal(err)
				}
			}
			if tt.setup != nil {
				ks = tt.setup(s, name, ks)
			}
			var edit func(*http.Request)
			if tt.edit != nil {
				edit = func(r *http.Request) { tt.edit(r, ks) }
			}
			got := probe(t, s, ks, edit)
			if got.code != tt.wantCode || got.status != tt.wantStatus || got.reason != tt.wantReason {
				t.Fatalf("probe = HTTP %d %s reason %q (%s), want HTTP %d %s reason %q", got.code, got.status, got.reason, got.message, tt.wantCode, tt.wantStatus, tt.wantReason)
			}
			if !strings.Contains(got.message, tt.wantMsg) {
				t.Errorf("message %q, want it to contain %q", got.message, tt.wantMsg)
			}
			if got.reason != "" && got.metadata["service"] != geminiService {
				t.Errorf("ErrorInfo metadata service = %q, want %q", got.metadata["service"], geminiService)
			}
			if tt.wantCode == 200 {
				if len(got.models) != 1 || got.next == "" {
					t.Errorf("models = %v, next page %q; want one model and a next page", got.models, got.next)
				}
				if !s.KeyWorks(ks) {
					t.Errorf("KeyWorks = false for a key Gemini accepts")
				}
			}
			if got.reason == "SERVICE_DISABLED" {
				if got.metadata["consumer"] != "projects/123" || !strings.Contains(got.metadata["activationUrl"], "project=123") {
					t.Errorf("SERVICE_DISABLED metadata %v, want consumer projects/123 and an activationUrl", got.metadata)
				}
			}
			if tt.wantCode == 429 && (!strings.Contains(got.body, typeQuotaFailure) || !strings.Contains(got.body, typeRetryInfo)) {
				t.Errorf("429 body %s lacks QuotaFailure or RetryInfo", got.body)
			}
			if got, want := s.Calls("gemini.ListModels"), 1; got != want {
				t.Errorf("Calls(gemini.ListModels) = %d, want %d", got, want)
			}
		})
	}
}

func TestGeminiPropagationDelay(t *testing.T) {
	s, svc, clock := startKeys(t, Options{PropagationDelay: 5 * time.Minute})
	create := func(id string) string {
		t.Helper()
		k := wait(t, svc, mustDo(t, svc.Projects.Locations.Keys.Create("projects/proj-a/locations/global", &apikeys.V2Key{}).KeyId(id).Do))
		return k.KeyString
	}
	ks := create("new")
	steps := []struct {
		name     string
		advance  time.Duration
		wantCode int
		wantMsg  string
	}{
		{name: "at creation", wantCode: 400, wantMsg: "API Key not found"},
		{name: "a second early", advance: 5*time.Minute - time.Second, wantCode: 400},
		{name: "after the delay", advance: time.Second, wantCode: 200},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Advance(st.advance)
			got := probe(t, s, ks, nil)
			if got.code != st.wantCode {
				t.Fatalf("probe = HTTP %d %s (%s), want %d", got.code, got.reason, got.message, st.wantCode)
			}
			if st.wantCode == 400 && got.reason != "API_KEY_INVALID" {
				t.Errorf("reason %q, want API_KEY_INVALID", got.reason)
			}
			if !strings.Contains(got.message, st.wantMsg) {
				t.Errorf("message %q, want it to contain %q", got.message, st.wantMsg)
			}
		})
	}
	t.Run("never", func(t *testing.T) {
		s.SetPropagationDelay(100 * 365 * 24 * time.Hour)
		never := create("never")
		clock.Advance(24 * time.Hour)
		if got := probe(t, s, never, nil); got.code != 400 {
			t.Errorf("probe a day later = HTTP %d, want 400", got.code)
		}
		if s.KeyWorks(never) {
			t.Errorf("KeyWorks = true, want false")
		}
		if !s.KeyWorks(ks) {
			t.Errorf("KeyWorks of the older key = false, want true")
		}
	})
}

func TestGeminiListModelsPaging(t *testing.T) {
	s, _, _ := startKeys(t, Options{})
	_, ks, _ := s.SeedKey(testProject, "k", nil)
	var all []string
	tok := ""
	for i := 0; ; i++ {
		if i > len(geminiModels) {
			t.Fatalf("paging does not end")
		}
		got := probe(t, s, ks, func(r *http.Request) {
			q := r.URL.Query()
			q.Set("pageSize", "2")
			if tok != "" {
				q.Set("pageToken", tok)
			}
			r.URL.RawQuery = q.Encode()
		})
		if got.code != 200 {
			t.Fatalf("page %d: HTTP %d %s", i, got.code, got.message)
		}
		all = append(all, got.models...)
		if tok = got.next; tok == "" {
			break
		}
	}
	if len(all) != len(geminiModels) || all[0] != "models/gemini-2.5-flash" {
		t.Errorf("listed %v, want all %d models starting with models/gemini-2.5-flash", all, len(geminiModels))
	}
}

func TestGeminiUnknownPath(t *testing.T) {
	s, _, _ := startKeys(t, Options{})
	_, ks, _ := s.SeedKey(testProject, "k", nil)
	for _, p := range []string{"/v1beta/models/gemini-2.5-flash:generateContent", "/v1/models", "/"} {
		t.Run(p, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+s.GeminiAddr+p, nil)
			req.Header.Set("x-goog-api-key", ks)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 404 || !strings.Contains(string(b), `"status":"NOT_FOUND"`) {
				t.Errorf("GET %s: HTTP %d %s, want 404 NOT_FOUND", p, resp.StatusCode, b)
			}
		})
	}
	if got := s.Calls("gemini.ListModels"); got != 0 {
		t.Errorf("Calls(gemini.ListModels) = %d, want 0", got)
	}
}

// TestGeminiLeakedKey: a key Google reported as leaked is answered 403
// PERMISSION_DENIED with exactly Google's message and no details at all (no
// ErrorInfo, no LocalizedMessage), before any other check of the key but
// after the checks that make it unknown to the API (deleted, not yet
// propagated).
func TestGeminiLeakedKey(t *testing.T) {
	s, _, _ := startKeys(t, Options{})
	name, ks, err := s.SeedKey(testProject, "leaked", &apikeys.V2Key{})
	if err != nil {
		t.Fatal(err)
	}
	s.SuspendKey(name) // a leaked key may be suspended too: the leak answer wins
	s.MarkLeaked(name)
	got := probe(t, s, ks, nil)
	if got.code != http.StatusForbidden {
		t.Fatalf("probe of a leaked key = HTTP %d %s, want 403", got.code, got.body)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(got.body), &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"error": map[string]any{
		"code":    float64(403),
		"message": "Your API key was reported as leaked. Please use another API key.",
		"status":  "PERMISSION_DENIED",
	}}
	if diff := cmp.Diff(want, body); diff != "" {
		t.Errorf("leaked-key body (-want +got):\n%s\nbody: %s", diff, got.body)
	}
	if s.KeyWorks(ks) {
		t.Errorf("KeyWorks = true for a leaked key")
	}

	// Deleted: the API no longer knows the key, whatever was reported.
	svc, err := s.APIKeysService(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Projects.Locations.Keys.Delete(name).Do(); err != nil {
		t.Fatal(err)
	}
	if got := probe(t, s, ks, nil); got.code != http.StatusBadRequest || got.reason != "API_KEY_INVALID" {
		t.Errorf("probe of a deleted leaked key = HTTP %d reason %q, want 400 API_KEY_INVALID", got.code, got.reason)
	}
}

// TestGeminiCountTokens: countTokens is checked against the key per method,
// as the application's generation calls are: a key whose apiTargets list
// only ListModels lists models but cannot count tokens, one that lists only
// the generation methods the other way round, and a standard key under the
// generation-only policy lists models but gets 401 on countTokens.
func TestGeminiCountTokens(t *testing.T) {
	const list, count = geminiListMethod, geminiCountMethod
	methods := func(ms ...string) *apikeys.V2Key {
		return &apikeys.V2Key{ServiceAccountEmail: testSA, Restrictions: &apikeys.V2Restrictions{
			ApiTargets: []*apikeys.V2ApiTarget{{Service: geminiService, Methods: ms}}}}
	}
	for _, tc := range []struct {
		name                string
		key                 *apikeys.V2Key
		genOnly             bool
		model               string
		wantList, wantCount int
		wantReason          string // of the countTokens answer
	}{
		{name: "all methods", key: &apikeys.V2Key{ServiceAccountEmail: testSA}, wantList: 200, wantCount: 200},
		{name: "only listing", key: methods(list), wantList: 200, wantCount: 403, wantReason: "API_KEY_SERVICE_BLOCKED"},
		{name: "only generation", key: methods("google.ai.generativelanguage.v1beta.GenerativeService.*"), wantList: 403, wantCount: 200},
		{name: "standard key, generation-only policy", key: &apikeys.V2Key{}, genOnly: true, wantList: 200, wantCount: 401, wantReason: "ACCESS_TOKEN_TYPE_UNSUPPORTED"},
		{name: "auth key, generation-only policy", key: &apikeys.V2Key{ServiceAccountEmail: testSA}, genOnly: true, wantList: 200, wantCount: 200},
		{name: "unknown model", key: &apikeys.V2Key{ServiceAccountEmail: testSA}, model: "models/gemini-0.1-nano", wantList: 200, wantCount: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := startKeys(t, Options{})
			_, ks, err := s.SeedKey(testProject, "", tc.key)
			if err != nil {
				t.Fatal(err)
			}
			s.RejectStandardKeysOnGeneration(tc.genOnly)
			if got := probe(t, s, ks, nil); got.code != tc.wantList {
				t.Errorf("ListModels = HTTP %d %s, want %d", got.code, got.body, tc.wantList)
			}
			model := tc.model
			if model == "" {
				model = "models/gemini-2.5-flash"
			}
			code, b := postGemini(t, s, ks, model+":countTokens", `{"contents":[{"parts":[{"text":"one two three"}]}]}`)
			if code != tc.wantCount {
				t.Fatalf("countTokens = HTTP %d %s, want %d", code, b, tc.wantCount)
			}
			if tc.wantReason != "" && !strings.Contains(string(b), `"reason":"`+tc.wantReason+`"`) {
				t.Errorf("countTokens body %s, want reason %s", b, tc.wantReason)
			}
			if tc.wantCount == 200 && string(b) != `{"totalTokens":3}`+"\n" && string(b) != `{"totalTokens":3}` {
				t.Errorf("countTokens body %q, want totalTokens 3", b)
			}
			if n := s.Calls("gemini.CountTokens"); n != 1 {
				t.Errorf("Calls(gemini.CountTokens) = %d, want 1", n)
			}
		})
	}
}

// TestGeminiGenerateContent: POST models/{model}:generateContent, the
// application's own call, is authorized per method like countTokens
// (apiTargets, the generation-only standard-key policy), answers unknown
// models 404, refuses a request without contents, and answers the smallest
// request with one candidate cut at maxOutputTokens.
func TestGeminiGenerateContent(t *testing.T) {
	const count, generate = geminiCountMethod, geminiGenerateMethod
	methods := func(ms ...string) *apikeys.V2Key {
		return &apikeys.V2Key{ServiceAccountEmail: testSA, Restrictions: &apikeys.V2Restrictions{
			ApiTargets: []*apikeys.V2ApiTarget{{Service: geminiService, Methods: ms}}}}
	}
	const smallest = `{"contents":[{"parts":[{"text":"ping"}]}],"generationConfig":{"maxOutputTokens":1}}`
	for _, tc := range []struct {
		name       string
		key        *apikeys.V2Key
		genOnly    bool
		model      string
		body       string
		wantCode   int
		wantReason string
	}{
		{name: "all methods", key: &apikeys.V2Key{ServiceAccountEmail: testSA}, wantCode: 200},
		{name: "generateContent allowed", key: methods(generate), wantCode: 200},
		{name: "only countTokens", key: methods(count), wantCode: 403, wantReason: "API_KEY_SERVICE_BLOCKED"},
		{name: "standard key, generation-only policy", key: &apikeys.V2Key{}, genOnly: true, wantCode: 401, wantReason: "ACCESS_TOKEN_TYPE_UNSUPPORTED"},
		{name: "auth key, generation-only policy", key: &apikeys.V2Key{ServiceAccountEmail: testSA}, genOnly: true, wantCode: 200},
		{name: "unknown model", key: &apikeys.V2Key{ServiceAccountEmail: testSA}, model: "models/gemini-0.1-nano", wantCode: 404},
		{name: "embedding model cannot generate", key: &apikeys.V2Key{ServiceAccountEmail: testSA}, model: "models/gemini-embedding-001", wantCode: 404},
		{name: "no contents", key: &apikeys.V2Key{ServiceAccountEmail: testSA}, body: `{"generationConfig":{"maxOutputTokens":1}}`, wantCode: 400},
		{name: "unknown field", key: &apikeys.V2Key{ServiceAccountEmail: testSA}, body: `{"contents":[{"parts":[{"text":"ping"}]}],"prompt":"x"}`, wantCode: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := startKeys(t, Options{})
			_, ks, err := s.SeedKey(testProject, "", tc.key)
			if err != nil {
				t.Fatal(err)
			}
			s.RejectStandardKeysOnGeneration(tc.genOnly)
			model, body := tc.model, tc.body
			if model == "" {
				model = "models/gemini-3.5-flash-lite"
			}
			if body == "" {
				body = smallest
			}
			code, b := postGemini(t, s, ks, model+":generateContent", body)
			if code != tc.wantCode {
				t.Fatalf("generateContent = HTTP %d %s, want %d", code, b, tc.wantCode)
			}
			if tc.wantReason != "" && !strings.Contains(string(b), `"reason":"`+tc.wantReason+`"`) {
				t.Errorf("generateContent body %s, want reason %s", b, tc.wantReason)
			}
			if n := s.Calls("gemini.GenerateContent"); n != 1 {
				t.Errorf("Calls(gemini.GenerateContent) = %d, want 1", n)
			}
			if n := s.Calls("gemini.CountTokens") + s.Calls("gemini.ListModels"); n != 0 {
				t.Errorf("other Gemini calls = %d, want 0", n)
			}
			if tc.wantCode != 200 {
				return
			}
			var got generateResponse
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			want := generateResponse{
				Candidates:    []candidate{{Content: content{Parts: []part{{Text: "pong"}}, Role: "model"}, FinishReason: "MAX_TOKENS"}},
				UsageMetadata: usageMetadata{PromptTokenCount: 1, CandidatesTokenCount: 1, TotalTokenCount: 2},
				ModelVersion:  "gemini-3.5-flash-lite",
				ResponseID:    got.ResponseID,
			}
			if diff := cmp.Diff(want, got); diff != "" || got.ResponseID == "" {
				t.Errorf("generateContent answer (-want +got):\n%s (responseId %q)", diff, got.ResponseID)
			}
		})
	}
}

// postGemini POSTs body to /v1beta/PATH with keyString in the header and
// returns the answer.
func postGemini(t *testing.T, s *Server, keyString, path, body string) (int, []byte) {
	t.Helper()
	return callGemini(t, s, http.MethodPost, "/v1beta/"+path, keyString, body)
}

// callGemini makes one HTTP call to the Gemini address, with keyString
// (when set) in the header, and returns the answer.
func callGemini(t *testing.T, s *Server, method, path, keyString, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.GeminiAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if keyString != "" {
		req.Header.Set("x-goog-api-key", keyString)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}
