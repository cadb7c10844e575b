// Package secret holds API key strings so that they cannot leak by accident.
//
// A Key prints as its fingerprint ("sha256:" and 12 hex digits of the SHA-256
// of the key string) through fmt, log/slog and encoding/json. The string itself
// comes out only through Reveal, which is called for three purposes and no
// other: to hand the key to a sink (the payload of a secret version or a
// target, an exec command's stdin, a GitHub secret's sealed box, a live
// probe's header, the body of a LookupKey request); to compare it with a raw
// value a target's platform returns (a Cloud Run variable, a Kubernetes
// Secret's data); and to scrub it out of text before that text is shown
// (redacted command output and errors). A sink may have several calls
// (a target that compares before it writes); grep for `.Reveal(` to list
// them all.
package secret

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// Key is an API key string. The zero Key is empty.
type Key struct {
	s string
}

// New wraps a key string.
func New(s string) Key { return Key{s: s} }

// Reveal returns the key string. Call it only to hand the key to its sink.
func (k Key) Reveal() string { return k.s }

// IsZero reports whether the key is empty.
func (k Key) IsZero() bool { return k.s == "" }

// Equal reports whether two keys hold the same string.
func (k Key) Equal(o Key) bool { return k.s == o.s }

// Fingerprint returns "sha256:" followed by the first 12 hex digits of the
// SHA-256 of the key string, or "" for the empty key.
func (k Key) Fingerprint() string { return Fingerprint(k.s) }

// Fingerprint computes the fingerprint of a key string.
func Fingerprint(s string) string {
	if s == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])[:12]
}

// Last4 returns the last four characters of the key, the most of it that
// may ever be shown, or "" when the key is too short to show any safely.
func (k Key) Last4() string {
	if len(k.s) < 16 {
		return ""
	}
	return k.s[len(k.s)-4:]
}

// String returns the fingerprint.
func (k Key) String() string {
	if k.s == "" {
		return "<empty>"
	}
	return k.Fingerprint()
}

// GoString returns the fingerprint, so %#v does not print the string either.
func (k Key) GoString() string { return "secret.Key(" + k.String() + ")" }

// Format prints the fingerprint for every verb.
func (k Key) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, k.GoString())
		return
	}
	fmt.Fprint(f, k.String())
}

// LogValue logs the fingerprint.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalJSON encodes the fingerprint.
func (k Key) MarshalJSON() ([]byte, error) {
	return []byte(`"` + k.String() + `"`), nil
}

// MarshalText encodes the fingerprint.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }
