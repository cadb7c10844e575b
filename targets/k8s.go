package targets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsclient "k8s.io/client-go/kubernetes/typed/apps/v1"
	authclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	coreclient "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/inputfile"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// Annotations of a deployment's pod template that a restart sets.
const (
	// K8sRestartedAtAnnotation is what kubectl rollout restart sets.
	K8sRestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"
	// K8sFingerprintAnnotation records the fingerprint of the key the
	// restart was made for, so that a second Write of the same key (a
	// resumed run) waits for that rollout instead of starting another.
	K8sFingerprintAnnotation = "keyrotate/key-fingerprint"
	// K8sRestartPendingAnnotation, on the Secret, marks a value whose
	// deployments are not yet restarted and rolled out: set in the same
	// update as the value, removed once every rollout finished. While it
	// is set, the key the workloads run with is unknown.
	K8sRestartPendingAnnotation = "keyrotate/restart-pending"
)

// Defaults of K8sConfig.
const (
	DefaultK8sRolloutTimeout = 5 * time.Minute
	defaultK8sPoll           = 2 * time.Second
)

// K8sConfig names a key of a Kubernetes Secret, how to reach the cluster,
// and the deployments that read the key at start.
type K8sConfig struct {
	// Kubeconfig is the kubeconfig file; "" for $KUBECONFIG, else
	// ~/.kube/config, else the in-cluster config when running in a pod.
	Kubeconfig string
	Context    string // a context of the kubeconfig; "" for its current context
	Namespace  string
	Name       string // the Secret
	Key        string // the key in the Secret's data
	// Restart names deployments of Namespace to restart (as kubectl
	// rollout restart does) after the Secret changed, waiting for each
	// rollout to finish.
	Restart        []string
	RolloutTimeout time.Duration // 0: DefaultK8sRolloutTimeout
	// Poll is the longest interval between rollout checks (they start at
	// 250ms and double); 0 for 2s.
	Poll time.Duration
	// REST, when not nil, is used instead of loading a kubeconfig (tests).
	REST *rest.Config
}

// K8s is one key of a Kubernetes Secret's data, written through the API
// server with client-go.
//
// Read gets the Secret and checks, with SelfSubjectAccessReviews, that the
// caller may update it (and get and patch each deployment to restart,
// which must exist and not be paused). Write updates the Secret with the
// resourceVersion of the last Read, so that any change in between fails
// with rotate.ErrTargetChanged (HTTP 409), then restarts each deployment by
// setting kubectl.kubernetes.io/restartedAt on its pod template (a
// strategic merge patch, like kubectl rollout restart) and waits until the
// rollout has finished: the controller observed the new generation and
// every replica is updated and available.
//
// A Write that changes the value of a target with deployments to restart
// marks the Secret (annotation keyrotate/restart-pending, in the same
// update) until every rollout finished. While the mark is there (a run
// stopped between the update and the end of a rollout), the key the pods
// run with is unknown: Read returns rotate.ErrUnreadable, so the rotation
// writes the target again (which restarts what is left and waits) and
// proves it with Confirm.
//
// Values are compared with surrounding whitespace trimmed (a Secret made
// with --from-file often ends in a newline); Write stores the bare key.
type K8s struct {
	cfg K8sConfig

	mu      sync.Mutex
	clients *k8sClients
	last    *corev1.Secret // the Secret as of the last Read or Write
	now     func() time.Time
}

type k8sClients struct {
	core  coreclient.CoreV1Interface
	apps  appsclient.AppsV1Interface
	authz authclient.AuthorizationV1Interface
}

var (
	_ rotate.Target    = (*K8s)(nil)
	_ rotate.Confirmer = (*K8s)(nil)
)

// NewK8s returns the target for the key cfg names. It connects lazily.
func NewK8s(cfg K8sConfig) *K8s {
	cfg.Restart = append([]string(nil), cfg.Restart...)
	if cfg.RolloutTimeout <= 0 {
		cfg.RolloutTimeout = DefaultK8sRolloutTimeout
	}
	if cfg.Poll <= 0 {
		cfg.Poll = defaultK8sPoll
	}
	return &K8s{cfg: cfg, now: time.Now}
}

