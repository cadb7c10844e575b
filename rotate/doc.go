// Package rotate implements keyrotate's rotation protocol for one slot: a
// Secret Manager secret holding the current API key string, the API key
// behind it, and the targets that consume it.
//
// The protocol keeps one invariant: at every instant every target holds a key
// that works. The old key is deleted only after every target was read back
// holding the new, live-verified key. A run that stops anywhere leaves a
// rotation record in the secret's annotations from which the next run resumes.
//
// docs/design.md, in the repository, is the map to read first: the seven
// steps (preflight, lock, create, verify, distribute, readback, retire), the
// lease, the state kept in Google's metadata, abort, rollback, finalize and
// repair, and a glossary.
package rotate
