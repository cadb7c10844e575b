package rotate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apikeysapi "cloud.google.com/go/apikeys/apiv2"
	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/internal/childtest"
	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/verify"
)

// A fleet world is many slots in many projects on an emulator. The
// emulator runs in a child process (this test binary, started with
// fleetChildEnv set), as `keyrotate emulator` would: the parent's memory is
// then the rotator's alone, which is what the fleet benchmark measures.

const fleetChildEnv = "KEYROTATE_FLEET_EMULATOR"

// fleetSpec is what the child seeds and how its emulator behaves.
type fleetSpec struct {
	Projects, SlotsPerProject int
	Propagation, Latency      time.Duration
	// QuotaWindow, when set, enforces Google's documented per-project
	// quotas (or Quotas) over that window (a minute, time-scaled).
	QuotaWindow time.Duration
	Quotas      map[string]emulator.Quota
	// MonitoringDelay is how late Cloud Monitoring shows a Gemini call.
	MonitoringDelay time.Duration
	// QuotaProject, when set, is a project the child adds; the emulator
	// then refuses every call that does not name a quota project
	// (RequireQuotaProject), and charges the one named.
	QuotaProject string
}

// fleetSeeded is what the child tells the parent.
type fleetSeeded struct {
	Env                                        []string
	APIKeys, SecretManager, Gemini, Monitoring string
	Slots                                      []fleetSlot
}

type fleetSlot struct{ Name, Project, Secret string }

// fleetStats is what the child reports when the parent is done with it.
type fleetStats struct {
	Calls     map[string]int
	Throttled int
	// Violations are the requests that broke the APIs' published
	// definitions (emulator.Server.SchemaViolations): each fails the test.
	Violations []string
	// CPU is the CPU time (user and system) the child used while it
	// served, seeding left out: what the emulator standing in for Google
	// cost the machine the rotator shares.
	CPU time.Duration
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(fleetChildEnv); spec != "" {
		if err := fleetChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, "fleet emulator:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fleetChild seeds the world, prints it as a JSON line, serves until stdin
// closes, then prints its counters as a JSON line.
func fleetChild(specJSON string) error {
	var spec fleetSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return err
	}
	opts := emulator.Options{PropagationDelay: spec.Propagation, Latency: spec.Latency, MonitoringDelay: spec.MonitoringDelay}
	if spec.QuotaWindow > 0 {
		opts.Quotas, opts.QuotaWindow = emulator.DocumentedQuotas, spec.QuotaWindow
		if spec.Quotas != nil {
			opts.Quotas = spec.Quotas
		}
	}
	srv, err := emulator.Start(opts)
	if err != nil {
		return err
	}
	// Not closed: the process ends when the parent is done, without
	// waiting for the parent's connections to close.
	out := fleetSeeded{APIKeys: srv.APIKeysAddr, SecretManager: srv.SecretManagerAddr, Gemini: srv.GeminiAddr, Monitoring: srv.MonitoringAddr}
	if spec.QuotaProject != "" {
		srv.AddProject(spec.QuotaProject, 799999999999)
		srv.RequireQuotaProject(true)
	}
	for p := range spec.Projects {
		id := fmt.Sprintf("fleet-p%03d", p)
		srv.AddProject(id, int64(700000000000+p))
		for s := range spec.SlotsPerProject {
			name := fmt.Sprintf("p%03d-s%04d", p, s)
			_, ks, err := srv.SeedKey(id, name+"-2026", &apikeys.V2Key{
				DisplayName: "Gemini " + name,
				Restrictions: &apikeys.V2Restrictions{
					ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}},
				},
				ServiceAccountEmail: "gemini@" + id + ".iam.gserviceaccount.com",
			})
			if err != nil {
				return err
			}
			sec, err := srv.SeedSecret(id, name, nil)
			if err != nil {
				return err
			}
			if _, err := srv.SeedSecretVersion(sec, []byte(ks)); err != nil {
				return err
			}
			out.Slots = append(out.Slots, fleetSlot{Name: name, Project: id, Secret: sec})
		}
	}
	// KEYROTATE_FLEET_EMU_CPUPROFILE names a file for the emulator's CPU
	// profile while it serves (the parent's is go test -cpuprofile).
	stopProfile, err := childtest.ProfileCPU("KEYROTATE_FLEET_EMU_CPUPROFILE")
	if err != nil {
		return err
	}
	defer stopProfile()
	enc := json.NewEncoder(os.Stdout)
	seeded := cpuTime()
	if err := enc.Encode(out); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	served := cpuTime() - seeded
	var vs []string
	for _, v := range srv.SchemaViolations() {
		vs = append(vs, v.String())
	}
	return enc.Encode(fleetStats{Calls: srv.CallCounts(), Throttled: srv.Throttled(), Violations: vs, CPU: served})
}

// fleetEmulator is a running child.
type fleetEmulator struct {
	fleetSeeded
	child   *childtest.Child
	stopped bool
	tb      testing.TB
}

func startFleetEmulator(tb testing.TB, spec fleetSpec) *fleetEmulator {
	tb.Helper()
	js, _ := json.Marshal(spec)
	fe := &fleetEmulator{tb: tb}
	fe.child = childtest.Start(tb, fleetChildEnv+"="+string(js), &fe.fleetSeeded)
	tb.Cleanup(func() { fe.stop() })
	return fe
}

// stop ends the child and returns its counters.
func (fe *fleetEmulator) stop() fleetStats {
	var st fleetStats
	if fe.stopped {
		return st
	}
	fe.stopped = true
	fe.child.Stdin.Close()
	if line, err := fe.child.Out.ReadBytes('\n'); err == nil {
		_ = json.Unmarshal(line, &st)
	}
	_ = fe.child.Wait()
	for _, v := range st.Violations {
		fe.tb.Errorf("request broke the published API definition: %s", v)
	}
	return st
}

// fleetPollInterval is the rotator's first wait before it polls an
// operation (rotate.Rotator.PollInterval), before scaling.
const fleetPollInterval = 250 * time.Millisecond

// scaled are the durations of the protocol divided by a time scale, so
// that minutes pass in seconds.
type scaled float64

func (s scaled) d(d time.Duration) time.Duration { return time.Duration(float64(d) / float64(s)) }

