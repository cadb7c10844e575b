package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// DefaultK8sTimeout is how long a k8s target waits for each restarted
// deployment's rollout when the target sets no timeout.
const DefaultK8sTimeout = 5 * time.Minute

// maxK8sTimeout bounds a k8s target's rollout timeout: a rotation waiting
// longer holds its lease for too long.
const maxK8sTimeout = time.Hour

var (
	// A namespace or deployment name: a DNS label (RFC 1123).
	k8sLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// A Secret name: a DNS subdomain (RFC 1123).
	k8sSubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	// A key of a Secret's data.
	k8sDataKeyRE = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

// k8sHints say how to add each missing field of a k8s target.
var k8sHints = map[string]string{
	"namespace": `add "namespace: prod" (the namespace of the Kubernetes Secret)`,
	"name":      `add "name: gemini" (the Kubernetes Secret that holds the key)`,
	"key":       `add "key: GEMINI_API_KEY" (the key in the Secret's data that holds the API key)`,
}

// K8sTimeout returns how long a k8s target waits for each rollout: its
// timeout, else DefaultK8sTimeout.
func (t Target) K8sTimeout() time.Duration {
	if t.Timeout != nil {
		return time.Duration(*t.Timeout)
	}
	return DefaultK8sTimeout
}

// k8sTarget checks a k8s target: a key of a Kubernetes Secret
// (namespace, name, key), the kubeconfig and context to reach the cluster
// (optional), the deployments to restart (optional) and how long to wait
// for their rollouts (timeout). Each (kubeconfig, context, namespace, name,
// key) is written by one target only.
func (p *parser) k8sTarget(f map[string]field, s *Slot, t *Target, where string) {
	if fd, v, ok := p.text(f, "namespace"); ok {
		if len(v) > 63 || !k8sLabelRE.MatchString(v) {
			p.at(fd.val, "a namespace has at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit", "invalid namespace %s", quote(v))
		} else {
			t.Namespace = v
		}
	}
	if fd, v, ok := p.text(f, "name"); ok {
		if len(v) > 253 || !k8sSubdomainRE.MatchString(v) {
			p.at(fd.val, "a Secret's name has at most 253 lower-case letters, digits, '-' and '.', for example gemini-api-key", "invalid Secret name %s", quote(v))
		} else {
			t.Name = v
		}
	}
	if fd, v, ok := p.text(f, "key"); ok {
		if len(v) > 253 || !k8sDataKeyRE.MatchString(v) {
			p.at(fd.val, "a key of a Secret's data has letters, digits, '-', '_' and '.', for example GEMINI_API_KEY", "invalid Secret key %s", quote(v))
		} else {
			t.Key = v
		}
	}
	if fd, v, ok := p.text(f, "kubeconfig"); ok {
		switch {
		case v == "~" || strings.HasPrefix(v, "~/"):
			p.at(fd.val, "write an absolute path, or one relative to the directory of this config file (or leave kubeconfig out to use $KUBECONFIG or ~/.kube/config)",
				"kubeconfig %s: \"~\" is not expanded", quote(v))
		case v == "" || strings.ContainsRune(v, 0) || strings.HasSuffix(v, "/"):
			p.at(fd.val, "name the kubeconfig file, for example /etc/keyrotate/kubeconfig", "kubeconfig %s is not a file path", quote(v))
		default:
			t.Kubeconfig = p.resolve(v)
		}
	}
	if fd, v, ok := p.text(f, "context"); ok {
		if v == "" || strings.ContainsAny(v, "\x00\r\n") {
			p.at(fd.val, "write the name of a context of the kubeconfig (kubectl config get-contexts), or leave context out for its current context",
				"invalid context %s", quote(v))
		} else {
			t.Context = v
		}
	}
	if fr, ok := f["restart"]; ok && !isNull(fr.val) {
		t.Restart = p.k8sRestart(fr)
	}
	if x, ok := p.duration(f, "timeout"); ok {
		fd := f["timeout"]
		switch {
		case x <= 0:
			p.at(fd.val, "timeout is how long to wait for each restarted deployment's rollout, for example 5m (the default)",
				"timeout must be more than 0, not %s", quote(fd.val.Value))
		case time.Duration(x) > maxK8sTimeout:
			p.at(fd.val, "a rotation waiting longer holds its lock too long; use at most 1h (the default is 5m)", "timeout %s is longer than 1h", quote(fd.val.Value))
		default:
			t.Timeout = &x
		}
	}
	if t.Namespace != "" && t.Name != "" && t.Key != "" {
		id := "k8s:" + t.Kubeconfig + "\x00" + t.Context + "\x00" + t.Namespace + "/" + t.Name + "#" + t.Key
		p.claim(p.secrets, id, f["key"].val, where,
			"each key of each Kubernetes Secret receives one slot's key once; remove one of them",
			func(u use) string {
				return fmt.Sprintf("key %s of Secret %s/%s is already written by %s (line %d)", t.Key, t.Namespace, t.Name, u.what, u.line)
			})
	}
}

// k8sRestartList is what a k8s target's restart: holds.
var k8sRestartList = nameList{
	what:     "deployment",
	listHint: `list the deployments of the namespace to restart, for example "restart: [api, worker]"`,
	itemHint: "write each deployment as a name",
	badHint:  "a deployment name has lower-case letters, digits, '-' and '.'",
	valid:    func(s string) bool { return len(s) <= 253 && k8sSubdomainRE.MatchString(s) },
}

// k8sRestart reads the list of deployments to restart; nil after a
// reported problem.
func (p *parser) k8sRestart(fr field) []string {
	names, _ := p.names(fr, k8sRestartList)
	return names
}
