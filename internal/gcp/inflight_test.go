package gcp

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestMeterBoundsCallsInFlight: a Meter lets at most InFlight calls go at
// once, REST and gRPC together, and every call still goes.
func TestMeterBoundsCallsInFlight(t *testing.T) {
	const bound, calls = 5, 60
	var in, most atomic.Int64
	call := func() {
		n := in.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(2 * time.Millisecond)
		in.Add(-1)
	}
	m := &Meter{InFlight: bound}
	rest := m.Transport(APIKeys, roundTripper(func(*http.Request) (*http.Response, error) {
		call()
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(""))}, nil
	}))
	unary := m.UnaryInterceptor(SecretManager)
	invoke := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
		call()
		return nil
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			if i%2 == 0 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://emu/v2/operations/o", nil)
				if _, err := rest.RoundTrip(req); err != nil {
					t.Error(err)
				}
				return
			}
			if err := unary(ctx, "/google.cloud.secretmanager.v1.SecretManagerService/GetSecret",
				&secretmanagerpb.GetSecretRequest{Name: "projects/p/secrets/s"}, nil, nil, invoke); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := most.Load(); got > bound || got < 2 {
		t.Errorf("at most %d calls were in flight at once, want between 2 and the bound %d", got, bound)
	}
	if total, _ := m.Total(); total != calls {
		t.Errorf("%d calls made, want %d", total, calls)
	}
}

// TestInFlightUrgentFirst: when a place frees, the calls that start a
// rotation go before those that continue one; then the call of the slot
// that has made the most calls; then the call that came first.
func TestInFlightUrgentFirst(t *testing.T) {
	l := newInFlight(1)
	ctx := context.Background()
	if err := l.acquire(ctx, false); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		order []string
		wg    sync.WaitGroup
	)
	started := make(chan struct{})
	queued := 0
	wait := func(name string, urgent bool, made int64) {
		wg.Go(func() {
			started <- struct{}{}
			c := new(SlotCalls)
			c.Calls.Store(made)
			if err := l.acquire(WithSlotCalls(ctx, c), urgent); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			l.release()
		})
		<-started
		queued++
		waitQueued(t, l, queued)
	}
	wait("op1", false, 6)
	wait("get1", true, 0)
	wait("op2", false, 6)
	wait("get2", true, 0)
	wait("disable", false, 9)
	wait("lookup", true, 2)
	l.release()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if got, want := strings.Join(order, " "), "lookup get1 get2 disable op1 op2"; got != want {
		t.Errorf("calls went in the order %q, want %q", got, want)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.free != 1 || len(l.waiting) != 0 {
		t.Errorf("%d places free and %d waiting at the end, want 1 and 0", l.free, len(l.waiting))
	}
}

// waitQueued waits until n calls wait in l.
func waitQueued(t *testing.T, l *inFlight, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		l.mu.Lock()
		queued := len(l.waiting)
		l.mu.Unlock()
		if queued == n {
			return
		}
	}
	t.Fatalf("%d calls never came to wait", n)
}

// TestInFlightCancel: a call that stops waiting takes no place, and one
// handed a place as it stops passes it on, so no place is ever lost.
func TestInFlightCancel(t *testing.T) {
	l := newInFlight(1)
	bg := context.Background()
	if err := l.acquire(bg, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	errc := make(chan error, 1)
	go func() { errc <- l.acquire(ctx, true) }()
	waitQueued(t, l, 1)
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Fatalf("a cancelled wait returned %v, want context.Canceled", err)
	}
	l.release() // the gone waiter is skipped: the place is free
	if err := l.acquire(bg, false); err != nil {
		t.Fatal(err)
	}
	l.release()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.free != 1 {
		t.Errorf("%d places free, want 1", l.free)
	}

	// Handed a place just as ctx ended: many rounds of cancel racing
	// release, then every place must still be there.
	l = newInFlight(2)
	for range 2000 {
		_ = l.acquire(bg, false)
		_ = l.acquire(bg, false)
		ctx, cancel := context.WithCancel(bg)
		done := make(chan struct{})
		go func() {
			if l.acquire(ctx, false) == nil {
				l.release()
			}
			close(done)
		}()
		go cancel()
		l.release()
		<-done
		l.release()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.free != 2 {
		t.Errorf("after cancels racing releases, %d places free, want 2", l.free)
	}
}

// TestMeterWaitEndsWithContext: a call whose context ends while it waits
// for a place is not sent, and fails as gRPC fails a call whose context
// ended (DEADLINE_EXCEEDED), so that the retry and the hints treat it so.
func TestMeterWaitEndsWithContext(t *testing.T) {
	m := &Meter{InFlight: 1}
	unary := m.UnaryInterceptor(SecretManager)
	hold, held := make(chan struct{}), make(chan struct{})
	var sent atomic.Int32
	invoke := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
		if sent.Add(1) == 1 {
			close(held)
			<-hold
		}
		return nil
	}
	const method = "/google.cloud.secretmanager.v1.SecretManagerService/GetSecret"
	req := &secretmanagerpb.GetSecretRequest{Name: "projects/p/secrets/s"}
	done := make(chan error)
	go func() { done <- unary(context.Background(), method, req, nil, nil, invoke) }()
	<-held
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := unary(ctx, method, req, nil, nil, invoke)
	if status.Code(err) != codes.DeadlineExceeded || sent.Load() != 1 {
		t.Errorf("a call whose deadline passed while it waited: %v (code %s), %d calls sent; want DeadlineExceeded and 1", err, status.Code(err), sent.Load())
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := unary(context.Background(), method, req, nil, nil, invoke); err != nil || sent.Load() != 2 {
		t.Errorf("the next call: %v, %d sent; want it sent", err, sent.Load())
	}
}