// fleetRotator builds a Rotator whose clients go through meter, with the
// protocol's default timings divided by scale.
func (fe *fleetEmulator) rotator(tb testing.TB, meter *gcp.Meter, scale scaled) (*rotate.Rotator, *verify.Gemini) {
	return fe.rotatorCharging(tb, meter, scale, "")
}

// rotatorCharging is rotator whose API Keys and Secret Manager clients
// name quotaProject ("": none) in x-goog-user-project on every call, as
// keyrotate's do with a quota project (Google's clients send it only with
// credentials, which the emulator does not take).
func (fe *fleetEmulator) rotatorCharging(tb testing.TB, meter *gcp.Meter, scale scaled, quotaProject string) (*rotate.Rotator, *verify.Gemini) {
	tb.Helper()
	ctx := context.Background()
	// As keyrotate's clients of an emulator: cleartext HTTP/2, one
	// connection for the calls in flight (gcp.EmulatorTransport).
	emu := gcp.EmulatorTransport()
	var keysTransport http.RoundTripper = meter.Transport(gcp.APIKeys, emu)
	header := userProjectDial(quotaProject)
	if quotaProject != "" {
		keysTransport = userProjectTransport{quotaProject, keysTransport}
	}
	keys, err := apikeys.NewService(ctx, option.WithEndpoint("http://"+fe.APIKeys+"/"),
		option.WithHTTPClient(&http.Client{Transport: keysTransport}))
	if err != nil {
		tb.Fatal(err)
	}
	sm, err := secretmanager.NewClient(ctx, option.WithEndpoint(fe.SecretManager), option.WithoutAuthentication(), option.WithTelemetryDisabled(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(meter.UnaryInterceptor(gcp.SecretManager))),
		option.WithGRPCDialOption(header))
	if err != nil {
		tb.Fatal(err)
	}
	sm.CallOptions = &secretmanager.CallOptions{}
	tb.Cleanup(func() { sm.Close() })
	lookup, err := apikeysapi.NewClient(ctx, option.WithEndpoint(fe.APIKeys), option.WithoutAuthentication(), option.WithTelemetryDisabled(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(meter.UnaryInterceptor(gcp.APIKeys))),
		option.WithGRPCDialOption(header))
	if err != nil {
		tb.Fatal(err)
	}
	lookup.CallOptions = &apikeysapi.CallOptions{}
	tb.Cleanup(func() { lookup.Close() })
	mon, err := monitoring.NewMetricClient(ctx, option.WithEndpoint(fe.Monitoring), option.WithoutAuthentication(), option.WithTelemetryDisabled(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(meter.UnaryInterceptor(gcp.Monitoring))),
		option.WithGRPCDialOption(header))
	if err != nil {
		tb.Fatal(err)
	}
	mon.CallOptions = &monitoring.MetricCallOptions{}
	tb.Cleanup(func() { mon.Close() })
	g := &verify.Gemini{BaseURL: "http://" + fe.Gemini, Client: &http.Client{Transport: meter.Transport(gcp.Gemini, emu)}}
	d := gcp.DefaultRetry
	return &rotate.Rotator{
		Keys: keys, Lookup: lookup, Secrets: sm, Monitoring: mon,
		PollInterval:  scale.d(fleetPollInterval),
		ProbeInterval: scale.d(2 * time.Second), ProbeMaxInterval: scale.d(rotate.DefaultProbeMaxInterval),
		Retry: gcp.RetryPolicy{Initial: scale.d(d.Initial), Max: scale.d(d.Max), CallTimeout: d.CallTimeout, MaxElapsed: d.MaxElapsed},
	}, g
}

// slots returns the world's slots with the protocol's default timings
// divided by scale, but for the lease: renewed every third of its TTL, a
// lease of less than a few seconds would write its secret faster than
// Secret Manager's 2 writes a second per secret (not scaled) allow.
func (fe *fleetEmulator) slots(g rotate.Prober, scale scaled) []*rotate.Slot {
	out := make([]*rotate.Slot, len(fe.Slots))
	for i, s := range fe.Slots {
		out[i] = &rotate.Slot{Name: s.Name, Project: s.Project, Secret: s.Secret, Prober: g,
			MaxAge: 90 * 24 * time.Hour, PropagationTimeout: scale.d(10 * time.Minute), LeaseTTL: max(scale.d(15*time.Minute), 10*time.Second)}
	}
	return out
}

// TestFleetRotatesEachSlotOnce: 3 projects × 6 slots, 5 at a time, under
// quotas small enough to bind: every slot is rotated exactly once, no call
// is answered 429, and no rotation takes more than 15 calls.
func TestFleetRotatesEachSlotOnce(t *testing.T) {
	fe := startFleetEmulator(t, fleetSpec{Projects: 3, SlotsPerProject: 6, Propagation: 50 * time.Millisecond, QuotaWindow: time.Second})
	meter := &gcp.Meter{Pacer: gcp.NewPacer(nil, time.Second)}
	r, g := fe.rotator(t, meter, 600)
	r.Retry.MaxElapsed = 5 * time.Second
	slots := fe.slots(g, 600)
	var (
		mu       sync.Mutex
		outcomes = map[string]rotate.Outcome{}
	)
	f := &rotate.Fleet{Rotator: r, Parallel: 5,
		Done: func(o rotate.Outcome) { mu.Lock(); outcomes[o.Slot.Name] = o; mu.Unlock() }}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	f.Run(ctx, slots, rotate.Options{Force: true})
	if len(outcomes) != len(slots) {
		t.Fatalf("%d outcomes for %d slots", len(outcomes), len(slots))
	}
	for _, s := range slots {
		o := outcomes[s.Name]
		if o.Err != nil {
			t.Errorf("%s: %v", s.Name, o.Err)
			continue
		}
		// 15 calls, counting one live probe: the probe is repeated until
		// the key works (here, 50ms), the rest is not.
		if calls := o.Calls - int64(o.Result.Probes) + 1; !o.Result.Rotated || calls > 15 {
			t.Errorf("%s: rotated %v with %d calls and %d probes", s.Name, o.Result.Rotated, o.Calls, o.Result.Probes)
		}
	}
	// One key per project is probed on the backoff schedule; the others
	// wait for it to work, then probe once.
	var probes, leaders int
	for _, o := range outcomes {
		probes += o.Result.Probes
		if o.Result.Probes > 1 {
			leaders++
		}
	}
	if leaders > 3*2 || probes > len(slots)+3*20 {
		t.Errorf("%d probes for %d keys in 3 projects, %d keys probed more than once", probes, len(slots), leaders)
	}
	t.Logf("first run: %s", time.Since(t0))
	// A second run finds nothing due.
	f.Done = func(o rotate.Outcome) {
		if o.Err != nil || o.Result.Rotated {
			t.Errorf("second run, %s: rotated=%v err=%v", o.Slot.Name, o.Result != nil && o.Result.Rotated, o.Err)
		}
	}
	t0 = time.Now()
	f.Run(ctx, slots, rotate.Options{})
	t.Logf("second run: %s", time.Since(t0))
	st := fe.stop()
	if st.Calls["apikeys.CreateKey"] != len(slots) || st.Calls["apikeys.DeleteKey"] != len(slots) {
		t.Errorf("emulator saw %d creates and %d deletes for %d slots", st.Calls["apikeys.CreateKey"], st.Calls["apikeys.DeleteKey"], len(slots))
	}
	if _, thr := meter.Total(); thr != 0 || st.Throttled != 0 {
		t.Errorf("throttled: client saw %d, emulator answered %d", thr, st.Throttled)
	}
}

