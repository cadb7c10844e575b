package targets

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	run "cloud.google.com/go/run/apiv2"
	"cloud.google.com/go/run/apiv2/runpb"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// CloudRunFingerprintAnnotation is the revision-template annotation that a
// Write through a `latest` secret reference sets to the new key's
// fingerprint: changing the template makes Cloud Run deploy a new revision,
// whose instances read the secret's newest version when they start.
const CloudRunFingerprintAnnotation = "keyrotate/key-fingerprint"

// cloudRunUpdatePermission is what Write needs on the service
// (roles/run.developer has it).
const cloudRunUpdatePermission = "run.services.update"

// CloudRun is an environment variable of a container of a Cloud Run
// service (Admin API v2). The variable holds the key either as a plain
// value or through a Secret Manager reference (value_source.secret_key_ref):
//
//   - plain value: Write puts the new key in the template;
//   - reference pinned to a version number: Write re-pins it to the newest
//     enabled version of the referenced secret that holds the new key. The
//     rotation adds the slot secret's version before it writes targets, and
//     writes targets in config order: a reference to another secret works
//     when a secretmanager target for that secret comes before this one;
//   - reference to `latest`: the reference stays; Write sets the template
//     annotation CloudRunFingerprintAnnotation, which deploys a new revision
//     whose instances read the new version at start.
//
// Every Write is GetService, a template change, UpdateService with the
// service's etag (a concurrent change fails it: rotate.ErrTargetChanged),
// waiting for the long-running operation, then proving that the new
// revision is ready and receives all traffic. If the new revision fails,
// Cloud Run keeps serving the old one, which holds the old key: the
// rotation's invariant holds and Write reports the failure.
//
// Read returns what the serving instances hold: the template's value (or
// the referenced secret version's payload) when the newest revision is the
// ready one; the zero key when the service is not serving its template (a
// failed or unfinished deployment, or instances started before the newest
// version of a `latest` secret existed), so that a rotation rewrites it.
type CloudRun struct {
	run       *run.ServicesClient
	sm        *secretmanager.Client
	service   string // projects/P/locations/L/services/S
	container string // "" : the only container
	variable  string

	// Poll is the first wait between polls of the deployment (doubling to
	// 5s); zero means 250ms. Timeout bounds the wait for the new revision;
	// zero means 10 minutes.
	Poll, Timeout time.Duration
	// ConnectErr, when set, is why there is no Cloud Run client: Read and
	// Write fail with it.
	ConnectErr error

	mu   sync.Mutex
	seen *runpb.EnvVar // the variable as of the last Read or Write
}

var _ rotate.Target = (*CloudRun)(nil)

// NewCloudRun returns the target for variable in the container (by name;
// "" for a service with one container) of service. sm reads the secrets
// that the variable may reference.
func NewCloudRun(rc *run.ServicesClient, sm *secretmanager.Client, service, container, variable string) *CloudRun {
	return &CloudRun{run: rc, sm: sm, service: service, container: container, variable: variable}
}

// String returns "cloudrun:<service>#<VAR>", or
// "cloudrun:<service>#<container>/<VAR>" when the container is named.
func (t *CloudRun) String() string {
	if t.container != "" {
		return "cloudrun:" + t.service + "#" + t.container + "/" + t.variable
	}
	return "cloudrun:" + t.service + "#" + t.variable
}

// Read checks that the service exists, that the caller may update it, that
// it sends all traffic to its latest revision and that the container
// defines the variable once, then returns the key the serving instances
// hold (see the type's doc).
func (t *CloudRun) Read(ctx context.Context) (secret.Key, error) {
	svc, env, err := t.get(ctx)
	if err != nil {
		return secret.Key{}, err
	}
	if err := t.checkWritable(ctx); err != nil {
		return secret.Key{}, err
	}
	if err := t.checkTraffic(svc); err != nil {
		return secret.Key{}, err
	}
	k, err := t.value(ctx, svc, env)
	if err != nil {
		return secret.Key{}, err
	}
	t.mu.Lock()
	t.seen = proto.Clone(env).(*runpb.EnvVar)
	t.mu.Unlock()
	return k, nil
}

