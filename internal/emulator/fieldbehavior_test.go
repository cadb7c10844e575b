package emulator

import (
	"context"
	"testing"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestGRPCFieldBehaviours sends gRPC requests that break their protos'
// field behaviours: a missing REQUIRED field is refused with
// INVALID_ARGUMENT and a BadRequest naming it, an OUTPUT_ONLY field that is
// set is ignored; both are recorded. Well-formed requests record nothing.
func TestGRPCFieldBehaviours(t *testing.T) {
	s, _, _ := startKeys(t, Options{NoSecretWriteLimits: true})
	ctx := context.Background()
	sec, err := s.SeedSecret(testProject, "gemini", nil)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := s.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Close()
	lookup, err := s.APIKeysLookupClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lookup.Close()
	_, ks, err := s.SeedKey(testProject, "live", nil)
	if err != nil {
		t.Fatal(err)
	}
	mask := &fieldmaskpb.FieldMask{Paths: []string{"annotations"}}
	for _, tc := range []struct {
		name      string
		call      func() error
		wantCode  codes.Code
		wantField string // "" : no violation
	}{
		{"LookupKey without key_string", func() error {
			_, err := lookup.LookupKey(ctx, &apikeyspb.LookupKeyRequest{})
			return err
		}, codes.InvalidArgument, "key_string"},
		{"LookupKey", func() error {
			_, err := lookup.LookupKey(ctx, &apikeyspb.LookupKeyRequest{KeyString: ks})
			return err
		}, codes.OK, ""},
		{"AddSecretVersion without payload", func() error {
			_, err := sm.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: sec})
			return err
		}, codes.InvalidArgument, "payload"},
		{"AddSecretVersion", func() error {
			_, err := sm.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: sec, Payload: &secretmanagerpb.SecretPayload{Data: []byte("x")}})
			return err
		}, codes.OK, ""},
		{"UpdateSecret without update_mask", func() error {
			_, err := sm.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: sec}})
			return err
		}, codes.InvalidArgument, "update_mask"},
		{"UpdateSecret with an output-only field", func() error {
			_, err := sm.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{UpdateMask: mask,
				Secret: &secretmanagerpb.Secret{Name: sec, CreateTime: timestamppb.Now(), Annotations: map[string]string{"a": "b"}}})
			return err
		}, codes.OK, "secret.create_time"},
		{"UpdateSecret by name, without the REQUIRED-on-create replication", func() error {
			_, err := sm.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{UpdateMask: mask,
				Secret: &secretmanagerpb.Secret{Name: sec, Annotations: map[string]string{"a": "c"}}})
			return err
		}, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.SchemaViolations())
			err := tc.call()
			if status.Code(err) != tc.wantCode {
				t.Fatalf("err = %v, want %v", err, tc.wantCode)
			}
			if tc.wantCode == codes.InvalidArgument {
				var br *errdetails.BadRequest
				for _, d := range status.Convert(err).Details() {
					if b, ok := d.(*errdetails.BadRequest); ok {
						br = b
					}
				}
				if br == nil || len(br.FieldViolations) != 1 || br.FieldViolations[0].Field != tc.wantField {
					t.Errorf("BadRequest = %v, want one violation of %q", br, tc.wantField)
				}
			}
			vs := s.SchemaViolations()[before:]
			switch {
			case tc.wantField == "" && len(vs) != 0:
				t.Errorf("violations = %+v, want none", vs)
			case tc.wantField != "" && (len(vs) != 1 || vs[0].Field != tc.wantField || vs[0].Refused != (tc.wantCode != codes.OK)):
				t.Errorf("violations = %+v, want one of %q", vs, tc.wantField)
			}
		})
	}
}
