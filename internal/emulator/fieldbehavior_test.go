package emulator

import (
	"context"
	"testing"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"cloud.google.com/go/run/apiv2/runpb"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
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

// TestFieldBehaviorViolationPaths pins what the check finds in requests
// deep in their messages: the paths (lists indexed), REQUIRED not checked
// inside an update's resource but at its top, the resource's name and
// Cloud Run's Service exempt from the output-only check, a proto3 enum
// whose zero is a value (ListTimeSeriesRequest.view) never missing.
func TestFieldBehaviorViolationPaths(t *testing.T) {
	now := timestamppb.Now()
	userManaged := func(rs ...*secretmanagerpb.Replication_UserManaged_Replica) *secretmanagerpb.Replication {
		return &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_UserManaged_{
			UserManaged: &secretmanagerpb.Replication_UserManaged{Replicas: rs}}}
	}
	required := func(method, field string) Violation {
		return Violation{Method: method, Field: field, Refused: true, Message: "Required field '" + field + "' is not set."}
	}
	outputOnly := func(method, field string) Violation {
		return Violation{Method: method, Field: field, Message: "Output-only field '" + field + "' sent in a request: the API ignores it."}
	}
	for _, tc := range []struct {
		name, method string
		req          proto.Message
		want         []Violation
	}{
		{"create, deep", "secretmanager.CreateSecret", &secretmanagerpb.CreateSecretRequest{Secret: &secretmanagerpb.Secret{
			Name: "x", CreateTime: now, Etag: "e",
			Topics:      []*secretmanagerpb.Topic{{}, {Name: "t"}},
			Replication: userManaged(&secretmanagerpb.Replication_UserManaged_Replica{}, &secretmanagerpb.Replication_UserManaged_Replica{Location: "l", CustomerManagedEncryption: &secretmanagerpb.CustomerManagedEncryption{}}),
			Rotation:    &secretmanagerpb.Rotation{},
		}}, []Violation{
			required("secretmanager.CreateSecret", "parent"),
			required("secretmanager.CreateSecret", "secret_id"),
			required("secretmanager.CreateSecret", "secret.replication.user_managed.replicas[1].customer_managed_encryption.kms_key_name"),
			outputOnly("secretmanager.CreateSecret", "secret.create_time"),
		}},
		{"update", "secretmanager.UpdateSecret", &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{
			Name: "x", CreateTime: now, Topics: []*secretmanagerpb.Topic{{}},
			Replication: userManaged(&secretmanagerpb.Replication_UserManaged_Replica{CustomerManagedEncryption: &secretmanagerpb.CustomerManagedEncryption{}}),
		}}, []Violation{
			outputOnly("secretmanager.UpdateSecret", "secret.create_time"),
			required("secretmanager.UpdateSecret", "update_mask"),
		}},
		{"empty", "secretmanager.AddSecretVersion", &secretmanagerpb.AddSecretVersionRequest{}, []Violation{
			required("secretmanager.AddSecretVersion", "parent"),
			required("secretmanager.AddSecretVersion", "payload"),
		}},
		{"Cloud Run's service", "run.UpdateService", &runpb.UpdateServiceRequest{Service: &runpb.Service{Name: "n", Uid: "u", Etag: "e",
			Template: &runpb.RevisionTemplate{Containers: []*runpb.Container{{Env: []*runpb.EnvVar{{}}}}}}}, nil},
		{"enum zero a value", "monitoring.ListTimeSeries", &monitoringpb.ListTimeSeriesRequest{}, []Violation{
			required("monitoring.ListTimeSeries", "name"),
			required("monitoring.ListTimeSeries", "filter"),
			required("monitoring.ListTimeSeries", "interval"),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fieldBehaviorViolations(tc.method, tc.req)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("fieldBehaviorViolations(%s) (-want +got):\n%s", tc.method, diff)
			}
		})
	}
}

// TestFieldBehaviorCheckAllocs: checking a well-formed request allocates
// nothing (it runs on every gRPC call: 8 of a rotation's 14).
func TestFieldBehaviorCheckAllocs(t *testing.T) {
	s, _, _ := startKeys(t, Options{})
	crc := int64(1)
	noop := func(context.Context, any) (any, error) { return nil, nil }
	for _, tc := range []struct {
		method string
		req    proto.Message
	}{
		{"/google.api.apikeys.v2.ApiKeys/LookupKey", &apikeyspb.LookupKeyRequest{KeyString: "AIza"}},
		{"/google.cloud.secretmanager.v1.SecretManagerService/AccessSecretVersion", &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/p/secrets/s/versions/latest"}},
		{"/google.cloud.secretmanager.v1.SecretManagerService/AddSecretVersion", &secretmanagerpb.AddSecretVersionRequest{
			Parent: "projects/p/secrets/s", Payload: &secretmanagerpb.SecretPayload{Data: []byte("AQ.x"), DataCrc32C: &crc}}},
		{"/google.cloud.secretmanager.v1.SecretManagerService/UpdateSecret", &secretmanagerpb.UpdateSecretRequest{
			Secret:     &secretmanagerpb.Secret{Name: "projects/p/secrets/s", Etag: `"e"`, Annotations: map[string]string{"keyrotate.rotation": "{}"}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}}}},
	} {
		info := &grpc.UnaryServerInfo{FullMethod: tc.method}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := s.checkFieldBehavior(context.Background(), tc.req, info, noop); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("checkFieldBehavior(%s) allocates %v times a call, want 0", tc.method, allocs)
		}
	}
}
