// Package verify is the live verification of API keys: it proves that a key
// works against the live Gemini API, and when it does not, classifies
// Google's answer into a cause (ProbeError, Cause). That is all "verify"
// means here; the diagnosis of a key that does not work (its source,
// junk in the value, its metadata) is internal/doctor, which uses this
// package's probe and causes.
//
// The probe exercises what applications call: by default
// POST /v1beta/models/{model}:countTokens, which runs on the generation path
// (the same apiTargets method checks and standard-key policy as
// generateContent) and is free (no charge and no generation quota, per
// Firebase's "Count tokens" guide and Google's answer in
// discuss.ai.google.dev/t/189068; still subject to per-project RPM limits). ProbeGenerateContent makes the application's
// own call with the smallest request (a one-word prompt, at most one output
// token), a tiny billed call; ProbeListModels lists one model, the cheapest
// call, which can pass for a key that fails where the application calls
// (apiTargets limited to generation methods, a standard key refused only on
// generation). The key travels in the x-goog-api-key header, never in the
// URL, where proxies and access logs would keep it. Failures are classified
// by the google.rpc.ErrorInfo reason of Google's error body into causes that
// a person can act on, and into temporary ones that the propagation of a new
// key (1–10 minutes) can explain.
package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/keyrotate/keyrotate/internal/secret"
)

// DefaultBaseURL is the Gemini API's endpoint.
const DefaultBaseURL = "https://generativelanguage.googleapis.com"

// EmulatorHostEnv names the variable that points the probe at an emulator
// (plain HTTP, host:port).
const EmulatorHostEnv = "GEMINI_EMULATOR_HOST"

// ProbeMethod is the Gemini API call a probe makes.
type ProbeMethod string

// The probe methods.
const (
	// ProbeCountTokens counts the tokens of a one-word prompt on Model:
	// POST /v1beta/models/{model}:countTokens, the generation path, free.
	// The default.
	ProbeCountTokens ProbeMethod = "countTokens"
	// ProbeGenerateContent generates at most one token from a one-word
	// prompt on Model: POST /v1beta/models/{model}:generateContent, the
	// application's own call, billed (a few tokens).
	ProbeGenerateContent ProbeMethod = "generateContent"
	// ProbeListModels lists one model: GET /v1beta/models?pageSize=1. The
	// cheapest call, but not on the generation path.
	ProbeListModels ProbeMethod = "listModels"
)

// ProbeMethods are the probe methods, the default first.
var ProbeMethods = []ProbeMethod{ProbeCountTokens, ProbeGenerateContent, ProbeListModels}

// DefaultProbeModel is the model the generation probes name when Model is
// empty: the current stable Flash-Lite, the cheapest for generateContent.
const DefaultProbeModel = "gemini-3.5-flash-lite"

// Gemini probes keys against the Gemini API.
type Gemini struct {
	// BaseURL is the API's scheme and host, without a trailing slash.
	BaseURL string
	// Client sends the requests; nil means http.DefaultClient. Each probe
	// is bounded by ProbeTimeout whatever the client's own Timeout, which
	// is best left 0 (see ProbeTimeout).
	Client *http.Client
	// Method is the call to make; empty means ProbeCountTokens.
	Method ProbeMethod
	// Model is the model the generation probes name
	// ("gemini-3.5-flash-lite" or "models/gemini-3.5-flash-lite"); empty
	// means DefaultProbeModel. ProbeListModels ignores it.
	Model string
}

// With returns a copy of g that makes the call method on model (empty:
// the defaults).
func (g *Gemini) With(method ProbeMethod, model string) *Gemini {
	c := *g
	c.Method, c.Model = method, model
	return &c
}

// method is g's call, the default filled in.
func (g *Gemini) method() ProbeMethod {
	if g.Method == "" {
		return ProbeCountTokens
	}
	return g.Method
}

// model is g's model id without the models/ prefix, the default filled in.
func (g *Gemini) model() string {
	if m := strings.TrimPrefix(g.Model, "models/"); m != "" {
		return m
	}
	return DefaultProbeModel
}

// Describe says which call the probe makes and what it costs, for plans
// and reports: "countTokens on gemini-3.5-flash-lite (free)".
func (g *Gemini) Describe() string {
	switch m := g.method(); m {
	case ProbeCountTokens:
		return "countTokens on " + g.model() + " (free)"
	case ProbeGenerateContent:
		return "generateContent on " + g.model() + " (billed, one output token)"
	case ProbeListModels:
		return "listModels (does not exercise generation)"
	default:
		return string(m)
	}
}

