package gcp

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"google.golang.org/grpc"
)

// TestPacerBurstThenWindow: N calls go at once, the N+1-th waits until the
// first leaves the window (plus the margin).
func TestPacerBurstThenWindow(t *testing.T) {
	const window = 300 * time.Millisecond
	p := NewPacer(map[string]Quota{APIKeys: {Writes: 5}}, window)
	ctx := context.Background()
	start := time.Now()
	for range 5 {
		call, err := p.wait(ctx, APIKeys, "p1", true)
		if err != nil {
			t.Fatal(err)
		}
		call.answered()
	}
	if d := time.Since(start); d > window/3 {
		t.Fatalf("a burst within the quota waited %s", d)
	}
	if _, err := p.wait(ctx, APIKeys, "p1", true); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < window+window/60 {
		t.Fatalf("the 6th call of a quota of 5 went after %s, inside the window of %s and its margin of %s", d, window, window/60)
	}
	// Other projects, reads, and unpaced APIs are not held up.
	start = time.Now()
	for range 5 {
		_, _ = p.wait(ctx, APIKeys, "p2", true)
		_, _ = p.wait(ctx, APIKeys, "p1", false)
		_, _ = p.wait(ctx, Gemini, "p1", false)
	}
	if d := time.Since(start); d > window/3 {
		t.Fatalf("calls under other quotas waited %s", d)
	}
	if n, _ := p.Waits(); n != 1 {
		t.Errorf("Waits = %d, want 1", n)
	}
}

