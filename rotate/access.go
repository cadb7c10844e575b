package rotate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/keyrotate/keyrotate/internal/errhint"

	"github.com/keyrotate/keyrotate/internal/gcp"
)

// What Plan proves, with read-only calls, before a rotation writes anything:
// that the caller holds each IAM permission the rotation uses on the slot's
// project and on its secret, that the API Keys and Secret Manager APIs are
// enabled on the project that is charged, and that the service account new
// keys are bound to exists and may be bound. A real first run fails on each
// of these only part-way; plan names them all at once, each with the
// predefined role and the command that grants it.

// ErrAccessMissing: the caller lacks a permission, an API or a service
// account the rotation needs (Plan.Checks say which).
var ErrAccessMissing = errors.New("the rotation would fail for lack of access")

// AccessCheck is one thing a rotation needs, as Plan found it.
type AccessCheck struct {
	// What is the step that fails without it.
	What   string `json:"what"`
	Status string `json:"status"`
	// Kind is "permission", "api" or "service account"; Name the
	// permission, the API's service name or the account's email. A
	// testIamPermissions call that failed is one check of Kind
	// "permissions", Name the API whose permissions it tested.
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Resource string `json:"resource"`
	// Role is the predefined role that grants it, and Fix the command that
	// does (MEMBER stands for the identity the rotation runs as).
	Role   string `json:"role,omitempty"`
	Fix    string `json:"fix,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Fallback, on a warning, is what the rotation does instead of
	// failing for want of it (the drain gate with usage: best-effort).
	Fallback string `json:"fallback,omitempty"`
}

// String is the check as one line for people.
func (c AccessCheck) String() string {
	var b strings.Builder
	switch c.Status {
	case CheckFail:
		fmt.Fprintf(&b, "%s would fail: %s", c.What, c.missing())
	case CheckWarn:
		if c.Fallback != "" {
			fmt.Fprintf(&b, "%s would %s: %s", c.What, c.Fallback, c.missing())
		} else if c.Kind == "permissions" {
			fmt.Fprintf(&b, "cannot check the caller's %s permissions on %s (%s)", c.Name, c.Resource, c.Reason)
		} else {
			fmt.Fprintf(&b, "cannot check %s %s on %s (%s)", c.Kind, c.Name, c.Resource, c.Reason)
		}
	default:
		fmt.Fprintf(&b, "%s %s on %s: ok", c.Kind, c.Name, c.Resource)
	}
	if c.Role != "" {
		fmt.Fprintf(&b, "; role %s", c.Role)
	}
	if c.Fix != "" {
		fmt.Fprintf(&b, "; fix: %s", c.Fix)
	}
	return b.String()
}

// missing says what a failed check lacks.
func (c AccessCheck) missing() string {
	switch c.Kind {
	case "api":
		return fmt.Sprintf("the API %s is not enabled on %s", c.Name, c.Resource)
	case "service account":
		return fmt.Sprintf("the service account %s does not exist", c.Name)
	}
	return fmt.Sprintf("the caller lacks %s on %s", c.Name, c.Resource)
}

// need is a permission a rotation uses, the step that uses it and the
// predefined role that grants it (the narrowest one that holds everything
// the rotation needs of that API: API Keys Admin holds every apikeys.keys.*
// permission and serviceusage.operations.get; Secret Manager's
// secrets.update is in Secret Manager Admin only). From the API Keys
// access-control page (https://cloud.google.com/api-keys/docs/access-control)
// and the Secret Manager roles reference
// (https://cloud.google.com/iam/docs/roles-permissions/secretmanager).
type need struct {
	perm, what, role string
}

const (
	roleAPIKeysAdmin     = "roles/serviceusage.apiKeysAdmin"
	roleSecretAdmin      = "roles/secretmanager.admin"
	roleSecretAccessor   = "roles/secretmanager.secretAccessor"
	roleVersionManager   = "roles/secretmanager.secretVersionManager"
	roleServiceUsageView = "roles/serviceusage.serviceUsageViewer"
	roleSAUser           = "roles/iam.serviceAccountUser"
	roleSAViewer         = "roles/iam.serviceAccountViewer"
	permActAs            = "iam.serviceAccounts.actAs"
)

// projectNeeds are the API Keys calls a rotation makes (internal/gcp/apikeys.go),
// tested on the slot's project.
var projectNeeds = []need{
	{"apikeys.keys.get", "reading the current key", roleAPIKeysAdmin},
	{"apikeys.keys.lookup", "finding the current key from the secret's key string", roleAPIKeysAdmin},
	{"apikeys.keys.list", "finding the slot's keys (resume, finalize, status; a fleet's current keys, one list per project)", roleAPIKeysAdmin},
	{"apikeys.keys.create", "creating the new key", roleAPIKeysAdmin},
	{"apikeys.keys.getKeyString", "reading the new key's string", roleAPIKeysAdmin},
	{"serviceusage.operations.get", "waiting for key operations to finish", roleAPIKeysAdmin},
	{"apikeys.keys.update", "marking the old key for a later finalize (grace)", roleAPIKeysAdmin},
	{"apikeys.keys.delete", "deleting the old key", roleAPIKeysAdmin},
	{"apikeys.keys.undelete", "restoring the old key when a target holds it again", roleAPIKeysAdmin},
}

// secretNeeds are the Secret Manager calls a rotation makes on the slot's
// secret (internal/gcp/secrets.go, rotate/lease.go).
var secretNeeds = []need{
	{"secretmanager.versions.access", "reading the current key from the secret", roleSecretAccessor},
	{"secretmanager.secrets.get", "reading the secret's rotation record", roleSecretAdmin},
	{"secretmanager.secrets.update", "locking the slot (the rotation record) and moving the version aliases", roleSecretAdmin},
	{"secretmanager.versions.add", "adding the new key to the secret", roleVersionManager},
	{"secretmanager.versions.disable", "disabling the old secret version", roleVersionManager},
}

// servicesNeeded are the APIs a rotation calls as an IAM principal. The
// Gemini API is called with the key itself, not as the caller.
var servicesNeeded = []need{
	{"apikeys.googleapis.com", "every API Keys call", ""},
	{"secretmanager.googleapis.com", "every Secret Manager call", ""},
}

// The drain gate (retire: quiet) reads the old key's request counts from
// Cloud Monitoring (ListTimeSeries on the slot's project, charged like the
// other calls): monitoring.timeSeries.list, granted by Monitoring Viewer,
// the read-only role of the Cloud Monitoring API (the Monitoring
// access-control page and the IAM roles page for Cloud Monitoring,
// cloud.google.com/iam/docs/roles-permissions/monitoring; the same role
// internal/gcp's hints name), and the Cloud Monitoring API enabled.
const roleMonitoringViewer = "roles/monitoring.viewer"

const drainGateWhat = "the drain gate (retire: quiet) reading who still uses the old key"

var (
	usageNeed    = need{"monitoring.timeSeries.list", drainGateWhat, roleMonitoringViewer}
	usageService = need{"monitoring.googleapis.com", drainGateWhat, ""}
)

// checkAccess runs the read-only checks of a slot whose new keys are bound
// to sa ("" for none). A nil r.Access checks nothing. A slot whose old key
// waits for the drain gate also needs to read Cloud Monitoring: without
// it, usage: required stops the retire step (a failed check), and
// best-effort falls back to the grace period (a warning). The gate's
// permission and API ride on the same testIamPermissions and batchGet
// calls as the others.
func (r *Rotator) checkAccess(ctx context.Context, slot *Slot, sa string) []AccessCheck {
	if r.Access == nil {
		return nil
	}
	access := *r.Access
	access.Retry = r.Retry
	gate := slot.Retire == RetireQuiet
	needs, services := accessNeeds(slot.Retire)
	var out []AccessCheck
	out = append(out, checkProject(ctx, &access, slot.Project, needs)...)
	out = append(out, checkSecret(ctx, &gcp.Secrets{Client: r.Secrets, Retry: r.Retry}, slot.Secret)...)
	// The APIs must be enabled where the calls are charged (ChargedProject).
	out = append(out, checkServices(ctx, &access, r.ChargedProject(slot), services)...)
	if sa != "" {
		out = append(out, checkServiceAccount(ctx, &access, sa)...)
	}
	if gate {
		applyUsagePolicy(out, slot)
	}
	return out
}

// ProjectAccess returns what a rotation of a slot whose old key retires
// with mode needs on the slot's project, as plan checks it: the predefined
// roles that grant the permissions, and the APIs to enable. (The secret's
// roles are granted on the secret; targets and bindings need more.)
func ProjectAccess(mode RetireMode) (roles, apis []string) {
	needs, services := accessNeeds(mode)
	for _, n := range needs {
		if !slices.Contains(roles, n.role) {
			roles = append(roles, n.role)
		}
	}
	return roles, perms(services)
}

// accessNeeds are the permissions on the project and the APIs a rotation
// of a slot whose old key retires with mode needs.
func accessNeeds(mode RetireMode) (needs, services []need) {
	needs, services = projectNeeds, servicesNeeded
	if mode == RetireQuiet {
		needs = append(slices.Clip(needs), usageNeed)
		services = append(slices.Clip(services), usageService)
	}
	return needs, services
}

// applyUsagePolicy words the drain gate's failed checks as the slot's
// usage policy says: required stops the retire step (the check fails);
// best-effort falls back to the grace period (a warning).
func applyUsagePolicy(checks []AccessCheck, slot *Slot) {
	for i := range checks {
		c := &checks[i]
		if c.What != drainGateWhat || c.Status != CheckFail {
			continue
		}
		if slot.Usage == UsageRequired {
			c.What += " (usage: required: the old key is kept and the run stops)"
			continue
		}
		c.Status, c.Fallback = CheckWarn, "fall back to grace "+human(slot.Grace)+" (usage: best-effort)"
	}
}

// tested turns the answer of a testIamPermissions call into one check per
// need; an error makes one unknown check for them all.
func tested(needs []need, held []string, err error, kind, resource string, fix func(role string) string) []AccessCheck {
	if err != nil {
		c := AccessCheck{What: "checking permissions", Status: CheckWarn, Kind: "permissions", Name: kind, Resource: resource, Reason: gcp.Summary(err)}
		return []AccessCheck{c}
	}
	has := map[string]bool{}
	for _, p := range held {
		has[p] = true
	}
	var out []AccessCheck
	for _, n := range needs {
		c := AccessCheck{What: n.what, Status: CheckOK, Kind: "permission", Name: n.perm, Resource: resource}
		if !has[n.perm] {
			c.Status, c.Role, c.Fix = CheckFail, n.role, fix(n.role)
		}
		out = append(out, c)
	}
	return out
}

func perms(needs []need) []string {
	out := make([]string, len(needs))
	for i, n := range needs {
		out[i] = n.perm
	}
	return out
}

// checkProject tests the permissions needs (projectNeeds, and the drain
// gate's) on the project.
func checkProject(ctx context.Context, access *gcp.AccessClients, project string, needs []need) []AccessCheck {
	held, err := access.ProjectPermissions(ctx, project, perms(needs))
	return tested(needs, held, err, "API Keys", "projects/"+project, func(role string) string {
		return fmt.Sprintf("gcloud projects add-iam-policy-binding %s --member=MEMBER --role=%s", project, role)
	})
}

// checkSecret tests the Secret Manager permissions on the secret.
func checkSecret(ctx context.Context, sa *gcp.Secrets, secret string) []AccessCheck {
	held, err := sa.TestPermissions(ctx, secret, perms(secretNeeds))
	return tested(secretNeeds, held, err, "Secret Manager", secret, func(role string) string {
		return "gcloud secrets add-iam-policy-binding " + gcloudSecret(secret) + " --member=MEMBER --role=" + role
	})
}

// gcloudSecret names a secret as gcloud's secrets commands take it.
func gcloudSecret(name string) string {
	parts := strings.Split(name, "/")
	switch {
	case len(parts) == 4: // projects/P/secrets/S
		return parts[3] + " --project=" + parts[1]
	case len(parts) == 6: // projects/P/locations/L/secrets/S
		return parts[5] + " --project=" + parts[1] + " --location=" + parts[3]
	}
	return name
}

// checkServices reads the state of the APIs services on the charged
// project (which needs serviceusage.services.get).
func checkServices(ctx context.Context, access *gcp.AccessClients, project string, services []need) []AccessCheck {
	parent := "projects/" + project
	state, err := access.ServiceStates(ctx, project, perms(services))
	var out []AccessCheck
	for _, n := range services {
		c := AccessCheck{What: n.what, Status: CheckOK, Kind: "api", Name: n.perm, Resource: parent}
		switch {
		case err != nil:
			c.Status, c.Reason = CheckWarn, gcp.Summary(err)
			if gcp.IsDenied(err) {
				c.Role = roleServiceUsageView
				c.Fix = fmt.Sprintf("gcloud projects add-iam-policy-binding %s --member=MEMBER --role=%s", project, roleServiceUsageView)
			}
		case state[n.perm] != "ENABLED":
			c.Status, c.Fix = CheckFail, fmt.Sprintf("gcloud services enable %s --project=%s", n.perm, project)
		}
		out = append(out, c)
	}
	return out
}

// checkServiceAccount checks that the account new keys are bound to exists
// (IAM serviceAccounts.get: NOT_FOUND is missing, PERMISSION_DENIED cannot
// tell) and that the caller may bind keys to it.
//
// Google's API Keys documentation does not name a permission on the
// service account for binding a key to it. The strictest plausible reading
// is the one for attaching a service account to any resource:
// iam.serviceAccounts.actAs on the account (Service Account User), checked
// with the account's testIamPermissions. Checked: the API Keys
// access-control page, "Manage API keys" (cloud.google.com/docs/
// authentication/api-keys) and the service-account roles page.
func checkServiceAccount(ctx context.Context, access *gcp.AccessClients, sa string) []AccessCheck {
	exists := AccessCheck{What: "creating a key bound to " + sa, Status: CheckOK, Kind: "service account", Name: sa, Resource: saProject(sa)}
	err := access.ServiceAccount(ctx, sa)
	switch {
	case err == nil:
	case gcp.IsNotFound(err):
		exists.Status = CheckFail
		exists.Fix = fmt.Sprintf("gcloud iam service-accounts create %s --project=%s, or correct service_account",
			saID(sa), strings.TrimPrefix(saProject(sa), "projects/"))
		return []AccessCheck{exists}
	default:
		exists.Status, exists.Reason = CheckWarn, gcp.Summary(err)
		if gcp.IsDenied(err) {
			exists.Role = roleSAViewer
			exists.Fix = fmt.Sprintf("gcloud iam service-accounts add-iam-policy-binding %s --member=MEMBER --role=%s", sa, roleSAViewer)
		}
		return []AccessCheck{exists}
	}
	held, err := access.ServiceAccountPermissions(ctx, sa, []string{permActAs})
	actAs := tested([]need{{permActAs, "binding the new key to " + sa, roleSAUser}}, held, err, "IAM", sa, func(role string) string {
		return fmt.Sprintf("gcloud iam service-accounts add-iam-policy-binding %s --member=MEMBER --role=%s", sa, role)
	})
	return append([]AccessCheck{exists}, actAs...)
}

// saProject is the project of a user-managed service account
// (NAME@PROJECT.iam.gserviceaccount.com), "projects/-" for another kind.
func saProject(sa string) string {
	_, domain, _ := strings.Cut(sa, "@")
	if p, ok := strings.CutSuffix(domain, ".iam.gserviceaccount.com"); ok {
		return "projects/" + p
	}
	return "projects/-"
}

func saID(sa string) string {
	id, _, _ := strings.Cut(sa, "@")
	return id
}

// AccessError is a preflight failure (Err) that Plan's checks help explain:
// Plan holds the slot's checks, which name at least one failure, and
// nothing the preflight could not learn.
type AccessError struct {
	Plan *Plan
	Err  error
}

func (e *AccessError) Error() string   { return e.Err.Error() }
func (e *AccessError) Unwrap() []error { return []error{e.Err, ErrAccessMissing} }

// AccessErr returns an error wrapping ErrAccessMissing, naming the checks
// that failed, or nil when none did.
func (p *Plan) AccessErr() error {
	var missing []string
	for _, c := range p.Checks {
		if c.Status == CheckFail {
			missing = append(missing, c.Kind+" "+c.Name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return errhint.With(fmt.Errorf("slot %s: %d check(s) failed (%s): %w", p.Slot, len(missing), strings.Join(missing, ", "), ErrAccessMissing),
		"each failed check above names the role and the command that grants it; "+
			"MEMBER is the identity the rotation runs as (user:EMAIL, or serviceAccount:EMAIL for a job)")
}
