package targets

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/inputfile"
	"github.com/keyrotate/keyrotate/rotate"
)

// This file holds the checks that keep a key from reaching someone it was
// not meant for through a target file: the file keeps its owner and group
// across the replace, is not readable by every user, and was not planted by
// another user in a directory everyone can write (such as /tmp). Read runs
// them before any key exists, so that a refusal costs nothing.

// owner is a file's owner and group.
type owner struct{ uid, gid uint32 }

func ownerOf(fi fs.FileInfo) (owner, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, false
	}
	return owner{uid: st.Uid, gid: st.Gid}, true
}

// String names the owner as "user:group", by name where the system knows
// one and by number otherwise.
func (o owner) String() string {
	u := "uid " + strconv.FormatUint(uint64(o.uid), 10)
	if x, err := user.LookupId(strconv.FormatUint(uint64(o.uid), 10)); err == nil {
		u = x.Username
	}
	g := "gid " + strconv.FormatUint(uint64(o.gid), 10)
	if x, err := user.LookupGroupId(strconv.FormatUint(uint64(o.gid), 10)); err == nil {
		g = x.Name
	}
	return u + ":" + g
}

// OwnerError says that replacing Path would change its owner or group from
// Have to Would: the application that reads the file might no longer be
// allowed to. keyrotate refuses such a target in Read and fails such a
// write before the rename.
type OwnerError struct {
	Path string
	// Have is the file's owner and group now; Would, what a file this
	// process writes in its place would get.
	Have, Would string
}

func (e *OwnerError) Error() string {
	return fmt.Sprintf("%s is owned by %s; replacing it as this user would leave it owned by %s", e.Path, e.Have, e.Would)
}

// keepOwner gives tmp, the temporary file that will replace path, the
// owner and group want, and fails with an *OwnerError when it ends up with
// anything else.
func keepOwner(tmp *os.File, path string, want owner) error {
	fi, err := tmp.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", tmp.Name(), err)
	}
	got, _ := ownerOf(fi)
	if got == want {
		return nil
	}
	// Only a process allowed to chown (root) may give a file away; others
	// may still set a group they belong to. The outcome is checked, not
	// the error: it is what the application will meet.
	_ = tmp.Chown(int(want.uid), int(want.gid))
	if fi, err = tmp.Stat(); err != nil {
		return fmt.Errorf("stat %s: %w", tmp.Name(), err)
	}
	if got, _ = ownerOf(fi); got != want {
		return &OwnerError{Path: path, Have: want.String(), Would: got.String()}
	}
	return nil
}

// identity is who this process creates files as, and which owners it may
// give them.
type identity struct {
	uid, gid uint32
	groups   []uint32 // supplementary groups
	chown    bool     // CAP_CHOWN: may set any owner and group
}

