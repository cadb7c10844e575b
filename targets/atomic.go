package targets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/rotate"
)

// tempInfix marks the temporary files of an atomic replace:
// ".<base>.keyrotate-<random>.tmp" next to the file it replaces. CleanTemp
// relies on this shape.
const tempInfix = ".keyrotate-"

func tempPrefix(path string) string { return "." + filepath.Base(path) + tempInfix }

// The calls of replaceFile that tests make fail, to prove that a failed
// fsync fails the write and a failed rename leaves no temporary file.
var (
	syncFile   = (*os.File).Sync
	renameFile = os.Rename
)

// replaceFile atomically replaces the content of the existing regular file
// path with data: it writes a temporary file in the same directory with the
// same mode, owner and group, fsyncs it, renames it over path and fsyncs the
// directory. Readers see the old content or the new one, never a mix; a
// crash leaves at worst a temporary file, which CleanTemp removes. When the
// owner or group cannot be kept (only root may give a file away; others may
// set only a group they belong to), it fails with an *OwnerError before the
// rename: the application that reads the file might lose access to it.
// path must not be a symlink: resolve it first, or the link is replaced.
//
// It reports whether the rename happened: after a rename, an error (from
// syncing the directory) means the new content is in place but perhaps not
// yet durable.
func replaceFile(path string, data []byte) (renamed bool, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("replace %s: not a regular file", path)
	}
	dir := filepath.Dir(path)
	// os.CreateTemp replaces the last "*" with random digits and creates
	// the file with O_EXCL and mode 0600, so the key is never readable by
	// others while the mode is being set.
	tmp, err := os.CreateTemp(dir, tempPrefix(path)+"*.tmp")
	if err != nil {
		return false, fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	name := tmp.Name()
	defer func() {
		if err != nil && !renamed {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if want, ok := ownerOf(fi); ok {
		if err = keepOwner(tmp, path, want); err != nil {
			return false, err
		}
	}
	// Chmod after Chown: chown clears the setuid and setgid bits.
	if err = tmp.Chmod(fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)); err != nil {
		return false, fmt.Errorf("set mode of %s: %w", name, err)
	}
	if _, err = tmp.Write(data); err != nil {
		return false, fmt.Errorf("write %s: %w", name, err)
	}
	if err = syncFile(tmp); err != nil {
		return false, fmt.Errorf("sync %s: %w", name, err)
	}
	if err = tmp.Close(); err != nil {
		return false, fmt.Errorf("close %s: %w", name, err)
	}
	if err = renameFile(name, path); err != nil {
		return false, fmt.Errorf("rename %s over %s: %w", name, path, err)
	}
	renamed = true
	if err = syncDir(dir); err != nil {
		return true, fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return true, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		// Some file systems cannot sync a directory; the rename is
		// then as durable as they make it.
		err = nil
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkWritable reports whether this process could replace path: it must be
// allowed to write the file itself (its mode says whether it is meant to be
// written) and its directory (the replace creates a file there and renames
// it). It writes nothing, so that preflight stays read-only.
func checkWritable(path string) error {
	if err := unix.Access(path, unix.W_OK); err != nil {
		return &fs.PathError{Op: "check write access", Path: path, Err: err}
	}
	dir := filepath.Dir(path)
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return &fs.PathError{Op: "check write access", Path: dir, Err: err}
	}
	return nil
}

// CleanTemp removes the temporary files that an interrupted write of the
// file at path may have left next to it (".<base>.keyrotate-*.tmp", after
// resolving symlinks), so that no key string stays behind in a stray file.
// It returns the paths it removed. A missing directory is not an error.
//
// It holds the directory's write lock (see lockDir) while it looks: a
// write in progress — by another keyrotate process writing a file in the
// same directory — holds that lock from creating its temporary file to
// renaming it, so only the files of writes that died are removed. It waits
// for the lock until ctx ends.
func CleanTemp(ctx context.Context, path string) (removed []string, err error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("clean temporary files of %s: %w", path, err)
		}
		// The file is gone (or a dangling link): look next to the path
		// as written.
		real = path
		if dir, derr := filepath.EvalSymlinks(filepath.Dir(path)); derr == nil {
			real = filepath.Join(dir, filepath.Base(path))
		}
	}
	dir, prefix := filepath.Dir(real), tempPrefix(real)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	unlock, err := lockDir(ctx, real)
	if err != nil {
		return nil, fmt.Errorf("clean temporary files of %s: %w", path, err)
	}
	defer unlock()
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("clean temporary files of %s: %w", path, err)
	}
	var errs []error
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, ".tmp") || len(n) <= len(prefix)+len(".tmp") {
			continue
		}
		if !e.Type().IsRegular() {
			continue // never ours: we only create regular files
		}
		p := filepath.Join(dir, n)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("clean temporary files of %s: %w", path, errors.Join(errs...))
	}
	return removed, nil
}

// replaceable checks that target's file real can be replaced atomically
// (see checkWritable; check, when not nil, replaces it in tests) and safely
// receive a key (see checkAccess).
func replaceable(target fmt.Stringer, real string, check func(string) error, allowWorldReadable bool) error {
	if check == nil {
		check = checkWritable
	}
	if err := check(real); err != nil {
		return errhint.With(
			fmt.Errorf("%s: %w: %w", target, err, rotate.ErrInvalidTarget),
			fmt.Sprintf("keyrotate replaces %s through a temporary file in its directory: make both the file and its directory writable by this user", real))
	}
	return checkAccess(target, real, allowWorldReadable)
}