// Write deploys the key (see the type's doc) and waits until the new
// revision is ready and serving. It does nothing when the serving
// revision already holds key.
func (t *CloudRun) Write(ctx context.Context, key secret.Key) error {
	if key.IsZero() {
		return fmt.Errorf("write %s: refusing to write an empty key", t)
	}
	svc, env, err := t.get(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	seen := t.seen
	t.mu.Unlock()
	if seen == nil {
		return fmt.Errorf("write %s: no earlier Read to compare the service with", t)
	}
	serving := servingTemplate(svc)
	want := proto.Clone(env).(*runpb.EnvVar)
	ref := env.GetValueSource().GetSecretKeyRef()
	var force bool
	switch {
	case ref == nil:
		if serving && env.GetValue() == key.Reveal() {
			return t.done(env)
		}
		if !proto.Equal(env, seen) && env.GetValue() != key.Reveal() {
			return t.changed()
		}
		want.Values = &runpb.EnvVar_Value{Value: key.Reveal()}
	case ref.Version == "latest":
		if cur, err := t.value(ctx, svc, env); err == nil && cur.Equal(key) {
			return t.done(env)
		}
		if !proto.Equal(env, seen) {
			return t.changed()
		}
		latest, err := gcp.AccessVersion(ctx, t.sm, t.secretName(ref.Secret)+"/versions/latest")
		if err != nil {
			return fmt.Errorf("write %s: %w", t, err)
		}
		if !latest.Key.Equal(key) {
			return errhint.With(fmt.Errorf("write %s: the newest version of %s does not hold the new key, and the service reads `latest`", t, ref.Secret),
				"reference the slot's secret, or list a secretmanager target for that secret before this target")
		}
		force = true
	default:
		v, err := t.versionHolding(ctx, t.secretName(ref.Secret), key)
		if err != nil {
			return err
		}
		if serving && ref.Version == v {
			return t.done(env)
		}
		if !proto.Equal(env, seen) && ref.Version != v {
			return t.changed()
		}
		want.GetValueSource().GetSecretKeyRef().Version = v
	}
	if !serving {
		force = true // the template may already hold the value: deploy it again
	}
	upd := t.updatedService(svc, want, key, force)
	if err := t.deploy(ctx, upd, force, svc.LatestReadyRevision); err != nil {
		return err
	}
	return t.done(want)
}

// updatedService returns a copy of svc whose container sets the variable
// to want, ready to send as an update: without the client-side revision
// name and, when the update must force a new revision, with the key's
// fingerprint in the template's annotations.
func (t *CloudRun) updatedService(svc *runpb.Service, want *runpb.EnvVar, key secret.Key, force bool) *runpb.Service {
	upd := proto.Clone(svc).(*runpb.Service)
	c, _ := findContainer(upd.Template, t.container)
	for i, e := range c.Env {
		if e.Name == t.variable {
			c.Env[i] = want
		}
	}
	// gcloud and the console name revisions client-side, so their
	// services carry the serving revision's name in template.revision.
	// Sent back with a changed template it fails with 409 ALREADY_EXISTS
	// "Revision named '…' with different configuration already exists", on
	// every attempt (reported in firebase/firebase-tools#10151 and #10136).
	// Cleared, Cloud Run names the new revision itself.
	upd.Template.Revision = ""
	if force {
		if upd.Template.Annotations == nil {
			upd.Template.Annotations = map[string]string{}
		}
		upd.Template.Annotations[CloudRunFingerprintAnnotation] = key.Fingerprint()
	}
	return upd
}

func (t *CloudRun) done(env *runpb.EnvVar) error {
	t.mu.Lock()
	t.seen = proto.Clone(env).(*runpb.EnvVar)
	t.mu.Unlock()
	return nil
}

func (t *CloudRun) changed() error {
	return errhint.With(fmt.Errorf("write %s: %s changed since it was read: %w", t, t.variable, rotate.ErrTargetChanged),
		"someone else deployed the service during the rotation: check its environment and run keyrotate again")
}

// deploy sends the update and waits until its revision serves.
func (t *CloudRun) deploy(ctx context.Context, upd *runpb.Service, force bool, oldRevision string) error {
	op, err := t.run.UpdateService(ctx, &runpb.UpdateServiceRequest{Service: upd, ForceNewRevision: force})
	if status.Code(err) == codes.Aborted || status.Code(err) == codes.FailedPrecondition {
		return errhint.With(fmt.Errorf("write %s: the service changed since it was read (%s): %w", t, status.Convert(err).Message(), rotate.ErrTargetChanged),
			"someone else deployed the service during the rotation: run keyrotate again")
	}
	if err != nil {
		return fmt.Errorf("write %s: update service: %w", t, t.apiErr(err))
	}
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	interval := t.Poll
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	var opErr error
	for !op.Done() {
		select {
		case <-wctx.Done():
			return errhint.With(fmt.Errorf("write %s: the deployment did not finish in %s: %w", t, timeout, wctx.Err()),
				"check the service's newest revision in the console (`gcloud run revisions list`); revision "+oldRevision+" keeps serving until the new one is ready")
		case <-time.After(interval):
		}
		if interval *= 2; interval > 5*time.Second {
			interval = 5 * time.Second
		}
		if _, err := op.Poll(wctx); err != nil {
			if op.Done() {
				opErr = err
				break
			}
			if st, ok := status.FromError(err); ok && (st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded || st.Code() == codes.Internal) {
				continue // a failed poll: the deployment goes on
			}
			return fmt.Errorf("write %s: wait for the deployment: %w", t, t.apiErr(err))
		}
	}
	svc, err := t.run.GetService(ctx, &runpb.GetServiceRequest{Name: t.service})
	if err != nil {
		return fmt.Errorf("write %s: read the service after deploying: %w", t, t.apiErr(err))
	}
	if opErr != nil || !servingTemplate(svc) || svc.LatestReadyRevision == oldRevision {
		msg := svc.GetTerminalCondition().GetMessage()
		if opErr != nil {
			msg = status.Convert(opErr).Message()
		}
		return &rotate.NextError{Err: fmt.Errorf("write %s: the new revision %s is not ready and serving (%s); revision %s still serves the old key",
			t, svc.LatestCreatedRevision, msg, svc.LatestReadyRevision),
			Safe: "fix the revision (its logs: `gcloud run revisions describe " + svc.LatestCreatedRevision + "`), then run keyrotate again",
			Next: rotate.Next{Action: rotate.NextOrAbort}}
	}
	return nil
}

// get reads the service and finds the container and the variable.
func (t *CloudRun) get(ctx context.Context) (*runpb.Service, *runpb.EnvVar, error) {
	if t.ConnectErr != nil || t.run == nil {
		err := t.ConnectErr
		if err == nil {
			err = errors.New("no Cloud Run client")
		}
		return nil, nil, fmt.Errorf("%s: %w", t, err)
	}
	svc, err := t.run.GetService(ctx, &runpb.GetServiceRequest{Name: t.service})
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound:
		return nil, nil, errhint.With(fmt.Errorf("%s: service %s not found: %w", t, t.service, rotate.ErrInvalidTarget),
			"fix the target's `service:` (gcloud run services list shows the services of a region)")
	case codes.PermissionDenied:
		return nil, nil, errhint.With(fmt.Errorf("%s: %s: %w", t, status.Convert(err).Message(), rotate.ErrInvalidTarget),
			"grant the caller roles/run.developer on the service (run.services.get and run.services.update), and check the project")
	default:
		return nil, nil, fmt.Errorf("%s: get service: %w", t, err)
	}
	c, err := findContainer(svc.GetTemplate(), t.container)
	if err != nil {
		return nil, nil, errhint.With(fmt.Errorf("%s: %w: %w", t, err, rotate.ErrInvalidTarget), containerHint(svc.GetTemplate()))
	}
	var env *runpb.EnvVar
	for _, e := range c.Env {
		if e.Name == t.variable {
			if env != nil {
				return nil, nil, fmt.Errorf("%s: %s is defined twice in the container: %w", t, t.variable, rotate.ErrInvalidTarget)
			}
			env = e
		}
	}
	if env == nil {
		return nil, nil, errhint.With(fmt.Errorf("%s: %s is not in the environment of the service's container: %w", t, t.variable, rotate.ErrInvalidTarget),
			"deploy the service once with the variable set (preferably as a Secret Manager reference, --update-secrets), or fix the target's `var:`")
	}
	if src := env.GetValueSource(); src != nil && src.GetSecretKeyRef() == nil {
		return nil, nil, fmt.Errorf("%s: %s has a value source keyrotate cannot write: %w", t, t.variable, rotate.ErrInvalidTarget)
	}
	return svc, env, nil
}