// self returns this process's identity; tests replace it.
var self = func() identity {
	id := identity{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
	if gs, err := os.Getgroups(); err == nil {
		for _, g := range gs {
			id.groups = append(id.groups, uint32(g))
		}
	}
	id.chown = id.uid == 0
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if unix.Capget(&hdr, &caps[0]) == nil {
		id.chown = caps[0].Effective&(1<<unix.CAP_CHOWN) != 0
	}
	return id
}

// wouldOwn predicts the owner and group of a file that this process
// creates in dir (fi describes dir) and then tries to give to want.
func (id identity) wouldOwn(dir fs.FileInfo, want owner) owner {
	if id.chown {
		return want
	}
	got := owner{uid: id.uid, gid: id.gid}
	if d, ok := ownerOf(dir); ok && dir.Mode()&fs.ModeSetgid != 0 {
		got.gid = d.gid // a set-group-ID directory gives new files its group
	}
	if want.gid == id.gid || slices.Contains(id.groups, want.gid) {
		got.gid = want.gid
	}
	return got
}

// ExposedError says why a target file could hand the key to other users:
// Reason is "others can read it" or "it belongs to <owner> and lies in a
// directory that others can write".
type ExposedError struct {
	Path, Reason string
}

func (e *ExposedError) Error() string {
	return fmt.Sprintf("%s must not receive a key: %s", e.Path, e.Reason)
}

// checkAccess checks that the target's file real keeps its owner and group
// when this process replaces it, is not readable by all users (unless
// allowWorldReadable), and is not another user's file in a directory all
// users can write (someone may have planted it there to receive the key).
// Each failure wraps rotate.ErrInvalidTarget and says how to fix it.
func checkAccess(target fmt.Stringer, real string, allowWorldReadable bool) error {
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", target, err, rotate.ErrInvalidTarget)
	}
	dir, err := os.Stat(filepath.Dir(real))
	if err != nil {
		return fmt.Errorf("%s: %w: %w", target, err, rotate.ErrInvalidTarget)
	}
	have, ok := ownerOf(fi)
	if !ok {
		return nil // no owners on this system
	}
	id := self()
	if dir.Mode()&0o002 != 0 && have.uid != id.uid {
		return errhint.With(
			fmt.Errorf("%s: %w: %w", target, &ExposedError{Path: real,
				Reason: fmt.Sprintf("it belongs to %s and lies in %s, a directory that every user can write, "+
					"so another user may have put it there", have, filepath.Dir(real))},
				rotate.ErrInvalidTarget),
			fmt.Sprintf("keep the file in a directory that only its owner (and root) can write, or remove %s if nobody should have created it", real))
	}
	if fi.Mode()&0o004 != 0 && !allowWorldReadable {
		return errhint.With(
			fmt.Errorf("%s: %w: %w", target, &ExposedError{Path: real,
				Reason: fmt.Sprintf("every user of this machine can read it (mode %04o)", fi.Mode().Perm())},
				rotate.ErrInvalidTarget),
			fmt.Sprintf("take read access away from other users (chmod o-r %s), "+
				"or set allow_world_readable: true on the target if it is meant to be readable by all", real))
	}
	if would := id.wouldOwn(dir, have); would != have {
		return errhint.With(
			fmt.Errorf("%s: %w: %w", target, &OwnerError{Path: real, Have: have.String(), Would: would.String()}, rotate.ErrInvalidTarget),
			fmt.Sprintf("rotate as %s (or as root) so that %s keeps its owner and group, "+
				"or, if the application can still read it then, give the file to this user (chown %d:%d %s)",
				userName(have.uid), real, would.uid, would.gid, real))
	}
	return nil
}

func userName(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil {
		return "user " + u.Username
	}
	return "uid " + s
}

// readTarget resolves the symlinks of path and reads the regular file it
// names, with the limits of inputfile.Read: it never blocks on a FIFO and
// never reads more than inputfile.MaxSize bytes. Errors wrap
// rotate.ErrInvalidTarget; missing says how to create a missing file, and
// kind names what the file should be ("a .env file").
func readTarget(target fmt.Stringer, path, missing, kind string) (real string, data []byte, err error) {
	real, err = filepath.EvalSymlinks(path)
	if err == nil {
		data, _, err = inputfile.Read(real, inputfile.MaxSize)
	}
	switch {
	case err == nil:
		return real, data, nil
	case errors.Is(err, fs.ErrNotExist):
		return "", nil, errhint.With(fmt.Errorf("%s: file not found: %w", target, rotate.ErrInvalidTarget), missing)
	case errors.Is(err, inputfile.ErrNotRegular):
		return "", nil, errhint.With(fmt.Errorf("%s: %w: %w", target, err, rotate.ErrInvalidTarget),
			fmt.Sprintf("point the target at %s, not at %s", kind, real))
	case errors.Is(err, inputfile.ErrTooLarge):
		return "", nil, errhint.With(fmt.Errorf("%s: %w: %w", target, err, rotate.ErrInvalidTarget),
			fmt.Sprintf("point the target at %s: keyrotate reads target files of at most %d bytes", kind, inputfile.MaxSize))
	}
	return "", nil, errhint.With(fmt.Errorf("%s: %w: %w", target, err, rotate.ErrInvalidTarget),
		fmt.Sprintf("make %s readable by this user", path))
}
