package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
)

func TestSecretLocation(t *testing.T) {
	for name, want := range map[string]string{
		"projects/p/secrets/s":                        "",
		"projects/p/locations/europe-west1/secrets/s": "europe-west1",
		"projects/p/locations/us-east1/secrets/s/x":   "",
	} {
		if got := secretLocation(name); got != want {
			t.Errorf("secretLocation(%q) = %q, want %q", name, got, want)
		}
	}
	if got, want := regionalEndpoint("us-central1"), "secretmanager.us-central1.rep.googleapis.com:443"; got != want {
		t.Errorf("regionalEndpoint = %q, want %q", got, want)
	}
}

// TestRegionalClients: one client per location, the global one for global
// secrets, all closed by Close.
func TestRegionalClients(t *testing.T) {
	srv := emutest.Start(t, emulator.Options{})
	for _, kv := range srv.Env() { // every emulator host variable
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	ctx := context.Background()
	c, err := newClients(ctx, hostsFromEnv(), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.addLocations(ctx, "", "us-east1", "europe-west1", "us-east1"); err != nil {
		t.Fatal(err)
	}
	if len(c.regional) != 2 {
		t.Fatalf("%d regional clients, want 2", len(c.regional))
	}
	if c.secretsFor("projects/p/secrets/s") != c.secrets {
		t.Error("a global secret does not get the global client")
	}
	east := c.secretsFor("projects/p/locations/us-east1/secrets/s")
	if east == c.secrets || east != c.secretsFor("projects/q/locations/us-east1/secrets/t") {
		t.Error("a regional secret does not get its location's one client")
	}
	if east == c.secretsFor("projects/p/locations/europe-west1/secrets/s") {
		t.Error("two locations share a client")
	}
	c.Close()
}

// TestMonitoringClient: MONITORING_EMULATOR_HOST gives a metered client of
// the emulator; other emulators without it give none, so that a test
// world never asks Google about its keys.
func TestMonitoringClient(t *testing.T) {
	srv := emutest.Start(t, emulator.Options{})
	ctx := context.Background()
	h := hosts{apiKeys: srv.APIKeysAddr, secretManager: srv.SecretManagerAddr, gemini: srv.GeminiAddr}
	c, err := newClients(ctx, h, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.monitoring != nil {
		t.Error("a Monitoring client without MONITORING_EMULATOR_HOST while emulators are in use")
	}
	c.Close()

	h.monitoring = srv.MonitoringAddr
	meter := &gcp.Meter{}
	c, err = newClients(ctx, h, meter, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.monitoring == nil {
		t.Fatal("no Monitoring client with MONITORING_EMULATOR_HOST")
	}
	u := &gcp.Usage{Client: c.monitoring}
	// An unknown project answers PERMISSION_DENIED: the call was made.
	_, _ = u.RequestCounts(ctx, "no-such-project", time.Now(), time.Hour, time.Minute)
	if n := meter.Calls()["monitoring.ListTimeSeries"]; n != 1 {
		t.Errorf("metered ListTimeSeries calls = %d, want 1", n)
	}
}

// TestEmulatedRESTSpeaksHTTP2: the REST clients of an emulator (API Keys,
// the Gemini probe) speak cleartext HTTP/2, as the emulator serves and as
// Google's endpoints are reached over TLS: concurrent calls share a
// connection instead of opening one each (a fleet's memory and connection
// churn).
func TestEmulatedRESTSpeaksHTTP2(t *testing.T) {
	var (
		mu     sync.Mutex
		protos = map[string]string{}
	)
	h := func(api string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			protos[api] = r.Proto
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{}`))
		})
	}
	srv := emutest.Start(t, emulator.Options{})
	hs := hosts{apiKeys: cleartextServer(t, h("apikeys")), secretManager: srv.SecretManagerAddr, gemini: cleartextServer(t, h("gemini"))}
	ctx := context.Background()
	c, err := newClients(ctx, hs, &gcp.Meter{}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.keys.Projects.Locations.Keys.List("projects/p/locations/global").Context(ctx).Do(); err != nil {
		t.Fatal(err)
	}
	_ = c.gemini.Probe(ctx, secret.New("AIzaSyNotAKeyAtAll000000000000000000000"))
	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{"apikeys": "HTTP/2.0", "gemini": "HTTP/2.0"}
	if d := cmp.Diff(want, protos); d != "" {
		t.Errorf("protocols of the emulated REST calls (-want +got):\n%s", d)
	}
}

// TestClientsRecordNoTelemetry: keyrotate's gRPC clients carry none of the
// OpenTelemetry instrumentation Google's clients add by default. keyrotate
// installs no provider, so the instrumentation only cost CPU and stack on
// every call (see noTelemetry); with a provider installed, as here, it
// would record a span a call.
func TestClientsRecordNoTelemetry(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	srv := emutest.Start(t, emulator.Options{})
	hs := hosts{apiKeys: srv.APIKeysAddr, secretManager: srv.SecretManagerAddr, gemini: srv.GeminiAddr, monitoring: srv.MonitoringAddr}
	ctx := context.Background()
	c, err := newClients(ctx, hs, &gcp.Meter{}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Each call fails (nothing is seeded); what matters is that it is made.
	calls := map[string]error{}
	_, calls["secretmanager"] = c.secrets.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: "projects/p/secrets/none"})
	_, calls["apikeys lookup"] = c.lookup.LookupKey(ctx, &apikeyspb.LookupKeyRequest{KeyString: "AIzaSyNotAKeyAtAll000000000000000000000"})
	_, calls["monitoring"] = c.monitoring.ListTimeSeries(ctx, &monitoringpb.ListTimeSeriesRequest{Name: "projects/p",
		Filter:   `metric.type = "serviceruntime.googleapis.com/api/request_count"`,
		Interval: &monitoringpb.TimeInterval{EndTime: timestamppb.Now()}}).Next()
	for api, err := range calls {
		if err == nil {
			t.Errorf("%s: the call succeeded; want an error from the empty emulator", api)
		}
	}
	if spans := rec.Ended(); len(spans) != 0 {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name())
		}
		t.Errorf("the clients recorded %d spans, want none: %v", len(spans), names)
	}
}

// cleartextServer serves h over plain HTTP/1.1 and cleartext HTTP/2, as the
// emulator's REST ports do, and returns its host:port.
func cleartextServer(t *testing.T, h http.Handler) string {
	s := httptest.NewUnstartedServer(h)
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// TestProbeGoroutinesPerCall: a live probe in flight costs the goroutine
// that makes it and the HTTP/2 stream's writer, no more. An
// http.Client.Timeout on the Gemini client cost two more a call
// (net/http's setRequestCancel and awaitLegacyCancel): the probe is
// bounded through its context instead (verify.ProbeTimeout).
func TestProbeGoroutinesPerCall(t *testing.T) {
	const n = 20
	var (
		blocking atomic.Bool
		inFlight atomic.Int32
	)
	release := make(chan struct{})
	gemini := cleartextServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if blocking.Load() {
			inFlight.Add(1)
			<-release
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	srv := emutest.Start(t, emulator.Options{})
	c, err := newClients(context.Background(), hosts{apiKeys: srv.APIKeysAddr, secretManager: srv.SecretManagerAddr, gemini: gemini}, &gcp.Meter{}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// One probe first, so that the connection and its goroutines are up.
	if err := c.gemini.Probe(context.Background(), secret.New("AIzaSyNotAKeyAtAll000000000000000000000")); err != nil {
		t.Fatal(err)
	}
	blocking.Store(true)
	base := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_ = c.gemini.Probe(context.Background(), secret.New("AIzaSyNotAKeyAtAll000000000000000000000"))
		})
	}
	for deadline := time.Now().Add(10 * time.Second); inFlight.Load() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d probes reached the server", inFlight.Load(), n)
		}
	}
	got := runtime.NumGoroutine() - base
	close(release)
	wg.Wait()
	// Per probe: its own goroutine, the stream's writer, and the test
	// server's handler (in this process too); a few for the connection.
	if want := 3*n + 5; got > want {
		t.Errorf("%d probes in flight: %d goroutines more than before, want at most %d (3 a probe, the server's handler included)", n, got, want)
	}
	t.Logf("%d probes in flight: %d goroutines more than before", n, got)
}
