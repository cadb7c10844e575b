package gcp

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

// The roles behind several permissions, as the hints name them.
const (
	apiKeysAdmin  = "roles/serviceusage.apiKeysAdmin (API Keys Admin)"
	apiKeysRead   = "roles/serviceusage.apiKeysViewer (API Keys Viewer) to read, or " + apiKeysAdmin + ", which rotating needs"
	versionAdmin  = "roles/secretmanager.secretVersionManager (Secret Manager Secret Version Manager)"
	secretsViewer = "roles/secretmanager.viewer (Secret Manager Viewer)"
)

// permissionRoles maps each permission keyrotate needs to the predefined
// roles that grant it, narrowest first (from the IAM roles reference).
var permissionRoles = map[string]string{
	"apikeys.keys.create":            apiKeysAdmin,
	"apikeys.keys.update":            apiKeysAdmin,
	"apikeys.keys.delete":            apiKeysAdmin,
	"apikeys.keys.undelete":          apiKeysAdmin,
	"apikeys.keys.get":               apiKeysRead,
	"apikeys.keys.list":              apiKeysRead,
	"apikeys.keys.getKeyString":      apiKeysRead,
	"apikeys.keys.lookup":            apiKeysRead,
	"serviceusage.operations.get":    apiKeysAdmin,
	"secretmanager.versions.access":  "roles/secretmanager.secretAccessor (Secret Manager Secret Accessor)",
	"secretmanager.versions.add":     "roles/secretmanager.secretVersionAdder (Secret Manager Secret Version Adder) or " + versionAdmin,
	"secretmanager.versions.enable":  versionAdmin,
	"secretmanager.versions.disable": versionAdmin,
	"secretmanager.versions.destroy": versionAdmin,
	"secretmanager.versions.get":     secretsViewer,
	"secretmanager.versions.list":    secretsViewer,
	"secretmanager.secrets.get": secretsViewer + " to read, or roles/secretmanager.admin (Secret Manager Admin), " +
		"which rotating needs for secretmanager.secrets.update",
	"monitoring.timeSeries.list":   "roles/monitoring.viewer (Monitoring Viewer)",
	"secretmanager.secrets.update": "roles/secretmanager.admin (Secret Manager Admin), or a custom role with secretmanager.secrets.update",
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
// needs perm on resource. Google answers PERMISSION_DENIED, not NOT_FOUND,
// for a resource the caller cannot see, and so for one that does not exist
// or whose project does not exist (AIP-211; Secret Manager's message ends
// "(or it may not exist)"): a mistyped name looks like a missing grant. So
// the hint says both, with the gcloud commands that tell them apart, then
// the role that holds the permission the error names (or, when it names
// none, the one the call needs).
func denialHint(err error, perm, resource string) string {
	msg := err.Error()
	if strings.Contains(msg, "has not been used in project") || strings.Contains(msg, "SERVICE_DISABLED") {
		return "the API is not enabled in the project: enable it (gcloud services enable apikeys.googleapis.com secretmanager.googleapis.com) and run again"
	}
	named := deniedPermission(err)
	if named != "" {
		perm = named
	}
	if m := unknownProject.FindStringSubmatch(msg); m != nil && named == "" {
		// The front end's answer for a consumer project it does not
		// know (ErrorInfo reason CONSUMER_INVALID).
		return "project " + m[1] + " does not exist, or the caller cannot see it: check the project in the config (`gcloud projects describe " + m[1] + "`)"
	}
	what, check := existenceCheck(resource)
	h := "Google answers PERMISSION_DENIED both when the caller lacks a permission and when " + what + " does not exist (a mistyped name or project): " + check
	if strings.Contains(check, " and ") {
		h += "; if both exist"
	} else {
		h += "; if it exists"
	}
	if perm == "" {
		return h + ", grant the caller roles/serviceusage.apiKeysAdmin and roles/secretmanager.admin on the project"
	}
	role := permissionRoles[perm]
	if role == "" {
		role = "a role that includes it"
	}
	on := "the project"
	if strings.HasPrefix(perm, "secretmanager.") {
		on = "the secret or its project"
	}
	return h + ", the caller lacks " + perm + ": grant it, on " + on + ", " + role
}

// unknownProject matches the answer for a project that does not exist.
var unknownProject = regexp.MustCompile(`Permission denied on resource project ([A-Za-z0-9:._-]+?)\.?(?:$|[\s,])`)

// existenceCheck names what a denied call acted on and the gcloud commands
// that show whether it and its project exist.
func existenceCheck(resource string) (what, check string) {
	parts := strings.Split(resource, "/")
	if len(parts) < 2 || parts[0] != "projects" {
		return "the key's project", "check the project (`gcloud projects describe PROJECT`)"
	}
	project := parts[1]
	projectCmd := "`gcloud projects describe " + project + "`"
	field := func(name string) (string, bool) {
		for i := 2; i+1 < len(parts); i += 2 {
			if parts[i] == name {
				return parts[i+1], true
			}
		}
		return "", false
	}
	if s, ok := field("secrets"); ok {
		cmd := "gcloud secrets describe " + s + " --project " + project
		if loc, ok := field("locations"); ok {
			cmd += " --location " + loc
		}
		return "the secret projects/" + project + "/secrets/" + s + " or its project",
			"check them with `" + cmd + "` and " + projectCmd
	}
	if k, ok := field("keys"); ok {
		return "the key " + k + " or its project",
			"check them with `gcloud services api-keys describe " + k + " --project " + project + "` and " + projectCmd
	}
	return "project " + project, "check it with " + projectCmd
}
