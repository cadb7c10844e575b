package rotate

import (
	"encoding/json"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"

	"github.com/keyrotate/keyrotate/internal/gcp"
)

// currentAnnotation names, on a slot's secret, the key a rotation put in
// place and the version that holds it, with the fingerprint of that
// version's payload. It is written in the same UpdateSecret that ends the
// rotation, so it costs no call, and it spares the next preflight a
// LookupKey: the key behind the latest version is known when that version
// and its payload are the ones the annotation names. A version added by
// anything else does not match, and the key is looked up as before.
const currentAnnotation = "keyrotate.current"

type currentKey struct {
	Key         string `json:"key"`
	Version     string `json:"version"`
	Fingerprint string `json:"fingerprint"`
}

func setCurrent(sec *secretmanagerpb.Secret, c currentKey) {
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	b, _ := json.Marshal(c)
	sec.Annotations[currentAnnotation] = string(b)
}

// currentKeyOf returns the key that the secret's annotation names for
// version v, whose payload has fingerprint fp; ok is false when the
// annotation is absent, unreadable, or about another version or payload.
func currentKeyOf(sec *secretmanagerpb.Secret, v gcp.Version) (string, bool) {
	raw := sec.GetAnnotations()[currentAnnotation]
	if raw == "" || v.Name == "" || v.Key.IsZero() {
		return "", false
	}
	var c currentKey
	if json.Unmarshal([]byte(raw), &c) != nil || c.Key == "" {
		return "", false
	}
	if versionNumber(c.Version) != versionNumber(v.Name) || c.Fingerprint != v.Key.Fingerprint() {
		return "", false
	}
	return c.Key, true
}
