package rotate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// preflight is what step 1 learned, with no write of any kind.
type preflight struct {
	sec     *secretmanagerpb.Secret
	rec     *Record // a rotation in progress, or nil
	oldName string
	old     *apikeys.V2Key // nil when the old key is gone (a resumed rotation)
	oldKey  secret.Key     // zero on a resumed rotation
	latest  gcp.Version    // the secret's newest version; Name "" when none
	targets []secret.Key   // what each target holds, in slot order
	// unreadable marks the targets whose value cannot be read (their
	// entry in targets is zero).
	unreadable []bool
}

func (p *preflight) created() time.Time {
	if p.old == nil {
		return time.Time{}
	}
	return parseTime(p.old.CreateTime)
}

func (p *preflight) dueAt(slot *Slot) time.Time { return p.created().Add(slot.MaxAge) }

func (p *preflight) due(slot *Slot, now time.Time) bool {
	return slot.MaxAge <= 0 || !now.Before(p.dueAt(slot))
}

// preflight resolves the slot: the secret, any rotation record, the current
// key and what every target holds. It only reads.
func (r *Rotator) preflight(ctx context.Context, slot *Slot) (*preflight, error) {
	ka, sa := r.apis()
	p := &preflight{}
	// From here to its key read, the rotation may share its project's
	// key list with the Rotator's other rotations (keylist.go).
	read := r.keyLists.begin(slot.Project, slot.Name)
	defer read.end()
	if err := p.readSecret(ctx, sa, slot); err != nil {
		return nil, err
	}
	if err := r.findCurrent(ctx, ka, slot, p); err != nil {
		return nil, err
	}
	get := func(ctx context.Context, name string) (*apikeys.V2Key, error) {
		return r.readKey(ctx, ka, slot, read, name)
	}
	if err := p.readCurrent(ctx, ka, get, slot); err != nil {
		return nil, err
	}
	read.end()
	for _, t := range slot.Targets {
		k, err := t.Read(ctx)
		if err != nil && !errors.Is(err, ErrUnreadable) {
			return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
		}
		p.targets = append(p.targets, k)
		p.unreadable = append(p.unreadable, err != nil)
	}
	return p, nil
}

// readSecret reads the slot's secret, its rotation record and its newest
// version.
func (p *preflight) readSecret(ctx context.Context, sa *gcp.Secrets, slot *Slot) error {
	var err error
	if p.sec, err = sa.Get(ctx, slot.Secret); err != nil {
		err = fmt.Errorf("slot %s: %w", slot.Name, err)
		if errors.Is(err, ErrSecretNotFound) {
			err = errhint.With(err, "create the secret, or fix `secret:` in the config")
		}
		return err
	}
	if p.rec, err = parseRecord(p.sec); err != nil {
		return err
	}
	if p.rec != nil && p.rec.kind() == KindRepair {
		// A repair changes no key: there is nothing to resume, and a live
		// one stops a run at its lock (acquire).
		p.rec = nil
	}
	p.latest, err = sa.Access(ctx, slot.Secret+"/versions/latest")
	switch {
	case errors.Is(err, ErrSecretNotFound):
		p.latest = gcp.Version{} // no version yet
	case isCode(err, codes.FailedPrecondition):
		return errhint.With(fmt.Errorf("slot %s: %w", slot.Name, err),
			"the newest version of the secret is disabled or destroyed, so consumers reading `latest` fail: enable it or add a version holding the current key")
	case err != nil:
		return fmt.Errorf("slot %s: %w", slot.Name, err)
	}
	return nil
}

// findCurrent names the current key (p.oldName) and its key string
// (p.oldKey): the old key of the rotation in progress, else the key the
// secret's newest version holds, else the key the slot names (a first run).
func (r *Rotator) findCurrent(ctx context.Context, ka *gcp.Keys, slot *Slot, p *preflight) error {
	var err error
	switch {
	case p.rec != nil:
		p.oldName = p.rec.OldKey
		if p.latest.Key.Fingerprint() == p.rec.OldFP {
			p.oldKey = p.latest.Key
		}
	case !p.latest.Key.IsZero():
		if name, ok := currentKeyOf(p.sec, p.latest); ok {
			// Put there by the rotation that made this version: no lookup.
			p.oldName, p.oldKey = name, p.latest.Key
			break
		}
		if p.oldName, err = ka.Lookup(ctx, p.latest.Key); err != nil {
			err = fmt.Errorf("slot %s: the secret's latest version %s: %w", slot.Name, p.latest.Name, err)
			if !errors.Is(err, ErrKeyNotFound) {
				return err // the lookup failed, not the key: its own hint says why
			}
			return withNext(err, "the secret does not hold a live API key: diagnose what it holds, or name the key with `key:`",
				Next{Action: NextDiagnose, Slot: slot.Name})
		}
		if slot.Key != "" && keyIDOf(slot.Key) != keyIDOf(p.oldName) {
			r.log().Warn("the config's key differs from the key in the secret; the secret wins", "slot", slot.Name, "config_key", slot.Key, "secret_key", p.oldName)
		}
		p.oldKey = p.latest.Key
	case slot.Key != "":
		p.oldName = slot.Key
		if p.oldKey, err = ka.KeyString(ctx, slot.Key); err != nil {
			return fmt.Errorf("slot %s: %w", slot.Name, err)
		}
	default:
		return errhint.With(fmt.Errorf("slot %s: secret %s has no version and the slot names no key: %w", slot.Name, slot.Secret, ErrBadConfig),
			"name the current key with `key: projects/P/locations/global/keys/K` for the first run")
	}
	return nil
}

