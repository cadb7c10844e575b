package emulator

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	apikeys "google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"
)

// The Gemini API's model list, GET /v1beta/models, and the generation path,
// POST /v1beta/models/{model}:countTokens and :generateContent (request
// and response shapes from ai.google.dev/api/tokens and
// ai.google.dev/api/generate-content). Each call is checked against the
// key's apiTargets by its own RPC name (ModelService.ListModels,
// GenerativeService.CountTokens, GenerativeService.GenerateContent), the
// names Google's 403 quotes ("Requests to this API
// generativelanguage.googleapis.com method
// google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are
// blocked.", google-gemini/deprecated-generative-ai-dart#219).
// Whether countTokens refuses a standard key exactly as generateContent
// does is not documented; RejectStandardKeysOnGeneration takes the
// strictest reading (both refuse it), so that countTokens can stand in for
// the application's call.
// The key is read only from the x-goog-api-key header:
// keyrotate never puts a key in a URL, so a ?key= parameter is ignored and
// the call is answered as one without a key.
//
// Rejections follow Google's front end, by google.rpc.ErrorInfo reason,
// checked in this order:
//
//	no key                                403 PERMISSION_DENIED (no details)
//	unknown key                           400 API_KEY_INVALID "API key not valid."
//	key created, not yet propagated       400 API_KEY_INVALID "API Key not found."
//	soft-deleted key                      400 API_KEY_INVALID "API key expired."
//	key reported as leaked (MarkLeaked)   403 PERMISSION_DENIED (no details)
//	suspended key (SuspendKey)            403 CONSUMER_SUSPENDED
//	referrer / IP / Android / iOS         403 API_KEY_*_BLOCKED
//	apiTargets exclude the service        403 API_KEY_SERVICE_BLOCKED
//	API disabled in the project           403 SERVICE_DISABLED
//	standard key under RejectStandardKeys 401 ACCESS_TOKEN_TYPE_UNSUPPORTED
//
// An injected RESOURCE_EXHAUSTED fault is answered with the body the Gemini
// API sends when a quota runs out: 429 with QuotaFailure, Help and
// RetryInfo details (and no ErrorInfo, as the real one has none).
//
// Some real messages quote the key string itself (CONSUMER_SUSPENDED);
// the emulator does too, so tests catch a client that echoes them.
//
// A key Google reported as leaked is answered with nothing but a message:
//
//	{"error":{"code":403,"message":"Your API key was reported as leaked. Please use another API key.","status":"PERMISSION_DENIED"}}
//
// That body is quoted verbatim in public threads, for example
// https://github.com/continuedev/continue/issues/11541 (2026-03) and
// https://github.com/continuedev/continue/issues/10513 (2026-02), and the
// message alone in https://github.com/google-gemini-php/laravel/issues/47
// and https://github.com/googleapis/python-genai/issues/1764. None shows an
// ErrorInfo, so a client can tell it only by the message. Where it ranks
// among the other checks is not documented: the emulator answers it for
// any key the API still knows (not deleted, propagated) before every other
// check, the strictest reading (a leaked key that is also suspended or
// restricted gets the leak answer).

const (
	geminiService     = "generativelanguage.googleapis.com"
	geminiListMethod  = "google.ai.generativelanguage.v1beta.ModelService.ListModels"
	geminiCountMethod = "google.ai.generativelanguage.v1beta.GenerativeService.CountTokens"
	// geminiGenerateMethod is the application's own call, billed.
	geminiGenerateMethod = "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"
	// Google's defaults for ListModels: 50 per page, at most 1000.
	geminiDefaultPageSize = 50
	geminiMaxPageSize     = 1000
)

func (s *Server) geminiHandler() http.Handler {
	return s.withConsumerAdmin(s.recordingUsage(http.HandlerFunc(s.serveGemini)))
}

func (s *Server) serveGemini(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == "/v1beta/models" && r.Method == http.MethodGet:
		s.serveListModels(w, r)
	case strings.HasPrefix(p, "/v1beta/models/") && strings.HasSuffix(p, ":countTokens") && r.Method == http.MethodPost:
		s.serveGeneration(w, r, strings.TrimSuffix(strings.TrimPrefix(p, "/v1beta/"), ":countTokens"), countTokensCall)
	case strings.HasPrefix(p, "/v1beta/models/") && strings.HasSuffix(p, ":generateContent") && r.Method == http.MethodPost:
		s.serveGeneration(w, r, strings.TrimSuffix(strings.TrimPrefix(p, "/v1beta/"), ":generateContent"), generateContentCall)
	default:
		methodNotFound(w)
	}
}

// generation names the two calls on the generation path the emulator
// serves: the fault/count name, the RPC name apiTargets list, and the
// model method that supportedGenerationMethods must name.
type generation struct {
	call, rpc, verb string
}

var (
	countTokensCall     = generation{"gemini.CountTokens", geminiCountMethod, "countTokens"}
	generateContentCall = generation{"gemini.GenerateContent", geminiGenerateMethod, "generateContent"}
)

// serveGeneration is POST /v1beta/models/{model}:countTokens (free) or
// :generateContent (billed): both are checked against the key the same way
// (apiTargets per method, the standard-key policy for generation), then the
// model must exist and support the call. The order (key first, then body,
// then model) is the strictest plausible reading: Google documents none.
func (s *Server) serveGeneration(w http.ResponseWriter, r *http.Request, model string, g generation) {
	if err := s.enter(r.Context(), g.call); err != nil {
		writeError(w, geminiFault(err))
		return
	}
	if err := s.authorizeGemini(r, g.rpc); err != nil {
		writeError(w, err)
		return
	}
	var req generateRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, newError(codes.InvalidArgument, "Invalid JSON payload received. %v", err))
		return
	}
	// contents is REQUIRED in GenerateContentRequest; countTokens takes
	// contents or a generateContentRequest.
	if len(req.Contents) == 0 && (g.verb == "generateContent" || req.GenerateContentRequest == nil) {
		writeError(w, newError(codes.InvalidArgument, "* GenerateContentRequest.contents: contents is not specified"))
		return
	}
	if c := req.GenerationConfig; c != nil && c.MaxOutputTokens != nil && *c.MaxOutputTokens < 1 {
		writeError(w, newError(codes.InvalidArgument, "* GenerateContentRequest.generation_config.max_output_tokens: must be positive"))
		return
	}
	m := findModel(model)
	if m == nil || !slices.Contains(m.SupportedGenerationMethods, g.verb) {
		writeError(w, newError(codes.NotFound, "%s is not found for API version v1beta, or is not supported for %s. Call "+
			"ListModels to see the list of available models and their supported methods.", model, g.verb))
		return
	}
	prompt := 0
	for _, c := range req.Contents {
		for _, part := range c.Parts {
			prompt += len(strings.Fields(part.Text))
		}
	}
	if g.verb == "countTokens" {
		writeJSON(w, http.StatusOK, map[string]int{"totalTokens": prompt})
		return
	}
	// The answer to a request capped at maxOutputTokens: one candidate,
	// cut short (finishReason MAX_TOKENS when the cap is reached), as in the
	// GenerateContentResponse of ai.google.dev/api/generate-content.
	out, finish := 8, "STOP"
	if c := req.GenerationConfig; c != nil && c.MaxOutputTokens != nil && *c.MaxOutputTokens < out {
		out, finish = *c.MaxOutputTokens, "MAX_TOKENS"
	}
	s.mu.Lock()
	s.generated++
	n := s.generated
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, generateResponse{
		Candidates: []candidate{{
			Content:      content{Parts: []part{{Text: strings.TrimSpace(strings.Repeat("pong ", out))}}, Role: "model"},
			FinishReason: finish,
			Index:        0,
		}},
		UsageMetadata: usageMetadata{PromptTokenCount: prompt, CandidatesTokenCount: out, TotalTokenCount: prompt + out},
		ModelVersion:  strings.TrimPrefix(m.Name, "models/"),
		ResponseID:    fmt.Sprintf("emulator-%d", n),
	})
}

func findModel(name string) *geminiModel {
	for i := range geminiModels {
		if geminiModels[i].Name == name {
			return &geminiModels[i]
		}
	}
	return nil
}

// generateRequest is the part of GenerateContentRequest (and of
// CountTokensRequest, which adds generateContentRequest) the emulator
// reads; other fields of the real request are refused as unknown, so that
// a probe sends only what it means to.
type generateRequest struct {
	Contents               []content         `json:"contents"`
	GenerationConfig       *generationConfig `json:"generationConfig,omitempty"`
	GenerateContentRequest *json.RawMessage  `json:"generateContentRequest,omitempty"`
}

