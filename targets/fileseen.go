package targets

import (
	"context"
	"fmt"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// fileSeen is the value a file target last read or wrote, so that a write
// can refuse to overwrite a change of that value made in between — and only
// of that value: the rest of the file may hold other slots' keys, which
// their own rotations change at the same time. A write merges its one value
// into the file's latest content, never writing back a stale copy.
type fileSeen struct {
	realPath string     // the path with symlinks resolved
	value    secret.Key // the target's value as last read or written
	read     bool       // false before the first Read
}

// lockAndLoad takes the write lock of the file's directory (see lockDir),
// loads the file again (load resolves symlinks and reads it) and fails when
// there was no Read to compare it with or when the symlink now points
// elsewhere. The caller compares the value (see unchanged), writes, and
// then calls unlock.
func (f *fileSeen) lockAndLoad(ctx context.Context, t fmt.Stringer, path string,
	load func() (string, []byte, error)) (real string, data []byte, unlock func(), err error) {
	if !f.read {
		return "", nil, nil, fmt.Errorf("write %s: no earlier Read to compare the file with", t)
	}
	unlock, err = lockDir(ctx, f.realPath)
	if err != nil {
		return "", nil, nil, fmt.Errorf("write %s: %w", t, err)
	}
	real, data, err = load()
	if err == nil && real != f.realPath {
		err = errhint.With(
			fmt.Errorf("write %s: %s now points to %s, not %s as when it was read: %w", t, path, real, f.realPath, rotate.ErrTargetChanged),
			fmt.Sprintf("something else changed %s during the rotation: check it and run keyrotate again", path))
	}
	if err != nil {
		unlock()
		return "", nil, nil, err
	}
	return real, data, unlock, nil
}

// unchanged fails with an error wrapping rotate.ErrTargetChanged when the
// target's value in the file (at path) is now cur, not the value last seen.
func (f *fileSeen) unchanged(t fmt.Stringer, path string, cur secret.Key) error {
	if !cur.Equal(f.value) {
		return errhint.With(
			fmt.Errorf("write %s: the value in %s changed since it was read (now %s, read %s): %w",
				t, path, cur.Fingerprint(), f.value.Fingerprint(), rotate.ErrTargetChanged),
			fmt.Sprintf("something else edited the value in %s during the rotation: check it and run keyrotate again", path))
	}
	return nil
}