// String returns "k8s:<namespace>/<name>#<key>".
func (t *K8s) String() string {
	return "k8s:" + t.cfg.Namespace + "/" + t.cfg.Name + "#" + t.cfg.Key
}

func (t *K8s) secretRef() string { return t.cfg.Namespace + "/" + t.cfg.Name }

// rbac says which permissions the target needs.
func (t *K8s) rbac() string {
	s := fmt.Sprintf("the caller needs get and update on secrets (resourceNames: [%s]) in namespace %s", t.cfg.Name, t.cfg.Namespace)
	if len(t.cfg.Restart) > 0 {
		s += fmt.Sprintf(", and get and patch on deployments.apps (resourceNames: [%s])", strings.Join(t.cfg.Restart, ", "))
	}
	return s + ": grant them with a Role and RoleBinding"
}

// maxKubeconfig bounds a kubeconfig file: they can carry many clusters
// with inline certificates, so more than a .env.
const maxKubeconfig = 16 << 20

// checkKubeconfigs refuses, before client-go opens them, kubeconfig files
// that would block it (a FIFO) or never end (a device), or that are far too
// large. Missing files are left to client-go, which knows which it needs.
func checkKubeconfigs(t fmt.Stringer, paths []string) error {
	for _, p := range paths {
		if p == "" {
			continue
		}
		if _, _, err := inputfile.Read(p, maxKubeconfig); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return errhint.With(fmt.Errorf("%s: kubeconfig: %w: %w", t, err, rotate.ErrInvalidTarget),
				"set the target's kubeconfig (or KUBECONFIG) to kubeconfig files that are regular files this user can read")
		}
	}
	return nil
}

func (t *K8s) client() (*k8sClients, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.clients != nil {
		return t.clients, nil
	}
	rc := t.cfg.REST
	if rc == nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if t.cfg.Kubeconfig != "" {
			rules.ExplicitPath = t.cfg.Kubeconfig
		}
		if err := checkKubeconfigs(t, rules.GetLoadingPrecedence()); err != nil {
			return nil, err
		}
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: t.cfg.Context})
		var err error
		rc, err = cc.ClientConfig()
		if err != nil {
			return nil, errhint.With(fmt.Errorf("%s: %w: no cluster configuration: %w", t, rotate.ErrInvalidTarget, err),
				"set the target's kubeconfig (or KUBECONFIG) to a kubeconfig file, and context to one of its contexts, or run keyrotate in a pod with a service account")
		}
	}
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "keyrotate"
	// JSON, not protobuf: every API server speaks it, and so does the
	// tests' fake.
	rc.ContentType = "application/json"
	rc.AcceptContentTypes = "application/json"
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = 20, 40
	}
	if rc.Timeout == 0 {
		rc.Timeout = 30 * time.Second
	}
	core, err := coreclient.NewForConfig(rc)
	if err != nil {
		return nil, errhint.With(fmt.Errorf("%s: %w: %w", t, rotate.ErrInvalidTarget, err), "check the kubeconfig's cluster and user")
	}
	apps, err := appsclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	authz, err := authclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	t.clients = &k8sClients{core: core, apps: apps, authz: authz}
	return t.clients, nil
}

// apiError translates an API error of step on what into an error with a
// hint; 401, 403 and 404 wrap rotate.ErrInvalidTarget.
func (t *K8s) apiError(step, what string, err error) error {
	base := fmt.Sprintf("%s: %s %s", t, step, what)
	switch {
	case apierrors.IsNotFound(err):
		hint := fmt.Sprintf("check the target's namespace and name, or create the secret: "+
			"kubectl -n %s create secret generic %s --from-literal=%s=<current key>", t.cfg.Namespace, t.cfg.Name, t.cfg.Key)
		if strings.HasPrefix(what, "deployment") {
			hint = "check the names in the target's restart list (deployments of namespace " + t.cfg.Namespace + ")"
		}
		return errhint.With(fmt.Errorf("%s: %w: %s not found", base, rotate.ErrInvalidTarget, what), hint)
	case apierrors.IsForbidden(err):
		return errhint.With(fmt.Errorf("%s: %w: forbidden: %s", base, rotate.ErrInvalidTarget, apiMessage(err)), t.rbac())
	case apierrors.IsUnauthorized(err):
		return errhint.With(fmt.Errorf("%s: %w: the cluster refused the credentials", base, rotate.ErrInvalidTarget),
			"refresh the kubeconfig's credentials (for example log in to the cluster again)")
	}
	return errhint.With(fmt.Errorf("%s: %w", base, err), "check that the cluster is reachable, then run again")
}

