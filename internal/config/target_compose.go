package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// composeServiceRE is what Docker Compose accepts as a service name.
var composeServiceRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// composeHints say how to add each missing field of a compose target.
var composeHints = map[string]string{
	"path":     `add "path: docker-compose.yml" (the compose file, relative to this config file's directory)`,
	"services": `add "services: [api]" (the services whose environment holds the key)`,
	"var":      `add "var: GEMINI_API_KEY" (the variable in the services' environment that holds the key)`,
}

// composeTarget checks a compose target: a file path, a non-empty list of
// service names and a variable name. Each (file, service, variable) may be
// written by one target only, and a slot writes each compose file through
// one target: a second target of the same slot would find the file changed
// by the first one's write and refuse.
func (p *parser) composeTarget(f map[string]field, s *Slot, t *Target, where string) {
	if fp, ok := f["path"]; ok {
		if path, ok := p.str(fp); ok && !p.keyString(fp, path) {
			switch {
			case path == "~" || strings.HasPrefix(path, "~/"):
				p.at(fp.val, "write an absolute path, or one relative to the directory of this config file", "path %s: \"~\" is not expanded", quote(path))
			case strings.ContainsRune(path, 0):
				p.at(fp.val, "remove the NUL character", "path contains a NUL character")
			case strings.HasSuffix(path, "/") || path == "." || path == "..":
				p.at(fp.val, "name the file, for example "+strings.TrimSuffix(path, "/")+"/docker-compose.yml", "path %s names a directory, not a file", quote(path))
			default:
				t.Path = p.resolve(path)
			}
		}
	}
	p.varField(f, t)
	if fr, ok := f["reload"]; ok {
		if fr.val.Kind != yaml.ScalarNode || fr.val.Tag != "!!bool" || fr.val.Decode(&t.Reload) != nil {
			p.at(fr.val, "write reload: true to recreate the services after each rotation (or leave it out)",
				"reload must be true or false, not %s", quote(fr.val.Value))
		}
	}
	p.worldReadable(f, t)
	if x, ok := p.duration(f, "timeout"); ok {
		fd := f["timeout"]
		switch {
		case !t.Reload:
			p.at(fd.key, "remove timeout, or add reload: true", "timeout applies only with reload: true (how long the services may take to come up)")
		case x <= 0 || time.Duration(x) > time.Hour:
			p.at(fd.val, "use a duration above 0 and at most 1h; the default is 5m", "timeout %s is out of range", quote(fd.val.Value))
		default:
			t.Timeout = &x
		}
	}
	fs, ok := f["services"]
	if !ok || isNull(fs.val) {
		return // reported as missing
	}
	nodes := p.composeServices(fs, t)
	if t.Path == "" || t.Var == "" || len(t.Services) == 0 {
		return
	}
	for _, other := range s.Targets {
		if other.Type == TargetCompose && other.Path == t.Path {
			p.at(fs.key, "list every service in one compose target: a rotation writes each file once, and a second target would find it changed by the first",
				"%s is already written by another compose target of the same slot (line %d)", t.Path, other.Line)
			return
		}
	}
	for i, svc := range t.Services {
		p.claim(p.vars, t.Path+"\x00"+svc+"\x00"+t.Var, nodes[i], where,
			"each variable of each service has one slot and one target; remove one of them",
			func(u use) string {
				return fmt.Sprintf("%s service %s %s is already written by %s (line %d)", t.Path, svc, t.Var, u.what, u.line)
			})
	}
}

// composeServiceList is what a compose target's services: holds.
var composeServiceList = nameList{
	what:     "service",
	listHint: `list the services, for example "services: [api, worker]"`,
	itemHint: "write each service as a name, as in the compose file's services: section",
	badHint:  "a compose service name has letters, digits, '_', '.' and '-', starting with a letter or digit",
	valid:    composeServiceRE.MatchString,
}

// composeServices checks the list of service names and stores it in t only
// when every name is valid. It returns the nodes of the names.
func (p *parser) composeServices(fs field, t *Target) []*yaml.Node {
	if n := deref(fs.val); n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		p.at(n, `name at least one service, for example "services: [api]"`, "services is empty")
		return nil
	}
	names, nodes := p.names(fs, composeServiceList)
	if names == nil {
		return nil
	}
	t.Services = names
	return nodes
}
