package verify_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/emulator"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/secret"
	"github.com/keyrotate/keyrotate/verify"
)

// TestProbeClassification probes keys in every state the Gemini API can
// report against the emulator and checks the cause, whether it is
// temporary, and that the key string appears in no error.
func TestProbeClassification(t *testing.T) {
	clock := emulator.NewFakeClock(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
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

	probe := &verify.Gemini{BaseURL: "http://" + srv.GeminiAddr}
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
		{"throttled", good, func() { srv.FailNext("gemini.ListModels", codes.ResourceExhausted, "") }, verify.ErrThrottled, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
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

// TestProbePropagation: a new key fails with API_KEY_INVALID (temporary)
// until its propagation delay has passed.
func TestProbePropagation(t *testing.T) {
	clock := emulator.NewFakeClock(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
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
	listOnly := seed("list-only", &apikeys.V2Key{ServiceAccountEmail: sa, Restrictions: &apikeys.V2Restrictions{
		ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com",
			Methods: []string{"google.ai.generativelanguage.v1beta.ModelService.ListModels"}}}}})
	standard := seed("standard", &apikeys.V2Key{})
	good := seed("good", &apikeys.V2Key{ServiceAccountEmail: sa})
	srv.RejectStandardKeysOnGeneration(true)

	base := "http://" + srv.GeminiAddr
	for _, tc := range []struct {
		name   string
		probe  *verify.Gemini
		key    secret.Key
		want   error // nil: works
		counts string
	}{
		{"list: list-only key passes", &verify.Gemini{BaseURL: base}, listOnly, nil, "gemini.ListModels"},
		{"countTokens: list-only key blocked", &verify.Gemini{BaseURL: base, Method: verify.ProbeCountTokens}, listOnly, verify.ErrServiceBlocked, "gemini.CountTokens"},
		{"list: standard key passes", &verify.Gemini{BaseURL: base}, standard, nil, "gemini.ListModels"},
		{"countTokens: standard key rejected", &verify.Gemini{BaseURL: base, Method: verify.ProbeCountTokens}, standard, verify.ErrStandardKeyRejected, "gemini.CountTokens"},
		{"countTokens: good key", &verify.Gemini{BaseURL: base, Method: verify.ProbeCountTokens}, good, nil, "gemini.CountTokens"},
		{"countTokens: other model", &verify.Gemini{BaseURL: base, Method: verify.ProbeCountTokens, Model: "gemini-2.5-pro"}, good, nil, "gemini.CountTokens"},
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
	var pe *verify.ProbeError
	err := (&verify.Gemini{BaseURL: base, Method: verify.ProbeCountTokens, Model: "no-such-model"}).Probe(context.Background(), good)
	if !errors.As(err, &pe) || pe.HTTPStatus != 404 || pe.Temporary() {
		t.Errorf("Probe with an unknown model = %v, want a definite 404", err)
	}
}