func findContainer(tmpl *runpb.RevisionTemplate, name string) (*runpb.Container, error) {
	cs := tmpl.GetContainers()
	if name == "" {
		if len(cs) == 1 {
			return cs[0], nil
		}
		return nil, fmt.Errorf("the service has %d containers; name one with `container:`", len(cs))
	}
	for _, c := range cs {
		if c.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("the service has no container %q", name)
}

func containerHint(tmpl *runpb.RevisionTemplate) string {
	var names []string
	for _, c := range tmpl.GetContainers() {
		names = append(names, c.Name)
	}
	return "set the target's `container:` to one of: " + strings.Join(names, ", ")
}

// checkWritable asks Cloud Run whether the caller may update the service.
func (t *CloudRun) checkWritable(ctx context.Context) error {
	resp, err := t.run.TestIamPermissions(ctx, &iampb.TestIamPermissionsRequest{Resource: t.service, Permissions: []string{cloudRunUpdatePermission}})
	if err != nil {
		return fmt.Errorf("%s: test permissions: %w", t, t.apiErr(err))
	}
	for _, p := range resp.GetPermissions() {
		if p == cloudRunUpdatePermission {
			return nil
		}
	}
	return errhint.With(fmt.Errorf("%s: the caller lacks %s on the service: %w", t, cloudRunUpdatePermission, rotate.ErrInvalidTarget),
		"grant the caller roles/run.developer on the service (and roles/iam.serviceAccountUser on its runtime service account)")
}

// checkTraffic refuses a service that sends traffic to a pinned revision:
// a new revision would not serve.
func (t *CloudRun) checkTraffic(svc *runpb.Service) error {
	for _, tr := range svc.Traffic {
		if tr.Percent > 0 && tr.Type != runpb.TrafficTargetAllocationType_TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST {
			return errhint.With(
				fmt.Errorf("%s: the service sends %d%% of its traffic to revision %s, not to the latest revision: %w",
					t, tr.Percent, tr.Revision, rotate.ErrInvalidTarget),
				"send all traffic to the latest revision (gcloud run services update-traffic --to-latest): a new revision must serve the new key")
		}
	}
	return nil
}

// servingTemplate reports whether the service's newest revision is ready
// and no deployment is in progress.
func servingTemplate(svc *runpb.Service) bool {
	return !svc.Reconciling && svc.LatestReadyRevision != "" && svc.LatestReadyRevision == svc.LatestCreatedRevision
}

// value returns the key that the serving instances hold, or the zero key
// when that is not known (see the type's doc).
func (t *CloudRun) value(ctx context.Context, svc *runpb.Service, env *runpb.EnvVar) (secret.Key, error) {
	if !servingTemplate(svc) {
		return secret.Key{}, nil
	}
	ref := env.GetValueSource().GetSecretKeyRef()
	if ref == nil {
		return secret.New(env.GetValue()), nil
	}
	name := t.secretName(ref.Secret) + "/versions/" + ref.Version
	v, err := gcp.AccessVersion(ctx, t.sm, name)
	if errors.Is(err, gcp.ErrSecretNotFound) || status.Code(errors.Unwrap(err)) == codes.PermissionDenied {
		return secret.Key{}, errhint.With(fmt.Errorf("%s: %w: %w", t, err, rotate.ErrInvalidTarget),
			"the service references a secret version keyrotate cannot read: fix the reference or grant roles/secretmanager.secretAccessor")
	}
	if err != nil {
		return secret.Key{}, fmt.Errorf("%s: %w", t, err)
	}
	if ref.Version == "latest" {
		// Instances read `latest` when they start: those of a revision
		// that became ready before the version existed hold an older key.
		sv, err := t.sm.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: v.Name})
		if err != nil {
			return secret.Key{}, fmt.Errorf("%s: get %s: %w", t, v.Name, err)
		}
		ready := svc.GetTerminalCondition().GetLastTransitionTime()
		if ready != nil && sv.GetCreateTime().AsTime().After(ready.AsTime()) {
			return secret.Key{}, nil
		}
	}
	return v.Key, nil
}

