package emulator

import (
	"context"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// TestSecretWriteRate: a global secret takes two writes (UpdateSecret,
// AddSecretVersion) a second; the third is refused with 429
// RESOURCE_EXHAUSTED RATE_LIMIT_EXCEEDED and a RetryInfo after which it
// fits. Another secret has its own rate, and a version's state changes
// take one a second.
func TestSecretWriteRate(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AddProject("rate-p", 4242)
	ctx := context.Background()
	c, err := s.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, _ := s.SeedSecret("rate-p", "a", nil)
	b, _ := s.SeedSecret("rate-p", "b", nil)
	add := func(sec string) error {
		_, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: sec, Payload: &secretmanagerpb.SecretPayload{Data: []byte("x")}})
		return err
	}
	update := func(sec string) error {
		_, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
			Secret:     &secretmanagerpb.Secret{Name: sec, Annotations: map[string]string{"k": "v"}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}}})
		return err
	}
	start := time.Now()
	if err := add(a); err != nil {
		t.Fatal(err)
	}
	// The project is named by number here: the same secret.
	if err := update("projects/4242/secrets/a"); err != nil {
		t.Fatal(err)
	}
	err = add(a)
	if time.Since(start) < time.Second {
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted {
			t.Fatalf("third write within a second: %v, want RESOURCE_EXHAUSTED", err)
		}
		var delay time.Duration
		var reason string
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.RetryInfo:
				delay = d.GetRetryDelay().AsDuration()
			case *errdetails.ErrorInfo:
				reason = d.GetReason()
			}
		}
		if reason != "RATE_LIMIT_EXCEEDED" || delay <= 0 || delay > time.Second {
			t.Errorf("refusal reason %q, retry delay %v; want RATE_LIMIT_EXCEEDED and (0, 1s]", reason, delay)
		}
		if err := add(b); err != nil {
			t.Errorf("a write to another secret: %v, want success", err)
		}
		time.Sleep(delay)
		if err := add(a); err != nil {
			t.Errorf("after the retry delay: %v, want success", err)
		}
	}
	if s.Throttled() == 0 && time.Since(start) < time.Second {
		t.Error("Throttled() = 0 after a refusal")
	}
	// Version state changes: one a second per version.
	v, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: b, Payload: &secretmanagerpb.SecretPayload{Data: []byte("y")}})
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	if _, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v.Name}); err != nil {
		t.Fatal(err)
	}
	_, err = c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: v.Name})
	if time.Since(t1) < time.Second && status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second state change of a version within a second: %v, want RESOURCE_EXHAUSTED", err)
	}
}