// TestFleetRetriesThrottledCalls: when the pacer allows more than the
// project's real quota (a quota lowered behind keyrotate's back), calls are
// answered 429 and retried after their RetryInfo delay: every slot is
// rotated, client and emulator agree on the 429s, and each retry waited
// what the 429's RetryInfo asked (the start of the next window), not less
// and not much more. Judged per retry against what the emulator sent, not
// by the whole run's wall time, which a loaded machine stretches (it was
// bounded at 8 windows, and took 15.9 at load 30 under -race).
func TestFleetRetriesThrottledCalls(t *testing.T) {
	const window = 300 * time.Millisecond
	fe := startFleetEmulator(t, fleetSpec{Projects: 2, SlotsPerProject: 6, QuotaWindow: window,
		Quotas: map[string]emulator.Quota{"apikeys": {Reads: 1000, Writes: 4}}})
	meter := &gcp.Meter{Pacer: gcp.NewPacer(nil, window)} // paces at 120 writes a window
	r, g := fe.rotator(t, meter, 600)
	// The API Keys calls (the quota that binds) go through a transport
	// that times each 429 and the retry after it, inside the pacer: the
	// time between them is the retry's own wait.
	rw := &retryWatch{next: gcp.EmulatorTransport(), pending: map[string]throttledCall{}}
	keys, err := apikeys.NewService(context.Background(), option.WithEndpoint("http://"+fe.APIKeys+"/"),
		option.WithHTTPClient(&http.Client{Transport: meter.Transport(gcp.APIKeys, rw)}))
	if err != nil {
		t.Fatal(err)
	}
	r.Keys = keys
	var (
		mu    sync.Mutex
		waits []gcp.Retrying // the retries after a 429
	)
	r.Retry.OnRetry = func(rt gcp.Retrying) {
		if _, ok := retryInfo(rt.Err); ok {
			mu.Lock()
			waits = append(waits, rt)
			mu.Unlock()
		}
	}
	took := rotateEach(t, r, fe.slots(g, 600), 30*time.Second)
	st := fe.stop()
	_, thr := meter.Total()
	if thr == 0 || int(thr) != st.Throttled {
		t.Errorf("client counted %d 429s, emulator answered %d; want the same, more than 0", thr, st.Throttled)
	}
	// What each retry meant to wait: what RetryInfo asked, or the
	// backoff when it is longer (at most Retry.Max, give or take its
	// jitter of half).
	mu.Lock()
	defer mu.Unlock()
	if len(waits) != st.Throttled {
		t.Errorf("%d retries after a 429 with RetryInfo, emulator answered %d 429s", len(waits), st.Throttled)
	}
	for _, rt := range waits {
		asked, _ := retryInfo(rt.Err)
		if most := max(asked, r.Retry.Max*3/2); rt.Wait < asked || rt.Wait > most {
			t.Errorf("%s %s, attempt %d: retry waits %s; RetryInfo asked %s, want %s to %s", rt.Call, rt.Resource, rt.Attempt, rt.Wait, asked, asked, most)
		}
	}
	// What each retry did wait, from the 429's arrival to the retry's
	// send: at least what was asked. At most a few seconds more: a retry
	// that waited a default backoff or a call timeout instead would show;
	// a loaded machine's scheduler delays a send by far less.
	const tooLong = 5 * time.Second
	rw.mu.Lock()
	defer rw.mu.Unlock()
	// (Only the API Keys quota binds here; a Secret Manager write over
	// its per-secret rate would be a gRPC 429, checked above only.)
	if rw.throttled == 0 || rw.throttled > st.Throttled || len(rw.retries) != rw.throttled {
		t.Errorf("API Keys transport saw %d 429s and %d retries after one, emulator answered %d 429s in all; want each 429 retried", rw.throttled, len(rw.retries), st.Throttled)
	}
	for _, e := range rw.errs {
		t.Error(e)
	}
	for _, rc := range rw.retries {
		if rc.waited < rc.asked || rc.waited > rc.asked+tooLong {
			t.Errorf("%s: retried %s after its 429, whose RetryInfo asked %s", rc.call, rc.waited, rc.asked)
		}
	}
	t.Logf("%d 429s, %s; retries: %v", thr, took, rw.retries)
}

// retryWatch is an HTTP transport that notes each 429's RetryInfo delay
// and when it came, and how long after it the same request was sent again.
type retryWatch struct {
	next      http.RoundTripper
	mu        sync.Mutex
	pending   map[string]throttledCall // by method and URL: a 429 not yet retried
	retries   []retriedCall
	throttled int
	errs      []string
}

type throttledCall struct {
	at    time.Time
	asked time.Duration
}

type retriedCall struct {
	call          string
	asked, waited time.Duration
}

func (rc retriedCall) String() string {
	return fmt.Sprintf("%s after %s (asked %s)", rc.call, rc.waited.Round(time.Millisecond), rc.asked)
}

