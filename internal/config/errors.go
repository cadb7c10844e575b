package config

import (
	"errors"
	"strconv"
)

// ErrInvalid is wrapped by every error that Parse and Load report about the
// content of a configuration: test for it with errors.Is.
var ErrInvalid = errors.New("invalid configuration")

// Error is one problem in a configuration file, at a position, with what to
// do about it. Parse returns all of them joined with errors.Join; use Errors
// to get them back one by one.
type Error struct {
	File   string // the path given to Parse or Load
	Line   int    // 1-based; 0 when the position is unknown
	Column int    // 1-based; 0 when unknown
	Msg    string // what is wrong
	Fix    string // what to do about it, returned by Hint
}

// Error returns "FILE:LINE: MSG" ("FILE: MSG" when the line is unknown).
func (e *Error) Error() string {
	if e.Line <= 0 {
		return e.File + ": " + e.Msg
	}
	return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
}

// Hint says how to fix the problem. The CLI prints it as "keyrotate: hint: …".
func (e *Error) Hint() string { return e.Fix }

// Unwrap returns ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// Errors returns every *Error inside err (as joined by Parse), in order, so
// that a caller can print each one with its hint. It returns nil when err
// holds none.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *Error:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}
