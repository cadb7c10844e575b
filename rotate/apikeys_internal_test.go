package rotate

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/option"

	"github.com/keyrotate/keyrotate/secret"
)

// TestLookupErrorHidesKey: LookupKey carries the key string in its query;
// a transport error must not repeat it.
func TestLookupErrorHidesKey(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	svc, err := apikeys.NewService(context.Background(), option.WithEndpoint("http://"+addr+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	const canary = "AIzaSyCANARYcanaryCANARYcanary-0123456"
	// A refused connection is retried (the network may come back): bound
	// the retries.
	fast := RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: 50 * time.Millisecond}
	_, err = (&keysAPI{svc: svc, retry: fast}).lookup(context.Background(), secret.New(canary))
	if err == nil {
		t.Fatal("lookup against a closed port succeeded")
	}
	if strings.Contains(err.Error(), canary) {
		t.Errorf("lookup error leaks the key string: %v", err)
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Errorf("lookup error = %v, want the transport's reason kept", err)
	}
}