// secretName turns a reference's secret (an id in the service's project,
// or projects/P/secrets/S) into a full name.
func (t *CloudRun) secretName(ref string) string {
	if strings.HasPrefix(ref, "projects/") {
		return ref
	}
	return "projects/" + strings.Split(t.service, "/")[1] + "/secrets/" + ref
}

// versionHolding returns the number of the newest enabled version of the
// secret whose payload is key (the newest few are searched).
func (t *CloudRun) versionHolding(ctx context.Context, secretName string, key secret.Key) (string, error) {
	latest, err := gcp.AccessVersion(ctx, t.sm, secretName+"/versions/latest")
	if err == nil && latest.Key.Equal(key) {
		return versionID(latest.Name), nil
	}
	var nums []int
	it := t.sm.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: secretName})
	for {
		v, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			return "", fmt.Errorf("write %s: list versions of %s: %w", t, secretName, err)
		}
		if v.State == secretmanagerpb.SecretVersion_ENABLED {
			if n, err := strconv.Atoi(versionID(v.Name)); err == nil {
				nums = append(nums, n)
			}
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(nums)))
	if len(nums) > 10 {
		nums = nums[:10]
	}
	for _, n := range nums {
		v, err := gcp.AccessVersion(ctx, t.sm, secretName+"/versions/"+strconv.Itoa(n))
		if err == nil && v.Key.Equal(key) {
			return strconv.Itoa(n), nil
		}
	}
	return "", errhint.With(fmt.Errorf("write %s: no recent enabled version of %s holds the new key", t, secretName),
		"the service must reference the slot's secret, or a secret of a secretmanager target listed before this target")
}

func versionID(name string) string { return name[strings.LastIndex(name, "/")+1:] }

func (t *CloudRun) apiErr(err error) error {
	if status.Code(err) == codes.PermissionDenied {
		return errhint.With(err, "grant the caller roles/run.developer on the service")
	}
	return err
}