// apiMessage is the API server's message of a status error.
func apiMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	return err.Error()
}

// Read returns the key the Secret holds, after checking that the caller
// may update it and restart the deployments. It remembers the Secret, so
// that Write can refuse to overwrite a change made in between.
func (t *K8s) Read(ctx context.Context) (secret.Key, error) {
	if err := ctx.Err(); err != nil {
		return secret.Key{}, err
	}
	c, err := t.client()
	if err != nil {
		return secret.Key{}, err
	}
	sec, err := c.core.Secrets(t.cfg.Namespace).Get(ctx, t.cfg.Name, metav1.GetOptions{})
	if err != nil {
		return secret.Key{}, t.apiError("get", "secret "+t.secretRef(), err)
	}
	raw, ok := sec.Data[t.cfg.Key]
	if !ok {
		keys := make([]string, 0, len(sec.Data))
		for k := range sec.Data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		has := "no keys"
		if len(keys) > 0 {
			has = "keys " + strings.Join(keys, ", ")
		}
		return secret.Key{}, errhint.With(fmt.Errorf("%s: %w: secret %s has no key %s (it has %s)", t, rotate.ErrInvalidTarget, t.secretRef(), t.cfg.Key, has),
			"fix the target's key, or add the current key to the secret under that name")
	}
	if sec.Immutable != nil && *sec.Immutable {
		return secret.Key{}, errhint.With(fmt.Errorf("%s: %w: secret %s is immutable", t, rotate.ErrInvalidTarget, t.secretRef()),
			"an immutable secret cannot be updated: replace it with a mutable one (immutable: false)")
	}
	if err := t.mayDo(ctx, c, "update", "", "secrets", t.cfg.Name); err != nil {
		return secret.Key{}, err
	}
	for _, name := range t.cfg.Restart {
		d, err := c.apps.Deployments(t.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return secret.Key{}, t.apiError("get", "deployment "+t.cfg.Namespace+"/"+name, err)
		}
		if d.Spec.Paused {
			return secret.Key{}, errhint.With(
				fmt.Errorf("%s: %w: deployment %s/%s is paused: a restart would not roll out", t, rotate.ErrInvalidTarget, t.cfg.Namespace, name),
				fmt.Sprintf("resume it (kubectl -n %s rollout resume deployment/%s), or remove it from restart", t.cfg.Namespace, name))
		}
		if err := t.mayDo(ctx, c, "patch", "apps", "deployments", name); err != nil {
			return secret.Key{}, err
		}
	}
	t.mu.Lock()
	t.last = sec
	t.mu.Unlock()
	if fp := t.pending(sec); fp != "" {
		return secret.Key{}, fmt.Errorf("%s: %w: the secret holds %s but the restart of %s for it did not finish: the pods may run another key",
			t, rotate.ErrUnreadable, fp, strings.Join(t.cfg.Restart, ", "))
	}
	return secret.New(strings.TrimSpace(string(raw))), nil
}

// pending returns the fingerprint of the restart-pending mark of sec, or
// "" when there is none (or no deployment to restart).
func (t *K8s) pending(sec *corev1.Secret) string {
	if len(t.cfg.Restart) == 0 {
		return ""
	}
	return sec.Annotations[K8sRestartPendingAnnotation]
}

// Confirm proves that the Secret holds key and that the restarts for it
// finished (no restart-pending mark).
func (t *K8s) Confirm(ctx context.Context, key secret.Key) error {
	c, err := t.client()
	if err != nil {
		return err
	}
	sec, err := c.core.Secrets(t.cfg.Namespace).Get(ctx, t.cfg.Name, metav1.GetOptions{})
	if err != nil {
		return t.apiError("get", "secret "+t.secretRef(), err)
	}
	if got := secret.New(strings.TrimSpace(string(sec.Data[t.cfg.Key]))); !got.Equal(key) {
		return fmt.Errorf("%s: secret %s holds %s, want %s", t, t.secretRef(), got.Fingerprint(), key.Fingerprint())
	}
	if fp := t.pending(sec); fp != "" {
		return errhint.With(fmt.Errorf("%s: the restart of %s for the new key did not finish", t, strings.Join(t.cfg.Restart, ", ")),
			"run keyrotate again: it restarts what is left and waits")
	}
	return nil
}

