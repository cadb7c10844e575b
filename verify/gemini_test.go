package verify_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/verify"
)

// TestProbeClassification probes keys in every state the Gemini API can
// report against the emulator and checks the cause, whether it is
// temporary, and that the key string appears in no error.
func TestProbeClassification(t *testing.T) {
	clock := fake.NewManualClock(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	srv := emutest.Start(t, emulator.Options{Clock: clock})
	srv.AddProject("p-one", 111111111111)
	srv.AddProject("p-off", 222222222222)
	gemini := &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}}}
	seed := func(project, id string, k *apikeys.V2Key) string {
		t.Helper()
		_, s, err := srv.SeedKey(project, id, k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := seed("p-one", "good", &apikeys.V2Key{Restrictions: gemini, ServiceAccountEmail: "sa@p-one.iam.gserviceaccount.com"})
	standard := seed("p-one", "standard", &apikeys.V2Key{Restrictions: gemini})
	maps := seed("p-one", "maps", &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{
		ApiTargets: []*apikeys.V2ApiTarget{{Service: "cloudaicompanion.googleapis.com"}}}})
	referrer := seed("p-one", "web", &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{
		BrowserKeyRestrictions: &apikeys.V2BrowserKeyRestrictions{AllowedReferrers: []string{"https://example.com/*"}}}})
	suspended := seed("p-one", "leaked", &apikeys.V2Key{Restrictions: gemini})
	srv.SuspendKey("projects/p-one/locations/global/keys/leaked")
	reported := seed("p-one", "reported", &apikeys.V2Key{Restrictions: gemini})
	srv.MarkLeaked("projects/p-one/locations/global/keys/reported")
	off := seed("p-off", "off", &apikeys.V2Key{Restrictions: gemini})
	srv.SetServiceEnabled("p-off", "generativelanguage.googleapis.com", false)

	// Every probe method gets the same classification.
	calls := map[verify.ProbeMethod]string{verify.ProbeCountTokens: "gemini.CountTokens",
		verify.ProbeGenerateContent: "gemini.GenerateContent", verify.ProbeListModels: "gemini.ListModels"}
	for _, method := range verify.ProbeMethods {
		probe := &verify.Gemini{BaseURL: "http://" + srv.GeminiAddr, Method: method}
		call := calls[method]
		for _, tc := range []struct {
			name      string
			key       string
			setup     func()
			want      error // nil: the key works
			temporary bool
		}{
			{"works", good, nil, nil, false},
			{"unknown key", "AIzaSyD-this-key-was-never-issued-00000", nil, verify.ErrInvalid, true},
			{"empty key", "", nil, verify.ErrUnauthenticated, false},
			{"standard key rejected", standard, func() { srv.RejectStandardKeys(true) }, verify.ErrStandardKeyRejected, true},
			{"service blocked", maps, nil, verify.ErrServiceBlocked, false},
			{"referrer blocked", referrer, nil, verify.ErrClientBlocked, false},
			{"suspended", suspended, nil, verify.ErrSuspended, false},
			{"reported leaked", reported, nil, verify.ErrLeaked, false},
			{"service disabled", off, nil, verify.ErrServiceDisabled, false},
			{"throttled", good, func() { srv.Fail(call, fake.Next, fake.Fault{Code: codes.ResourceExhausted}) }, verify.ErrThrottled, true},
			{"server error", good, func() { srv.Fail(call, fake.Next, fake.Fault{Code: codes.Unavailable}) }, verify.ErrServer, true},
		} {
			t.Run(string(method)+"/"+tc.name, func(t *testing.T) {
				if tc.setup != nil {
					tc.setup()
					defer srv.RejectStandardKeys(false)
				}
				err := probe.Probe(context.Background(), secret.New(tc.key))
				switch {
				case tc.name == "works":
					if err != nil {
						t.Fatalf("Probe = %v, want nil", err)
					}
					return
				case err == nil:
					t.Fatalf("Probe = nil, want an error")
				}
				var pe *verify.ProbeError
				if !errors.As(err, &pe) {
					t.Fatalf("Probe error %T is not a *ProbeError", err)
				}
				if !errors.Is(err, tc.want) {
					t.Errorf("Probe = %v (cause %s), want %v", err, pe.Cause, tc.want)
				}
				if pe.Temporary() != tc.temporary {
					t.Errorf("Temporary() = %t, want %t (%v)", pe.Temporary(), tc.temporary, err)
				}
				if tc.key != "" && (strings.Contains(err.Error(), tc.key) || strings.Contains(pe.Hint(), tc.key)) {
					t.Errorf("the key string appears in the error: %v", err)
				}
			})
		}
	}
}

