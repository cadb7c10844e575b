package config

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	// cloudRunServiceRE is a Cloud Run service id: lowercase letters,
	// digits and hyphens, starting with a letter, not ending with a hyphen,
	// at most 49 characters.
	cloudRunServiceRE = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$`)
	// containerNameRE is a container name in a Cloud Run template (a DNS
	// label).
	containerNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// cloudRunHints say how to add each missing field of a cloudrun target.
var cloudRunHints = map[string]string{
	"service": `add "service: projects/my-project/locations/us-central1/services/api" (the Cloud Run service whose container holds the key)`,
	"var":     `add "var: GEMINI_API_KEY" (the environment variable of the service's container that holds the key)`,
}

// cloudRunTarget checks a cloudrun target: a service name
// projects/P/locations/L/services/S, a variable name and, optionally, the
// container's name. Each (service, container, variable) is written by one
// target only.
func (p *parser) cloudRunTarget(f map[string]field, s *Slot, t *Target, where string) {
	if fs, ok := f["service"]; ok {
		if name, ok := p.str(fs); ok && !p.keyString(fs, name) {
			if msg, hint := checkCloudRunService(name); msg != "" {
				p.at(fs.val, hint, "service: %s", msg)
			} else {
				t.Service = name
			}
		}
	}
	p.varField(f, t)
	if fc, ok := f["container"]; ok && !isNull(fc.val) {
		if name, ok := p.str(fc); ok && !p.keyString(fc, name) {
			if !containerNameRE.MatchString(name) {
				p.at(fc.val, "a container name has lowercase letters, digits and '-' (as in the service's YAML, `gcloud run services describe`)",
					"invalid container name %s", quote(name))
			} else {
				t.Container = name
			}
		}
	}
	if t.Service == "" || t.Var == "" {
		return
	}
	fv := f["var"]
	p.claim(p.vars, "cloudrun\x00"+t.Service+"\x00"+t.Container+"\x00"+t.Var, fv.val, where,
		"each variable of each service has one slot and one target; remove one of them",
		func(u use) string {
			return fmt.Sprintf("%s %s is already written by %s (line %d)", t.Service, t.Var, u.what, u.line)
		})
}

// checkCloudRunService returns a message and a hint when name is not a
// Cloud Run service name.
func checkCloudRunService(name string) (msg, hint string) {
	const want = "write the full name, projects/PROJECT/locations/REGION/services/SERVICE"
	parts := strings.Split(name, "/")
	if len(parts) != 6 || parts[0] != "projects" || parts[2] != "locations" || parts[4] != "services" {
		return fmt.Sprintf("%s is not a Cloud Run service name", quote(name)), want
	}
	switch {
	case !projectIDRE.MatchString(parts[1]) && !projectNumRE.MatchString(parts[1]):
		return fmt.Sprintf("the project in %s is not a project id or number", quote(name)), want
	case !locationRE.MatchString(parts[3]):
		return fmt.Sprintf("the location in %s is not a region", quote(name)),
			"Cloud Run services live in a region such as us-central1 or europe-west1 (gcloud run regions list)"
	case !cloudRunServiceRE.MatchString(parts[5]):
		return fmt.Sprintf("the service id in %s is not valid", quote(name)),
			"a Cloud Run service id has at most 49 lowercase letters, digits and hyphens, starting with a letter"
	}
	return "", ""
}
