package rotate

import (
	"encoding/json"
	"slices"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
)

const (
	// pendingAnnotation indexes, on the slot's secret, the old keys kept for
	// a grace period, so that a rotate run can finalize the due ones
	// without listing the project's keys. The key's own keyrotate.delete-after
	// annotation stays the source of truth.
	pendingAnnotation = "keyrotate.pending"
	// annVersion names, on a kept old key, the secret version holding it,
	// to disable once the key is deleted.
	annVersion = "keyrotate.secret-version"
)

// pendingKey is an old key waiting for deletion: names and a fingerprint.
type pendingKey struct {
	Key         string    `json:"key"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	DeleteAfter time.Time `json:"delete_after"`
	Version     string    `json:"version,omitempty"`
}

type pendingList []pendingKey

// pendingKeys reads the index from a secret; a malformed one reads as empty
// (finalize's scan of the project finds those keys anyway).
func pendingKeys(sec *secretmanagerpb.Secret) pendingList {
	raw := sec.GetAnnotations()[pendingAnnotation]
	if raw == "" {
		return nil
	}
	var l pendingList
	if json.Unmarshal([]byte(raw), &l) != nil {
		return nil
	}
	return l
}

func (l pendingList) without(key string) pendingList {
	return slices.DeleteFunc(slices.Clone(l), func(p pendingKey) bool { return p.Key == key })
}

func (l pendingList) with(p *pendingKey) pendingList {
	if p == nil {
		return l
	}
	return append(l.without(p.Key), *p)
}

// due reports whether any entry's time has come.
func (l pendingList) due(now time.Time) bool {
	for _, p := range l {
		if !now.Before(p.DeleteAfter) {
			return true
		}
	}
	return false
}

// setPending writes the index into the annotations of a secret about to be
// written.
func setPending(sec *secretmanagerpb.Secret, l pendingList) {
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	if len(l) == 0 {
		delete(sec.Annotations, pendingAnnotation)
		return
	}
	b, _ := json.Marshal(l)
	sec.Annotations[pendingAnnotation] = string(b)
}
