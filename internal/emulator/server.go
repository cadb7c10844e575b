// Package emulator is an in-process fake of the Google APIs keyrotate
// uses, sharing one state, each on its own address: the API Keys API v2
// (REST, and gRPC for LookupKey), Secret Manager v1 (gRPC), the Gemini
// API's model list, countTokens and generateContent (REST), a subset of
// the Cloud Run Admin API v2 Services (gRPC), Cloud Monitoring's
// ListTimeSeries over the Gemini calls per key (gRPC, monitoring.go), and
// Pub/Sub (Google's own pstest), to which Secret Manager publishes its
// event notifications and rotation schedules (pubsub.go). The
// API Keys address also serves the read-only access checks of Resource
// Manager, Service Usage and IAM (access.go). Tests drive Google's own Go
// clients against it over real loopback connections; the demo and emulator
// commands run it for people.
//
// It follows the real APIs where keyrotate depends on them: resource paths,
// canonical error codes and Google's JSON error bodies, long-running
// operations that are not done when first returned, etags, soft delete, and
// project numbers in returned names, and (when Options.Quotas asks for
// them) Google's per-project rate quotas in synchronized windows (quota.go).
// It is not a full implementation: regional endpoints (regional secrets are
// served on the one address) and most list filters are absent, and IAM is
// only what DenyPermission models (a caller that lacks a permission), which
// the testIamPermissions methods and Service Usage's batchGet report
// (access.go, served on the API Keys address).
//
// For tests it offers seeding and inspection helpers, per-method call
// counters (the methods are listed once, in methods.go), deterministic fault
// injection (Fail: the Nth call of a method, or a run of calls, fails with a
// fake.Fault's code; DenyPermission: the caller lacks an IAM permission),
// hooks that run before a call (to block it), and a clock of its own
// (Options.Clock). It starts, injects faults and tells the time as its
// sub-fakes githubfake and k8sfake do (see package fake). For tests and
// people alike it runs unconfigured consumers, which keep calling Gemini
// with a key (consumer.go; people start and stop them through an
// emulator-only admin endpoint on the Gemini address).
package emulator

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

// Options configure a Server.
type Options struct {
	// Clock defaults to the wall clock (fake.Wall).
	Clock fake.Clock
	// PropagationDelay is how long after creation a new key starts to work
	// at the Gemini API (400 API_KEY_INVALID until then). Zero: at once.
	PropagationDelay time.Duration
	// OperationPolls is how many operations.get calls see a long-running
	// operation still running before it is done. Zero means 1: every
	// operation needs at least one poll, as on the real API.
	OperationPolls int
	// Latency is added to every call before it is handled.
	Latency time.Duration
	// APIKeysAddr, SecretManagerAddr, GeminiAddr and RunAddr are where
	// the API Keys, Secret Manager, Gemini and Cloud Run APIs listen; "" is
	// a loopback port chosen by the system.
	APIKeysAddr, SecretManagerAddr, GeminiAddr, RunAddr string
	// Quotas are per-project rate quotas to enforce, by service:
	// "apikeys", "secretmanager" and "monitoring" (DocumentedQuotas has
	// Google's; Start rejects other names). A call over quota fails as Google's do, with 429
	// RESOURCE_EXHAUSTED RATE_LIMIT_EXCEEDED and a RetryInfo. Nil or
	// empty: no quota is enforced.
	Quotas map[string]Quota
	// QuotaWindow is the interval the Quotas count in, aligned on the
	// emulator's clock as Google aligns its per-minute intervals. Zero
	// means one minute, Google's; a shorter window scales time (one second
	// with DocumentedQuotas: sixty times faster than real). Negative is an
	// error.
	QuotaWindow time.Duration
	// NoSecretWriteLimits turns off Secret Manager's per-secret write
	// rates (secretrate.go), which are otherwise enforced.
	NoSecretWriteLimits bool
	// MonitoringAddr is where Cloud Monitoring listens (monitoring.go);
	// "" is a loopback port chosen by the system.
	MonitoringAddr string
	// PubSubAddr is where Pub/Sub (Google's pstest) listens (pubsub.go);
	// "" is a loopback port chosen by the system.
	PubSubAddr string
	// MonitoringDelay is how long after a Gemini call its point becomes
	// visible to ListTimeSeries. Zero: at once (DefaultMonitoringDelay is
	// Google-like).
	MonitoringDelay time.Duration
}

