package rotate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// Leak is a leaked key and its place among the configured slots. It holds
// names and a fingerprint, never the key string.
type Leak struct {
	Key         string     `json:"key"`
	Project     string     `json:"project"`
	Fingerprint string     `json:"fingerprint"`
	DisplayName string     `json:"display_name,omitempty"`
	Deleted     bool       `json:"deleted"`
	Slot        string     `json:"slot,omitempty"`
	Role        string     `json:"role,omitempty"` // "current" or "old" key of Slot
	DeleteAfter *time.Time `json:"delete_after,omitempty"`
	// HeldBy lists every configured secret and target that holds the
	// leaked key, in any slot.
	HeldBy []string `json:"held_by,omitempty"`
	// Traffic is the key's calls as Cloud Monitoring counted them before
	// anything was deleted: what breaks with the key (traffic.go). nil
	// without a Monitoring client, or when UsageUnknown says why not.
	Traffic      *Traffic `json:"traffic,omitempty"`
	UsageUnknown string   `json:"usage_unknown,omitempty"`
}

// FindLeak looks a leaked key string up (LookupKey) and finds where the
// slots use it: as a slot's current key, as an old key (kept for a grace
// period, or left over), and in which secrets and targets; and, with a
// Monitoring client, who still calls with it (Leak.Traffic), never waiting
// on Monitoring longer than LeakUsageTimeout. It only reads.
func (r *Rotator) FindLeak(ctx context.Context, key secret.Key, slots []*Slot) (*Leak, error) {
	ka, sa := r.apis()
	name, err := ka.Lookup(ctx, key)
	if err != nil {
		return nil, errhint.With(err, "the API does not know this key string: it is not a key of a project you can see, or it was purged")
	}
	parts := strings.SplitN(name, "/", 3) // projects/N/...
	l := &Leak{Key: name, Project: parts[0] + "/" + parts[1], Fingerprint: key.Fingerprint()}
	k, err := ka.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	l.DisplayName, l.Deleted = k.DisplayName, k.DeleteTime != ""
	l.Traffic, l.UsageUnknown = r.leakTraffic(ctx, projectOf(name), k.Uid)
	if t, err := time.Parse(time.RFC3339, k.Annotations[annDeleteAfter]); err == nil {
		l.DeleteAfter = &t
	}
	for _, s := range slots {
		latest, err := sa.Access(ctx, s.Secret+"/versions/latest")
		if err != nil && !errors.Is(err, ErrSecretNotFound) {
			return nil, fmt.Errorf("slot %s: %w", s.Name, err)
		}
		if latest.Key.Equal(key) {
			l.HeldBy = append(l.HeldBy, "secretmanager:"+s.Secret)
			if l.Slot == "" {
				l.Slot, l.Role = s.Name, "current"
			}
		}
		if l.Slot == "" && k.Annotations[annSlot] == s.Name {
			l.Slot, l.Role = s.Name, "old"
		}
		for _, t := range s.Targets {
			held, err := t.Read(ctx)
			if errors.Is(err, ErrUnreadable) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("slot %s: %w", s.Name, err)
			}
			if held.Equal(key) {
				l.HeldBy = append(l.HeldBy, t.String())
			}
		}
	}
	return l, nil
}

// LeakResponse is what RespondToLeak did.
type LeakResponse struct {
	Leak      *Leak           `json:"leak"`
	Rotation  *Result         `json:"rotation,omitempty"`
	Finalized *FinalizeResult `json:"finalized,omitempty"`
}

// RespondToLeak takes a leaked key out of service. A slot's current key is
// rotated at once with no grace: the leaked key is deleted the moment every
// target was read back holding the new key. An old key is deleted at once,
// after a rotation first if a target of its slot still holds it. A key of no
// slot is left alone: revoke it on its own.
func (r *Rotator) RespondToLeak(ctx context.Context, leak *Leak, slot *Slot) (*LeakResponse, error) {
	resp := &LeakResponse{Leak: leak}
	if slot == nil || leak.Deleted && !slotHolds(leak, slot) {
		return resp, nil
	}
	noGrace := time.Duration(0)
	if leak.Role == "current" || slotHolds(leak, slot) {
		r.event(slot.Name, StepLeaked, "rotating slot %s at once, without grace", slot.Name)
		res, err := r.Rotate(ctx, slot, Options{Force: true, Again: true, Grace: &noGrace, Retire: RetireNow})
		resp.Rotation = res
		if err != nil {
			return resp, err
		}
	}
	if leak.Role == "old" && !leak.Deleted {
		fin, err := r.Finalize(ctx, slot, FinalizeOptions{Only: []string{leak.Key}})
		resp.Finalized = fin
		if err != nil {
			return resp, err
		}
		if fin.Skipped != "" {
			return resp, fmt.Errorf("slot %s: could not delete leaked key %s: %s: %w", slot.Name, leak.Key, fin.Skipped, ErrStoppedPartWay)
		}
	}
	return resp, nil
}

// slotHolds reports whether one of the slot's targets holds the leaked key
// although it is not the slot's current key (drift).
func slotHolds(leak *Leak, slot *Slot) bool {
	if leak.Role == "current" {
		return false
	}
	for _, h := range leak.HeldBy {
		for _, t := range slot.Targets {
			if h == t.String() {
				return true
			}
		}
	}
	return false
}

// Revoked is the outcome of Revoke: the key, deleted, and whether it was
// deleted already (then Revoke changed nothing; DeletedAt and
// RestorableUntil say when it was deleted and until when it can be
// restored).
type Revoked struct {
	KeyInfo
	AlreadyDeleted bool `json:"already_deleted"`
}

// Revoke deletes one key (a soft delete: undelete restores it for 30 days).
// It refuses the current key of any of slots: deleting that breaks every
// place that uses it; rotate it instead. A key deleted already is left
// alone: no call that changes anything.
func (r *Rotator) Revoke(ctx context.Context, name string, slots []*Slot) (*Revoked, error) {
	ka, sa := r.apis()
	k, err := ka.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	info := describeKey(k, k.Name)
	if info.Deleted {
		return &Revoked{KeyInfo: info, AlreadyDeleted: true}, nil
	}
	for _, s := range slots {
		latest, err := sa.Access(ctx, s.Secret+"/versions/latest")
		if err != nil {
			continue
		}
		cur, err := ka.Lookup(ctx, latest.Key)
		if err == nil && keyIDOf(cur) == keyIDOf(k.Name) {
			return nil, withNext(fmt.Errorf("key %s is the current key of slot %s: %w", k.Name, s.Name, ErrKeyInUse),
				"deleting it would break every place that uses it: replace it everywhere first", Next{Action: NextReplaceFirst, Slot: s.Name})
		}
	}
	if err := ka.Delete(ctx, k.Name, k.Etag); err != nil {
		return nil, err
	}
	info.Deleted = true
	r.event("", StepRevoke, "deleted key %s (soft delete: `undelete` restores it for 30 days)", k.Name)
	return &Revoked{KeyInfo: info}, nil
}