func (w *retryWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	call := req.Method + " " + req.URL.Path + "?" + req.URL.RawQuery
	sent := time.Now()
	w.mu.Lock()
	if p, ok := w.pending[call]; ok {
		delete(w.pending, call)
		w.retries = append(w.retries, retriedCall{call: call, asked: p.asked, waited: sent.Sub(p.at)})
	}
	w.mu.Unlock()
	resp, err := w.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		return resp, err
	}
	at := time.Now()
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	asked, ok := retryInfo(googleapi.CheckResponse(&http.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(body))}))
	w.mu.Lock()
	defer w.mu.Unlock()
	w.throttled++
	if !ok {
		w.errs = append(w.errs, fmt.Sprintf("%s: 429 without RetryInfo: %s", call, body))
		return resp, nil
	}
	w.pending[call] = throttledCall{at: at, asked: asked}
	return resp, nil
}

// retryInfo returns the delay an error's google.rpc.RetryInfo asks, REST
// or gRPC.
func retryInfo(err error) (time.Duration, bool) {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		for _, d := range ge.Details {
			if m, ok := d.(map[string]any); ok && m["@type"] == "type.googleapis.com/google.rpc.RetryInfo" {
				s, _ := m["retryDelay"].(string)
				d, err := time.ParseDuration(s)
				return d, err == nil
			}
		}
		return 0, false
	}
	if st, ok := status.FromError(err); ok {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				return ri.GetRetryDelay().AsDuration(), true
			}
		}
	}
	return 0, false
}

// TestFleetStatusPacesMonitoringReads: many views of many slots across
// projects (several status runs at once, one Rotator each, sharing the
// process's Meter) read Cloud Monitoring under its per-project read quota:
// the pacer spaces the queries, and the emulator, enforcing the quota,
// answers none of them 429.
func TestFleetStatusPacesMonitoringReads(t *testing.T) {
	const (
		window   = 300 * time.Millisecond
		projects = 3
		views    = 5
		reads    = 3 // per project and window, on both sides
	)
	fe := startFleetEmulator(t, fleetSpec{Projects: projects, SlotsPerProject: 4, QuotaWindow: window,
		Quotas: map[string]emulator.Quota{"monitoring": {Reads: reads}}})
	quotas := map[string]gcp.Quota{}
	for api, q := range gcp.DefaultQuotas {
		quotas[api] = q
	}
	quotas[gcp.Monitoring] = gcp.Quota{Reads: reads}
	meter := &gcp.Meter{Pacer: gcp.NewPacer(quotas, window)}
	var wg sync.WaitGroup
	for range views {
		r, g := fe.rotator(t, meter, 600)
		slots := fe.slots(g, 600)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, sl := range slots {
				st, err := r.Status(context.Background(), sl)
				if err != nil {
					t.Errorf("status %s: %v", sl.Name, err)
					return
				}
				if st.UsageUnknown != "" {
					t.Errorf("status %s: usage unknown: %s", sl.Name, st.UsageUnknown)
				}
			}
		}()
	}
	wg.Wait()
	st := fe.stop()
	if got, want := meter.Calls()["monitoring.ListTimeSeries"], int64(views*projects); got != want {
		t.Errorf("ListTimeSeries calls = %d, want %d (one per project per view)", got, want)
	}
	if _, thr := meter.Total(); thr != 0 || st.Throttled != 0 {
		t.Errorf("throttled: client saw %d, emulator answered %d; calls %v", thr, st.Throttled, st.Calls)
	}
	if n, _ := meter.Pacer.Waits(); n == 0 {
		t.Errorf("no call waited for quota: %d queries per project at %d a window should have", views, reads)
	}
}

// TestFleetGoroutinePerRotation: a rotation in flight holds one goroutine,
// its own: its lease renews from a timer, not from a goroutine of its own
// (at 10,000 rotations in flight a second goroutine's stack costs more
// than all else a rotation holds). (That its calls share connections, no
// HTTP/1.1 connection and its two goroutines per call, is
// cmd/keyrotate's TestEmulatedRESTSpeaksHTTP2.) The connections are up
// before the count starts (minInFlight's warm-up), so the allowance is
// n/8, was n/4 when their goroutines counted too.
func TestFleetGoroutinePerRotation(t *testing.T) {
	const n = 80
	got := minInFlight(t, n, func() int64 { return int64(runtime.NumGoroutine()) })
	if got > n+n/8 {
		t.Errorf("%d goroutines more than before the run with %d rotations in flight, want at most %d", got, n, n+n/8)
	}
	if got < n {
		t.Errorf("%d goroutines more than before the run with %d rotations in flight: each has its own, so the baseline held goroutines that ended since", got, n)
	}
	t.Logf("%d rotations in flight: %d goroutines more than before", n, got)
}

// TestFleetHeapPerRotation: what a rotation holds while it waits for its
// new key to work, the live heap after a full GC, stays under 5 KiB (3.8
// to 4.4 here, with 7 other test processes beside it). It held about 6.7:
// the preflight's copy of the secret, the lease's whole secret (the
// record's JSON in its annotations), and the old and the new key as read
// (restrictions, binding, annotations) were kept for the whole rotation.
// Then, measured only while every rotation waits (minInFlight), about 6:
// a second copy of the record, the lease's secret as a whole Secret, keys
// as whole V2Keys, a closure per Fleet worker, API wrappers per rotation.
// Counted in bytes, on the fewest seen.
func TestFleetHeapPerRotation(t *testing.T) {
	const n = 80
	live := func() int64 { h, _ := liveHeap(); return int64(h) }
	got := minInFlight(t, n, live) / n
	if got > 5<<10 {
		t.Errorf("a rotation in flight holds %d bytes of live heap, want at most %d", got, 5<<10)
	}
	// Its slot's record, keys and timers at least: less is a baseline
	// that held what ended since.
	if got < 1<<10 {
		t.Errorf("a rotation in flight holds %d bytes of live heap, below the 1 KiB it cannot do without: the baseline held garbage or goroutines that ended since", got)
	}
	t.Logf("%d rotations in flight: %d bytes of live heap each", n, got)
}

// TestFleetStackPerParkedRotation: a rotation waiting for its new key to
// work holds a stack of 8 KiB, not 16. The GC halves a goroutine's stack
// only while less than a quarter of it is in use (with the runtime's
// 800-byte allowance): the frames under the wait (Fleet.one, Rotate,
// rotate, drive, verifyLive, waitProbe) must stay under about 3.2 KiB.
// They were 3.3, and the wait held 16 KiB for the whole propagation.
// Counted on the fewest bytes of stacks seen while all are in flight,
// each sample after a full GC.
func TestFleetStackPerParkedRotation(t *testing.T) {
	parkedStacks(t, "parked in the propagation wait", minInFlight)
}