// Hook runs before the n-th call (1-based) of a method, outside the
// emulator's lock. A non-nil error fails the call with that error (use
// status.Error for a specific code). A hook may block, for example until a
// test has killed the caller. A call rejected for quota (Options.Quotas)
// runs no hook.
type Hook func(ctx context.Context, n int) error

// faultErr is the error an injected fault answers call n of method with.
func faultErr(f fake.Fault, method string, n int) error {
	msg := f.Message
	if msg == "" {
		msg = fmt.Sprintf("injected fault: %s call %d", method, n)
	}
	if f.RetryDelay <= 0 {
		return status.Error(f.Code, msg)
	}
	return (&apiError{code: f.Code, message: msg}).withDetail(newRetryInfo(f.RetryDelay))
}

type project struct {
	id     string
	number int64
	// disabled services, by name (e.g. "generativelanguage.googleapis.com")
	disabled map[string]bool
}

// Server is a running emulator. Create it with Start; Close it when done.
type Server struct {
	// APIKeysAddr, SecretManagerAddr and GeminiAddr are the host:port
	// each API listens on, the values of APIKEYS_EMULATOR_HOST,
	// SECRETMANAGER_EMULATOR_HOST and GEMINI_EMULATOR_HOST.
	APIKeysAddr, SecretManagerAddr, GeminiAddr string
	// RunAddr is the Cloud Run Admin API v2 (gRPC), RUN_EMULATOR_HOST.
	RunAddr string
	// MonitoringAddr is Cloud Monitoring's MetricService (gRPC),
	// MONITORING_EMULATOR_HOST.
	MonitoringAddr string
	// PubSubAddr is Pub/Sub (gRPC, Google's pstest), PUBSUB_EMULATOR_HOST,
	// where Secret Manager publishes its notifications (pubsub.go).
	PubSubAddr string

	opts  Options
	clock fake.Clock

	mu       sync.Mutex
	projects map[string]*project // by id and by decimal number
	calls    map[string]int
	faults   fake.Faults
	// stateCodes, when not OK, is the code of refusals that only a key's
	// state explains (see SetStateCodes).
	stateCodes codes.Code
	hooks      map[string]Hook
	denied     map[string]bool // IAM permissions the caller lacks
	// serviceAccounts that exist, by email, with their unique ids
	// (access.go)
	serviceAccounts map[string]string
	// keyStringsInURLs counts API Keys requests with a key string in the
	// URL (apikeys_grpc.go).
	keyStringsInURLs int
	// violations are the requests that broke the APIs' published
	// definitions (discovery.go, fieldbehavior.go).
	violations []Violation
	seq        int64 // for ids, uids and etags

	// quotaProjectRequired: calls without x-goog-user-project fail as
	// for user credentials without a quota project (quotaproject.go).
	quotaProjectRequired bool

	// standardKeysRejected: the Gemini API answers standard keys with 401
	// ACCESS_TOKEN_TYPE_UNSUPPORTED (the late-2026 policy).
	standardKeysRejected bool
	// standardKeysRejectedGen: the same on the generation path only.
	standardKeysRejectedGen bool
	// generated counts generateContent answers, for their responseId.
	generated int

	keys  *keyState    // apikeys.go
	sm    *secretState // secretmanager.go
	run   *runState    // run.go
	quota *quotaState  // quota.go; its own lock
	rates *secretRates // secretrate.go; its own lock

	ps        *pstest.Server  // pubsub.go
	psDenied  map[string]bool // topics the service agent may not publish to
	psDropped int             // notifications that could not be published

	usage           []usageRecord // every Gemini call with a known key (usage.go)
	monitoringDelay time.Duration

	// consumers run until stopped, by id (consumer.go); their own lock,
	// never held with mu.
	consumersMu sync.Mutex
	consumers   map[string]*Consumer
	consumerSeq int

	closers []func()
}

// Start starts the APIs on the addresses of opts.
func Start(opts Options) (*Server, error) {
	if opts.Clock == nil {
		opts.Clock = fake.Wall
	}
	if opts.OperationPolls <= 0 {
		opts.OperationPolls = 1
	}
	s := &Server{
		opts:     opts,
		clock:    opts.Clock,
		projects: map[string]*project{},
		calls:    map[string]int{},
		hooks:    map[string]Hook{},
		denied:   map[string]bool{},
		seq:      1000,

		monitoringDelay: opts.MonitoringDelay,

		serviceAccounts: map[string]string{},
		psDenied:        map[string]bool{},
	}
	s.keys = newKeyState()
	s.sm = newSecretState()
	s.run = newRunState()
	s.rates = newSecretRates()
	var err error
	if s.quota, err = newQuotaState(opts.Quotas, opts.QuotaWindow); err != nil {
		return nil, fmt.Errorf("start emulator: %w", err)
	}
	// API Keys: REST, and gRPC for LookupKey, on the one address.
	keysGRPC := grpc.NewServer(grpc.UnaryInterceptor(s.checkFieldBehavior))
	apikeyspb.RegisterApiKeysServer(keysGRPC, &apiKeysGRPC{s: s})
	s.closers = append(s.closers, keysGRPC.Stop)
	if s.APIKeysAddr, err = s.serveHTTP(opts.APIKeysAddr, s.apiKeysMux(keysGRPC, s.apiKeysREST())); err != nil {
		s.Close()
		return nil, fmt.Errorf("start API Keys emulator: %w", err)
	}
	// Pub/Sub before Secret Manager, which publishes to it.
	if s.PubSubAddr, err = s.servePubSub(opts.PubSubAddr); err != nil {
		s.Close()
		return nil, fmt.Errorf("start Pub/Sub emulator: %w", err)
	}
	if s.SecretManagerAddr, err = s.serveSecretManager(opts.SecretManagerAddr); err != nil {
		s.Close()
		return nil, fmt.Errorf("start Secret Manager emulator: %w", err)
	}
	if s.GeminiAddr, err = s.serveHTTP(opts.GeminiAddr, s.geminiHandler()); err != nil {
		s.Close()
		return nil, fmt.Errorf("start Gemini emulator: %w", err)
	}
	if s.RunAddr, err = s.serveRun(opts.RunAddr); err != nil {
		s.Close()
		return nil, fmt.Errorf("start Cloud Run emulator: %w", err)
	}
	if s.MonitoringAddr, err = s.serveMonitoring(opts.MonitoringAddr); err != nil {
		s.Close()
		return nil, fmt.Errorf("start Cloud Monitoring emulator: %w", err)
	}
	return s, nil
}

// Close stops the consumers, then the APIs.
func (s *Server) Close() error {
	s.stopConsumers()
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
	return nil
}

// Env returns the environment settings that point keyrotate at this
// emulator, as NAME=value.
func (s *Server) Env() []string {
	return []string{
		"APIKEYS_EMULATOR_HOST=" + s.APIKeysAddr,
		"SECRETMANAGER_EMULATOR_HOST=" + s.SecretManagerAddr,
		"GEMINI_EMULATOR_HOST=" + s.GeminiAddr,
		"RUN_EMULATOR_HOST=" + s.RunAddr,
		"MONITORING_EMULATOR_HOST=" + s.MonitoringAddr,
		"PUBSUB_EMULATOR_HOST=" + s.PubSubAddr,
	}
}

// Now returns the emulator's time.
func (s *Server) Now() time.Time { return s.clock.Now().UTC() }

// serveGRPC serves on addr the gRPC services register adds, each call
// going through interceptor, and returns the address it listens on.
func (s *Server) serveGRPC(addr string, interceptor grpc.UnaryServerInterceptor, register func(*grpc.Server)) (string, error) {
	ln, err := listen(addr)
	if err != nil {
		return "", err
	}
	// Field behaviours first: the front end refuses a malformed request
	// before the service sees it (fieldbehavior.go).
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(s.checkFieldBehavior, interceptor))
	register(gs)
	go func() { _ = gs.Serve(ln) }()
	// Stop, not GracefulStop: a test hook may hold a call open forever.
	s.closers = append(s.closers, gs.Stop)
	return ln.Addr().String(), nil
}

func listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	return net.Listen("tcp", addr)
}

// AddProject makes a project known by id and number. Resource names may use
// either; returned names carry the number.
func (s *Server) AddProject(id string, number int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &project{id: id, number: number, disabled: map[string]bool{}}
	s.projects[id] = p
	s.projects[strconv.FormatInt(number, 10)] = p
}

// SetServiceEnabled enables or disables an API (for example
// "generativelanguage.googleapis.com") in a project.
func (s *Server) SetServiceEnabled(projectID, service string, enabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.projects[projectID]; p != nil {
		p.disabled[service] = !enabled
	}
}

// RejectStandardKeys switches the policy under which the Gemini API answers
// standard keys (not bound to a service account) with 401
// ACCESS_TOKEN_TYPE_UNSUPPORTED.
func (s *Server) RejectStandardKeys(reject bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.standardKeysRejected = reject
}

// project returns the project named by id or number. Call with s.mu held.
func (s *Server) project(idOrNumber string) *project {
	return s.projects[idOrNumber]
}

// nextSeq returns a fresh sequence number. Call with s.mu held.
func (s *Server) nextSeq() int64 {
	s.seq++
	return s.seq
}

// Fail makes call n of method (1-based, counted since Start or ResetCalls;
// fake.Next: the next call) fail with f.Code, and with f.Times the calls
// after it too. Methods are named "apikeys.CreateKey",
// "secretmanager.AddSecretVersion", "gemini.ListModels" and so on; see
// Methods. A fault with an HTTP Status, meant for the HTTP fakes, panics.
func (s *Server) Fail(method string, n int, f fake.Fault) {
	if f.Status != 0 {
		panic("emulator: a Fault's Status is for the HTTP fakes; the emulator answers its Code")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.Add(method, n, s.calls[method], f)
}

// ClearFaults removes every pending fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.Clear()
}

// SetHook installs (or, with nil, removes) a hook for method.
func (s *Server) SetHook(method string, h Hook) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h == nil {
		delete(s.hooks, method)
		return
	}
	s.hooks[method] = h
}

// Calls returns how many times method was called, counting calls rejected
// for quota: a 429 is still a call the client made.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// CallCounts returns a copy of all call counters (rejected calls
// included, as in Calls).
func (s *Server) CallCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		m[k] = v
	}
	return m
}

// CallsTotal returns the number of calls of all methods.
func (s *Server) CallsTotal() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		n += c
	}
	return n
}

// ResetCalls sets every call counter, and Throttled, to zero. Pending
// faults keep their absolute call numbers, so reset before injecting. The
// quota usage of the current window stays: it is the APIs' state, not a
// test's counter.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
	s.quota.mu.Lock()
	s.quota.throttled = 0
	s.quota.mu.Unlock()
}

// MutatingCalls returns the total number of calls to methods that change
// state.
func (s *Server) MutatingCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for m, c := range s.calls {
		if methods[m].mutating {
			n += c
		}
	}
	return n
}

