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

// readBefore fails when there was no Read to compare the file with.
func (f *fileSeen) readBefore(t fmt.Stringer) error {
	if f.data == nil {
		return fmt.Errorf("write %s: no earlier Read to compare the file with", t)
	}
	return nil
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
