package gcp

import (
	"errors"
	"strings"

	"google.golang.org/api/googleapi"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/keyrotate/keyrotate/internal/errhint"
)

// The consumer project. Google charges each API Keys and Secret Manager
// call to a project, the consumer: the caller's quota project when it names
// one (x-goog-user-project, which the clients send when given a quota
// project), else the project of its credentials. The API must be enabled
// there, and the caller must be allowed to use it (serviceusage.services.use).
// When it is not, Google answers 403 PERMISSION_DENIED with a
// google.rpc.ErrorInfo naming the consumer — not the project of the key or
// secret the call was about, which is why the plain message misleads:
//
//   - reason SERVICE_DISABLED, metadata consumer "projects/N", service, and
//     (since 2024) activationUrl; a google.rpc.Help link to the same page.
//     With user credentials from `gcloud auth application-default login`
//     and no quota project, the consumer is Google's shared client project
//     764086051850, where the caller can enable nothing.
//   - reason USER_PROJECT_DENIED: the caller may not charge the quota
//     project it named.

// sharedClientProject is the number of the project that owns gcloud's OAuth
// client: Google charges it for the calls of user credentials that carry
// no quota project, and answers SERVICE_DISABLED.
const sharedClientProject = "764086051850"

// Reasons of a ConsumerError.
const (
	ReasonServiceDisabled   = "SERVICE_DISABLED"
	ReasonUserProjectDenied = "USER_PROJECT_DENIED"
)

// ConsumerError is a call refused because of the project it was charged to
// (see above). It wraps Google's error and carries what its details say.
type ConsumerError struct {
	Reason        string // ReasonServiceDisabled or ReasonUserProjectDenied
	Service       string // "apikeys.googleapis.com"
	Consumer      string // the charged project, as Google names it: "projects/764086051850"
	ActivationURL string // where to enable Service in Consumer; "" if not given
	// Project is the project the call was about (of its key or secret),
	// when known: the natural quota project to suggest.
	Project string
	Err     error
}

func (e *ConsumerError) Error() string { return e.Err.Error() }
func (e *ConsumerError) Unwrap() error { return e.Err }

// consumerProject returns the charged project's id or number
// ("764086051850").
func (e *ConsumerError) consumerProject() string {
	return strings.TrimPrefix(e.Consumer, "projects/")
}

// SharedClient reports whether the call was charged to Google's shared
// client project: user credentials without a quota project.
func (e *ConsumerError) SharedClient() bool {
	return e.Reason == ReasonServiceDisabled && e.consumerProject() == sharedClientProject
}

// Hint says what to do: set a quota project, enable the API in the charged
// project, or let the caller use it.
func (e *ConsumerError) Hint() string {
	service := e.Service
	if service == "" {
		service = "the API"
	}
	suggest := e.Project
	if suggest == "" {
		suggest = "PROJECT"
	}
	c := e.consumerProject()
	switch {
	case e.SharedClient():
		return "the call was charged to project " + c + ", Google's shared client project, because the credentials are user credentials " +
			"(gcloud auth application-default login) without a quota project; set a quota project where the API Keys and Secret Manager APIs " +
			"are enabled and you hold roles/serviceusage.serviceUsageConsumer: gcloud auth application-default set-quota-project " + suggest
	case e.Reason == ReasonUserProjectDenied:
		return "the caller may not charge its calls to quota project " + c + ": grant it roles/serviceusage.serviceUsageConsumer " +
			"(permission serviceusage.services.use) on project " + c + ", or use another quota project"
	}
	h := service + " is not enabled in project " + c + ", the project charged for the call (the quota project, or the credentials' project): " +
		"enable it there (gcloud services enable " + service + " --project " + c
	if e.ActivationURL != "" {
		h += ", or visit " + e.ActivationURL
	}
	return h + "), wait a few minutes and run again; or charge a project where it is enabled"
}

// ConsumerErrorOf returns the ConsumerError err is, or nil: a 403 whose
// ErrorInfo (REST details or gRPC status details) has a consumer reason.
// project is the project the call was about ("" if unknown).
func ConsumerErrorOf(err error, project string) *ConsumerError {
	var ce *ConsumerError
	if errors.As(err, &ce) {
		return ce
	}
	ce = &ConsumerError{Project: project, Err: err}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		for _, d := range ge.Details {
			m, ok := d.(map[string]any)
			if !ok {
				continue
			}
			switch m["@type"] {
			case "type.googleapis.com/google.rpc.ErrorInfo":
				ce.Reason, _ = m["reason"].(string)
				md, _ := m["metadata"].(map[string]any)
				ce.Service, _ = md["service"].(string)
				ce.Consumer, _ = md["consumer"].(string)
				if u, _ := md["activationUrl"].(string); u != "" {
					ce.ActivationURL = u
				}
			case "type.googleapis.com/google.rpc.Help":
				links, _ := m["links"].([]any)
				for _, l := range links {
					if lm, ok := l.(map[string]any); ok && ce.ActivationURL == "" {
						ce.ActivationURL, _ = lm["url"].(string)
					}
				}
			}
		}
	} else if st, ok := grpcStatus(err); ok {
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.ErrorInfo:
				ce.Reason = d.GetReason()
				ce.Service = d.GetMetadata()["service"]
				ce.Consumer = d.GetMetadata()["consumer"]
				if u := d.GetMetadata()["activationUrl"]; u != "" {
					ce.ActivationURL = u
				}
			case *errdetails.Help:
				for _, l := range d.GetLinks() {
					if ce.ActivationURL == "" {
						ce.ActivationURL = l.GetUrl()
					}
				}
			}
		}
	}
	if ce.Reason != ReasonServiceDisabled && ce.Reason != ReasonUserProjectDenied || ce.Consumer == "" {
		return nil
	}
	if ce.Reason == ReasonUserProjectDenied {
		ce.ActivationURL = "" // the Help link is the IAM page, not an activation
	}
	return ce
}

// denied explains a PERMISSION_DENIED from a call that needs perm on
// resource: a ConsumerError when the charged project is the cause, else
// the hint of a missing permission.
func denied(err error, perm, resource string) error {
	if ce := ConsumerErrorOf(err, projectOfResource(resource)); ce != nil {
		return errhint.With(ce, ce.Hint())
	}
	return errhint.With(err, denialHint(err, perm, resource))
}

// projectOfResource returns P of "projects/P/...", or "".
func projectOfResource(resource string) string {
	rest, ok := strings.CutPrefix(resource, "projects/")
	if !ok {
		return ""
	}
	p, _, _ := strings.Cut(rest, "/")
	return p
}
