package gcp

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc"
)

// TestMeterCallAllocs: metering a call (pacing it within its project's
// quota and counting it, for the run and for its slot) allocates nothing
// of its own on the heap, over gRPC or REST: a fleet's first burst makes
// 60,000 calls, each counted. It allocated 2 (gRPC) and 3 (REST) objects
// a call: the method's name, built per call, and the pacer's callback.
func TestMeterCallAllocs(t *testing.T) {
	m := &Meter{Pacer: NewPacer(map[string]Quota{SecretManager: {Reads: 1 << 30, Writes: 1 << 30}, APIKeys: {Reads: 1 << 30, Writes: 1 << 30}}, time.Minute)}
	ctx := WithSlotCalls(WithProject(context.Background(), "p"), new(SlotCalls))
	unary := m.UnaryInterceptor(SecretManager)
	invoke := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	get := &secretmanagerpb.GetSecretRequest{Name: "projects/p/secrets/s"}
	update := &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: "projects/p/secrets/s"}}
	resp := &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(""))}
	rest := m.Transport(APIKeys, roundTripper(func(*http.Request) (*http.Response, error) { return resp, nil }))
	getOp, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://emu/v2/operations/akmf.p2-123", nil)
	create, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://emu/v2/projects/p/locations/global/keys?keyId=k", nil)
	for _, c := range []struct {
		name string
		call func()
	}{
		{"GetSecret", func() {
			_ = unary(ctx, "/google.cloud.secretmanager.v1.SecretManagerService/GetSecret", get, nil, nil, invoke)
		}},
		{"UpdateSecret", func() {
			_ = unary(ctx, "/google.cloud.secretmanager.v1.SecretManagerService/UpdateSecret", update, nil, nil, invoke)
		}},
		{"GetOperation", func() { _, _ = rest.RoundTrip(getOp) }},
		{"CreateKey", func() { _, _ = rest.RoundTrip(create) }},
	} {
		c.call() // the first call of a kind makes its quota's log
		if got := testing.AllocsPerRun(1000, c.call); got != 0 {
			t.Errorf("%s: %.0f allocations a metered call, want 0", c.name, got)
		}
	}
	calls := m.Calls()
	for method, want := range map[string]int64{"secretmanager.GetSecret": 1002, "secretmanager.UpdateSecret": 1002, "apikeys.GetOperation": 1002, "apikeys.CreateKey": 1002} {
		if calls[method] != want {
			t.Errorf("Calls()[%q] = %d, want %d (all: %v)", method, calls[method], want, calls)
		}
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