// enter counts a call of method, meters it against its quota, runs its
// hook and returns the injected fault for this call, if any, as a gRPC
// status error. Every handler calls it first, without holding s.mu. A call
// over quota fails before its hook and fault (see quota.go).
func (s *Server) enter(ctx context.Context, method string) error {
	if s.opts.Latency > 0 {
		select {
		case <-time.After(s.opts.Latency):
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	s.mu.Lock()
	s.calls[method]++
	n := s.calls[method]
	hook := s.hooks[method]
	// The front end checks the quota project first (quotaproject.go).
	consumer, charged, err := s.chargedLocked(ctx, method)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	switch {
	case !s.quota.metered(method):
		consumer = nil
	case !charged:
		consumer = s.consumerLocked(ctx, method)
	}
	var injected error
	if f, ok := s.faults.Take(method, n); ok {
		injected = faultErr(f, method, n)
	}
	if perm := methods[method].permission; perm != "" && s.denied[perm] {
		injected = permissionDenied(method, perm, resourceOf(ctx))
	}
	s.mu.Unlock()
	if err := s.quota.admit(method, consumer, s.clock); err != nil {
		return err
	}
	if err := s.admitSecretWrite(method, resourceOf(ctx)); err != nil {
		return err // secretrate.go
	}
	if hook != nil {
		if err := hook(ctx, n); err != nil {
			return err
		}
	}
	return injected
}

// formatTime renders a time as the APIs do (RFC 3339 with nanoseconds, UTC).
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// splitName splits "projects/p/locations/l/keys/k" into its segments and
// checks the collection words: pattern "projects/*/locations/*/keys/*".
// It runs on nearly every call: it walks both a segment at a time, and
// allocates only the variables.
func splitName(name, pattern string) ([]string, bool) {
	var vars []string
	for {
		w, wrest, wmore := strings.Cut(pattern, "/")
		got, rest, more := strings.Cut(name, "/")
		if more != wmore {
			return nil, false // not as many segments
		}
		if w == "*" {
			if got == "" {
				return nil, false
			}
			if vars == nil {
				vars = make([]string, 0, strings.Count(pattern, "*"))
			}
			vars = append(vars, got)
		} else if got != w {
			return nil, false
		}
		if !more {
			return vars, true
		}
		pattern, name = wrest, rest
	}
}

// ---- IAM ----

// DenyPermission makes the caller lack an IAM permission (for example
// "secretmanager.versions.add"): every method that needs it fails with
// PERMISSION_DENIED as the real APIs answer, the message naming the
// permission and resource, with a google.rpc.ErrorInfo of reason
// IAM_PERMISSION_DENIED whose metadata names the permission.
func (s *Server) DenyPermission(permission string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[permission] = true
}

// AllowPermission undoes DenyPermission.
func (s *Server) AllowPermission(permission string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.denied, permission)
}

func permissionDenied(method, perm, resource string) *apiError {
	var msg string
	switch {
	case resource == "":
		msg = fmt.Sprintf("Permission '%s' denied (or the resource may not exist).", perm)
	case strings.HasPrefix(method, "secretmanager."):
		msg = fmt.Sprintf("Permission '%s' denied for resource '%s' (or it may not exist).", perm, resource)
	default:
		msg = fmt.Sprintf("Permission '%s' denied on resource '%s' (or it may not exist).", perm, resource)
	}
	md := map[string]string{"permission": perm}
	if resource != "" {
		md["resource"] = resource
	}
	return newError(codes.PermissionDenied, "%s", msg).withInfo("IAM_PERMISSION_DENIED", "iam.googleapis.com", md)
}

// resourceKey carries a call's resource name in its context, for the
// messages of DenyPermission.
type resourceKey struct{}

func resourceOf(ctx context.Context) string {
	r, _ := ctx.Value(resourceKey{}).(string)
	return r
}

// withAPIKeysResource puts the resource of an API Keys request in its
// context.
func withAPIKeysResource(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, ok := routeAPIKeys(r)
		if ok && rt.name != "" {
			r = r.WithContext(context.WithValue(r.Context(), resourceKey{}, rt.name))
		}
		if up := r.Header.Get(userProjectHeader); ok && up != "" {
			r = r.WithContext(context.WithValue(r.Context(), userProjectKey{}, up))
		}
		if ok && rt.method == "apikeys.LookupKey" {
			// For the quota: the call is charged to the key's project.
			r = r.WithContext(context.WithValue(r.Context(), keyStringKey{}, r.URL.Query().Get("keyString")))
		}
		h.ServeHTTP(w, r)
	})
}

// smResource is a gRPC interceptor that puts the resource of a Secret
// Manager request (its name, parent or secret's name) in its context.
// CreateSecret carries a secret without a name: its resource is its parent.
func smResource(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	var name string
	switch r := req.(type) {
	case interface {
		GetSecret() *secretmanagerpb.Secret
	}:
		name = r.GetSecret().GetName()
	case interface{ GetName() string }:
		name = r.GetName()
	}
	if r, ok := req.(interface{ GetParent() string }); ok && name == "" {
		name = r.GetParent()
	}
	if name != "" {
		ctx = context.WithValue(ctx, resourceKey{}, name)
	}
	return h(ctx, req)
}