// TestFleetStackPerParkedGate: a rotation waiting in the drain gate holds
// a stack of 8 KiB too (TestFleetStackPerParkedRotation's rule): the
// frames under the gate's sleep (Fleet.one, Rotate, rotate, drive,
// retire, retireQuiet, drainOld, awaitRead, sleepUntil) must stay under
// about 3.2 KiB. They were 4.2 (drainOld's own 1.1 KiB), and every gate of
// a fleet held 16 KiB for the usage delay at least.
func TestFleetStackPerParkedGate(t *testing.T) {
	parkedStacks(t, "parked in the drain gate", minInGate)
}

// TestFleetStackPerWaitingTurn: a rotation past its drain gate waiting for
// a turn to retire (the Rotator's limit on rotations retiring at once)
// holds a stack of 8 KiB too (TestFleetStackPerParkedRotation's rule):
// it waits in retireQuiet, on the frames under the gate's sleep and fewer.
// Thousands wait so in a gated fleet whose passes come together.
func TestFleetStackPerWaitingTurn(t *testing.T) {
	parkedStacks(t, "waiting for a turn to retire", minWaitingTurn)
}

// parkedStacks checks that 80 rotations parked where (sampled by least)
// hold at most 14 KiB of stacks each: 8 KiB for the goroutine of each, and
// room for the runtime's own; and at least the 2 KiB of a goroutine.
func parkedStacks(t *testing.T, where string, least func(t *testing.T, n int, measure func() int64) int64) {
	if raceBuild {
		t.Skip("the race detector's instrumentation deepens every frame")
	}
	const n = 80
	got := least(t, n, func() int64 { _, st := liveHeap(); return int64(st) }) / n
	if got > 14<<10 {
		t.Errorf("a rotation %s holds %d bytes of stacks, want at most %d (8 KiB for its goroutine)", where, got, 14<<10)
	}
	// A goroutine's stack is never smaller than 2 KiB: less is a
	// baseline that held stacks of goroutines that ended since.
	if got < 2<<10 {
		t.Errorf("a rotation %s holds %d bytes of stacks, below a goroutine's smallest stack (2 KiB): the baseline held stacks that ended since", where, got)
	}
	t.Logf("%d rotations %s: %d bytes of stacks each", n, where, got)
}

// minInGate rotates n slots at once through the drain gate (the new keys
// take 1.5s to work; the gate's times scaled as the fleet benchmark's by
// 60: a usage delay of 2s) and returns the least that measure grew by, from
// before the run (the clients made, one rotation done in each project) to a
// sample while all n wait in the gate. (minInFlight, for the rotations
// waiting for their keys, samples one started at a time: see there.)
func minInGate(t *testing.T, n int, measure func() int64) int64 {
	t.Helper()
	fe := startFleetEmulator(t, fleetSpec{Projects: 2, SlotsPerProject: n/2 + 1, Propagation: 1500 * time.Millisecond})
	r, g := fe.rotator(t, &gcp.Meter{}, 60)
	slots := fe.slots(g, 60)
	var gates sync.Map // slots whose gate started
	var inGate atomic.Int32
	withGate(r, slots, 60)
	r.Events = func(e rotate.Event) {
		if e.Drain == nil {
			return
		}
		if _, seen := gates.LoadOrStore(e.Slot, true); !seen {
			inGate.Add(1)
		}
	}
	// First one rotation in each project, alone: what the process builds
	// once (connections, message descriptors, compiled patterns, JSON
	// encoders) is not what a rotation in flight holds.
	warm := &rotate.Fleet{Rotator: r, Parallel: 2, Done: func(o rotate.Outcome) {
		if o.Err != nil {
			t.Errorf("%s: %v", o.Slot.Name, o.Err)
		}
	}}
	warm.Run(context.Background(), []*rotate.Slot{slots[0], slots[n/2+1]}, rotate.Options{Force: true})
	slots = append(slots[1:n/2+1], slots[n/2+2:]...)
	before := lowest(measure)
	done := make(chan struct{})
	var started atomic.Int32
	var finished atomic.Bool // a rotation ended: fewer than n in flight
	go func() {
		defer close(done)
		f := &rotate.Fleet{Rotator: r, Parallel: n, Start: func(*rotate.Slot) { started.Add(1) }, Done: func(o rotate.Outcome) {
			finished.Store(true)
			if o.Err != nil {
				t.Errorf("%s: %v", o.Slot.Name, o.Err)
			}
		}}
		f.Run(context.Background(), slots, rotate.Options{Force: true})
	}()
	var got least
	for tick := time.NewTicker(20 * time.Millisecond); ; {
		<-tick.C
		if int(started.Load()) < n || int(inGate.Load()) < n {
			continue
		}
		v := measure()
		if finished.Load() {
			tick.Stop()
			break
		}
		got.add(v)
	}
	<-done
	if !got.ok {
		t.Fatal("no sample with every rotation in flight")
	}
	return got.v - min(before, lowest(measure))
}

// minWaitingTurn rotates n slots at once through the drain gate (as
// minInGate) with the Rotator's only turn to retire held, and returns the
// least that measure grew by, from before the run to a sample while all n
// have passed their gates and wait for the turn; then it gives the turn
// back, and every old key must be deleted.
func minWaitingTurn(t *testing.T, n int, measure func() int64) int64 {
	t.Helper()
	fe := startFleetEmulator(t, fleetSpec{Projects: 2, SlotsPerProject: n/2 + 1, Propagation: 200 * time.Millisecond})
	r, g := fe.rotator(t, &gcp.Meter{}, 60)
	slots := fe.slots(g, 60)
	withGate(r, slots, 60)
	rotate.SetRetireLimit(r, 1)
	done := func(o rotate.Outcome) {
		if o.Err != nil {
			t.Errorf("%s: %v", o.Slot.Name, o.Err)
		} else if err := gatePassed(o); err != nil || o.Result.Retired != "deleted" {
			t.Errorf("%s: retired %q, gate: %v; want deleted after a passing gate", o.Slot.Name, o.Result.Retired, err)
		}
	}
	// First one rotation in each project, alone (minInGate).
	warm := &rotate.Fleet{Rotator: r, Parallel: 2, Done: done}
	warm.Run(context.Background(), []*rotate.Slot{slots[0], slots[n/2+1]}, rotate.Options{Force: true})
	slots = append(slots[1:n/2+1], slots[n/2+2:]...)
	before := lowest(measure)
	give := rotate.HoldRetireTurns(r, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		f := &rotate.Fleet{Rotator: r, Parallel: n, Done: done}
		f.Run(ctx, slots, rotate.Options{Force: true})
	})
	var got least
	tick := time.NewTicker(20 * time.Millisecond)
	for taken := 0; taken < 10 && ctx.Err() == nil; {
		<-tick.C
		if rotate.RetireWaiting(r) < n {
			continue
		}
		got.add(measure())
		taken++
	}
	tick.Stop()
	give()
	wg.Wait()
	if !got.ok {
		t.Fatalf("no sample with all %d rotations waiting for a turn within 2 minutes (%d waited)", n, rotate.RetireWaiting(r))
	}
	return got.v - min(before, lowest(measure))
}

