package rotate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/secret"
)

// preflight is what step 1 learned, with no write of any kind.
type preflight struct {
	sec     *secretmanagerpb.Secret
	rec     *Record // a rotation in progress, or nil
	oldName string
	old     *apikeys.V2Key // nil when the old key is gone (a resumed rotation)
	oldKey  secret.Key     // zero on a resumed rotation
	latest  Version        // the secret's newest version; Name "" when none
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
	var err error
	if p.sec, err = sa.get(ctx, slot.Secret); err != nil {
		err = fmt.Errorf("slot %s: %w", slot.Name, err)
		if errors.Is(err, ErrSecretNotFound) {
			err = WithHint(err, "create the secret, or fix `secret:` in the config")
		}
		return nil, err
	}
	if p.rec, err = parseRecord(p.sec); err != nil {
		return nil, err
	}
	p.latest, err = sa.access(ctx, slot.Secret+"/versions/latest")
	switch {
	case errors.Is(err, ErrSecretNotFound):
		p.latest = Version{} // no version yet
	case isCode(err, codes.FailedPrecondition):
		return nil, WithHint(fmt.Errorf("slot %s: %w", slot.Name, err),
			"the newest version of the secret is disabled or destroyed, so consumers reading `latest` fail: enable it or add a version holding the current key")
	case err != nil:
		return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
	}

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
		if p.oldName, err = ka.lookup(ctx, p.latest.Key); err != nil {
			return nil, WithHint(fmt.Errorf("slot %s: the secret's latest version %s: %w", slot.Name, p.latest.Name, err),
				"the secret does not hold a live API key: run `keyrotate doctor` on it, or name the key with `key:`")
		}
		if slot.Key != "" && keyIDOf(slot.Key) != keyIDOf(p.oldName) {
			r.log().Warn("the config's key differs from the key in the secret; the secret wins", "slot", slot.Name, "config_key", slot.Key, "secret_key", p.oldName)
		}
		p.oldKey = p.latest.Key
	case slot.Key != "":
		p.oldName = slot.Key
		if p.oldKey, err = ka.keyString(ctx, slot.Key); err != nil {
			return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
		}
	default:
		return nil, WithHint(fmt.Errorf("slot %s: secret %s has no version and the slot names no key: %w", slot.Name, slot.Secret, ErrBadConfig),
			"name the current key with `key: projects/P/locations/global/keys/K` for the first run")
	}

	p.old, err = ka.get(ctx, p.oldName)
	switch {
	case errors.Is(err, ErrKeyNotFound) && p.rec != nil:
		p.old = nil // deleted by the run being resumed
	case err != nil:
		return nil, fmt.Errorf("slot %s: %w", slot.Name, err)
	case p.old.DeleteTime != "" && p.rec == nil:
		return nil, WithHint(fmt.Errorf("slot %s: the current key %s was deleted at %s: %w", slot.Name, p.oldName, p.old.DeleteTime, ErrKeyNotFound),
			"undelete it within 30 days of deletion, or put a live key in the secret")
	}
	if p.old != nil {
		p.oldName = p.old.Name
		if err := checkProject(slot, p.oldName); err != nil {
			return nil, err
		}
	}

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

// checkProject compares a key's project number with the slot's project
// when the slot names it by number (an id cannot be compared offline).
func checkProject(slot *Slot, keyName string) error {
	parts := strings.Split(keyName, "/")
	if len(parts) < 2 || slot.Project == "" || strings.Trim(slot.Project, "0123456789") != "" {
		return nil
	}
	if parts[1] != slot.Project {
		return WithHint(fmt.Errorf("slot %s: key %s belongs to project %s, not %s: %w", slot.Name, keyName, parts[1], slot.Project, ErrBadConfig),
			"fix `project:` in the config, or check that the secret holds the right key")
	}
	return nil
}
