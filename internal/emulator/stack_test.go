package emulator

import (
	"bytes"
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
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

// TestLookupKeyCallsReuseGoroutines: LookupKey, gRPC on the API Keys
// address (served through net/http), runs on the workers too.
func TestLookupKeyCallsReuseGoroutines(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AddProject(testProject, testNumber)
	_, ks, err := s.SeedKey(testProject, "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ids := map[uint64]bool{}
	s.SetHook("apikeys.LookupKey", func(context.Context, int) error {
		id := goroutineID()
		mu.Lock()
		ids[id] = true
		mu.Unlock()
		return nil
	})
	ctx := context.Background()
	c, err := s.APIKeysLookupClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const calls = grpcStreamWorkers + 100
	for range calls {
		if _, err := c.LookupKey(ctx, &apikeyspb.LookupKeyRequest{KeyString: ks}); err != nil {
			t.Fatal(err)
		}
	}
	if len(ids) > grpcStreamWorkers {
		t.Errorf("%d calls one after another ran on %d goroutines, want at most %d (the workers)", calls, len(ids), grpcStreamWorkers)
	}
}
