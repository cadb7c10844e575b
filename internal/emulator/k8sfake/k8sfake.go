// Package k8sfake is an in-process HTTP fake of the few Kubernetes API
// server endpoints that the k8s target uses, so that tests drive the real
// client-go transport (kubeconfig, bearer token, JSON codecs, status
// errors) rather than a fake clientset:
//
//	GET   /api/v1/namespaces/{ns}/secrets/{name}
//	PUT   /api/v1/namespaces/{ns}/secrets/{name}          (resourceVersion: 409 on mismatch)
//	GET   /apis/apps/v1/namespaces/{ns}/deployments/{name}
//	PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name} (strategic merge patch of template annotations)
//	POST  /apis/authorization.k8s.io/v1/selfsubjectaccessreviews
//
// Errors are metav1.Status bodies with the API server's reasons and
// messages, so client-go turns them into *errors.StatusError.
//
// A simulated deployment controller advances a rollout by one step at each
// GET of a deployment whose template changed: first it observes the new
// generation, then it brings up the updated replicas. A deployment marked
// stuck never gets its new replicas available.
//
// Fidelity limits: one bearer token; permissions are a deny list of
// (verb, resource, namespace, name) checked both by the endpoints (403)
// and by SelfSubjectAccessReview; a patch may only merge
// spec.template.metadata.annotations (what kubectl rollout restart sends);
// no list, watch, create or delete; no stringData.
package k8sfake

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

// Token is the bearer token the fake accepts; Kubeconfig writes it.
const Token = "k8sfake-token-0123456789"

// Method names for Calls and Fail.
const (
	GetSecret       = "GetSecret"
	UpdateSecret    = "UpdateSecret"
	GetDeployment   = "GetDeployment"
	PatchDeployment = "PatchDeployment"
	AccessReview    = "SelfSubjectAccessReview"
)

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	URL string
	srv *httptest.Server

	// HTTPCalls gives Fail, ClearFaults, Calls and ResetCalls; a fault
	// answers a metav1.Status of reason InternalError, its message
	// defaulting to "injected failure of METHOD".
	fake.HTTPCalls

	mu          sync.Mutex
	rv          int64
	secrets     map[string]*corev1.Secret
	deployments map[string]*appsv1.Deployment
	stuck       map[string]bool
	denied      map[string]bool
	beforePut   func()
}

// Options configure a Server.
type Options struct {
	// Addr is where the fake listens (HTTPS); "" is a loopback port chosen
	// by the system.
	Addr string
}