// mayDo asks the API server whether the caller may verb the named
// resource, with a SelfSubjectAccessReview (which any authenticated user
// may create).
func (t *K8s) mayDo(ctx context.Context, c *k8sClients, verb, group, resource, name string) error {
	r := &authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authv1.ResourceAttributes{Namespace: t.cfg.Namespace, Verb: verb, Group: group, Resource: resource, Name: name},
	}}
	res, err := c.authz.SelfSubjectAccessReviews().Create(ctx, r, metav1.CreateOptions{})
	if err != nil {
		return t.apiError("check access to", resource+" "+t.cfg.Namespace+"/"+name, err)
	}
	if !res.Status.Allowed {
		why := ""
		if res.Status.Reason != "" {
			why = " (" + res.Status.Reason + ")"
		}
		return errhint.With(fmt.Errorf("%s: %w: the caller may not %s %s %s/%s%s", t, rotate.ErrInvalidTarget, verb, resource, t.cfg.Namespace, name, why), t.rbac())
	}
	return nil
}

// Write puts key into the Secret and restarts the deployments. It refuses
// with an error wrapping rotate.ErrTargetChanged when the Secret changed
// since the last Read (or Write). It does nothing when the Secret already
// holds key with no restart pending; with one pending (an interrupted
// Write), it restarts only the deployments not yet restarted for key and
// waits for every rollout.
func (t *K8s) Write(ctx context.Context, key secret.Key) error {
	return scrubKey(t.write(ctx, key), key)
}

func (t *K8s) write(ctx context.Context, key secret.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := t.client()
	if err != nil {
		return err
	}
	t.mu.Lock()
	last := t.last
	t.mu.Unlock()
	if last == nil {
		return fmt.Errorf("write %s: no earlier Read to compare the secret with", t)
	}
	fp := key.Fingerprint()
	same := strings.TrimSpace(string(last.Data[t.cfg.Key])) == key.Reveal()
	if same && t.pending(last) == "" {
		return nil // in place, and restarted if it ever needed to be
	}
	if !same || t.pending(last) != fp {
		next := last.DeepCopy()
		if next.Data == nil {
			next.Data = map[string][]byte{}
		}
		next.Data[t.cfg.Key] = []byte(key.Reveal())
		if len(t.cfg.Restart) > 0 {
			if next.Annotations == nil {
				next.Annotations = map[string]string{}
			}
			next.Annotations[K8sRestartPendingAnnotation] = fp
		}
		if err := t.update(ctx, c, next); err != nil {
			return err
		}
	}
	if len(t.cfg.Restart) == 0 {
		return nil
	}
	for _, name := range t.cfg.Restart {
		if err := t.restart(ctx, c, name, fp); err != nil {
			return err
		}
	}
	// Every rollout finished: clear the mark.
	t.mu.Lock()
	next := t.last.DeepCopy()
	t.mu.Unlock()
	delete(next.Annotations, K8sRestartPendingAnnotation)
	return t.update(ctx, c, next)
}

// update writes sec (with the resourceVersion it carries) and remembers
// the result.
func (t *K8s) update(ctx context.Context, c *k8sClients, sec *corev1.Secret) error {
	got, err := c.core.Secrets(t.cfg.Namespace).Update(ctx, sec, metav1.UpdateOptions{})
	switch {
	case apierrors.IsConflict(err):
		return errhint.With(fmt.Errorf("write %s: secret %s changed since it was read (HTTP 409): %w", t, t.secretRef(), rotate.ErrTargetChanged),
			"something else updated the secret during the rotation: check it and run keyrotate again")
	case err != nil:
		return t.apiError("update", "secret "+t.secretRef(), err)
	}
	t.mu.Lock()
	t.last = got
	t.mu.Unlock()
	return nil
}

