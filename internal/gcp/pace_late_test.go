package gcp

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emutest"
)

// lateFirst delays the first request it carries before sending it on: the
// call arrives late (a loaded machine's scheduler, a slow network path).
type lateFirst struct {
	n     atomic.Int32
	delay time.Duration
	base  http.RoundTripper
}

func (t *lateFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.n.Add(1) == 1 {
		time.Sleep(t.delay)
	}
	return t.base.RoundTrip(req)
}

// TestPacerLateArrival: Google counts a call when it arrives, anywhere
// between its send and its answer. Three GetKeys one after another under
// a quota of 2 reads a window (2s), the first arriving 1s late: counted
// from when they were let go, the third went 2s+margin after the first
// was let go, 1s after the first arrived, and (started 200ms before a
// window of the emulator begins) all three arrived in one window: a 429.
// Counted from the answer of the call 2 before, the third goes in the
// next window.
func TestPacerLateArrival(t *testing.T) {
	const (
		window = 2 * time.Second
		delay  = time.Second
	)
	srv := emutest.Start(t, emulator.Options{Quotas: map[string]emulator.Quota{"apikeys": {Reads: 2}}, QuotaWindow: window})
	srv.AddProject("acme", 123)
	name, _, err := srv.SeedKey("acme", "k", &apikeys.V2Key{DisplayName: "k"})
	if err != nil {
		t.Fatal(err)
	}
	m := &Meter{Pacer: NewPacer(map[string]Quota{APIKeys: {Reads: 2}}, window)}
	c := &http.Client{Transport: m.Transport(APIKeys, &lateFirst{delay: delay, base: http.DefaultTransport})}
	// Start 200ms before one of the emulator's windows begins (its clock
	// is the wall clock; its windows are aligned on Truncate(window)).
	time.Sleep(time.Until(time.Now().Truncate(window).Add(window - 200*time.Millisecond)))
	for i := range 3 {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+srv.APIKeysAddr+"/v2/"+name, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GetKey %d: %s", i+1, resp.Status)
		}
	}
	if n := srv.Throttled(); n != 0 {
		t.Errorf("the emulator answered %d calls 429, want 0", n)
	}
}

// TestCallLogCountsFromAnswer is the rule on a fake clock: with a limit of
// 2 a window, the third call goes a window after the answer of the first,
// however late that answer; while the first is in flight, the third
// cannot know when it may go.
func TestCallLogCountsFromAnswer(t *testing.T) {
	const window = time.Minute
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	l := &callLog{limit: 2}
	a := l.take(at(0), window)
	b := l.take(at(time.Second), window)
	for _, c := range []struct {
		name string
		tk   ticket
		want time.Time
	}{{"first", a, at(0)}, {"second", b, at(time.Second)}} {
		if got, ok := c.tk.ready(window); !ok || !got.Equal(c.want) {
			t.Errorf("%s call: ready = t0+%s, %v; want t0+%s, at once", c.name, got.Sub(t0), ok, c.want.Sub(t0))
		}
	}
	l.answer(b.seq, at(time.Second)) // the second is answered at once
	c := l.take(at(2*time.Second), window)
	if got, ok := c.ready(window); ok {
		t.Fatalf("third call: ready at t0+%s while the first is in flight, want to wait for its answer", got.Sub(t0))
	}
	l.answer(a.seq, at(30*time.Second)) // the first arrived and was answered late
	if got, ok := c.ready(window); !ok || !got.Equal(at(90*time.Second)) {
		t.Errorf("third call: ready = t0+%s, %v; want t0+90s (a window after the first's answer), not t0+60s (a window after it was let go)", got.Sub(t0), ok)
	}
	// The fourth counts from the second's answer (t0+1s) and goes after
	// the third (the log stays ordered).
	d := l.take(at(3*time.Second), window)
	if got, ok := d.ready(window); !ok || !got.Equal(at(61*time.Second)) {
		t.Errorf("fourth call: ready = t0+%s, %v; want t0+61s", got.Sub(t0), ok)
	}
	if d.at.Before(c.at) {
		t.Errorf("fourth call let go at t0+%s, before the third (t0+%s)", d.at.Sub(t0), c.at.Sub(t0))
	}
}

// TestPacerWaitsForAnswer: with a quota of 1 a window, a second call
// waits for the first's answer however long it takes, then a window.
func TestPacerWaitsForAnswer(t *testing.T) {
	const window = 60 * time.Millisecond
	p := NewPacer(map[string]Quota{APIKeys: {Writes: 1}}, window)
	ctx := context.Background()
	first, err := p.wait(ctx, APIKeys, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	went := make(chan time.Time, 1)
	go func() {
		call, err := p.wait(ctx, APIKeys, "p", true)
		if err != nil {
			t.Error(err)
		}
		went <- time.Now()
		call.answered()
	}()
	select {
	case at := <-went:
		t.Fatalf("the second call went at %s while the first was in flight", at)
	case <-time.After(5 * window):
	}
	first.answered()
	answeredAt := time.Now()
	if gap := (<-went).Sub(answeredAt); gap < window {
		t.Errorf("the second call went %s after the first's answer, want at least the window %s", gap, window)
	}
	if n, _ := p.Waits(); n != 1 {
		t.Errorf("Waits = %d, want 1", n)
	}
}

// TestPacerFailedWaitFreesItsPlace: a call whose wait ends with its
// context was not sent; it counts as answered then, so the calls after
// it do not wait for an answer that never comes.
func TestPacerFailedWaitFreesItsPlace(t *testing.T) {
	const window = 30 * time.Millisecond
	p := NewPacer(map[string]Quota{APIKeys: {Reads: 1}}, window)
	first, err := p.wait(context.Background(), APIKeys, "p", false)
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.wait(cancelled, APIKeys, "p", false); err == nil {
		t.Fatal("a wait with its context done returned nil")
	}
	first.answered()
	ctx, stop := context.WithTimeout(context.Background(), 2*time.Second)
	defer stop()
	if _, err := p.wait(ctx, APIKeys, "p", false); err != nil {
		t.Fatalf("the call after a failed wait: %v", err)
	}
}