// Start starts a fake with nothing in it.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("start Kubernetes fake: %w", err)
	}
	s := &Server{
		secrets:     map[string]*corev1.Secret{},
		deployments: map[string]*appsv1.Deployment{},
		stuck:       map[string]bool{},
		denied:      map[string]bool{},
		HTTPCalls:   fake.HTTPCalls{Name: "k8sfake"},
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Listener.Close()
	s.srv.Listener = ln
	s.srv.StartTLS()
	s.URL = s.srv.URL
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// CAData returns the PEM certificate of the server (HTTPS: client-go
// sends a kubeconfig's token only over TLS).
func (s *Server) CAData() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// Kubeconfig writes a kubeconfig file at path whose context "fake" (the
// current one, namespace ns) reaches this server with Token.
func (s *Server) Kubeconfig(path, ns string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: %s
    certificate-authority-data: %s
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: %s
current-context: fake
users:
- name: fake
  user:
    token: %s
`, s.URL, base64.StdEncoding.EncodeToString(s.CAData()), ns, Token)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

func id(ns, name string) string { return ns + "/" + name }

func (s *Server) nextRV() string {
	s.rv++
	return strconv.FormatInt(s.rv, 10)
}

// SetSecret creates or replaces a secret holding data (as an outside
// writer would: the resourceVersion changes).
func (s *Server) SetSecret(ns, name string, data map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: s.nextRV()},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{},
	}
	for k, v := range data {
		sec.Data[k] = []byte(v)
	}
	s.secrets[id(ns, name)] = sec
}

// SetImmutable marks a secret immutable: updates are refused.
func (s *Server) SetImmutable(ns, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec := s.secrets[id(ns, name)]; sec != nil {
		t := true
		sec.Immutable = &t
	}
}

// Value returns what the secret holds under key, and whether it exists.
func (s *Server) Value(ns, name, key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.secrets[id(ns, name)]
	if sec == nil {
		return "", false
	}
	v, ok := sec.Data[key]
	return string(v), ok
}

// Values returns every value of every secret (for leak checks).
func (s *Server) Values() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, sec := range s.secrets {
		for _, v := range sec.Data {
			out = append(out, string(v))
		}
	}
	return out
}

// ResourceVersion returns the secret's resourceVersion.
func (s *Server) ResourceVersion(ns, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec := s.secrets[id(ns, name)]; sec != nil {
		return sec.ResourceVersion
	}
	return ""
}

// BeforePut runs f (without the lock) before each secret update is
// applied: a test changes the secret there to race the writer.
func (s *Server) BeforePut(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforePut = f
}

// AddDeployment adds a deployment with replicas replicas, rolled out.
func (s *Server) AddDeployment(ns, name string, replicas int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := replicas
	s.deployments[id(ns, name)] = &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{Kind: "Deployment", APIVersion: "apps/v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: s.nextRV(), Generation: 1},
		Spec:       appsv1.DeploymentSpec{Replicas: &r},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: r, UpdatedReplicas: r,
			ReadyReplicas: r, AvailableReplicas: r},
	}
}

// SetPaused pauses a deployment (kubectl rollout pause).
func (s *Server) SetPaused(ns, name string, paused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.deployments[id(ns, name)]; d != nil {
		d.Spec.Paused = paused
	}
}

// SetStuck makes the deployment's rollouts never finish: the new pods
// never become available.
func (s *Server) SetStuck(ns, name string, stuck bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stuck[id(ns, name)] = stuck
}

// Deployment returns a copy of the deployment.
func (s *Server) Deployment(ns, name string) (appsv1.Deployment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.deployments[id(ns, name)]
	if d == nil {
		return appsv1.Deployment{}, false
	}
	return *d.DeepCopy(), true
}

// RestartedAt returns the deployment template's
// kubectl.kubernetes.io/restartedAt annotation.
func (s *Server) RestartedAt(ns, name string) string {
	d, _ := s.Deployment(ns, name)
	return d.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]
}

// Deny makes the caller lack verb on resource ("secrets", "deployments")
// ns/name: the endpoint answers 403 and access reviews say no.
func (s *Server) Deny(verb, resource, ns, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[verb+" "+resource+" "+id(ns, name)] = true
}

// MutatingCalls returns the number of secret updates and deployment patches.
func (s *Server) MutatingCalls() int {
	return s.Calls(UpdateSecret) + s.Calls(PatchDeployment)
}

// status writes a metav1.Status error.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string, kind, name string) {
	writeJSON(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: reason, Code: int32(code),
		Details: &metav1.StatusDetails{Name: name, Kind: kind},
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+Token {
		writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized", "", "")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var method, group, resource, ns, name string
	switch {
	case len(parts) == 6 && parts[0] == "api" && parts[1] == "v1" && parts[2] == "namespaces" && parts[4] == "secrets":
		ns, name, group, resource = parts[3], parts[5], "", "secrets"
		switch r.Method {
		case http.MethodGet:
			method = GetSecret
		case http.MethodPut:
			method = UpdateSecret
		}
	case len(parts) == 7 && parts[0] == "apis" && parts[1] == "apps" && parts[2] == "v1" && parts[3] == "namespaces" && parts[5] == "deployments":
		ns, name, group, resource = parts[4], parts[6], "apps", "deployments"
		switch r.Method {
		case http.MethodGet:
			method = GetDeployment
		case http.MethodPatch:
			method = PatchDeployment
		}
	case r.URL.Path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" && r.Method == http.MethodPost:
		method = AccessReview
	default:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource", "", "")
		return
	}
	if method == "" {
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "the server does not allow this method on the requested resource", "", "")
		return
	}
	f, failed := s.Take(method, s.Enter(method))
	if failed {
		msg := f.Message
		if msg == "" {
			msg = fmt.Sprintf("injected failure of %s", method)
		}
		writeStatus(w, f.Status, metav1.StatusReasonInternalError, msg, "", name)
		return
	}
	verb := map[string]string{GetSecret: "get", UpdateSecret: "update", GetDeployment: "get", PatchDeployment: "patch"}[method]
	if verb != "" {
		s.mu.Lock()
		denied := s.denied[verb+" "+resource+" "+id(ns, name)]
		s.mu.Unlock()
		if denied {
			g := group
			if g == "" {
				g = `""`
			}
			writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden,
				fmt.Sprintf(`%s %q is forbidden: User "fake" cannot %s resource %q in API group %s in the namespace %q`, resource, name, verb, resource, g, ns),
				resource, name)
			return
		}
	}
	switch method {
	case GetSecret:
		s.getSecret(w, ns, name)
	case UpdateSecret:
		s.updateSecret(w, r, ns, name)
	case GetDeployment:
		s.getDeployment(w, ns, name)
	case PatchDeployment:
		s.patchDeployment(w, r, ns, name)
	case AccessReview:
		s.review(w, r)
	}
}

func (s *Server) getSecret(w http.ResponseWriter, ns, name string) {
	s.mu.Lock()
	sec := s.secrets[id(ns, name)]
	var out *corev1.Secret
	if sec != nil {
		out = sec.DeepCopy()
	}
	s.mu.Unlock()
	if out == nil {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("secrets %q not found", name), "secrets", name)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) updateSecret(w http.ResponseWriter, r *http.Request, ns, name string) {
	var in corev1.Secret
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &in); err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "invalid body", "secrets", name)
		return
	}
	s.mu.Lock()
	hook := s.beforePut
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.secrets[id(ns, name)]
	switch {
	case cur == nil:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("secrets %q not found", name), "secrets", name)
		return
	case in.Name != name || (in.Namespace != "" && in.Namespace != ns):
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "the name of the object does not match the name on the URL", "secrets", name)
		return
	case cur.Immutable != nil && *cur.Immutable:
		writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid,
			fmt.Sprintf("Secret %q is invalid: data: Forbidden: field is immutable when `immutable` is set", name), "Secret", name)
		return
	case in.ResourceVersion != "" && in.ResourceVersion != cur.ResourceVersion:
		writeStatus(w, http.StatusConflict, metav1.StatusReasonConflict,
			fmt.Sprintf("Operation cannot be fulfilled on secrets %q: the object has been modified; please apply your "+
				"changes to the latest version and try again", name), "secrets", name)
		return
	}
	next := cur.DeepCopy()
	next.Data = in.Data
	next.Labels, next.Annotations = in.Labels, in.Annotations
	next.ResourceVersion = s.nextRV()
	s.secrets[id(ns, name)] = next
	writeJSON(w, http.StatusOK, next.DeepCopy())
}

// getDeployment answers with the deployment after one step of the
// simulated controller.
func (s *Server) getDeployment(w http.ResponseWriter, ns, name string) {
	s.mu.Lock()
	d := s.deployments[id(ns, name)]
	if d == nil {
		s.mu.Unlock()
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("deployments.apps %q not found", name), "deployments", name)
		return
	}
	st := &d.Status
	want := *d.Spec.Replicas
	switch {
	case d.Spec.Paused:
	case st.ObservedGeneration < d.Generation:
		st.ObservedGeneration = d.Generation
		st.UpdatedReplicas = 0
		st.Replicas = want + 1 // old pods plus a surge pod
		st.AvailableReplicas = want
	case s.stuck[id(ns, name)]:
		st.UpdatedReplicas = want
		st.Replicas = want + 1
		st.AvailableReplicas = want - 1 // the new pods crash
	case st.UpdatedReplicas < want || st.Replicas != want || st.AvailableReplicas != want:
		st.UpdatedReplicas, st.Replicas, st.ReadyReplicas, st.AvailableReplicas = want, want, want, want
	}
	out := d.DeepCopy()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// patchDeployment applies a strategic merge patch that sets annotations of
// the pod template, as kubectl rollout restart does.
func (s *Server) patchDeployment(w http.ResponseWriter, r *http.Request, ns, name string) {
	if ct := r.Header.Get("Content-Type"); ct != "application/strategic-merge-patch+json" {
		writeStatus(w, http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType, "fake supports only strategic merge "+
			"patches, not "+ct, "deployments", name)
		return
	}
	var p struct {
		Spec struct {
			Template struct {
				Metadata struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			} `json:"template"`
		} `json:"spec"`
	}
	body, _ := io.ReadAll(r.Body)
	var generic map[string]any
	if err := json.Unmarshal(body, &p); err != nil || json.Unmarshal(body, &generic) != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "invalid patch", "deployments", name)
		return
	}
	if len(generic) != 1 || generic["spec"] == nil || len(p.Spec.Template.Metadata.Annotations) == 0 {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "fake supports only patches of spec.template.metadata.annotations", "deployments", name)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.deployments[id(ns, name)]
	if d == nil {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("deployments.apps %q not found", name), "deployments", name)
		return
	}
	changed := false
	if d.Spec.Template.Annotations == nil {
		d.Spec.Template.Annotations = map[string]string{}
	}
	for k, v := range p.Spec.Template.Metadata.Annotations {
		if d.Spec.Template.Annotations[k] != v {
			d.Spec.Template.Annotations[k] = v
			changed = true
		}
	}
	if changed {
		d.Generation++
		d.ResourceVersion = s.nextRV()
	}
	writeJSON(w, http.StatusOK, d.DeepCopy())
}

func (s *Server) review(w http.ResponseWriter, r *http.Request) {
	var in authv1.SelfSubjectAccessReview
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Spec.ResourceAttributes == nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "invalid review", "", "")
		return
	}
	a := in.Spec.ResourceAttributes
	s.mu.Lock()
	denied := s.denied[a.Verb+" "+a.Resource+" "+id(a.Namespace, a.Name)]
	s.mu.Unlock()
	in.TypeMeta = metav1.TypeMeta{Kind: "SelfSubjectAccessReview", APIVersion: "authorization.k8s.io/v1"}
	in.Status.Allowed = !denied
	if denied {
		in.Status.Reason = ""
	} else {
		in.Status.Reason = "RBAC: allowed by fake"
	}
	writeJSON(w, http.StatusCreated, &in)
}
