package rotate

import "github.com/keyrotate/keyrotate/internal/errhint"

// Next is what resolves a situation the library reports: what to do, on
// which slot, and the kind of the unfinished run it concerns. The library
// states the fact and what is safe and never names a keyrotate command or
// flag; the caller (cmd/keyrotate) words Next as a command.
type Next struct {
	Action Action
	Slot   string
	// Kind is the kind of the unfinished run (KindRotate, KindAbort or
	// KindRollback), for NextResume and NextFinishFirst.
	Kind string
}

// Action says what resolves a situation; see Next.
type Action int

// The actions of a Next.
const (
	NextNone Action = iota
	// NextResume: run the unfinished run of Kind again to finish it; an
	// unfinished rotation can be aborted instead.
	NextResume
	// NextFinishFirst: an unfinished run of Kind holds the slot; finish it
	// before starting a rotation.
	NextFinishFirst
	// NextFinishOrUndoFirst: an unfinished run holds the slot; finish or
	// undo the rotation before a rollback.
	NextFinishOrUndoFirst
	// NextFinishRotation: the abort changed nothing and left the rotation
	// as it was; resume it.
	NextFinishRotation
	// NextFinalize: finalize deletes a retired key once it is due.
	NextFinalize
	// NextDiagnose: diagnose the value the secret holds.
	NextDiagnose
	// NextReplaceFirst: the key is a slot's current key; replace it
	// everywhere before deleting it.
	NextReplaceFirst
	// NextMoreTime: the run ended before the slot's turn; run again with
	// more time or more slots at once.
	NextMoreTime
	// NextOrAbort: fix the cause and run again, or abort the rotation.
	NextOrAbort
	// NextNameKey: a rollback must be told which key to go back to.
	NextNameKey
	// NextFinalizeWhenQuiet: the old key was kept because something still
	// calls with it (or its use is unknown): move that caller to the new
	// key; finalize deletes the old key once it has been quiet, or at once
	// when forced.
	NextFinalizeWhenQuiet
)

// NextError is an error that Next resolves. Err is what happened and is
// printed as it is; Safe says what is safe and what to do, without a
// command. Hint is Safe after the hints inside Err, as errhint.With
// composes them.
type NextError struct {
	Err  error
	Safe string
	Next Next
}

func (e *NextError) Error() string { return e.Err.Error() }
func (e *NextError) Unwrap() error { return e.Err }

// Hint is the hint without a command: the hints inside Err, then Safe.
func (e *NextError) Hint() string { return errhint.Join(errhint.Of(e.Err), e.Safe) }

// withNext attaches to err what is safe and what resolves it.
func withNext(err error, safe string, next Next) error {
	return &NextError{Err: err, Safe: safe, Next: next}
}
