package gcp

import (
	"context"
	"strings"
	"testing"
	"time"

	apikeysapi "cloud.google.com/go/apikeys/apiv2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyrotate/keyrotate/internal/emutest"

	"github.com/keyrotate/keyrotate/internal/secret"
)

// TestLookupErrorHidesKey: a transport error of LookupKey must not repeat
// the key string it carries.
func TestLookupErrorHidesKey(t *testing.T) {
	addr := emutest.DeadAddr(t) // connection refused
	lookupc, err := apikeysapi.NewClient(context.Background(), option.WithEndpoint(addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	lookupc.CallOptions = &apikeysapi.CallOptions{}
	defer lookupc.Close()
	const canary = "AIzaSyCANARYcanaryCANARYcanary-0123456"
	// A refused connection is retried (the network may come back): bound
	// the retries.
	fast := RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: 50 * time.Millisecond}
	_, err = (&Keys{LookupClient: lookupc, Retry: fast}).Lookup(context.Background(), secret.New(canary))
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
