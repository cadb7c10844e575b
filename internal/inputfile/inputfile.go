// Package inputfile reads the files a user names to keyrotate (the config,
// .env and compose targets, doctor's --dotenv) without ever blocking and
// without reading more than a small, fixed amount.
//
// A path may name a FIFO (an open for reading waits for a writer, forever,
// and does not return on a signal), a device such as /dev/zero (endless
// data) or a file far larger than any config. Read refuses all of these:
// it opens the path with O_NONBLOCK (so opening a FIFO returns at once),
// checks with fstat on the open file that it is a regular file (so a swap
// between a check and the open cannot slip a FIFO in), and reads at most
// limit bytes.
package inputfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// MaxSize is the largest file Read accepts from the callers in keyrotate: a
// .env file, a compose file or a config file is a few kilobytes; a
// mebibyte is far beyond any real one and small enough to hold in memory.
const MaxSize = 1 << 20

// ErrNotRegular is wrapped by the error of Read for a path that names a
// directory, FIFO, socket or device rather than a regular file.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is wrapped by the error of Read for a file larger than the
// limit.
var ErrTooLarge = errors.New("file too large")

// NotRegularError says what kind of file a path names instead of a regular
// one. It wraps ErrNotRegular.
type NotRegularError struct {
	Path string
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s is a %s, not a regular file", e.Path, Kind(e.Mode))
}

func (e *NotRegularError) Unwrap() error { return ErrNotRegular }

// TooLargeError says that a file is larger than a reader accepts. It wraps
// ErrTooLarge.
type TooLargeError struct {
	Path  string
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s is larger than %s", e.Path, byteCount(e.Limit))
}

func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// Kind names the type of file mode describes, for messages: "directory",
// "named pipe (FIFO)", "socket", "device", "regular file" or "symlink".
func Kind(mode fs.FileMode) string {
	switch {
	case mode.IsRegular():
		return "regular file"
	case mode.IsDir():
		return "directory"
	case mode&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case mode&fs.ModeSocket != 0:
		return "socket"
	case mode&fs.ModeDevice != 0, mode&fs.ModeCharDevice != 0:
		return "device"
	case mode&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "special file"
}

// Read returns the content of the regular file at path (following
// symlinks) and its FileInfo, taken from the open file. It fails, without
// blocking, with a *NotRegularError when path names anything but a regular
// file, and with a *TooLargeError when the file holds more than limit
// bytes. Other errors are the *fs.PathError of the open or read
// (errors.Is(err, fs.ErrNotExist) works). data is not nil on success, even
// for an empty file.
func Read(path string, limit int64) (data []byte, fi fs.FileInfo, err error) {
	// O_NONBLOCK: opening a FIFO with no writer returns at once instead
	// of waiting; O_NOCTTY: a terminal device never becomes ours. Neither
	// changes how a regular file reads.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, &NotRegularError{Path: path, Mode: fi.Mode()}
	}
	if fi.Size() > limit {
		return nil, nil, &TooLargeError{Path: path, Limit: limit}
	}
	// The file may grow after the fstat: read one byte past the limit to
	// notice.
	data, err = io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	if int64(len(data)) > limit {
		return nil, nil, &TooLargeError{Path: path, Limit: limit}
	}
	if data == nil {
		data = []byte{}
	}
	return data, fi, nil
}

func byteCount(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
