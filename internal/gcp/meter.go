package gcp

import (
	"context"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Meter sits in the clients' transports: it paces each call with its Pacer
// and counts calls and 429s, for the whole run and for the slot whose
// rotation made the call (see rotate.Fleet). Install it with Transport (REST
// clients) and UnaryInterceptor (gRPC clients). A nil *Meter counts nothing.
type Meter struct {
	Pacer *Pacer
	// QuotaProject, when set, is the project every call is charged to
	// (the clients send it as x-goog-user-project): all calls draw on its
	// budget, whatever project they act on. "": each call draws on the
	// budget of its slot's project, or of the project it names.
	QuotaProject string
	// InFlight bounds the calls let go at once, all APIs together (see
	// inFlight): 0 is InFlightPerCPU for each CPU the process may use,
	// less than 0 no bound.
	InFlight int

	limitOnce sync.Once
	limit     *inFlight

	mu        sync.Mutex
	calls     map[string]int64 // by method, e.g. "apikeys.CreateKey"
	throttled int64
}

// Calls returns the number of calls made, by method.
func (m *Meter) Calls() map[string]int64 {
	out := map[string]int64{}
	if m == nil {
		return out
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.calls {
		out[k] = v
	}
	return out
}

// Total returns the number of calls made and how many were answered 429
// (RESOURCE_EXHAUSTED).
func (m *Meter) Total() (calls, throttled int64) {
	if m == nil {
		return 0, 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range m.calls {
		calls += v
	}
	return calls, m.throttled
}

// inFlight returns the bound on calls in flight (nil: none).
func (m *Meter) inFlight() *inFlight {
	m.limitOnce.Do(func() {
		n := m.InFlight
		if n == 0 {
			n = InFlightPerCPU * runtime.GOMAXPROCS(0)
		}
		m.limit = newInFlight(n)
	})
	return m.limit
}

func (m *Meter) count(ctx context.Context, method string, throttled bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	if m.calls == nil {
		m.calls = map[string]int64{}
	}
	m.calls[method]++
	if throttled {
		m.throttled++
	}
	m.mu.Unlock()
	if c, ok := ctx.Value(slotCallsKey{}).(*SlotCalls); ok {
		c.Calls.Add(1)
		if throttled {
			c.Throttled.Add(1)
		}
	}
}

// SlotCalls counts the calls made for one slot: a context carrying it (see
// WithSlotCalls) has every metered call counted there too.
type SlotCalls struct {
	Calls, Throttled atomic.Int64
}

type slotCallsKey struct{}
type projectKey struct{}

// WithSlotCalls returns a context whose metered calls are counted in c.
func WithSlotCalls(ctx context.Context, c *SlotCalls) context.Context {
	return context.WithValue(ctx, slotCallsKey{}, c)
}

// WithProject tells the Meter which project's quota the calls made with
// ctx draw on: the slot's charged project (rotate.Rotator.ChargedProject), also
// for calls whose request names no project (operations, LookupKey) or
// names it by number.
func WithProject(ctx context.Context, project string) context.Context {
	if project == "" {
		return ctx
	}
	return context.WithValue(ctx, projectKey{}, project)
}

// charged returns the project whose budget a call on resource draws on:
// the Meter's quota project, else the project of ctx, else the one in
// resource ("projects/P/...").
func (m *Meter) charged(ctx context.Context, resource string) string {
	if m.QuotaProject != "" {
		return m.QuotaProject
	}
	if p, ok := ctx.Value(projectKey{}).(string); ok {
		return p
	}
	return projectOfResource(resource)
}

// Transport returns base (nil: http.DefaultTransport) wrapped so that each
// request to api (APIKeys or Gemini) is paced and counted. It goes under the
// authentication transport, so token fetches are neither.
func (m *Meter) Transport(api string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	if m == nil {
		return base
	}
	return &meteredTransport{m: m, api: api, base: base}
}

type meteredTransport struct {
	m    *Meter
	api  string
	base http.RoundTripper
}

func (t *meteredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	method, resource := restMethod(t.api, req)
	if t.api != Gemini {
		call, err := t.m.Pacer.wait(ctx, t.api, t.m.charged(ctx, resource), req.Method != http.MethodGet)
		if err != nil {
			return nil, err
		}
		defer call.answered()
	}
	l := t.m.inFlight()
	if err := l.acquire(ctx, urgentMethods[method]); err != nil {
		return nil, err
	}
	resp, err := t.base.RoundTrip(req)
	l.release()
	t.m.count(ctx, method, err == nil && resp.StatusCode == http.StatusTooManyRequests)
	return resp, err
}

// urgentMethods are the calls a rotation makes up to its CreateKey (and
// that it may make again later: the lease's renewals and its release,
// the read-back's Access): they go before the other waiting calls when
// the calls in flight are at their bound (see inFlight).
var urgentMethods = map[string]bool{
	"secretmanager.GetSecret":           true,
	"secretmanager.AccessSecretVersion": true,
	"secretmanager.UpdateSecret":        true,
	"apikeys.LookupKey":                 true,
	"apikeys.ListKeys":                  true,
	"apikeys.CreateKey":                 true,
}

// restMethod names a REST request the way the API's RPC is named
// ("apikeys.CreateKey") and returns the resource path it names.
func restMethod(api string, req *http.Request) (method, resource string) {
	p := strings.TrimPrefix(req.URL.Path, "/")
	switch api {
	case Gemini:
		switch {
		case strings.HasSuffix(p, ":countTokens"):
			return "gemini.CountTokens", ""
		case strings.HasSuffix(p, ":generateContent"):
			return "gemini.GenerateContent", ""
		}
		return "gemini.ListModels", ""
	case APIKeys:
		p = strings.TrimPrefix(p, "v2/")
	default:
		return api + "." + req.Method, p
	}
	verb := ""
	if i := strings.LastIndexByte(p, ':'); i > strings.LastIndexByte(p, '/') {
		p, verb = p[:i], p[i+1:]
	}
	last := p[strings.LastIndexByte(p, '/')+1:]
	// Whole names, not "apikeys." + name: every call is counted by its
	// name, and a name built per call was a heap object a call.
	switch {
	case strings.HasPrefix(p, "operations/"):
		return "apikeys.GetOperation", p
	case verb == "lookupKey":
		return "apikeys.LookupKey", p
	case verb == "undelete":
		return "apikeys.UndeleteKey", p
	case last == "keyString":
		return "apikeys.GetKeyString", p
	case last == "keys" && req.Method == http.MethodGet:
		return "apikeys.ListKeys", p
	case last == "keys":
		return "apikeys.CreateKey", p
	case req.Method == http.MethodPatch:
		return "apikeys.UpdateKey", p
	case req.Method == http.MethodDelete:
		return "apikeys.DeleteKey", p
	}
	return "apikeys.GetKey", p
}

// UnaryInterceptor returns a gRPC client interceptor that paces and counts
// the calls of api (SecretManager; APIKeys, whose LookupKey goes over gRPC;
// Monitoring, whose ListTimeSeries is a read). AccessSecretVersion is
// counted, not paced: its quota (90,000 a minute) is far beyond a
// rotation's two.
func (m *Meter) UnaryInterceptor(api string) grpc.UnaryClientInterceptor {
	// What each method is, worked out at its first call: a fleet's burst
	// meters 60,000 calls, and a name built per call was a heap object a
	// call (TestMeterCallAllocs).
	var methods sync.Map // full method name -> *grpcMethod
	return func(ctx context.Context, fullMethod string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if m == nil {
			return invoker(ctx, fullMethod, req, reply, cc, opts...)
		}
		v, ok := methods.Load(fullMethod)
		if !ok {
			v, _ = methods.LoadOrStore(fullMethod, newGRPCMethod(api, fullMethod))
		}
		gm := v.(*grpcMethod)
		if gm.paced {
			call, err := m.Pacer.wait(ctx, api, m.charged(ctx, grpcResource(req)), gm.write)
			if err != nil {
				return err
			}
			defer call.answered()
		}
		l := m.inFlight()
		if err := l.acquire(ctx, urgentMethods[gm.counted]); err != nil {
			// As gRPC itself answers a call whose context ended.
			return status.FromContextError(err).Err()
		}
		err := invoker(ctx, fullMethod, req, reply, cc, opts...)
		l.release()
		m.count(ctx, gm.counted, status.Code(err) == codes.ResourceExhausted)
		return err
	}
}

// grpcMethod is how a Meter paces and counts one gRPC method.
type grpcMethod struct {
	counted string // the name it is counted by: "secretmanager.GetSecret"
	paced   bool   // under the API's per-project quota (all but Access*)
	write   bool   // a write, else a read
}

func newGRPCMethod(api, fullMethod string) *grpcMethod {
	name := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	return &grpcMethod{
		counted: api + "." + name,
		paced:   !strings.HasPrefix(name, "Access"),
		write: !strings.HasPrefix(name, "Get") && !strings.HasPrefix(name, "List") && !strings.HasPrefix(name, "Lookup") &&
			!strings.HasPrefix(name, "Test"), // TestIamPermissions: plan's check, a read
	}
}

// grpcResource returns the resource a request names (its name, parent, or
// its secret's name).
func grpcResource(req any) string {
	switch r := req.(type) {
	case interface {
		GetSecret() *secretmanagerpb.Secret
	}:
		return r.GetSecret().GetName()
	case interface{ GetName() string }:
		return r.GetName()
	case interface{ GetParent() string }:
		return r.GetParent()
	case interface{ GetResource() string }: // TestIamPermissions
		return r.GetResource()
	}
	return ""
}