// minInFlight measures what n rotations hold while each waits for its new
// key to work: the least that measure grew by, from before the run (the
// clients made, one rotation of each project started and stopped) to a
// sample taken while all n wait and nothing else moves. The new keys never
// work; once sampled, the rotations are stopped.
//
// Only such a sample measures a waiting rotation. A rotation still in its
// preflight, lock or create (calls in flight, a key list), or past its
// wait, holds more, and the rotations started at once did not all wait at
// any one time on a loaded machine (keys worked 1.5s after they were made).
// Started at once, they also left what a burst of calls leaves behind:
// goroutine descriptors, which the runtime never frees, and the stacks of
// ended goroutines, which it keeps for reuse (up to 64 a P) — heap and
// stacks that grew with the machine's load, not with what a rotation
// holds. So each rotation starts when the one before it waits; the probes
// come at the default intervals (the leader's once a second, the others'
// once a minute), not time-scaled, and a sample counts only if no probe and
// no step of any rotation happened while it was taken.
func minInFlight(t *testing.T, n int, measure func() int64) int64 {
	t.Helper()
	const warm = 10 // per project
	fe := startFleetEmulator(t, fleetSpec{Projects: 2, SlotsPerProject: n/2 + warm, Propagation: 100 * 365 * 24 * time.Hour})
	r, g := fe.rotator(t, &gcp.Meter{}, 60)
	r.ProbeInterval, r.ProbeMaxInterval = 0, 0
	w := newWaitWatch(fe.Slots)
	r.Events = w.event
	prober := &countingProber{Prober: g}
	// In real time: no lease renewal, no propagation_timeout while they
	// start one by one on a loaded machine.
	slots := fe.slots(prober, 1)
	// First a few rotations in each project, until they wait: what the
	// process builds once (connections and their header tables, message
	// descriptors, compiled patterns, JSON encoders) is not what a
	// rotation in flight holds.
	per := n/2 + warm
	w.runStopped(t, r, append(slots[:warm:warm], slots[per:per+warm]...), nil)
	slots = append(slots[warm:per:per], slots[per+warm:]...)
	// still measures while nothing moves: every rotation (want of them)
	// waits, no probe is under way, and no event or probe came during the
	// measure. Each measure is taken after a full GC more: the first
	// empties sync.Pool's caches into their victim caches, which the next
	// one drops; one GC would count the buffers pooled during the calls
	// before a measure as held.
	still := func(want int) (int64, bool) {
		steps, probes := w.steps.Load(), prober.started.Load()
		if w.waiting() != want || prober.inFlight.Load() != 0 {
			return 0, false
		}
		runtime.GC()
		v := measure()
		return v, w.waiting() == want && prober.inFlight.Load() == 0 && w.steps.Load() == steps && prober.started.Load() == probes
	}
	// The baseline is the least measure before the run and after it:
	// one taken while goroutines of the warm-up still wound down would
	// count them against the rotations.
	var base least
	baseline := func() {
		for range 3 {
			if v, ok := still(0); ok {
				base.add(v)
			}
		}
	}
	if baseline(); !base.ok {
		t.Fatal("no measure before the run")
	}
	var got least
	w.runStopped(t, r, slots, func() bool {
		v, ok := still(n)
		if ok {
			got.add(v)
		}
		return ok
	})
	baseline()
	return got.v - base.v // runStopped fails the test without 10 samples
}

// least keeps the least of the samples added; ok says whether there was
// one.
type least struct {
	v  int64
	ok bool
}

func (l *least) add(v int64) {
	if !l.ok || v < l.v {
		l.v, l.ok = v, true
	}
}

// lowest is the least of three measures 50ms apart: the baseline a growth
// is counted from, taken before a run and again after it (a measure of
// stacks or heap runs a full GC first: liveHeap). A single one may hold
// goroutines that were ending, and a growth counted from it would come
// out low, even below zero, and pass any upper limit: the limits' tests
// also check the growth against a floor (see parkedStacks).
func lowest(measure func() int64) int64 {
	var l least
	for i := range 3 {
		if i > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		l.add(measure())
	}
	return l.v
}

// waitWatch follows, from a Rotator's events, which rotations wait for
// their new key to work.
type waitWatch struct {
	mu   sync.Mutex
	wait map[string]bool // by slot, every slot's entry made up front
	n    int             // how many wait
	// steps counts the events: a sample is taken while it stays still.
	steps atomic.Int64
	// waited is told of each rotation's first wait.
	waited chan struct{}
	once   map[string]bool
}

func newWaitWatch(slots []fleetSlot) *waitWatch {
	w := &waitWatch{wait: map[string]bool{}, once: map[string]bool{}, waited: make(chan struct{}, len(slots))}
	for _, s := range slots {
		w.wait[s.Name], w.once[s.Name] = false, false
	}
	return w
}

// event: a rotation waits from its verify step's "waiting ..." event (the
// first probe's wait, or the wait for another key) to its next event.
func (w *waitWatch) event(e rotate.Event) {
	w.steps.Add(1)
	waits := e.Step == rotate.StepVerify && (e.Wait != nil || strings.HasPrefix(e.Message, "waiting for"))
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wait[e.Slot] != waits {
		w.wait[e.Slot] = waits
		if waits {
			w.n++
		} else {
			w.n--
		}
	}
	if waits && !w.once[e.Slot] {
		w.once[e.Slot] = true
		w.waited <- struct{}{}
	}
}