// readCurrent reads the current key (p.old; nil when the rotation being
// resumed deleted it) with get (GetKey, or a fleet's shared list) and
// refuses a key or a secret outside the slot's project.
func (p *preflight) readCurrent(ctx context.Context, ka *gcp.Keys, get func(context.Context, string) (*apikeys.V2Key, error), slot *Slot) error {
	// The slot's project as a number, when the config or the secret's name
	// tells it; else the key is read by its id under the slot's project, so
	// that the API resolves the project id.
	want := projectNumber(slot, p.sec)
	name := p.oldName
	if want == "" {
		name = "projects/" + slot.Project + "/locations/global/keys/" + keyIDOf(p.oldName)
	}
	var err error
	p.old, err = get(ctx, name)
	if err != nil && name != p.oldName && (errors.Is(err, ErrKeyNotFound) || gcp.HTTPCode(err) == http.StatusForbidden) {
		// Not in the slot's project — or gone: look where it is.
		if k, err2 := ka.Get(ctx, p.oldName); err2 == nil {
			return projectMismatch(slot, "key "+k.Name, projectOf(k.Name))
		}
	}
	switch {
	case errors.Is(err, ErrKeyNotFound) && p.rec != nil:
		p.old = nil // deleted by the run being resumed
	case err != nil:
		return fmt.Errorf("slot %s: %w", slot.Name, err)
	case p.old.DeleteTime != "" && p.rec == nil:
		return errhint.With(fmt.Errorf("slot %s: the current key %s was deleted at %s: %w", slot.Name, p.oldName, p.old.DeleteTime, ErrKeyNotFound),
			"undelete it within 30 days of deletion, or put a live key in the secret")
	}
	if p.old != nil {
		if want == "" {
			want = projectOf(p.old.Name)
		}
		// A key of another project with the same key id is another key.
		if n := projectOf(p.oldName); isNumber(n) && n != projectOf(p.old.Name) {
			return projectMismatch(slot, "key "+p.oldName, n)
		}
		p.oldName = p.old.Name
	}
	return checkProjects(slot, p.sec.GetName(), p.oldName, want)
}

// drifted lists the targets that can be read and do not hold the current
// key (indexes into slot order), and whether the secret's latest version
// does not hold it either. Only meaningful with no rotation in progress.
func (p *preflight) drifted() (targets []int, secret bool) {
	if p.oldKey.IsZero() {
		return nil, false
	}
	for i, k := range p.targets {
		if !p.unreadable[i] && !k.Equal(p.oldKey) {
			targets = append(targets, i)
		}
	}
	return targets, !p.latest.Key.Equal(p.oldKey)
}

// drift reports whether the secret or a readable target does not hold the
// current key.
func (p *preflight) drift() bool {
	t, s := p.drifted()
	return len(t) > 0 || s
}

// logDrift warns about targets that hold neither the current key nor the
// new key of the rotation in progress: the rotation replaces their value.
// (Read-only views report drift in their own output.)
func (r *Rotator) logDrift(slot *Slot, p *preflight) {
	if p.oldKey.IsZero() {
		return
	}
	for i, k := range p.targets {
		if !p.unreadable[i] && !k.Equal(p.oldKey) && (p.rec == nil || k.Fingerprint() != p.rec.NewFP) {
			r.log().Warn("drift: a target does not hold the current key; rotating will replace its value",
				"slot", slot.Name, "target", slot.Targets[i].String(), "holds", k.Fingerprint(), "current", p.oldKey.Fingerprint())
		}
	}
}

// projectNumber returns the slot's project number as far as the config and
// the secret (as the API returned it, its name carrying the number) tell
// it: the project itself when given as a number, else the secret's project
// when the config names the secret in the slot's project. "" when neither.
func projectNumber(slot *Slot, sec *secretmanagerpb.Secret) string {
	switch {
	case isNumber(slot.Project):
		return slot.Project
	case !slot.SecretProjectDiffers && projectOf(slot.Secret) == slot.Project && isNumber(projectOf(sec.GetName())):
		return projectOf(sec.GetName())
	}
	return ""
}

// checkProjects refuses a slot whose current key (keyName) is not in the
// slot's project (number want), or whose secret (secretName, as the API
// returned it) is in another project when the slot does not allow that.
// Names whose project is not a number, and an unknown want, are not
// compared.
func checkProjects(slot *Slot, secretName, keyName, want string) error {
	if !isNumber(want) {
		return nil
	}
	if n := projectOf(keyName); isNumber(n) && n != want {
		return projectMismatch(slot, "key "+keyName, n)
	}
	if n := projectOf(secretName); !slot.SecretProjectDiffers && isNumber(n) && n != want {
		return errhint.With(fmt.Errorf("slot %s: secret %s is in project %s, not in the slot's project %s: %w", slot.Name, secretName, n, slot.Project, ErrBadConfig),
			"fix `project:` or `secret:` in the config; if the secret lives in a central secrets project on purpose, add `secret_project_differs: true` to the slot")
	}
	return nil
}

// projectMismatch is the error for a current key (what) found in project
// got instead of the slot's project: rotating would replace, and delete,
// another project's key.
func projectMismatch(slot *Slot, what, got string) error {
	return errhint.With(fmt.Errorf("slot %s: %s belongs to project %s, not to the slot's project %s: %w", slot.Name, what, got, slot.Project, ErrBadConfig),
		"fix `project:` in the config, or check that the secret holds the right key (nothing was changed)")
}

// projectOf returns P of a resource name projects/P/...
func projectOf(name string) string {
	parts := strings.SplitN(name, "/", 3)
	if len(parts) < 2 || parts[0] != "projects" {
		return ""
	}
	return parts[1]
}

func isNumber(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }
