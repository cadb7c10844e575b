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
	"github.com/keyrotate/keyrotate/verify"
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
		{"rollback without a superseded key", &rotate.NextError{Err: base, Safe: "name the key to go back to",
			Next: rotate.Next{Action: rotate.NextNameKey, Slot: "s"}},
			"name the key to go back to with --to projects/P/locations/global/keys/K"},
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
		{rotate.Next{Action: rotate.NextFinalizeWhenQuiet, Slot: "s"},
			"find what still calls with the old key and move it to the new key (the secret holds it); " +
				"`keyrotate finalize --slot s` deletes the old key once it has been quiet, `keyrotate finalize --slot s --force` at once"},
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
var noCommandTextPending = map[string]string{}

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

// TestSuspendedHint: verify's hint for a suspended key says what to do
// without a command; wherever rotate composed it into a hint (a failed
// verification, a check of the current key), the CLI puts the command in
// its place, in the words the library used to write itself.
func TestSuspendedHint(t *testing.T) {
	pe := verify.Classify(403, []byte(`{"error":{"code":403,"status":"PERMISSION_DENIED",`+
		`"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"CONSUMER_SUSPENDED"}]}}`))
	if h := pe.Hint(); !strings.Contains(h, "suspended") || strings.Contains(h, "`keyrotate ") || strings.Contains(h, "--") {
		t.Fatalf("verify's hint %q: want the cause, without a command", h)
	}
	const want = "the key was suspended, typically because it leaked: replace it now with `keyrotate rotate --leaked` (the key on stdin)"
	// As rotate's verify step reports a new key that failed.
	failed := errhint.Replace(fmt.Errorf("%w: key k: %w", rotate.ErrVerifyFailed, pe),
		"the old key still works and nothing was changed; "+errhint.Of(pe))
	if got := commandHint(failed); got != "the old key still works and nothing was changed; "+want {
		t.Errorf("commandHint(failed verification) = %q", got)
	}
	if got := commandHint(errhint.With(fmt.Errorf("slot s: %w", failed), "run again")); got !=
		"the old key still works and nothing was changed; "+want+"; then run again" {
		t.Errorf("commandHint(wrapped) = %q", got)
	}
	// Inside a NextError, whose own words become a command too.
	ne := &rotate.NextError{Err: pe, Safe: "finish it first", Next: rotate.Next{Action: rotate.NextFinishFirst, Slot: "s", Kind: rotate.KindAbort}}
	if got := commandHint(ne); got != want+"; then finish it first: `keyrotate abort s`" {
		t.Errorf("commandHint(NextError) = %q", got)
	}
	// A failed check of the current key in verify's health report.
	v := &rotate.HealthReport{Slot: "s", Checks: []rotate.HealthCheck{
		{Check: "key", Status: rotate.CheckFail, Dead: true, Hint: errhint.Of(pe), Err: pe}}}
	nameFixes(v)
	if got := v.Checks[0].Hint; got != want+"; `keyrotate doctor` diagnoses the key; "+
		"`keyrotate rotate --slot s --now` makes a new key and writes it to every target" {
		t.Errorf("nameFixes: hint = %q", got)
	}
	// Another cause keeps the library's words.
	other := verify.Classify(403, []byte(`{"error":{"code":403,"status":"PERMISSION_DENIED",`+
		`"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_SERVICE_BLOCKED"}]}}`))
	if got := commandHint(errhint.With(other, "x")); got != other.Hint()+"; then x" {
		t.Errorf("commandHint(service blocked) = %q", got)
	}
}
