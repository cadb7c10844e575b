package emulator

// The quota project: the project an API Keys or Secret Manager call is
// charged to (its "consumer"), and what Google answers when there is none.
//
// Both APIs charge the caller's quota project: the project named in the
// x-goog-user-project header (a REST header, gRPC metadata) when the caller
// sends one, else the project of the caller's credentials. User credentials
// from `gcloud auth application-default login` without a quota project
// belong to gcloud's own OAuth client, whose project is Google's shared
// client project, number 764086051850; there the APIs are not enabled, and
// every call fails with 403 PERMISSION_DENIED, reason SERVICE_DISABLED,
// naming that project as the consumer. The body, as published for the API
// Keys API itself (pulumi/pulumi-gcp#2896, 2025-01; the same shape for
// dlp.googleapis.com in GoogleCloudPlatform/dlp-pdf-redaction#25 and
// billingbudgets, securitycenter elsewhere):
//
//	{"error":{"code":403,"message":"Your application is authenticating by
//	using local Application Default Credentials. The apikeys.googleapis.com
//	API requires a quota project, which is not set by default. To learn how
//	to set your quota project, see
//	https://cloud.google.com/docs/authentication/adc-troubleshooting/user-creds .",
//	"status":"PERMISSION_DENIED","details":[
//	  {"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED",
//	   "domain":"googleapis.com","metadata":{"consumer":"projects/764086051850",
//	   "service":"apikeys.googleapis.com"}},
//	  {"@type":"type.googleapis.com/google.rpc.LocalizedMessage", ...}]}}
//
// Server.RequireQuotaProject switches that on: the emulator then stands for
// a caller with such user credentials, and every API Keys and Secret
// Manager call that sends no x-goog-user-project gets that answer (REST
// body and gRPC status details alike). Without the switch a call with no
// header is charged to its resource's project, as for a service account of
// that project.
//
// A call that sends x-goog-user-project is charged to that project
// (Options.Quotas, QuotaUsage), whatever the switch says, and Google's
// checks of a quota project apply:
//   - a project the emulator does not know, or a caller without
//     serviceusage.services.use (DenyPermission), is refused with 403
//     USER_PROJECT_DENIED, "Caller does not have required permission to use
//     project P. Grant the caller the roles/serviceusage.serviceUsageConsumer
//     role, ..." with a Help link to the IAM page and an ErrorInfo naming the
//     consumer and service (hashicorp/terraform-provider-google#17938,
//     GoogleCloudPlatform/pbmm-on-gcp-onboarding#379). Google does not say
//     whether an unknown project answers so or CONSUMER_INVALID; the
//     emulator takes USER_PROJECT_DENIED, which does not reveal whether the
//     project exists (AIP-211).
//   - a project where the API is disabled (SetServiceEnabled) is refused
//     with 403 SERVICE_DISABLED "API Keys API has not been used in project N
//     before or it is disabled. Enable it by visiting URL then retry. ...",
//     with ErrorInfo metadata activationUrl, consumer, containerInfo,
//     service, serviceTitle, a LocalizedMessage and a Help link "Google
//     developers console API activation"
//     (GoogleCloudPlatform/core-solution-services#7 for the API Keys API;
//     the metadata fields as Google sends them since 2024 in many public
//     threads, e.g. for compute.googleapis.com and firebasedatabase).
//
// Not modelled: the checks happen before the quota and before faults and
// hooks (the front end refuses the call before the service sees it, as for
// quota errors); which one Google runs first when several apply is not
// documented.