// TestProbePropagation: a new key fails with API_KEY_INVALID (temporary)
// until its propagation delay has passed.
func TestProbePropagation(t *testing.T) {
	clock := fake.NewManualClock(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	srv := emutest.Start(t, emulator.Options{Clock: clock, PropagationDelay: 5 * time.Minute})
	srv.AddProject("p-one", 111111111111)
	ctx := context.Background()
	svc, err := srv.APIKeysService(ctx)
	if err != nil {
		t.Fatal(err)
	}
	op, err := svc.Projects.Locations.Keys.Create("projects/p-one/locations/global", &apikeys.V2Key{}).KeyId("fresh").Do()
	if err != nil {
		t.Fatal(err)
	}
	for !op.Done {
		if op, err = svc.Operations.Get(op.Name).Do(); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := svc.Projects.Locations.Keys.GetKeyString("projects/p-one/locations/global/keys/fresh").Do()
	if err != nil {
		t.Fatal(err)
	}
	probe := &verify.Gemini{BaseURL: "http://" + srv.GeminiAddr}
	err = probe.Probe(ctx, secret.New(ks.KeyString))
	var pe *verify.ProbeError
	if !errors.As(err, &pe) || pe.Cause != verify.CauseInvalid || !pe.Temporary() {
		t.Fatalf("Probe of a new key = %v, want a temporary API_KEY_INVALID", err)
	}
	clock.Advance(5 * time.Minute)
	if err := probe.Probe(ctx, secret.New(ks.KeyString)); err != nil {
		t.Fatalf("Probe after the propagation delay = %v, want nil", err)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   verify.Cause
	}{
		{400, `{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}`, verify.CauseInvalid},
		{401, `{"error":{"code":401,"status":"UNAUTHENTICATED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"ACCESS_TOKEN_TYPE_UNSUPPORTED"}]}}`, verify.CauseStandardKeyRejected},
		{403, `{"error":{"code":403,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_IOS_APP_BLOCKED"}]}}`, verify.CauseClientBlocked},
		{429, `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}`, verify.CauseThrottled},
		{503, `upstream connect error`, verify.CauseServer},
		{403, `{"error":{"code":403,"message":"Method doesn't allow unregistered callers","status":"PERMISSION_DENIED"}}`, verify.CauseUnauthenticated},
		// A leaked key: no ErrorInfo, only the message tells (the body as
		// quoted in continuedev/continue#11541 and #10513).
		{403, "{\n  \"error\": {\n    \"code\": 403,\n    \"message\": \"Your API key was reported as leaked. Please use another API key.\",\n    \"status\": \"PERMISSION_DENIED\"\n  }\n}\n", verify.CauseLeaked},
		// The message decides only where there is no ErrorInfo reason.
		{403, `{"error":{"code":403,"message":"Your API key was reported as leaked. Please use another API key.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"CONSUMER_SUSPENDED"}]}}`, verify.CauseSuspended},
		// A 400 with that message is not the leak answer Google sends.
		{400, `{"error":{"code":400,"message":"Your API key was reported as leaked. Please use another API key.","status":"INVALID_ARGUMENT"}}`, verify.CauseUnknown},
		// The probe's model is retired or misspelled: not the key's fault.
		{404, `{"error":{"code":404,"message":"models/gemini-0.1-nano is not found for API version v1beta, or is not supported for countTokens.","status":"NOT_FOUND"}}`, verify.CauseModelNotFound},
	} {
		if got := verify.Classify(tc.status, []byte(tc.body)).Cause; got != tc.want {
			t.Errorf("Classify(%d, %.40q) = %s, want %s", tc.status, tc.body, got, tc.want)
		}
	}
}

// TestProbeMethods: the countTokens probe exercises the generation path
// the application calls, where listing models can pass for a key that
// does not work there.
func TestProbeMethods(t *testing.T) {
	srv := emutest.Start(t, emulator.Options{})
	srv.AddProject("p-one", 111111111111)
	seed := func(id string, k *apikeys.V2Key) secret.Key {
		t.Helper()
		_, s, err := srv.SeedKey("p-one", id, k)
		if err != nil {
			t.Fatal(err)
		}
		return secret.New(s)
	}
	sa := "sa@p-one.iam.gserviceaccount.com"
	targets := func(methods ...string) *apikeys.V2Key {
		return &apikeys.V2Key{ServiceAccountEmail: sa, Restrictions: &apikeys.V2Restrictions{
			ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com", Methods: methods}}}}
	}
	listOnly := seed("list-only", targets("google.ai.generativelanguage.v1beta.ModelService.ListModels"))
	// What an application that only generates needs: no models.list.
	genOnly := seed("gen-only", targets("google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent",
		"google.ai.generativelanguage.v1beta.GenerativeService.CountTokens"))
	standard := seed("standard", &apikeys.V2Key{})
	good := seed("good", &apikeys.V2Key{ServiceAccountEmail: sa})
	srv.RejectStandardKeysOnGeneration(true)

	base := "http://" + srv.GeminiAddr
	list := &verify.Gemini{BaseURL: base, Method: verify.ProbeListModels}
	count := &verify.Gemini{BaseURL: base, Method: verify.ProbeCountTokens}
	generate := &verify.Gemini{BaseURL: base, Method: verify.ProbeGenerateContent}
	dflt := &verify.Gemini{BaseURL: base}
	for _, tc := range []struct {
		name   string
		probe  *verify.Gemini
		key    secret.Key
		want   error // nil: works
		counts string
	}{
		{"default: list-only key blocked", dflt, listOnly, verify.ErrServiceBlocked, "gemini.CountTokens"},
		{"default: standard key rejected", dflt, standard, verify.ErrStandardKeyRejected, "gemini.CountTokens"},
		{"default: generation-only key passes", dflt, genOnly, nil, "gemini.CountTokens"},
		{"default: good key", dflt, good, nil, "gemini.CountTokens"},
		{"list: list-only key passes", list, listOnly, nil, "gemini.ListModels"},
		{"list: standard key passes", list, standard, nil, "gemini.ListModels"},
		{"list: generation-only key blocked", list, genOnly, verify.ErrServiceBlocked, "gemini.ListModels"},
		{"countTokens: list-only key blocked", count, listOnly, verify.ErrServiceBlocked, "gemini.CountTokens"},
		{"countTokens: standard key rejected", count, standard, verify.ErrStandardKeyRejected, "gemini.CountTokens"},
		{"countTokens: good key", count, good, nil, "gemini.CountTokens"},
		{"countTokens: other model", count.With(verify.ProbeCountTokens, "models/gemini-2.5-pro"), good, nil, "gemini.CountTokens"},
		{"generateContent: list-only key blocked", generate, listOnly, verify.ErrServiceBlocked, "gemini.GenerateContent"},
		{"generateContent: standard key rejected", generate, standard, verify.ErrStandardKeyRejected, "gemini.GenerateContent"},
		{"generateContent: generation-only key passes", generate, genOnly, nil, "gemini.GenerateContent"},
		{"generateContent: good key", generate, good, nil, "gemini.GenerateContent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Calls(tc.counts)
			err := tc.probe.Probe(context.Background(), tc.key)
			switch {
			case tc.want == nil && err != nil:
				t.Errorf("Probe = %v, want nil", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Errorf("Probe = %v, want %v", err, tc.want)
			}
			if n := srv.Calls(tc.counts) - before; n != 1 {
				t.Errorf("%s calls = %d, want 1", tc.counts, n)
			}
		})
	}
	for _, p := range []*verify.Gemini{count, generate} {
		var pe *verify.ProbeError
		err := p.With(p.Method, "no-such-model").Probe(context.Background(), good)
		if !errors.As(err, &pe) || pe.HTTPStatus != 404 || pe.Temporary() || !errors.Is(err, verify.ErrModelNotFound) {
			t.Errorf("%s with an unknown model = %v, want a definite 404 ErrModelNotFound", p.Method, err)
		}
		if pe != nil && !strings.Contains(pe.Hint(), "model") {
			t.Errorf("%s with an unknown model: hint %q does not say the model is at fault", p.Method, pe.Hint())
		}
	}
}

// TestProbeDescribe: plans and reports name the call each probe makes and
// what it costs.
func TestProbeDescribe(t *testing.T) {
	for _, tc := range []struct {
		probe *verify.Gemini
		want  string
	}{
		{&verify.Gemini{}, "countTokens on gemini-3.5-flash-lite (free)"},
		{&verify.Gemini{Method: verify.ProbeGenerateContent, Model: "models/gemini-3.8-flash"}, "generateContent on gemini-3.8-flash (billed, one output token)"},
		{&verify.Gemini{Method: verify.ProbeListModels, Model: "ignored"}, "listModels (does not exercise generation)"},
	} {
		if got := tc.probe.Describe(); got != tc.want {
			t.Errorf("%+v.Describe() = %q, want %q", *tc.probe, got, tc.want)
		}
	}
}

// TestProbeKeyOnlyInHeader: every probe method sends the key in the
// x-goog-api-key header and nowhere in the URL, and the generation probes
// send the smallest request.
func TestProbeKeyOnlyInHeader(t *testing.T) {
	const key = "AIzaSyTESTKEYstringNotARealOne_0123456789"
	type seen struct{ url, header, body string }
	got := make(chan seen, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.URL.String(), r.Header.Get("x-goog-api-key"), string(b)}
		w.Write([]byte(`{}`))
	}))
	defer ts.Close()
	for _, tc := range []struct {
		method        verify.ProbeMethod
		wantURL, body string
	}{
		{verify.ProbeCountTokens, "/v1beta/models/gemini-3.5-flash-lite:countTokens", `{"contents":[{"parts":[{"text":"ping"}]}]}`},
		{verify.ProbeGenerateContent, "/v1beta/models/gemini-3.5-flash-lite:generateContent", `{"contents":[{"parts":[{"text":"ping"}]}],"generationConfig":{"maxOutputTokens":1}}`},
		{verify.ProbeListModels, "/v1beta/models?pageSize=1", ""},
	} {
		if err := (&verify.Gemini{BaseURL: ts.URL, Method: tc.method}).Probe(context.Background(), secret.New(key)); err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		s := <-got
		if s.url != tc.wantURL || s.header != key || s.body != tc.body {
			t.Errorf("%s sent URL %q, header %v, body %q; want URL %q, the key in the header, body %q",
				tc.method, s.url, s.header == key, s.body, tc.wantURL, tc.body)
		}
	}
}