// NewGemini returns a probe for the real API, or for the emulator named by
// GEMINI_EMULATOR_HOST when that is set.
func NewGemini() *Gemini {
	base := DefaultBaseURL
	if h := os.Getenv(EmulatorHostEnv); h != "" {
		base = "http://" + h
	}
	return &Gemini{BaseURL: base}
}

// ProbeTimeout bounds each probe, its answer and its body. It is applied
// through the request's context rather than http.Client.Timeout: a
// client's Timeout costs two goroutines for every call in flight
// (net/http's setRequestCancel and the transport's wait for the legacy
// Request.Cancel), which a context deadline does not, and a fleet run has
// thousands of probes in flight.
const ProbeTimeout = 30 * time.Second

// Probe makes g's call with key. It returns nil when the key works, and
// otherwise a *ProbeError.
func (g *Gemini) Probe(ctx context.Context, key secret.Key) error {
	client := g.Client
	if client == nil {
		client = http.DefaultClient
	}
	callCtx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	req, err := g.request(callCtx)
	if err != nil {
		return fmt.Errorf("build Gemini probe: %w", err)
	}
	req.Header.Set("x-goog-api-key", key.Reveal())
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The error text of net/http names the URL, never a header.
		msg := err.Error()
		if callCtx.Err() != nil {
			msg = "no answer within " + ProbeTimeout.String() + ": " + msg
		}
		return &ProbeError{Cause: CauseNetwork, Message: msg}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return &ProbeError{Cause: CauseNetwork, HTTPStatus: resp.StatusCode, Message: "read response: " + err.Error()}
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	pe := Classify(resp.StatusCode, body)
	pe.Message = redact(pe.Message, key)
	return pe
}

