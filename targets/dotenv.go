package targets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/secret"
)

// DotEnv is one variable in a .env file. Writes change only the bytes of
// that variable's value, follow symlinks (the link stays, the file it points
// to changes) and replace the file atomically with the same mode.
type DotEnv struct {
	path     string
	variable string

	// writable checks that the file can be replaced; tests swap it to
	// simulate permission errors when running as root.
	writable func(path string) error

	mu   sync.Mutex // held by Write; guards seen
	seen fileSeen
}

var _ rotate.Target = (*DotEnv)(nil)

// NewDotEnv returns the target for variable in the .env file at path.
func NewDotEnv(path, variable string) *DotEnv {
	return &DotEnv{path: path, variable: variable, writable: checkWritable}
}

// String returns "dotenv:<path>#<VAR>".
func (t *DotEnv) String() string { return "dotenv:" + t.path + "#" + t.variable }

// Read returns the value of the variable. It fails with an error wrapping
// rotate.ErrInvalidTarget when the file is missing or unreadable, when the
// variable is not defined exactly once with a value that parses, or when the
// file could not be replaced (file or directory not writable). It remembers
// the content it read, so that Write can refuse to overwrite a change made
// in between.
func (t *DotEnv) Read(ctx context.Context) (secret.Key, error) {
	if err := ctx.Err(); err != nil {
		return secret.Key{}, err
	}
	real, data, err := t.load()
	if err != nil {
		return secret.Key{}, err
	}
	f := ParseEnv(data)
	if err := t.checkDefinition(f); err != nil {
		return secret.Key{}, err
	}
	if err := replaceable(t, real, t.writable); err != nil {
		return secret.Key{}, err
	}
	value, _ := f.Lookup(t.variable)

	t.mu.Lock()
	t.seen = fileSeen{realPath: real, data: data}
	t.mu.Unlock()
	return secret.New(value), nil
}

// Write puts key into the variable, changing no other byte of the file. It
// refuses with an error wrapping rotate.ErrTargetChanged when the file is
// not what the last Read (or Write) saw, and does nothing when the variable
// already holds key. The replace is atomic: the file holds the old content
// or the new one, never a mix, and no temporary file is left behind unless
// the process dies mid-write (see CleanTemp).
//
// Another writer that changes the file between the check and the rename
// (a window of a few system calls) is not detected: .env files have no
// locking protocol to honour.
func (t *DotEnv) Write(ctx context.Context, key secret.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	real, data, err := t.seen.current(t, t.path, t.load)
	if err != nil {
		return err
	}
	f := ParseEnv(data)
	if err := t.checkDefinition(f); err != nil {
		return err // cannot happen: Read checked the same bytes
	}
	if current, _ := f.Lookup(t.variable); secret.New(current).Equal(key) {
		return nil
	}
	if err := f.Set(t.variable, key.Reveal()); err != nil {
		return rotate.WithHint(
			fmt.Errorf("write %s: %w: %w", t, err, rotate.ErrInvalidTarget),
			fmt.Sprintf("change the quoting of %s in %s so that the new key fits (for example remove the quotes)", t.variable, t.path))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	out := f.Bytes()
	renamed, err := replaceFile(real, out)
	if renamed {
		t.seen.data = out
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", t, err)
	}
	return nil
}

// load resolves symlinks and reads the file.
func (t *DotEnv) load() (real string, data []byte, err error) {
	real, err = filepath.EvalSymlinks(t.path)
	if err == nil {
		var fi os.FileInfo
		if fi, err = os.Stat(real); err == nil && !fi.Mode().IsRegular() {
			return "", nil, rotate.WithHint(
				fmt.Errorf("%s: %s is not a regular file: %w", t, real, rotate.ErrInvalidTarget),
				fmt.Sprintf("point the target at a .env file, not at %s", real))
		}
	}
	if err == nil {
		data, err = os.ReadFile(real)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", nil, rotate.WithHint(
			fmt.Errorf("%s: file not found: %w", t, rotate.ErrInvalidTarget),
			fmt.Sprintf("create %s with a line %s=<current key>, or fix the target's path in the config", t.path, t.variable))
	case err != nil:
		return "", nil, rotate.WithHint(
			fmt.Errorf("%s: %w: %w", t, err, rotate.ErrInvalidTarget),
			fmt.Sprintf("make %s readable by this user", t.path))
	}
	if data == nil {
		data = []byte{} // an empty file still counts as read
	}
	return real, data, nil
}

// checkDefinition requires exactly one well-formed definition of the
// variable.
func (t *DotEnv) checkDefinition(f *EnvFile) error {
	defs := f.Definitions(t.variable)
	lines := make([]int, len(defs))
	for i, d := range defs {
		lines[i] = d.Line
	}
	switch {
	case len(defs) == 0:
		return rotate.WithHint(
			fmt.Errorf("%s: %s is not defined in %s: %w", t, t.variable, t.path, rotate.ErrInvalidTarget),
			fmt.Sprintf("add a line %s=<current key> to %s, or fix the variable name in the config", t.variable, t.path))
	case len(defs) > 1:
		return rotate.WithHint(
			fmt.Errorf("%s: %s is defined more than once in %s, on %s: %w", t, t.variable, t.path, lineList(lines), rotate.ErrInvalidTarget),
			fmt.Sprintf("keep one definition of %s in %s and delete the others (%s)", t.variable, t.path, lineList(lines)))
	case defs[0].Malformed:
		return rotate.WithHint(
			fmt.Errorf("%s: the value of %s on line %d of %s cannot be parsed: %w", t, t.variable, defs[0].Line, t.path, rotate.ErrInvalidTarget),
			fmt.Sprintf("fix line %d of %s: close the quote, or move text after the closing quote into a # comment", defs[0].Line, t.path))
	}
	return t.loaderConflict(f)
}