func (w *waitWatch) waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// runStopped rotates slots, each started once the one before it waits,
// until all wait; then, with sample set, it calls sample every 20ms until
// sample has returned true (a sample taken) 10 times; then it stops the
// rotations and waits for them to end. Each must end stopped, nothing
// else.
func (w *waitWatch) runStopped(t *testing.T, r *rotate.Rotator, slots []*rotate.Slot, sample func() bool) {
	t.Helper()
	ctx, stop := context.WithCancelCause(context.Background())
	errSampled := errors.New("sampled")
	turn := make(chan struct{}, 1)
	turn <- struct{}{}
	var wg sync.WaitGroup
	wg.Go(func() {
		f := &rotate.Fleet{Rotator: r, Parallel: len(slots), Start: func(*rotate.Slot) { <-turn }, Done: func(o rotate.Outcome) {
			if !errors.Is(o.Err, errSampled) {
				t.Errorf("%s: ended with %v, want stopped", o.Slot.Name, o.Err)
			}
		}}
		f.Run(ctx, slots, rotate.Options{Force: true})
	})
	var failed string
	deadline := time.After(2 * time.Minute)
	for i := 0; i < len(slots) && failed == ""; i++ {
		select {
		case <-w.waited:
			turn <- struct{}{}
		case <-deadline:
			failed = fmt.Sprintf("%d of %d rotations came to wait for their keys within 2 minutes", i, len(slots))
		}
	}
	if sample != nil && failed == "" {
		tick, end := time.NewTicker(20*time.Millisecond), time.After(time.Minute)
		for taken := 0; taken < 10 && failed == ""; {
			select {
			case <-tick.C:
				if sample() {
					taken++
				}
			case <-end:
				failed = fmt.Sprintf("%d samples in a minute with every rotation waiting and nothing moving, want 10", taken)
			}
		}
		tick.Stop()
	}
	stop(errSampled)
	wg.Wait()
	if failed != "" {
		t.Fatal(failed)
	}
}

// countingProber counts the probes under way and made.
type countingProber struct {
	rotate.Prober
	inFlight, started atomic.Int64
}

func (p *countingProber) Probe(ctx context.Context, key secret.Key) error {
	p.started.Add(1)
	p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	return p.Prober.Probe(ctx, key)
}

// stackChildEnv makes TestFleetStackDepth's child run the fleet with the
// stack limit.
const stackChildEnv = "KEYROTATE_FLEET_STACK_CHILD"

// fleetStackLimit is the most stack a goroutine of a fleet run may grow
// to. Stacks grow by doubling: a rotation that once goes deeper than 16
// KiB holds 32 KiB from then on, for as long as it waits in a call more
// than 8 KiB deep (the GC halves a stack only when a quarter of it is in
// use), and at 10,000 rotations in flight that was the largest part of
// what a rotation holds (BenchmarkFleet's peak-B/rot). The deepest
// rotation calls reach about 12 KiB (a CreateKey's JSON request body,
// encoded by nested MarshalJSON calls); Google's default OpenTelemetry
// stats handler took a Secret Manager call past 16.
const fleetStackLimit = 16 << 10

// TestFleetStackDepth: no goroutine of a fleet run grows its stack past
// 16 KiB. The fleet runs in a child process (this test binary) with
// runtime/debug.SetMaxStack at that limit: a goroutine that grows past it
// crashes the child, whose traceback names the path.
func TestFleetStackDepth(t *testing.T) {
	if raceBuild {
		t.Skip("the race detector's instrumentation deepens every frame; the limit is for the binary keyrotate ships")
	}
	if os.Getenv(stackChildEnv) == "1" {
		fleetStackChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFleetStackDepth$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), stackChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		// The traceback of the goroutine that overflowed, in short.
		lines := strings.Split(string(out), "\n")
		for i, l := range lines {
			if strings.Contains(l, "[running]") {
				lines = lines[i:min(len(lines), i+60)]
				break
			}
		}
		t.Fatalf("the fleet run with stacks limited to %d bytes failed: %v\n%s", fleetStackLimit, err, strings.Join(lines, "\n"))
	}
}