// TestPacerNeverExceedsWindow: many goroutines hammering one quota; the
// times the calls were let through never put more than N in any window —
// whatever the alignment of the server's intervals.
func TestPacerNeverExceedsWindow(t *testing.T) {
	const (
		n      = 10
		window = 200 * time.Millisecond
		calls  = 45
	)
	p := NewPacer(map[string]Quota{APIKeys: {Writes: n}}, window)
	var (
		mu    sync.Mutex
		times []time.Time // when each call went; each is answered at once
		wg    sync.WaitGroup
	)
	for range calls {
		wg.Go(func() {
			call, err := p.wait(context.Background(), APIKeys, "p", true)
			if err != nil {
				t.Error(err)
				return
			}
			went := time.Now()
			call.answered()
			mu.Lock()
			times = append(times, went)
			mu.Unlock()
		})
	}
	wg.Wait()
	// The times are taken after Wait returns, so the goroutines'
	// scheduling (more under -race) blurs them by a few ms either way;
	// TestCallLogReserve checks the reserved times exactly.
	const blur = 20 * time.Millisecond
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	for i := n; i < len(times); i++ {
		if gap := times[i].Sub(times[i-n]); gap < window-blur {
			t.Fatalf("calls %d and %d went %s apart: %d calls within the %s window", i-n, i, gap, n+1, window)
		}
	}
	// And the quota is used in full: no call waits longer than its rule
	// asks, a window and its margin after the answer of the call n before
	// it (or at once after the call before it), so that 45 calls at 10 a
	// window take a bit over 4 windows, not 9 (as a token bucket at half
	// rate would: each call a window late). The slack is for a goroutine
	// woken late on a loaded machine, well under a window: a total-time
	// bound instead failed 1 run in 45 under -race at load 20, when the
	// answers themselves came late.
	const slack = window / 4
	due := window + window/60
	for i := n; i < len(times); i++ {
		limit := later(times[i-1], times[i-n].Add(due)).Add(slack)
		if times[i].After(limit) {
			t.Errorf("call %d went %s after the answer of call %d, %s after call %d went; want at most %s and at most %s after that",
				i, times[i].Sub(times[i-n]), i-n, times[i].Sub(times[i-1]), i-1, due, slack)
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestCallLogReserve: whatever the arrival times, any limit+1 consecutive
// reservations span at least the window, reservations never go back in
// time, and a call that fits goes at once.
func TestCallLogReserve(t *testing.T) {
	const (
		limit  = 4
		window = time.Minute
	)
	l := &callLog{limit: limit}
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	// Arrivals: a burst, a lull, a trickle, another burst.
	var arrive []time.Time
	for i := range 6 {
		arrive = append(arrive, t0.Add(time.Duration(i)*time.Millisecond))
	}
	for i := range 5 {
		arrive = append(arrive, t0.Add(3*time.Minute+time.Duration(i)*20*time.Second))
	}
	for range 9 {
		arrive = append(arrive, t0.Add(5*time.Minute))
	}
	var got []time.Time
	for i, a := range arrive {
		at := l.reserve(a, window)
		if at.Before(a) {
			t.Fatalf("call %d reserved %s, before it arrived at %s", i, at, a)
		}
		if len(got) > 0 && at.Before(got[len(got)-1]) {
			t.Fatalf("call %d reserved %s, before call %d (%s)", i, at, i-1, got[len(got)-1])
		}
		got = append(got, at)
	}
	for i := limit; i < len(got); i++ {
		if gap := got[i].Sub(got[i-limit]); gap < window {
			t.Errorf("calls %d and %d reserved %s apart: %d calls in a window of %s", i-limit, i, gap, limit+1, window)
		}
	}
	// The first 4 of the burst went at once; the 5th waited for the 1st
	// to leave the window.
	if !got[3].Equal(arrive[3]) || !got[4].Equal(got[0].Add(window)) {
		t.Errorf("burst reserved %v", got[:5])
	}
	// After the lull, the trickle (one every 20s, 4 a minute) never waits.
	for i := 6; i < 11; i++ {
		if !got[i].Equal(arrive[i]) {
			t.Errorf("trickle call %d waited: arrived %s, reserved %s", i, arrive[i], got[i])
		}
	}
}

// TestPacerWindowMargin is the exact test of the window a Pacer keeps:
// Google's minute plus a margin of a sixtieth for clock skew (one second a
// minute). TestCallLogReserve passes the window to callLog itself and
// TestPacerBurstThenWindow only checks the bare window with the wall
// clock, so neither notices the margin gone; this one does, on a fake
// clock: the N+1-th call goes exactly window+margin after the first.
func TestPacerWindowMargin(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		window, want time.Duration // NewPacer's argument, the window kept
	}{
		{0, time.Minute + time.Second},
		{time.Minute, time.Minute + time.Second},
		{6 * time.Second, 6*time.Second + 100*time.Millisecond},
	} {
		p := NewPacer(map[string]Quota{APIKeys: {Reads: 9, Writes: 3}}, c.window)
		// A trickle of 3 within the window goes at once.
		for i := range 3 {
			at := t0.Add(time.Duration(i) * c.want / 6)
			if got := p.reserve(APIKeys, "p", true, fixed(at)); !got.Equal(at) {
				t.Errorf("window %s: call %d at %s reserved %s, want at once", c.window, i+1, at, got)
			}
		}
		// The 4th waits until the 1st leaves the window and its margin:
		// not a nanosecond less, nor more.
		if got, want := p.reserve(APIKeys, "p", true, fixed(t0.Add(c.want/2))), t0.Add(c.want); !got.Equal(want) {
			t.Errorf("window %s: 4th call of a quota of 3 reserved t0+%s, want t0+%s", c.window, got.Sub(t0), want.Sub(t0))
		}
		// The 5th arrives the instant the 2nd leaves: it goes at once.
		if at := t0.Add(c.want/6 + c.want); !p.reserve(APIKeys, "p", true, fixed(at)).Equal(at) {
			t.Errorf("window %s: 5th call arriving as the 2nd left the window waited", c.window)
		}
		// Reads, other projects and unpaced APIs count apart.
		for _, o := range []struct {
			api, project string
			write        bool
		}{{APIKeys, "p", false}, {APIKeys, "q", true}, {Gemini, "p", true}} {
			if got := p.reserve(o.api, o.project, o.write, fixed(t0)); !got.Equal(t0) {
				t.Errorf("window %s: %+v waited for another quota's calls (reserved t0+%s)", c.window, o, got.Sub(t0))
			}
		}
	}
}

func TestPacerContextCancel(t *testing.T) {
	p := NewPacer(map[string]Quota{APIKeys: {Writes: 1}}, time.Hour)
	call, _ := p.wait(context.Background(), APIKeys, "p", true)
	call.answered()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.wait(ctx, APIKeys, "p", true); err == nil {
		t.Fatal("Wait past the context's deadline returned nil")
	}
	var nilPacer *Pacer
	if _, err := nilPacer.wait(ctx, APIKeys, "p", true); err != nil {
		t.Fatal(err)
	}
}

func TestQuotaShare(t *testing.T) {
	q := Quota{Reads: 240, Writes: 120}
	for _, c := range []struct {
		n    int
		want Quota
	}{{0, q}, {1, q}, {4, Quota{60, 30}}, {200, Quota{1, 1}}} {
		if got := q.Share(c.n); got != c.want {
			t.Errorf("Share(%d) = %+v, want %+v", c.n, got, c.want)
		}
	}
	if got := (Quota{Reads: 0, Writes: 10}).Share(3); got.Reads != 0 {
		t.Errorf("an unpaced kind became paced: %+v", got)
	}
}

// TestRestMethod names API Keys REST requests as the RPCs they are.
func TestRestMethod(t *testing.T) {
	for _, c := range []struct{ verb, path, want, resource string }{
		{"GET", "/v2/projects/p/locations/global/keys/k", "apikeys.GetKey", "projects/p/locations/global/keys/k"},
		{"GET", "/v2/projects/p/locations/global/keys/k/keyString", "apikeys.GetKeyString", "projects/p/locations/global/keys/k/keyString"},
		{"GET", "/v2/keys:lookupKey", "apikeys.LookupKey", "keys"},
		{"GET", "/v2/projects/p/locations/global/keys", "apikeys.ListKeys", "projects/p/locations/global/keys"},
		{"POST", "/v2/projects/p/locations/global/keys", "apikeys.CreateKey", "projects/p/locations/global/keys"},
		{"PATCH", "/v2/projects/p/locations/global/keys/k", "apikeys.UpdateKey", "projects/p/locations/global/keys/k"},
		{"DELETE", "/v2/projects/p/locations/global/keys/k", "apikeys.DeleteKey", "projects/p/locations/global/keys/k"},
		{"POST", "/v2/projects/p/locations/global/keys/k:undelete", "apikeys.UndeleteKey", "projects/p/locations/global/keys/k"},
		{"GET", "/v2/operations/akmf.p7-123", "apikeys.GetOperation", "operations/akmf.p7-123"},
	} {
		req := httptest.NewRequest(c.verb, c.path, nil)
		m, res := restMethod(APIKeys, req)
		if m != c.want || res != c.resource {
			t.Errorf("%s %s: got %s %s, want %s %s", c.verb, c.path, m, res, c.want, c.resource)
		}
	}
	// Gemini probes are named by the call they make.
	for _, c := range []struct{ verb, path, want string }{
		{"GET", "/v1beta/models?pageSize=1", "gemini.ListModels"},
		{"POST", "/v1beta/models/gemini-3.5-flash-lite:countTokens", "gemini.CountTokens"},
		{"POST", "/v1beta/models/gemini-3.5-flash-lite:generateContent", "gemini.GenerateContent"},
	} {
		if m, _ := restMethod(Gemini, httptest.NewRequest(c.verb, c.path, nil)); m != c.want {
			t.Errorf("%s %s: got %s, want %s", c.verb, c.path, m, c.want)
		}
	}
	m := &Meter{}
	if p := m.charged(context.Background(), "projects/123/locations/global/keys/k"); p != "123" {
		t.Errorf("charged from the path = %q", p)
	}
	if p := m.charged(WithProject(context.Background(), "acme"), "projects/123/x"); p != "acme" {
		t.Errorf("charged with the slot's project = %q", p)
	}
	m.QuotaProject = "billing"
	if p := m.charged(WithProject(context.Background(), "acme"), "projects/123/x"); p != "billing" {
		t.Errorf("charged with a quota project = %q, want the quota project", p)
	}
}

// TestMeterCountsThrottled counts calls per method, per slot, and 429s.
func TestMeterCountsThrottled(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
	defer srv.Close()
	m := &Meter{Pacer: NewPacer(nil, 0)}
	c := &http.Client{Transport: m.Transport(APIKeys, nil)}
	var sc SlotCalls
	ctx := WithSlotCalls(context.Background(), &sc)
	get := func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v2/projects/p/locations/global/keys/k", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get()
	status = http.StatusTooManyRequests
	get()
	if calls, thr := m.Total(); calls != 2 || thr != 1 {
		t.Errorf("Total = %d, %d; want 2, 1", calls, thr)
	}
	if sc.Calls.Load() != 2 || sc.Throttled.Load() != 1 {
		t.Errorf("slot counted %d, %d; want 2, 1", sc.Calls.Load(), sc.Throttled.Load())
	}
	if got := m.Calls()["apikeys.GetKey"]; got != 2 {
		t.Errorf("apikeys.GetKey counted %d", got)
	}
}

// TestMeterLookupKeyOverGRPCIsARead: LookupKey goes over gRPC (the key
// string in the body, not the URL); the Meter counts it as the REST method
// was counted, apikeys.LookupKey, and paces it under the read quota, not
// the write one.
func TestMeterLookupKeyOverGRPCIsARead(t *testing.T) {
	m := &Meter{Pacer: NewPacer(map[string]Quota{APIKeys: {Reads: 10, Writes: 1}}, time.Hour)}
	intercept := m.UnaryInterceptor(APIKeys)
	invoke := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	ctx := WithProject(context.Background(), "p")
	for i := range 3 {
		// A write quota of 1 an hour would hold the second call.
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		err := intercept(ctx, "/google.api.apikeys.v2.ApiKeys/LookupKey", &apikeyspb.LookupKeyRequest{}, &apikeyspb.LookupKeyResponse{}, nil, invoke)
		cancel()
		if err != nil {
			t.Fatalf("LookupKey call %d: %v, want it paced as a read", i+1, err)
		}
	}
	if got := m.Calls()["apikeys.LookupKey"]; got != 3 {
		t.Errorf("apikeys.LookupKey counted %d, want 3", got)
	}
}

// fixed is a clock that always says t.
func fixed(t time.Time) func() time.Time { return func() time.Time { return t } }