// restart rolls deployment name out again, unless it was already
// restarted for the key with fingerprint fp, and waits for the rollout.
func (t *K8s) restart(ctx context.Context, c *k8sClients, name, fp string) error {
	deps := c.apps.Deployments(t.cfg.Namespace)
	what := "deployment " + t.cfg.Namespace + "/" + name
	d, err := deps.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return t.apiError("get", what, err)
	}
	if d.Spec.Template.Annotations[K8sFingerprintAnnotation] != fp {
		patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
			"annotations": map[string]string{
				K8sRestartedAtAnnotation: t.now().Format(time.RFC3339),
				K8sFingerprintAnnotation: fp,
			}}}}})
		if _, err := deps.Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return t.apiError("restart", what, err)
		}
	}
	return t.waitRollout(ctx, deps, name)
}

// waitRollout polls the deployment until its rollout finished (as kubectl
// rollout status judges it), failed, or the timeout passed.
func (t *K8s) waitRollout(ctx context.Context, deps appsclient.DeploymentInterface, name string) error {
	what := "deployment " + t.cfg.Namespace + "/" + name
	hint := fmt.Sprintf("the secret holds the new key; see kubectl -n %s rollout status deployment/%s and the pods' events, "+
		"fix the rollout, then run keyrotate again (or abort)", t.cfg.Namespace, name)
	ctx, cancel := context.WithTimeout(ctx, t.cfg.RolloutTimeout)
	defer cancel()
	state := "not checked"
	wait := min(250*time.Millisecond, t.cfg.Poll) // doubling up to Poll
	for {
		d, err := deps.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			var done bool
			done, state, err = rolloutDone(d)
			if err != nil {
				return errhint.With(fmt.Errorf("%s: rollout of %s failed: %w", t, what, err), hint)
			}
			if done {
				return nil
			}
		} else if ctx.Err() == nil && !transientAPIError(err) {
			return t.apiError("wait for the rollout of", what, err)
		}
		select {
		case <-ctx.Done():
			return errhint.With(fmt.Errorf("%s: rollout of %s did not finish within %s: %s", t, what, t.cfg.RolloutTimeout, state), hint)
		case <-time.After(wait):
		}
		wait = min(2*wait, t.cfg.Poll)
	}
}

// transientAPIError reports an error of the API server that the next poll
// may not see again: a timeout, throttling, an internal error or the server
// being unavailable.
func transientAPIError(err error) bool {
	return deadlineNear(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err)
}

// deadlineNear reports the client's rate limiter refusing to wait past the
// context's deadline: the wait is as good as timed out.
func deadlineNear(err error) bool {
	return strings.Contains(err.Error(), "would exceed context deadline")
}

// rolloutDone judges a deployment's rollout as kubectl rollout status
// does: done when the controller observed the latest generation and every
// replica is updated and available; failed when the progress deadline
// passed. state says what it waits for.
func rolloutDone(d *appsv1.Deployment) (bool, string, error) {
	st := d.Status
	if d.Generation > st.ObservedGeneration {
		return false, "waiting for the controller to observe the new generation", nil
	}
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return false, "", fmt.Errorf("progress deadline exceeded")
		}
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	switch {
	case st.UpdatedReplicas < want:
		return false, fmt.Sprintf("%d of %d replicas updated", st.UpdatedReplicas, want), nil
	case st.Replicas > st.UpdatedReplicas:
		return false, fmt.Sprintf("%d old replica(s) still running", st.Replicas-st.UpdatedReplicas), nil
	case st.AvailableReplicas < st.UpdatedReplicas:
		return false, fmt.Sprintf("%d of %d updated replicas available", st.AvailableReplicas, st.UpdatedReplicas), nil
	}
	return true, "rolled out", nil
}

// scrubbedErr is an error whose message had a key string taken out (an API
// server or admission webhook that echoed the request). It still unwraps to
// the original, for errors.Is and hints.
type scrubbedErr struct {
	err error
	msg string
}

func (e *scrubbedErr) Error() string { return e.msg }
func (e *scrubbedErr) Unwrap() error { return e.err }

// scrubKey returns err with every occurrence of key's string replaced by
// its fingerprint.
func scrubKey(err error, key secret.Key) error {
	if err == nil || key.IsZero() || !strings.Contains(err.Error(), key.Reveal()) {
		return err
	}
	return &scrubbedErr{err: err, msg: strings.ReplaceAll(err.Error(), key.Reveal(), key.Fingerprint())}
}
