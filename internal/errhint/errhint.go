// Package errhint attaches a hint for people — what to do next — to an
// error, and reads it back. The library packages (rotate, targets, verify)
// state the fact and what is safe; cmd/keyrotate prints the hint after the
// error as "keyrotate: hint: ..." and, where a command fixes the situation,
// names it itself.
package errhint

import "errors"

// hinted carries a hint for people alongside an error.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }
func (h *hinted) Hint() string  { return h.hint }

// With attaches a hint (what to do next) to err. It returns nil for a nil
// err.
//
// A hint already attached to err comes first, being the more specific
// ("grant role X"), followed by the new one ("then run again").
func With(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hinted{err: err, hint: Join(Of(err), hint)}
}

// Join is the hint of an error whose inner hint is inner and whose own is
// hint: inner first, being the more specific, then hint.
func Join(inner, hint string) string {
	if inner != "" && inner != hint {
		return inner + "; then " + hint
	}
	return hint
}

// Replace attaches a hint that already says what the inner hints of err
// said.
func Replace(err error, hint string) error { return &hinted{err: err, hint: hint} }

// Of returns the outermost hint attached to err (by With, Replace or an
// error type with a Hint method), or "".
func Of(err error) string {
	var h interface{ Hint() string }
	if errors.As(err, &h) {
		return h.Hint()
	}
	return ""
}