// request builds the probe's request, without the key.
func (g *Gemini) request(ctx context.Context) (*http.Request, error) {
	var body string
	switch g.method() {
	case ProbeListModels:
		return http.NewRequestWithContext(ctx, http.MethodGet, g.BaseURL+"/v1beta/models?pageSize=1", nil)
	case ProbeCountTokens:
		body = `{"contents":[{"parts":[{"text":"ping"}]}]}`
	case ProbeGenerateContent:
		body = `{"contents":[{"parts":[{"text":"ping"}]}],"generationConfig":{"maxOutputTokens":1}}`
	default:
		return nil, fmt.Errorf("unknown probe method %q (want %s, %s or %s)", g.Method, ProbeCountTokens, ProbeGenerateContent, ProbeListModels)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		g.BaseURL+"/v1beta/models/"+url.PathEscape(g.model())+":"+string(g.method()), strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

func redact(s string, key secret.Key) string {
	if k := key.Reveal(); k != "" && strings.Contains(s, k) {
		s = strings.ReplaceAll(s, k, key.Fingerprint())
	}
	return s
}

// Cause is what a failed probe means.
type Cause int

// The causes, from Google's error reasons.
const (
	CauseUnknown Cause = iota
	// CauseInvalid: 400 API_KEY_INVALID — invalid, deleted, expired, or a
	// new key that has not propagated yet.
	CauseInvalid
	// CauseStandardKeyRejected: 401 ACCESS_TOKEN_TYPE_UNSUPPORTED — a
	// standard key where Gemini requires an auth key (bound to a service
	// account).
	CauseStandardKeyRejected
	// CauseServiceBlocked: 403 API_KEY_SERVICE_BLOCKED — the key's API
	// restrictions exclude generativelanguage.googleapis.com.
	CauseServiceBlocked
	// CauseServiceDisabled: 403 SERVICE_DISABLED — the Gemini API is not
	// enabled in the key's project.
	CauseServiceDisabled
	// CauseSuspended: 403 CONSUMER_SUSPENDED — suspended, typically as leaked.
	CauseSuspended
	// CauseClientBlocked: 403 API_KEY_*_BLOCKED — a referrer, IP or app
	// restriction excludes this caller.
	CauseClientBlocked
	// CauseThrottled: 429 — the key works, it is rate limited.
	CauseThrottled
	// CauseServer: 5xx from Google.
	CauseServer
	// CauseNetwork: no answer.
	CauseNetwork
	// CauseUnauthenticated: another 401 or 403 (for example no key at all).
	CauseUnauthenticated
	// CauseLeaked: 403 PERMISSION_DENIED "Your API key was reported as
	// leaked. Please use another API key." — Google blocks the key as
	// leaked. The answer carries no ErrorInfo, so only its message tells.
	CauseLeaked
	// CauseModelNotFound: 404 NOT_FOUND — the API does not serve the
	// probe's model for the probe's call (retired, misspelled, or not a
	// generation model). The key is not at fault; the probe proved nothing.
	CauseModelNotFound
)

var causeNames = map[Cause]string{
	CauseUnknown:             "unknown",
	CauseInvalid:             "invalid",
	CauseStandardKeyRejected: "standard-key-rejected",
	CauseServiceBlocked:      "service-blocked",
	CauseServiceDisabled:     "service-disabled",
	CauseSuspended:           "suspended",
	CauseClientBlocked:       "client-blocked",
	CauseThrottled:           "throttled",
	CauseServer:              "server-error",
	CauseNetwork:             "network",
	CauseUnauthenticated:     "unauthenticated",
	CauseLeaked:              "leaked",
	CauseModelNotFound:       "model-not-found",
}

func (c Cause) String() string { return causeNames[c] }

// MarshalText encodes the cause's name.
func (c Cause) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// ProbeError is a failed probe.
type ProbeError struct {
	Cause      Cause
	HTTPStatus int
	Status     string // google.rpc status name, e.g. "INVALID_ARGUMENT"
	Reason     string // google.rpc.ErrorInfo reason, e.g. "API_KEY_INVALID"
	Message    string // Google's message, with any key string redacted
	Metadata   map[string]string

	sentinel bool
}

func (e *ProbeError) Error() string {
	var b strings.Builder
	b.WriteString("gemini probe: ")
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, "%d ", e.HTTPStatus)
	}
	if e.Reason != "" {
		b.WriteString(e.Reason)
	} else if e.Status != "" {
		b.WriteString(e.Status)
	} else {
		b.WriteString(e.Cause.String())
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Temporary reports whether propagation of a new key, throttling or a
// passing outage can explain the failure, so that a retry may succeed.
func (e *ProbeError) Temporary() bool {
	switch e.Cause {
	case CauseInvalid, CauseStandardKeyRejected, CauseThrottled, CauseServer, CauseNetwork:
		return true
	}
	return false
}

// Rejected reports whether the API rejected the key itself (invalid,
// deleted, expired): what a revoked key gets.
func (e *ProbeError) Rejected() bool { return e.Cause == CauseInvalid }

// Leaked reports whether Google reported the key as leaked and blocks it.
func (e *ProbeError) Leaked() bool { return e.Cause == CauseLeaked }

// Throttled reports whether the key works but is rate limited.
func (e *ProbeError) Throttled() bool { return e.Cause == CauseThrottled }

// Hint says what to do about the failure.
func (e *ProbeError) Hint() string {
	switch e.Cause {
	case CauseInvalid:
		return "the key is invalid, deleted or expired — or new and not yet propagated (allow up to 10 minutes)"
	case CauseStandardKeyRejected:
		return "Gemini requires an auth key bound to a service account: set service_account on the slot and rotate to migrate"
	case CauseServiceBlocked:
		return "the key's API restrictions exclude generativelanguage.googleapis.com: add it to the key's API targets"
	case CauseServiceDisabled:
		if u := e.Metadata["activationUrl"]; u != "" {
			return "enable the Generative Language API in the key's project: " + u
		}
		return "enable the Generative Language API (generativelanguage.googleapis.com) in the key's project"
	case CauseSuspended:
		// A program that replaces leaked keys names its command in place
		// of this (cmd/keyrotate: rotate --leaked).
		return "the key was suspended, typically because it leaked: replace it now with a new key in every place that uses it, and delete it"
	case CauseLeaked:
		return "Google reported the key as leaked and blocks it: replace it with a new key in every place that uses it, delete it, and find where it leaked"
	case CauseClientBlocked:
		return "the key's referrer, IP or app restrictions exclude this caller"
	case CauseModelNotFound:
		return "the Gemini API does not serve the probe's model for this call (retired, misspelled, or not a generation model): " +
			"name a current model for the probe (the API's model list shows them)"
	case CauseThrottled:
		return "the key works but is rate limited; retry later"
	case CauseServer, CauseNetwork:
		return "the Gemini API could not be reached or failed; retry later"
	}
	return ""
}

// Is lets errors.Is match a ProbeError against the sentinels below, which
// stand for a cause.
func (e *ProbeError) Is(target error) bool {
	t, ok := target.(*ProbeError)
	return ok && t.sentinel && t.Cause == e.Cause
}

// Sentinels for errors.Is(err, verify.ErrInvalid) and so on.
var (
	ErrInvalid             error = &ProbeError{Cause: CauseInvalid, sentinel: true}
	ErrStandardKeyRejected error = &ProbeError{Cause: CauseStandardKeyRejected, sentinel: true}
	ErrServiceBlocked      error = &ProbeError{Cause: CauseServiceBlocked, sentinel: true}
	ErrServiceDisabled     error = &ProbeError{Cause: CauseServiceDisabled, sentinel: true}
	ErrSuspended           error = &ProbeError{Cause: CauseSuspended, sentinel: true}
	ErrClientBlocked       error = &ProbeError{Cause: CauseClientBlocked, sentinel: true}
	ErrThrottled           error = &ProbeError{Cause: CauseThrottled, sentinel: true}
	ErrUnauthenticated     error = &ProbeError{Cause: CauseUnauthenticated, sentinel: true}
	ErrLeaked              error = &ProbeError{Cause: CauseLeaked, sentinel: true}
	ErrModelNotFound       error = &ProbeError{Cause: CauseModelNotFound, sentinel: true}
	ErrServer              error = &ProbeError{Cause: CauseServer, sentinel: true}
)

type errorBody struct {
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
}

// Classify turns an HTTP status and Google's JSON error body into a
// ProbeError.
func Classify(httpStatus int, body []byte) *ProbeError {
	pe := &ProbeError{HTTPStatus: httpStatus}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil {
		pe.Status = eb.Error.Status
		pe.Message = eb.Error.Message
		for _, d := range eb.Error.Details {
			if strings.HasSuffix(d.Type, "google.rpc.ErrorInfo") {
				pe.Reason = d.Reason
				pe.Metadata = d.Metadata
				break
			}
		}
	}
	pe.Cause = classify(httpStatus, pe.Reason)
	if pe.Reason == "" && httpStatus == http.StatusForbidden && isLeakedMessage(pe.Message) {
		pe.Cause = CauseLeaked
	}
	return pe
}

// isLeakedMessage reports whether msg is the Gemini API's answer for a key
// reported as leaked: 403 PERMISSION_DENIED with no details, only
// "Your API key was reported as leaked. Please use another API key." (as
// quoted in https://github.com/continuedev/continue/issues/11541 and
// https://github.com/google-gemini-php/laravel/issues/47). It is consulted
// only when the body has no ErrorInfo reason, which always decides first.
func isLeakedMessage(msg string) bool {
	return strings.Contains(strings.ToLower(msg), "reported as leaked")
}

func classify(httpStatus int, reason string) Cause {
	switch reason {
	case "API_KEY_INVALID", "API_KEY_EXPIRED":
		return CauseInvalid
	case "ACCESS_TOKEN_TYPE_UNSUPPORTED":
		return CauseStandardKeyRejected
	case "API_KEY_SERVICE_BLOCKED":
		return CauseServiceBlocked
	case "SERVICE_DISABLED":
		return CauseServiceDisabled
	case "CONSUMER_SUSPENDED":
		return CauseSuspended
	case "RATE_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED":
		return CauseThrottled
	}
	if strings.HasPrefix(reason, "API_KEY_") && strings.HasSuffix(reason, "_BLOCKED") {
		return CauseClientBlocked
	}
	switch {
	case httpStatus == http.StatusTooManyRequests:
		return CauseThrottled
	case httpStatus == http.StatusNotFound:
		return CauseModelNotFound
	case httpStatus >= 500:
		return CauseServer
	case httpStatus == http.StatusBadRequest && reason == "":
		return CauseUnknown
	case httpStatus == http.StatusUnauthorized || httpStatus == http.StatusForbidden:
		return CauseUnauthenticated
	}
	return CauseUnknown
}
