package targets

import (
	"bytes"
	"fmt"

	"github.com/keyrotate/keyrotate/rotate"
)

// fileSeen is a file as a target last read or wrote it, so that a write
// can refuse to overwrite a change made in between.
type fileSeen struct {
	realPath string // the path with symlinks resolved
	data     []byte // the content; nil before the first Read
}

// current loads the file again (load resolves symlinks and reads it) and
// fails when there was no Read to compare it with, or when it is not as
// last seen (see unchanged).
func (f *fileSeen) current(t fmt.Stringer, path string, load func() (string, []byte, error)) (string, []byte, error) {
	if f.data == nil {
		return "", nil, fmt.Errorf("write %s: no earlier Read to compare the file with", t)
	}
	real, data, err := load()
	if err != nil {
		return "", nil, err
	}
	if err := f.unchanged(t, path, real, data); err != nil {
		return "", nil, err
	}
	return real, data, nil
}

// unchanged fails with an error wrapping rotate.ErrTargetChanged when the
// file (at path, resolved to real, holding data) is not as last seen: its
// content changed, or the symlink now points elsewhere.
func (f *fileSeen) unchanged(t fmt.Stringer, path, real string, data []byte) error {
	if real != f.realPath || !bytes.Equal(data, f.data) {
		return rotate.WithHint(
			fmt.Errorf("write %s: %s changed since it was read: %w", t, real, rotate.ErrTargetChanged),
			fmt.Sprintf("something else edited %s during the rotation: check its content and run keyrotate again", path))
	}
	return nil
}