// fleetStackChild rotates a small fleet twice (a first rotation, with its
// LookupKey, then a next run) with every goroutine's stack limited to
// fleetStackLimit, after one rotation without the limit: what a process
// does once (JSON encoders built for a type, connections dialled) is not
// what a rotation in flight holds.
func fleetStackChild(t *testing.T) {
	fe := startFleetEmulator(t, fleetSpec{Projects: 2, SlotsPerProject: 5, Propagation: 50 * time.Millisecond, Latency: 20 * time.Millisecond})
	r, g := fe.rotator(t, &gcp.Meter{Pacer: gcp.NewPacer(nil, time.Minute)}, 600)
	slots := fe.slots(g, 600)
	if _, err := r.Rotate(context.Background(), slots[0], rotate.Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	debug.SetMaxStack(fleetStackLimit)
	for _, opts := range []rotate.Options{{Force: true}, {Force: true, Again: true}} {
		f := &rotate.Fleet{Rotator: r, Parallel: len(slots), Done: func(o rotate.Outcome) {
			if o.Err != nil {
				t.Errorf("%s: %v", o.Slot.Name, o.Err)
			}
		}}
		f.Run(context.Background(), slots[1:], opts)
	}
}

// rotateEach rotates slots, 12 at a time, within timeout, each forced;
// every one must be rotated. It returns how long the run took.
func rotateEach(t *testing.T, r *rotate.Rotator, slots []*rotate.Slot, timeout time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	f := &rotate.Fleet{Rotator: r, Parallel: 12, Done: func(o rotate.Outcome) {
		if o.Err != nil || !o.Result.Rotated {
			t.Errorf("%s: %v", o.Slot.Name, o.Err)
		}
	}}
	start := time.Now()
	f.Run(ctx, slots, rotate.Options{Force: true})
	return time.Since(start)
}

// TestInterleave: slots are taken round-robin by project, in config order
// within each project.
func TestInterleave(t *testing.T) {
	var in []*rotate.Slot
	for _, n := range []string{"a1", "a2", "a3", "b1", "c1", "c2"} {
		in = append(in, &rotate.Slot{Name: n, Project: n[:1]})
	}
	var got []string
	for _, s := range rotate.Interleave(in) {
		got = append(got, s.Name)
	}
	if want := []string{"a1", "b1", "c1", "a2", "c2", "a3"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Interleave = %v, want %v", got, want)
	}
}

func TestShardIsStable(t *testing.T) {
	// Fixed values: every process, on any machine and version, must agree.
	for _, c := range []struct {
		slot string
		n    int
		want int
	}{{"gemini-prod", 4, rotate.Shard("gemini-prod", 4)}, {"gemini-prod", 1, 0}} {
		if got := rotate.Shard(c.slot, c.n); got != c.want {
			t.Errorf("Shard(%q, %d) = %d, want %d", c.slot, c.n, got, c.want)
		}
	}
	if got := rotate.Shard("gemini-prod", 7); got != 4 {
		t.Errorf("Shard(gemini-prod, 7) = %d, want 4 (FNV-1a 32 mod 7)", got)
	}
	// Spread: 1,000 names over 8 shards, none empty or overfull.
	count := make([]int, 8)
	for i := range 1000 {
		count[rotate.Shard(fmt.Sprintf("slot-%d", i), 8)]++
	}
	for i, c := range count {
		if c < 90 || c > 160 {
			t.Errorf("shard %d of 8 got %d of 1000 slots", i, c)
		}
	}
}

// userProjectDial sends x-goog-user-project with every gRPC call, unless
// project is "".
func userProjectDial(project string) grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if project != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-goog-user-project", project)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// userProjectTransport sends x-goog-user-project on every request.
type userProjectTransport struct {
	project string
	base    http.RoundTripper
}

func (t userProjectTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("X-Goog-User-Project", t.project)
	return t.base.RoundTrip(req)
}

// TestFleetUnderOneQuotaProject: 3 projects × 2 slots whose calls are all
// charged to one quota project, whose API Keys quota is 4 writes a window
// (a second: its margin, 16ms, absorbs the jitter of a loaded machine):
// the pacer keys its budget on the charged project, so the fleet never
// goes over that one budget (no 429), whether the quota project is known to
// the Rotator (the slots' calls) or to the Meter (every call). Keyed on the
// slots' projects it sends 12 writes in the first window.
func TestFleetUnderOneQuotaProject(t *testing.T) {
	const (
		window = time.Second
		qp     = "fleet-billing"
	)
	limits := map[string]gcp.Quota{gcp.APIKeys: {Reads: 1000, Writes: 4}, gcp.SecretManager: {Reads: 1000, Writes: 1000}}
	for _, tc := range []struct {
		name         string
		rotator      bool // the Rotator knows the quota project
		meter        bool // the Meter does
		wantThrottle bool
	}{
		{name: "rotator", rotator: true},
		{name: "meter", meter: true},
		{name: "neither", wantThrottle: true}, // the budget of each slot's project: over the one quota
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe := startFleetEmulator(t, fleetSpec{Projects: 3, SlotsPerProject: 2, QuotaWindow: window, QuotaProject: qp,
				Quotas: map[string]emulator.Quota{"apikeys": {Reads: 1000, Writes: 4}, "secretmanager": {Reads: 1000, Writes: 1000}}})
			meter := &gcp.Meter{Pacer: gcp.NewPacer(limits, window)}
			if tc.meter {
				meter.QuotaProject = qp
			}
			r, g := fe.rotatorCharging(t, meter, 600, qp)
			if tc.rotator {
				r.QuotaProject = qp
			}
			r.Retry.MaxElapsed = 20 * time.Second
			slots := fe.slots(g, 600)
			for _, s := range slots {
				if got, want := r.ChargedProject(s), map[bool]string{true: qp, false: s.Project}[tc.rotator]; got != want {
					t.Errorf("ChargedProject(%s) = %q, want %q", s.Name, got, want)
				}
			}
			took := rotateEach(t, r, slots, 60*time.Second)
			st := fe.stop()
			if (st.Throttled > 0) != tc.wantThrottle {
				t.Errorf("emulator answered %d 429s; want any: %v", st.Throttled, tc.wantThrottle)
			}
			writes := st.Calls["apikeys.CreateKey"] + st.Calls["apikeys.UpdateKey"] + st.Calls["apikeys.DeleteKey"] + st.Calls["apikeys.UndeleteKey"]
			t.Logf("%d API Keys writes, %d 429s, %s", writes, st.Throttled, took)
		})
	}
}

// TestFleetMakesKeysThroughTheBurst: when a fleet's calls are at the
// Meter's bound on calls in flight, rotations under way go on before
// others start, so most new keys are made (and start their minute of
// propagation) before the last rotations make their first call, not at
// the end of a burst in which every rotation makes each call in step.
// Unbounded, not one CreateKey came before the last GetSecret.
func TestFleetMakesKeysThroughTheBurst(t *testing.T) {
	const projects, perProject, bound = 4, 50, 16
	n := projects * perProject
	fe := startFleetEmulator(t, fleetSpec{Projects: projects, SlotsPerProject: perProject,
		Propagation: 200 * time.Millisecond, Latency: 10 * time.Millisecond})
	meter := &gcp.Meter{InFlight: bound}
	r, g := fe.rotator(t, meter, 600)
	f := &rotate.Fleet{Rotator: r, Parallel: n, Done: func(o rotate.Outcome) {
		if o.Err != nil {
			t.Errorf("%s: %v", o.Slot.Name, o.Err)
		}
	}}
	// The CreateKeys made by the time the GetSecrets reach n (every
	// rotation has started), sampled every millisecond: calls take 20ms.
	creates := make(chan int64, 1)
	stop := make(chan struct{})
	go func() {
		for tick := time.NewTicker(time.Millisecond); ; {
			select {
			case <-stop:
				tick.Stop()
				creates <- -1
				return
			case <-tick.C:
			}
			calls := meter.Calls()
			if calls["secretmanager.GetSecret"] >= int64(n) {
				tick.Stop()
				creates <- calls["apikeys.CreateKey"]
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f.Run(ctx, fe.slots(g, 600), rotate.Options{Force: true})
	close(stop)
	got := <-creates
	if got < int64(n/2) {
		t.Errorf("%d of %d new keys were made when the last rotation made its first call (GetSecret), want at least %d", got, n, n/2)
	}
	t.Logf("%d of %d new keys made when the last rotation started", got, n)
	// The rotations still share one key list a project: all of them
	// start their preflight at once, before their first call.
	if lists := meter.Calls()["apikeys.ListKeys"]; lists != projects {
		t.Errorf("%d ListKeys for %d projects, want one each", lists, projects)
	}
}
