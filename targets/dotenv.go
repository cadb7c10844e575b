package targets

import (
	"context"
	"fmt"
	"sync"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
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
	// worldReadable: the file may be readable by every user.
	worldReadable bool

	mu   sync.Mutex // held by Write; guards seen
	seen fileSeen
}

var _ rotate.Target = (*DotEnv)(nil)

var _ rotate.Local = (*DotEnv)(nil)

// Local reports true: the file is on this machine, cheap to read again
// just before an old key is deleted.
func (t *DotEnv) Local() bool { return true }

// NewDotEnv returns the target for variable in the .env file at path.
func NewDotEnv(path, variable string) *DotEnv {
	return &DotEnv{path: path, variable: variable, writable: checkWritable}
}

// AllowWorldReadable lets Read accept a file that every user may read.
// Without it such a file is refused: the new key would be readable by all.
func (t *DotEnv) AllowWorldReadable() { t.worldReadable = true }

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
	if err := replaceable(t, real, t.writable, t.worldReadable); err != nil {
		return secret.Key{}, err
	}
	value, _ := f.Lookup(t.variable)
	key := secret.New(value)

	t.mu.Lock()
	t.seen = fileSeen{realPath: real, value: key, read: true}
	t.mu.Unlock()
	return key, nil
}

// Write puts key into the variable, changing no other byte of the file. It
// takes the write lock of the file (see lockDir), reads the file again and
// merges the one value into that latest content: the other variables keep
// whatever they hold now, also when another slot's rotation changed them
// since this target's Read. It refuses with an error wrapping
// rotate.ErrTargetChanged when this variable is not what the last Read (or
// Write) saw, and does nothing when it already holds key. The replace is
// atomic: the file holds the old content or the new one, never a mix, and
// no temporary file is left behind unless the process dies mid-write (see
// CleanTemp).
//
// A program other than keyrotate that changes the file between the read
// and the rename (a window of a few system calls) is not detected: .env
// files have no locking protocol that others honour.
func (t *DotEnv) Write(ctx context.Context, key secret.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	real, data, unlock, err := t.seen.lockAndLoad(ctx, t, t.path, t.load)
	if err != nil {
		return err
	}
	defer unlock()
	f := ParseEnv(data)
	if err := t.checkDefinition(f); err != nil {
		return err
	}
	value, _ := f.Lookup(t.variable)
	current := secret.New(value)
	if current.Equal(key) {
		t.seen.value = key
		return nil
	}
	if err := t.seen.unchanged(t, t.path, current); err != nil {
		return err
	}
	if err := f.Set(t.variable, key.Reveal()); err != nil {
		return errhint.With(
			fmt.Errorf("write %s: %w: %w", t, err, rotate.ErrInvalidTarget),
			fmt.Sprintf("change the quoting of %s in %s so that the new key fits (for example remove the quotes)", t.variable, t.path))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	renamed, err := replaceFile(real, f.Bytes())
	if renamed {
		t.seen.value = key
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", t, err)
	}
	return nil
}

// load resolves symlinks and reads the file (see readTarget).
func (t *DotEnv) load() (real string, data []byte, err error) {
	return readTarget(t, t.path,
		fmt.Sprintf("create %s with a line %s=<current key>, or fix the target's path in the config", t.path, t.variable),
		"a .env file")
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
		return errhint.With(
			fmt.Errorf("%s: %s is not defined in %s: %w", t, t.variable, t.path, rotate.ErrInvalidTarget),
			fmt.Sprintf("add a line %s=<current key> to %s, or fix the variable name in the config", t.variable, t.path))
	case len(defs) > 1:
		return errhint.With(
			fmt.Errorf("%s: %s is defined more than once in %s, on %s: %w", t, t.variable, t.path, lineList(lines), rotate.ErrInvalidTarget),
			fmt.Sprintf("keep one definition of %s in %s and delete the others (%s)", t.variable, t.path, lineList(lines)))
	case defs[0].Malformed:
		return errhint.With(
			fmt.Errorf("%s: the value of %s on line %d of %s cannot be parsed: %w", t, t.variable, defs[0].Line, t.path, rotate.ErrInvalidTarget),
			fmt.Sprintf("fix line %d of %s: close the quote, or move text after the closing quote into a # comment", defs[0].Line, t.path))
	}
	return t.loaderConflict(f)
}
