package emulator

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
)

// goroutineID is the id runtime.Stack prints for the calling goroutine.
func goroutineID() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf, _ = bytes.CutPrefix(buf, []byte("goroutine "))
	id, _, _ := bytes.Cut(buf, []byte(" "))
	n, _ := strconv.ParseUint(string(id), 10, 64)
	return n
}

// TestGRPCCallsReuseGoroutines: Secret Manager's calls run on a pool of
// goroutines that keep their grown stacks, not each on a new goroutine
// whose stack grows again in every call (grpcStreamWorkers). Sequential
// calls, more of them than there are workers, run on at most that many
// goroutines.
func TestGRPCCallsReuseGoroutines(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AddProject(testProject, testNumber)
	name, err := s.SeedSecret(testProject, "s", nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ids := map[uint64]bool{}
	s.SetHook("secretmanager.GetSecret", func(context.Context, int) error {
		id := goroutineID()
		mu.Lock()
		ids[id] = true
		mu.Unlock()
		return nil
	})
	ctx := context.Background()
	c, err := s.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const calls = grpcStreamWorkers + 100
	for range calls {
		if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if len(ids) > grpcStreamWorkers {
		t.Errorf("%d calls one after another ran on %d goroutines, want at most %d (the workers)", calls, len(ids), grpcStreamWorkers)
	}
}

// stackUser needs a frame of 6 KiB on the caller's stack.
//
//go:noinline
func stackUser() {
	var pad [6 << 10]byte
	touchPad(&pad)
}

//go:noinline
func touchPad(p *[6 << 10]byte) { p[0] = 1 }

// TestRESTHandlerStackGrownOnce: a REST handler runs on a stack already
// grown to hold what the emulator's handlers use (presized), so that it
// is not copied again deep in a call. A hook (run in the handler's
// goroutine) that then uses 6 KiB more finds its stack where it was: a
// local's address is the same before and after.
func TestRESTHandlerStackGrownOnce(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var moved atomic.Int32
	s.SetHook("gemini.ListModels", func(context.Context, int) error {
		var local int
		before := uintptr(unsafe.Pointer(&local))
		stackUser()
		if uintptr(unsafe.Pointer(&local)) != before {
			moved.Add(1)
		}
		return nil
	})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	const calls = 20
	for range calls {
		resp, err := client.Get("http://" + s.GeminiAddr + "/v1beta/models")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := moved.Load(); n > 0 {
		t.Errorf("in %d of %d calls the handler's stack grew (was copied) deep in the call, want 0", n, calls)
	}
}
