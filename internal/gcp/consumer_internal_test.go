package gcp

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"google.golang.org/api/googleapi"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/internal/errhint"
)

// restError is what the discovery client returns for a JSON error body.
func restError(t *testing.T, body string) error {
	t.Helper()
	var doc struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Details []any  `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	return &googleapi.Error{Code: doc.Error.Code, Message: doc.Error.Message, Body: body, Details: doc.Error.Details}
}

func grpcError(t *testing.T, msg string, ds ...*errdetails.ErrorInfo) error {
	t.Helper()
	st, err := status.New(codes.PermissionDenied, msg).WithDetails(ds[0], &errdetails.Help{Links: []*errdetails.Help_Link{{Description: "Google developers console API activation", Url: "https://console.developers.google.com/apis/api/secretmanager.googleapis.com/overview?project=999"}}})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// TestConsumerErrorParse reads the consumer from REST and gRPC answers in
// the shapes Google publishes (see emulator/quotaproject.go for sources).
func TestConsumerErrorParse(t *testing.T) {
	for _, tc := range []struct {
		name         string
		err          func(t *testing.T) error
		resource     string
		wantConsumer string
		wantURL      string
		wantShared   bool
		wantHint     []string // "": not a ConsumerError
	}{
		{
			name: "REST, shared client project",
			err: func(t *testing.T) error {
				return restError(t, `{"error":{"code":403,"message":"Your application is authenticating by using local Application Default Credentials. The apikeys.googleapis.com API requires a quota project, which is not set by default.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED","domain":"googleapis.com","metadata":{"consumer":"projects/764086051850","service":"apikeys.googleapis.com"}}]}}`)
			},
			resource:     "projects/acme-prod/locations/global/keys/k",
			wantConsumer: "projects/764086051850", wantShared: true,
			wantHint: []string{"764086051850", "gcloud auth application-default set-quota-project acme-prod"},
		},
		{
			name: "REST, API not enabled in the service account's project",
			err: func(t *testing.T) error {
				return restError(t, `{"error":{"code":403,"message":"API Keys API has not been used in project 555 before or it is disabled.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Google developers console API activation","url":"https://console.developers.google.com/apis/api/apikeys.googleapis.com/overview?project=555"}]},{"@type":"type.googleapis.com/google.rpc.ErrorInfo","domain":"googleapis.com","metadata":{"consumer":"projects/555","service":"apikeys.googleapis.com"},"reason":"SERVICE_DISABLED"}]}}`)
			},
			wantConsumer: "projects/555",
			wantURL:      "https://console.developers.google.com/apis/api/apikeys.googleapis.com/overview?project=555",
			wantHint:     []string{"not enabled in project 555", "gcloud services enable apikeys.googleapis.com --project 555", "overview?project=555"},
		},
		{
			name: "gRPC, API not enabled in the quota project",
			err: func(t *testing.T) error {
				return grpcError(t, "Secret Manager API has not been used in project 999 before or it is disabled.", &errdetails.ErrorInfo{Reason: "SERVICE_DISABLED", Domain: "googleapis.com", Metadata: map[string]string{"consumer": "projects/999", "service": "secretmanager.googleapis.com"}})
			},
			wantConsumer: "projects/999",
			wantURL:      "https://console.developers.google.com/apis/api/secretmanager.googleapis.com/overview?project=999",
			wantHint:     []string{"gcloud services enable secretmanager.googleapis.com --project 999"},
		},
		{
			name: "gRPC, shared client project",
			err: func(t *testing.T) error {
				return grpcError(t, "requires a quota project", &errdetails.ErrorInfo{Reason: "SERVICE_DISABLED", Metadata: map[string]string{"consumer": "projects/764086051850", "service": "secretmanager.googleapis.com"}})
			},
			resource:     "projects/acme-prod/secrets/s",
			wantConsumer: "projects/764086051850", wantShared: true,
			wantURL:  "https://console.developers.google.com/apis/api/secretmanager.googleapis.com/overview?project=999",
			wantHint: []string{"set-quota-project acme-prod"},
		},
		{
			name: "REST, quota project the caller may not use",
			err: func(t *testing.T) error {
				return restError(t, `{"error":{"code":403,"message":"Caller does not have required permission to use project billing.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.Help","links":[{"url":"https://console.developers.google.com/iam-admin/iam/project?project=billing"}]},{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"USER_PROJECT_DENIED","metadata":{"consumer":"projects/billing","service":"apikeys.googleapis.com"}}]}}`)
			},
			wantConsumer: "projects/billing",
			wantHint:     []string{"roles/serviceusage.serviceUsageConsumer", "project billing"},
		},
		{
			name: "an IAM denial is not about the consumer",
			err: func(t *testing.T) error {
				return restError(t, `{"error":{"code":403,"message":"Permission 'apikeys.keys.create' denied on resource 'projects/acme-prod' (or it may not exist).","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"IAM_PERMISSION_DENIED","metadata":{"permission":"apikeys.keys.create"}}]}}`)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := denied(tc.err(t), "apikeys.keys.create", tc.resource)
			var ce *ConsumerError
			if !errors.As(err, &ce) {
				if tc.wantHint != nil {
					t.Fatalf("denied(...) = %v, want a *ConsumerError", err)
				}
				if h := errhint.Of(err); !strings.Contains(h, "roles/serviceusage.apiKeysAdmin") {
					t.Errorf("IAM denial hint %q, want the role", h)
				}
				return
			}
			if tc.wantHint == nil {
				t.Fatalf("denied(...) = ConsumerError %+v, want none", ce)
			}
			if ce.Consumer != tc.wantConsumer || ce.SharedClient() != tc.wantShared || ce.ActivationURL != tc.wantURL {
				t.Errorf("ConsumerError = {%s shared=%v url=%q}, want {%s shared=%v url=%q}", ce.Consumer, ce.SharedClient(), ce.ActivationURL, tc.wantConsumer, tc.wantShared, tc.wantURL)
			}
			for _, want := range tc.wantHint {
				if h := errhint.Of(err); !strings.Contains(h, want) {
					t.Errorf("hint %q does not say %q", h, want)
				}
			}
		})
	}
}
