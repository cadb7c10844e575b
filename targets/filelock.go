package targets

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// lockDir takes an exclusive flock(2) on the directory that holds the file
// real (a path with symlinks resolved) and returns the function that
// releases it. Every write of a file target takes it around its
// read-merge-replace, so that writes to one file — by several slots of one
// run or by separate keyrotate processes — happen one at a time, each based
// on the file's latest content.
//
// The lock is on the directory rather than on the file or a lock file
// beside it: the atomic replace swaps the file's inode, so a lock on the
// file would not be seen by a writer that opened the new one, and a lock
// file would be left in the user's directory for good. Locking the
// directory serialises the writes of all files in it, which cost
// milliseconds each. Programs other than keyrotate do not take this lock;
// the final re-read before an old key is deleted covers them.
//
// It waits for the lock until ctx ends, polling, so that a cancelled run
// never hangs on a lock held by a stuck process.
func lockDir(ctx context.Context, real string) (unlock func(), err error) {
	dir := filepath.Dir(real)
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock directory %s: %w", dir, err)
	}
	wait := time.Millisecond
	for {
		err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				_ = unix.Flock(int(d.Fd()), unix.LOCK_UN)
				d.Close()
			}, nil
		}
		if errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) {
			// A file system without flock (some network file systems):
			// write unlocked. The merge still refuses to overwrite a
			// change of this target's own value, and the re-read before
			// a key is deleted still catches a value put back.
			d.Close()
			return func() {}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			d.Close()
			return nil, fmt.Errorf("lock directory %s: %w", dir, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			d.Close()
			return nil, fmt.Errorf("lock directory %s: another writer holds it: %w", dir, context.Cause(ctx))
		case <-t.C:
		}
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}
