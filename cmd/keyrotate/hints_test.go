package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/rotate"
)

// TestNextErrorHints: the library says what resolves an error as a
// rotate.Next; the CLI words it as the command, in the sentences the
// library used to write itself.
func TestNextErrorHints(t *testing.T) {
	base := errors.New("failed")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"stopped rotation", &rotate.NextError{Err: base, Safe: "both keys still work and every target holds one of them",
			Next: rotate.Next{Action: rotate.NextResume, Slot: "s", Kind: rotate.KindRotate}},
			"both keys still work and every target holds one of them; run `keyrotate rotate --slot s` again to resume, or `keyrotate abort s` to undo"},
		{"stopped abort", &rotate.NextError{Err: base, Safe: "both keys still work and every target holds one of them",
			Next: rotate.Next{Action: rotate.NextResume, Slot: "s", Kind: rotate.KindAbort}},
			"both keys still work and every target holds one of them; run `keyrotate abort s` again to finish"},
		{"rotate refused", &rotate.NextError{Err: base, Safe: "finish it first",
			Next: rotate.Next{Action: rotate.NextFinishFirst, Slot: "s", Kind: rotate.KindAbort}},
			"finish it first: `keyrotate abort s`"},
		{"rollback refused", &rotate.NextError{Err: base, Safe: "finish it or undo it first",
			Next: rotate.Next{Action: rotate.NextFinishOrUndoFirst, Slot: "s", Kind: rotate.KindRotate}},
			"finish it with `keyrotate rotate --slot s` or undo it with `keyrotate abort s` first"},
		{"abort changed nothing", &rotate.NextError{Err: base, Safe: "nothing was changed: the rotation is left as it was",
			Next: rotate.Next{Action: rotate.NextFinishRotation, Slot: "s", Kind: rotate.KindRotate}},
			"nothing was changed: the rotation is left as it was; finish it with `keyrotate rotate --slot s`"},
		{"no live key in the secret", &rotate.NextError{Err: base, Safe: "the secret does not hold a live API key",
			Next: rotate.Next{Action: rotate.NextDiagnose, Slot: "s"}},
			"the secret does not hold a live API key: run `keyrotate doctor` on it, or name the key with `key:`"},
		{"revoke of a current key", &rotate.NextError{Err: base, Safe: "replace it everywhere first",
			Next: rotate.Next{Action: rotate.NextReplaceFirst, Slot: "s"}},
			"deleting it would break every place that uses it: `keyrotate rotate --leaked` (key on stdin) or `keyrotate rotate --slot s --now` replaces it first"},
		{"fleet out of time", &rotate.NextError{Err: base, Safe: "run again with more time",
			Next: rotate.Next{Action: rotate.NextMoreTime, Slot: "s"}},
			"the run ended (its --timeout, or interrupted) before this slot's turn; " +
				"nothing was changed: run again, with a larger --parallel or --timeout for a fleet this size"},
		{"cloud run revision", &rotate.NextError{Err: base, Safe: "fix the revision, then run keyrotate again", Next: rotate.Next{Action: rotate.NextOrAbort}},
			"fix the revision, then run keyrotate again, or `keyrotate abort`"},
		// A target's hint inside a stopped run comes first, with its own
		// command, as errhint.With composed them.
		{"nested", &rotate.NextError{
			Err: fmt.Errorf("slot s: %w", &rotate.NextError{Err: base, Safe: "fix the revision, then run keyrotate again",
				Next: rotate.Next{Action: rotate.NextOrAbort}}),
			Safe: "both keys still work and every target holds one of them", Next: rotate.Next{Action: rotate.NextResume, Slot: "s", Kind: rotate.KindRotate}},
			"fix the revision, then run keyrotate again, or `keyrotate abort`; then both keys still work and every target holds one of them; " +
				"run `keyrotate rotate --slot s` again to resume, or `keyrotate abort s` to undo"},
		{"inner hint", &rotate.NextError{Err: errhint.With(base, "grant roles/x"), Safe: "finish it first",
			Next: rotate.Next{Action: rotate.NextFinishFirst, Slot: "s", Kind: rotate.KindRollback}},
			"grant roles/x; then finish it first: `keyrotate rollback s`"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := commandHint(tc.err); got != tc.want {
				t.Errorf("commandHint(%v) = %q, want %q", tc.err, got, tc.want)
			}
			// Wrapped again, with a hint after it: the command takes the
			// library's words' place.
			outer := errhint.With(fmt.Errorf("lock: %w", tc.err), "run again")
			if got, want := commandHint(outer), tc.want+"; then run again"; got != want {
				t.Errorf("commandHint(wrapped) = %q, want %q", got, want)
			}
			if h := errhint.Of(tc.err); strings.Contains(h, "`keyrotate ") || strings.Contains(h, "--") {
				t.Errorf("the library's hint %q names a command or flag", h)
			}
		})
	}
}

// TestNextHints: what status and verify report as next steps.
func TestNextHints(t *testing.T) {
	tests := []struct {
		next rotate.Next
		want string
	}{
		{rotate.Next{Action: rotate.NextResume, Slot: "s", Kind: rotate.KindRotate},
			"run `keyrotate rotate --slot s` to resume it, or `keyrotate abort s` to undo it"},
		{rotate.Next{Action: rotate.NextResume, Slot: "s", Kind: rotate.KindRollback}, "run `keyrotate rollback s` again to finish it"},
		{rotate.Next{Action: rotate.NextFinalize, Slot: "s"}, "`keyrotate finalize --slot s` deletes it"},
		{rotate.Next{}, ""},
	}
	for _, tc := range tests {
		if got := nextHint(tc.next); got != tc.want {
			t.Errorf("nextHint(%+v) = %q, want %q", tc.next, got, tc.want)
		}
	}
}

// noCommandTextPending lists the files below cmd/ that still name
// keyrotate commands, each with the reason; the list only shrinks.
var noCommandTextPending = map[string]string{
	"verify/gemini.go": "ProbeError.Hint for a suspended key, also composed into rotate's hints and doctor's fixes",
}

// TestNoCommandTextBelowCmd: the library states facts and the CLI names
// commands (issue 13). No string literal in a non-test Go file below
// rotate/, targets/, verify/ or internal/ contains a backticked keyrotate
// command ("`keyrotate rotate ..."). Comments may name commands: they
// explain the code to its readers and are never printed.
func TestNoCommandTextBelowCmd(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	found := 0
	for _, dir := range []string{"rotate", "targets", "verify", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			rel = filepath.ToSlash(rel)
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil || !strings.Contains(s, "`keyrotate ") {
					return true
				}
				found++
				if why, ok := noCommandTextPending[rel]; ok {
					t.Logf("%s: names a command, pending: %s", fset.Position(lit.Pos()), why)
					return true
				}
				t.Errorf("%s: a library string names a keyrotate command: %s", fset.Position(lit.Pos()), s)
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d string literal(s) below cmd/ name a keyrotate command (all pending)", found)
}
