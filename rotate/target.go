package rotate

import (
	"context"
	"errors"

	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// Target is one place that consumes a slot's key: a .env file, another
// Secret Manager secret, and so on. Implementations live in package targets.
//
// The rotation calls Read in preflight (which must also prove the target is
// writable), Write to put the new key in place, and Read again to prove that
// the write landed. Write must be atomic: after it returns, with or without an
// error, the target holds either the old value or the new one, never a mix.
type Target interface {
	// String names the target for people: no key material.
	String() string
	// Read returns the key the target holds now. It fails with an error
	// wrapping ErrInvalidTarget when the target is missing, unreadable,
	// not writable or ambiguous.
	Read(ctx context.Context) (secret.Key, error)
	// Write replaces the key the target holds. It refuses (ErrTargetChanged)
	// when the target changed since the last Read.
	Write(ctx context.Context, key secret.Key) error
}

// ErrUnreadable is returned (wrapped) by the Read of a target whose
// platform does not let anyone read the value back (a GitHub Actions
// secret, a command). Such a Read still does its preflight checks (the
// target exists and is writable) and returns ErrUnreadable only when they
// pass. The rotation then writes such a target always, and proves the write
// with Confirm (when the target implements Confirmer) instead of a read-back.
var ErrUnreadable = errors.New("the target's value cannot be read back")

// Confirmer is implemented by targets whose Read returns ErrUnreadable:
// Confirm proves that the key written last is in place (a timestamp that
// moved, a verify command that accepts it). It must not reveal the key.
type Confirmer interface {
	Confirm(ctx context.Context, key secret.Key) error
}

// Reloader is implemented by targets whose Write also makes the consumers
// pick the key up (recreating containers): when Reloads reports true the
// rotation calls Write even if the target already holds the key, since an
// earlier run may have stopped between the write and the reload.
type Reloader interface {
	Reloads() bool
}

// Local is implemented by targets whose Read is cheap and local (a file
// on this machine): Local reports true. Immediately before it deletes a
// key, the rotation reads such targets once more, since something (a
// configuration-management run, a sync job) may have put the key back
// since the read-back. Remote targets are not read again: their read-back,
// moments earlier, stands.
type Local interface {
	Local() bool
}

// Prober checks a key against the live API. It returns nil when the key
// works. An error with a Temporary() bool method that returns true is one
// that propagation of a new key can explain (invalid for now, throttled,
// server error): the caller retries it until its deadline. Any other error is
// definite.
type Prober interface {
	Probe(ctx context.Context, key secret.Key) error
}

// Named errors; test them with errors.Is.
var (
	// ErrInvalidTarget: a target is missing, unreadable, not writable or
	// ambiguous. A usage error (exit 2): nothing was changed.
	ErrInvalidTarget = errors.New("invalid target")
	// ErrTargetChanged: a target changed between read and write.
	ErrTargetChanged = errors.New("target changed since it was read")
	// ErrBadConfig: the slot's configuration cannot work (exit 2).
	ErrBadConfig = errors.New("bad configuration")
	// ErrNothingToRollBack: a rollback has no older key to go back to
	// (the current key supersedes none, or --to names the current key).
	// Nothing was changed; not a fault of the configuration.
	ErrNothingToRollBack = errors.New("nothing to roll back")
	// ErrKeyInUse: refusing to delete a key that a configured slot uses
	// as its current key. Nothing was changed.
	ErrKeyInUse = errors.New("refusing to delete a key in use")
	// ErrKeyNotFound: an API key does not exist (or is deleted).
	ErrKeyNotFound = gcp.ErrKeyNotFound
	// ErrSecretNotFound: a Secret Manager secret or version does not exist.
	ErrSecretNotFound = gcp.ErrSecretNotFound
	// ErrRotationInProgress: another live run holds the slot's lease (exit 4).
	ErrRotationInProgress = errors.New("rotation in progress")
	// ErrVerifyFailed: the new key failed live verification and was removed (exit 3).
	ErrVerifyFailed = errors.New("new key failed live verification")
	// ErrStoppedPartWay: the run stopped after changing something; both
	// keys work and the next run resumes (exit 4).
	ErrStoppedPartWay = errors.New("rotation stopped part-way")
	// ErrHeldAgain: a target held the key to be deleted again just before
	// its deletion; the key was kept.
	ErrHeldAgain = errors.New("a target holds the key to be deleted again")
	// ErrUnrestricted: refusing to create an unrestricted key.
	ErrUnrestricted = errors.New("refusing to create an unrestricted key")
)
