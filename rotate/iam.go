package rotate

import (
	"errors"
	"regexp"
	"strings"

	"google.golang.org/api/googleapi"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// PERMISSION_DENIED, explained: Google names the missing permission in a
// google.rpc.ErrorInfo (reason IAM_PERMISSION_DENIED, metadata permission)
// and in the message ("Permission 'secretmanager.versions.add' denied for
// resource '...' (or it may not exist)."). keyrotate names it again with the
// predefined role that grants it.

// permissionRoles maps each permission keyrotate needs to the predefined
// roles that grant it, narrowest first (from the IAM roles reference).
var permissionRoles = map[string]string{
	"apikeys.keys.create":            "roles/serviceusage.apiKeysAdmin (API Keys Admin)",
	"apikeys.keys.update":            "roles/serviceusage.apiKeysAdmin (API Keys Admin)",
	"apikeys.keys.delete":            "roles/serviceusage.apiKeysAdmin (API Keys Admin)",
	"apikeys.keys.undelete":          "roles/serviceusage.apiKeysAdmin (API Keys Admin)",
	"apikeys.keys.get":               "roles/serviceusage.apiKeysViewer (API Keys Viewer) to read, or roles/serviceusage.apiKeysAdmin (API Keys Admin), which rotating needs",
	"apikeys.keys.list":              "roles/serviceusage.apiKeysViewer (API Keys Viewer) to read, or roles/serviceusage.apiKeysAdmin (API Keys Admin), which rotating needs",
	"apikeys.keys.getKeyString":      "roles/serviceusage.apiKeysViewer (API Keys Viewer) to read, or roles/serviceusage.apiKeysAdmin (API Keys Admin), which rotating needs",
	"apikeys.keys.lookup":            "roles/serviceusage.apiKeysViewer (API Keys Viewer) to read, or roles/serviceusage.apiKeysAdmin (API Keys Admin), which rotating needs",
	"serviceusage.operations.get":    "roles/serviceusage.apiKeysAdmin (API Keys Admin)",
	"secretmanager.versions.access":  "roles/secretmanager.secretAccessor (Secret Manager Secret Accessor)",
	"secretmanager.versions.add":     "roles/secretmanager.secretVersionAdder (Secret Manager Secret Version Adder) or roles/secretmanager.secretVersionManager (Secret Manager Secret Version Manager)",
	"secretmanager.versions.enable":  "roles/secretmanager.secretVersionManager (Secret Manager Secret Version Manager)",
	"secretmanager.versions.disable": "roles/secretmanager.secretVersionManager (Secret Manager Secret Version Manager)",
	"secretmanager.versions.destroy": "roles/secretmanager.secretVersionManager (Secret Manager Secret Version Manager)",
	"secretmanager.versions.get":     "roles/secretmanager.viewer (Secret Manager Viewer)",
	"secretmanager.versions.list":    "roles/secretmanager.viewer (Secret Manager Viewer)",
	"secretmanager.secrets.get":      "roles/secretmanager.viewer (Secret Manager Viewer) to read, or roles/secretmanager.admin (Secret Manager Admin), which rotating needs for secretmanager.secrets.update",
	"secretmanager.secrets.update":   "roles/secretmanager.admin (Secret Manager Admin), or a custom role with secretmanager.secrets.update",
}

var permissionInMessage = []*regexp.Regexp{
	regexp.MustCompile(`Permission '([A-Za-z0-9_.]+)' denied`),
	regexp.MustCompile(`Permission ([a-z0-9]+\.[A-Za-z0-9_.]+) is required`),
}

// deniedPermission returns the permission a PERMISSION_DENIED error names:
// the ErrorInfo's metadata first, else the message.
func deniedPermission(err error) string {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		for _, d := range ge.Details {
			m, ok := d.(map[string]any)
			if !ok || m["@type"] != "type.googleapis.com/google.rpc.ErrorInfo" {
				continue
			}
			if md, ok := m["metadata"].(map[string]any); ok {
				if p, ok := md["permission"].(string); ok && p != "" {
					return p
				}
			}
		}
	} else if st, ok := grpcStatus(err); ok {
		for _, d := range st.Details() {
			if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetMetadata()["permission"] != "" {
				return ei.GetMetadata()["permission"]
			}
		}
	}
	for _, re := range permissionInMessage {
		if m := re.FindStringSubmatch(err.Error()); m != nil {
			return m[1]
		}
	}
	return ""
}

// denialHint says what to do about a PERMISSION_DENIED from a call that
// needs perm on resource: grant the role that holds the permission the
// error names (or, when it names none, the one the call needs).
func denialHint(err error, perm, resource string) string {
	msg := err.Error()
	if strings.Contains(msg, "has not been used in project") || strings.Contains(msg, "SERVICE_DISABLED") {
		return "the API is not enabled in the project: enable it (gcloud services enable apikeys.googleapis.com secretmanager.googleapis.com) and run again"
	}
	named := deniedPermission(err)
	if named != "" {
		perm = named
	}
	if perm == "" {
		return "the caller lacks a permission: grant roles/serviceusage.apiKeysAdmin and roles/secretmanager.admin on the project, or check that the project exists"
	}
	role := permissionRoles[perm]
	if role == "" {
		role = "a role that includes it"
	}
	on := "the project"
	if strings.HasPrefix(perm, "secretmanager.") {
		on = "the secret or its project"
		if i := strings.Index(resource, "/versions/"); i >= 0 {
			resource = resource[:i]
		}
	}
	h := "the caller lacks the IAM permission " + perm
	if resource != "" {
		h += " on " + resource
	}
	h += ": grant " + role + " to it on " + on
	if named == "" {
		h += " (or check that the resource exists: Google answers PERMISSION_DENIED for one the caller cannot see)"
	}
	return h
}