type generationConfig struct {
	MaxOutputTokens *int `json:"maxOutputTokens,omitempty"`
}

type content struct {
	Parts []part `json:"parts"`
	Role  string `json:"role,omitempty"`
}

type part struct {
	Text string `json:"text"`
}

type generateResponse struct {
	Candidates    []candidate   `json:"candidates"`
	UsageMetadata usageMetadata `json:"usageMetadata"`
	ModelVersion  string        `json:"modelVersion"`
	ResponseID    string        `json:"responseId"`
}

type candidate struct {
	Content      content `json:"content"`
	FinishReason string  `json:"finishReason"`
	Index        int     `json:"index"`
}

type usageMetadata struct {
	PromptTokenCount     int `json:"promptTokenCount"`
	CandidatesTokenCount int `json:"candidatesTokenCount"`
	TotalTokenCount      int `json:"totalTokenCount"`
}

func (s *Server) serveListModels(w http.ResponseWriter, r *http.Request) {
	if err := s.enter(r.Context(), "gemini.ListModels"); err != nil {
		writeError(w, geminiFault(err))
		return
	}
	if err := s.authorizeGemini(r, geminiListMethod); err != nil {
		writeError(w, err)
		return
	}
	resp, err := listModels(r)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// geminiFault renders an injected fault; RESOURCE_EXHAUSTED as the Gemini
// API's quota error.
func geminiFault(err error) *apiError {
	ae := asAPIError(err)
	if ae.code != codes.ResourceExhausted || len(ae.details) > 0 {
		return ae
	}
	return &apiError{
		code: codes.ResourceExhausted,
		message: "You exceeded your current quota, please check your plan and billing details. For more information on " +
			"this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/rate-limit.",
		details: []any{
			quotaFailure{Type: typeQuotaFailure, Violations: []quotaViolation{{
				QuotaMetric:     "generativelanguage.googleapis.com/generate_content_free_tier_requests",
				QuotaID:         "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
				QuotaDimensions: map[string]string{"location": "global", "model": "gemini-2.5-flash"},
				QuotaValue:      "10",
			}}},
			help{Type: typeHelp, Links: []helpLink{{Description: "Learn more about Gemini API quotas", URL: "https://ai.google.dev/gemini-api/docs/rate-limits"}}},
			newRetryInfo(30 * time.Second),
		},
	}
}

// authorizeGemini decides whether the request's key may call method (the
// full RPC name, as apiTargets list it).
func (s *Server) authorizeGemini(r *http.Request, method string) error {
	ks := r.Header.Get("X-Goog-Api-Key")
	if ks == "" {
		return newError(codes.PermissionDenied, "Method doesn't allow unregistered callers (callers without established "+
			"identity). Please use API Key or other form of API consumer identity to call this API.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked()
	k := s.keys.byString[ks]
	if k == nil {
		return keyInvalid("API key not valid. Please pass a valid API key.")
	}
	if err := s.keyProblemLocked(k, r, method); err != nil {
		return err
	}
	k.lastUsed = s.Now()
	return nil
}

// RejectStandardKeysOnGeneration makes the Gemini API answer standard keys
// with 401 ACCESS_TOKEN_TYPE_UNSUPPORTED on the generation path
// (countTokens, generateContent) while it still lists models for them: the case in which a
// probe that only lists models passes and the application fails.
func (s *Server) RejectStandardKeysOnGeneration(reject bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.standardKeysRejectedGen = reject
}

// leakedMessage is the Gemini API's whole answer for a key reported as
// leaked (see the package comment above for the sources).
const leakedMessage = "Your API key was reported as leaked. Please use another API key."

// MarkLeaked marks the key named name (projects/P/locations/global/keys/K,
// P the id or number) as reported leaked: the Gemini API answers it with
// 403 PERMISSION_DENIED and no details. SuspendKey models the other answer
// Google gives leaked keys, CONSUMER_SUSPENDED with an ErrorInfo.
func (s *Server) MarkLeaked(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, err := s.resolveKey(name); err == nil {
		k.leaked = true
	}
}

// consumerName is a project as Google's error bodies name the consumer.
func consumerName(number int64) string { return "projects/" + strconv.FormatInt(number, 10) }

func keyInvalid(msg string) *apiError {
	return newError(codes.InvalidArgument, "%s", msg).
		withInfo("API_KEY_INVALID", "googleapis.com", map[string]string{"service": geminiService})
}

// keyProblemLocked returns the error the Gemini API answers k with for a
// call of method, or nil. With r nil, application restrictions are not
// checked.
func (s *Server) keyProblemLocked(k *apiKey, r *http.Request, method string) *apiError {
	now := s.Now()
	if k.deleted() {
		return keyInvalid("API key expired. Please renew the API key.")
	}
	if now.Before(k.validFrom) {
		return keyInvalid("API Key not found. Please pass a valid API key.")
	}
	if k.leaked {
		return newError(codes.PermissionDenied, "%s", leakedMessage)
	}
	// The error bodies name the key's project; built only for them, as
	// nearly every call is answered without one.
	consumer := func() string { return consumerName(k.project.number) }
	if k.suspended {
		return newError(codes.PermissionDenied, "Permission denied: Consumer 'api_key:%s' has been suspended.", k.keyString).
			withInfo("CONSUMER_SUSPENDED", "googleapis.com", map[string]string{
				"consumer":      consumer(),
				"service":       geminiService,
				"containerInfo": "api_key:" + k.keyString,
			})
	}
	if r != nil {
		if err := applicationBlocked(k.restrictions, r, k.project.number); err != nil {
			return err
		}
	}
	if !targetAllowed(k.restrictions, geminiService, method) {
		return newError(codes.PermissionDenied, "Requests to this API %s method %s are blocked.", geminiService, method).
			withInfo("API_KEY_SERVICE_BLOCKED", "googleapis.com", map[string]string{
				"consumer":   consumer(),
				"service":    geminiService,
				"apiName":    geminiService,
				"methodName": method,
			})
	}
	if k.project.disabled[geminiService] {
		n := strconv.FormatInt(k.project.number, 10)
		url := "https://console.developers.google.com/apis/api/" + geminiService + "/overview?project=" + n
		return newError(codes.PermissionDenied, "Generative Language API has not been used in project %s before or it is "+
			"disabled. Enable it by visiting %s then retry. If you enabled this API recently, wait a few minutes for the "+
			"action to propagate to our systems and retry.", n, url).
			withInfo("SERVICE_DISABLED", "googleapis.com", map[string]string{
				"activationUrl": url,
				"consumer":      consumer(),
				"containerInfo": n,
				"service":       geminiService,
				"serviceTitle":  "Generative Language API",
			}).
			withDetail(help{Type: typeHelp, Links: []helpLink{{Description: "Google developers console API activation", URL: url}}})
	}
	if (s.standardKeysRejected || s.standardKeysRejectedGen && method != geminiListMethod) && k.serviceAccountEmail == "" {
		return newError(codes.Unauthenticated, "Request had invalid authentication credentials. Expected OAuth 2 access "+
			"token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.").
			withInfo("ACCESS_TOKEN_TYPE_UNSUPPORTED", "googleapis.com", map[string]string{
				"method":  method,
				"service": geminiService,
			})
	}
	return nil
}

// targetAllowed reports whether apiTargets (if any) let the key call method
// of service.
func targetAllowed(rs *apikeys.V2Restrictions, service, method string) bool {
	if rs == nil || len(rs.ApiTargets) == 0 {
		return true
	}
	for _, t := range rs.ApiTargets {
		if t == nil || t.Service != service {
			continue
		}
		if len(t.Methods) == 0 {
			return true
		}
		for _, m := range t.Methods {
			if globMatch(m, method) {
				return true
			}
		}
	}
	return false
}

// applicationBlocked checks the key's application restrictions against the
// request.
func applicationBlocked(rs *apikeys.V2Restrictions, r *http.Request, number int64) *apiError {
	if rs == nil {
		return nil
	}
	orEmpty := func(v string) string {
		if v == "" {
			return "<empty>"
		}
		return v
	}
	if b := rs.BrowserKeyRestrictions; b != nil && len(b.AllowedReferrers) > 0 {
		ref := r.Header.Get("Referer")
		if !referrerAllowed(b.AllowedReferrers, ref) {
			return newError(codes.PermissionDenied, "Requests from referer %s are blocked.", orEmpty(ref)).
				withInfo("API_KEY_HTTP_REFERRER_BLOCKED", "googleapis.com", map[string]string{
					"consumer": consumerName(number), "service": geminiService, "httpReferrer": orEmpty(ref),
				})
		}
	}
	if sr := rs.ServerKeyRestrictions; sr != nil && len(sr.AllowedIps) > 0 {
		ip := remoteIP(r)
		if !ipAllowed(sr.AllowedIps, ip) {
			return newError(codes.PermissionDenied, "The provided API key has an IP address restriction. The originating "+
				"IP address of the call (%s) violates this restriction.", ip).
				withInfo("API_KEY_IP_ADDRESS_BLOCKED", "googleapis.com", map[string]string{
					"consumer": consumerName(number), "service": geminiService, "ipAddress": ip,
				})
		}
	}
	if a := rs.AndroidKeyRestrictions; a != nil && len(a.AllowedApplications) > 0 {
		pkg := r.Header.Get("X-Android-Package")
		cert := normalizeFingerprint(r.Header.Get("X-Android-Cert"))
		ok := false
		for _, app := range a.AllowedApplications {
			if app != nil && pkg != "" && app.PackageName == pkg &&
				(app.Sha1Fingerprint == "" || normalizeFingerprint(app.Sha1Fingerprint) == cert) {
				ok = true
				break
			}
		}
		if !ok {
			return newError(codes.PermissionDenied, "Requests from this Android client application %s are blocked.", orEmpty(pkg)).
				withInfo("API_KEY_ANDROID_APP_BLOCKED", "googleapis.com", map[string]string{
					"consumer": consumerName(number), "service": geminiService, "androidPackage": orEmpty(pkg),
				})
		}
	}
	if i := rs.IosKeyRestrictions; i != nil && len(i.AllowedBundleIds) > 0 {
		id := r.Header.Get("X-Ios-Bundle-Identifier")
		ok := false
		for _, b := range i.AllowedBundleIds {
			if id != "" && b == id {
				ok = true
				break
			}
		}
		if !ok {
			return newError(codes.PermissionDenied, "Requests from this iOS client application %s are blocked.", orEmpty(id)).
				withInfo("API_KEY_IOS_APP_BLOCKED", "googleapis.com", map[string]string{
					"consumer": consumerName(number), "service": geminiService, "iosBundleId": orEmpty(id),
				})
		}
	}
	return nil
}

// referrerAllowed matches a Referer against patterns such as
// "https://example.com/*", "*.example.com/*" or "example.com".
func referrerAllowed(patterns []string, ref string) bool {
	if ref == "" {
		return false
	}
	noScheme := ref
	if _, rest, ok := strings.Cut(ref, "://"); ok {
		noScheme = rest
	}
	for _, p := range patterns {
		if p == "*" || globMatch(p, ref) || globMatch(p, noScheme) ||
			globMatch(p, strings.TrimSuffix(noScheme, "/")) {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern where * is any run of characters.
func globMatch(pattern, s string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i, part := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(s, part)
		}
		j := strings.Index(s, part)
		if j < 0 {
			return false
		}
		s = s[j+len(part):]
	}
	return true
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ipAllowed matches an address against IPs and CIDR ranges.
func ipAllowed(allowed []string, ip string) bool {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, a := range allowed {
		if strings.Contains(a, "/") {
			if pfx, err := netip.ParsePrefix(a); err == nil && pfx.Contains(addr) {
				return true
			}
			continue
		}
		if b, err := netip.ParseAddr(a); err == nil && b.Unmap() == addr {
			return true
		}
	}
	return false
}

func normalizeFingerprint(f string) string {
	return strings.ToLower(strings.ReplaceAll(f, ":", ""))
}

// geminiModel is one entry of the model list, as the API sends it.
type geminiModel struct {
	Name                       string   `json:"name"`
	Version                    string   `json:"version"`
	DisplayName                string   `json:"displayName"`
	Description                string   `json:"description"`
	InputTokenLimit            int      `json:"inputTokenLimit"`
	OutputTokenLimit           int      `json:"outputTokenLimit"`
	SupportedGenerationMethods []string `json:"supportedGenerationMethods"`
	Temperature                float64  `json:"temperature,omitempty"`
	TopP                       float64  `json:"topP,omitempty"`
	TopK                       int      `json:"topK,omitempty"`
	MaxTemperature             float64  `json:"maxTemperature,omitempty"`
	Thinking                   bool     `json:"thinking,omitempty"`
}

var geminiModels = []geminiModel{
	{
		Name: "models/gemini-2.5-flash", Version: "001", DisplayName: "Gemini 2.5 Flash",
		Description:     "Stable version of Gemini 2.5 Flash, our mid-size multimodal model that supports up to 1 million tokens, released in June of 2025.",
		InputTokenLimit: 1048576, OutputTokenLimit: 65536,
		SupportedGenerationMethods: []string{"generateContent", "countTokens", "createCachedContent", "batchGenerateContent"},
		Temperature:                1, TopP: 0.95, TopK: 64, MaxTemperature: 2, Thinking: true,
	},
	{
		Name: "models/gemini-2.5-pro", Version: "2.5", DisplayName: "Gemini 2.5 Pro",
		Description:     "Stable release (June 17th, 2025) of Gemini 2.5 Pro",
		InputTokenLimit: 1048576, OutputTokenLimit: 65536,
		SupportedGenerationMethods: []string{"generateContent", "countTokens", "createCachedContent", "batchGenerateContent"},
		Temperature:                1, TopP: 0.95, TopK: 64, MaxTemperature: 2, Thinking: true,
	},
	{
		Name: "models/gemini-2.5-flash-lite", Version: "001", DisplayName: "Gemini 2.5 Flash-Lite",
		Description:     "Stable version of Gemini 2.5 Flash-Lite, released in July of 2025",
		InputTokenLimit: 1048576, OutputTokenLimit: 65536,
		SupportedGenerationMethods: []string{"generateContent", "countTokens", "createCachedContent", "batchGenerateContent"},
		Temperature:                1, TopP: 0.95, TopK: 64, MaxTemperature: 2, Thinking: true,
	},
	{
		Name: "models/gemini-2.0-flash", Version: "2.0", DisplayName: "Gemini 2.0 Flash",
		Description:     "Gemini 2.0 Flash",
		InputTokenLimit: 1048576, OutputTokenLimit: 8192,
		SupportedGenerationMethods: []string{"generateContent", "countTokens", "createCachedContent", "batchGenerateContent"},
		Temperature:                1, TopP: 0.95, TopK: 40, MaxTemperature: 2,
	},
	// The current stable Flash-Lite (July 2026; no shutdown date announced
	// on ai.google.dev/gemini-api/docs/deprecations): keyrotate's default
	// probe model. Limits from ai.google.dev/gemini-api/docs/models.
	{
		Name: "models/gemini-3.5-flash-lite", Version: "3.5", DisplayName: "Gemini 3.5 Flash-Lite",
		Description:     "Gemini 3.5 Flash-Lite",
		InputTokenLimit: 1048576, OutputTokenLimit: 65536,
		SupportedGenerationMethods: []string{"generateContent", "countTokens", "createCachedContent", "batchGenerateContent"},
		Temperature:                1, TopP: 0.95, TopK: 64, MaxTemperature: 2, Thinking: true,
	},
	{
		Name: "models/gemini-embedding-001", Version: "001", DisplayName: "Gemini Embedding 001",
		Description:     "Obtain a distributed representation of a text.",
		InputTokenLimit: 2048, OutputTokenLimit: 1,
		SupportedGenerationMethods: []string{"embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"},
	},
}

type listModelsResponse struct {
	Models        []geminiModel `json:"models"`
	NextPageToken string        `json:"nextPageToken,omitempty"`
}

func listModels(r *http.Request) (*listModelsResponse, error) {
	q := r.URL.Query()
	size := geminiDefaultPageSize
	if v := q.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, newError(codes.InvalidArgument, "Invalid value at 'page_size' (TYPE_INT32), %q", v)
		}
		if n > 0 {
			size = min(n, geminiMaxPageSize)
		}
	}
	start := 0
	if tok := q.Get("pageToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		n, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "models:"))
		if err != nil || err2 != nil || !strings.HasPrefix(string(b), "models:") || n < 0 || n > len(geminiModels) {
			return nil, newError(codes.InvalidArgument, "Invalid page token.")
		}
		start = n
	}
	end := min(start+size, len(geminiModels))
	resp := &listModelsResponse{Models: append([]geminiModel(nil), geminiModels[start:end]...)}
	if end < len(geminiModels) {
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte("models:" + strconv.Itoa(end)))
	}
	return resp, nil
}