import (
	"context"
	"fmt"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// SharedClientProject is the number of Google's shared client project: the
// consumer of calls made with gcloud user credentials that carry no quota
// project.
const SharedClientProject = 764086051850

// userProjectHeader is the system parameter that names the quota project
// (https://cloud.google.com/apis/docs/system-parameters).
const userProjectHeader = "x-goog-user-project"

// serviceTitles are the display names Google's messages use.
var serviceTitles = map[string]string{
	apiKeysService:                 "API Keys API",
	"secretmanager.googleapis.com": "Secret Manager API",
	monitoringService:              "Cloud Monitoring API",
}

// RequireQuotaProject switches the emulator to stand for a caller with
// user credentials and no quota project: every API Keys and Secret Manager
// call without an x-goog-user-project header fails with 403
// SERVICE_DISABLED naming Google's shared client project (see
// quotaproject.go).
func (s *Server) RequireQuotaProject(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quotaProjectRequired = on
}

// userProjectKey carries a REST request's x-goog-user-project in its
// context.
type userProjectKey struct{}

// userProjectOf returns the quota project a call names: its REST header or
// its gRPC metadata; "" for none.
func userProjectOf(ctx context.Context) string {
	if p, ok := ctx.Value(userProjectKey{}).(string); ok {
		return p
	}
	// Not FromIncomingContext, which copies all of a call's metadata: this
	// runs on every call.
	if v := metadata.ValueFromIncomingContext(ctx, userProjectHeader); len(v) > 0 {
		return v[0]
	}
	return ""
}

// chargedLocked decides, for a call of method, which project it is
// charged to when it names a quota project: that project, or the error
// Google answers. charged is false when the call names none (it is then
// charged to its resource's project). Call with s.mu held.
func (s *Server) chargedLocked(ctx context.Context, method string) (p *project, charged bool, err error) {
	short, _, ok := quotaOf(method)
	if !ok {
		return nil, false, nil
	}
	service := quotaServices[short]
	up := userProjectOf(ctx)
	if up == "" {
		if s.quotaProjectRequired {
			return nil, false, noQuotaProject(service)
		}
		return nil, false, nil
	}
	p = s.project(up)
	if p == nil || s.denied["serviceusage.services.use"] {
		return nil, true, userProjectDenied(up, service)
	}
	if p.disabled[service] {
		return nil, true, serviceDisabled(service, p)
	}
	return p, true, nil
}

// noQuotaProject is Google's answer to user credentials without a quota
// project.
func noQuotaProject(service string) *apiError {
	return newError(codes.PermissionDenied,
		"Your application is authenticating by using local Application Default Credentials. The %s API requires a quota "+
			"project, which is not set by default. To learn how to set your quota project, see "+
			"https://cloud.google.com/docs/authentication/adc-troubleshooting/user-creds .", service).
		withInfo("SERVICE_DISABLED", "googleapis.com", map[string]string{
			"consumer": fmt.Sprintf("projects/%d", SharedClientProject),
			"service":  service,
		})
}

// serviceDisabled is Google's answer to a call charged to a project where
// the service is not enabled.
func serviceDisabled(service string, p *project) *apiError {
	n := strconv.FormatInt(p.number, 10)
	title := serviceTitles[service]
	url := "https://console.developers.google.com/apis/api/" + service + "/overview?project=" + n
	return newError(codes.PermissionDenied,
		"%s has not been used in project %s before or it is disabled. Enable it by visiting %s then retry. If you enabled "+
			"this API recently, wait a few minutes for the action to propagate to our systems and retry.", title, n, url).
		withInfo("SERVICE_DISABLED", "googleapis.com", map[string]string{
			"activationUrl": url,
			"consumer":      "projects/" + n,
			"containerInfo": n,
			"service":       service,
			"serviceTitle":  title,
		}).
		withDetail(help{Type: typeHelp, Links: []helpLink{{Description: "Google developers console API activation", URL: url}}})
}

// userProjectDenied is Google's answer to a quota project the caller may
// not charge.
func userProjectDenied(up, service string) *apiError {
	url := "https://console.developers.google.com/iam-admin/iam/project?project=" + up
	e := newError(codes.PermissionDenied,
		"Caller does not have required permission to use project %s. Grant the caller the "+
			"roles/serviceusage.serviceUsageConsumer role, or a custom role with the serviceusage.services.use permission, "+
			"by visiting %s and then retry. Propagation of the new permission may take a few minutes.", up, url)
	e.details = append(e.details,
		help{Type: typeHelp, Links: []helpLink{{Description: "Google developer console IAM admin", URL: url}}},
		errorInfo{Type: typeErrorInfo, Reason: "USER_PROJECT_DENIED", Domain: "googleapis.com", Metadata: map[string]string{
			"consumer": "projects/" + up,
			"service":  service,
		}})
	return e
}
