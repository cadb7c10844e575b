package targets

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/keyrotate/keyrotate/internal/secret"
)

// These tests guard the atomic replace itself: each one fails when one
// step of replaceFile is removed or replaced by a shortcut.

// TestWriteReplacesNotRewrites: a hard link to the target file keeps the old
// content whole after a Write. A Write that rewrote the file in place
// (os.WriteFile, O_TRUNC) would change the link too, and a reader could see
// a half-written file.
func TestWriteReplacesNotRewrites(t *testing.T) {
	for _, k := range fileKinds {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			path := filepath.Join(dir, k.base)
			writeFile(t, path, k.content, 0o600)
			link := filepath.Join(dir, "hard-link")
			if err := os.Link(path, link); err != nil {
				t.Fatal(err)
			}
			before, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			tg := k.make(path)
			if _, err := tg.Read(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tg.Write(ctx, secret.New(newKey)); err != nil {
				t.Fatalf("Write = %v", err)
			}
			if got := readFile(t, link); got != k.content {
				t.Errorf("hard link after Write = %q, want the old content whole %q", got, k.content)
			}
			if got, want := readFile(t, path), strings.ReplaceAll(k.content, oldKey, newKey); got != want {
				t.Errorf("file after Write = %q, want %q", got, want)
			}
			after, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if os.SameFile(before, after) {
				t.Errorf("Write kept the file's inode: it wrote in place instead of renaming a new file over it")
			}
		})
	}
}

// replaceCall is one call of a replaceFile step, as the hooks saw it.
type replaceCall struct {
	op, name string
	content  string // sync: the file's content on disk at that moment
}

// hookReplace records the sync and rename calls of replaceFile, failing
// them with syncErr and renameErr when those are not nil, until the test
// ends.
func hookReplace(t *testing.T, syncErr, renameErr error) *[]replaceCall {
	t.Helper()
	var calls []replaceCall
	savedSync, savedRename := syncFile, renameFile
	t.Cleanup(func() { syncFile, renameFile = savedSync, savedRename })
	syncFile = func(f *os.File) error {
		b, _ := os.ReadFile(f.Name())
		calls = append(calls, replaceCall{op: "sync", name: f.Name(), content: string(b)})
		if syncErr != nil {
			return syncErr
		}
		return savedSync(f)
	}
	renameFile = func(from, to string) error {
		calls = append(calls, replaceCall{op: "rename", name: from})
		if renameErr != nil {
			return renameErr
		}
		return savedRename(from, to)
	}
	return &calls
}

// TestReplaceSyncsBeforeRename: the temporary file is fsynced, holding the
// whole new content, before it is renamed over the target; without the
// fsync a crash after the rename can leave an empty or partial file where
// the key was.
func TestReplaceSyncsBeforeRename(t *testing.T) {
	for _, k := range fileKinds {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), k.base)
			writeFile(t, path, k.content, 0o600)
			calls := hookReplace(t, nil, nil)
			tg := k.make(path)
			if _, err := tg.Read(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tg.Write(ctx, secret.New(newKey)); err != nil {
				t.Fatalf("Write = %v", err)
			}
			want := strings.ReplaceAll(k.content, oldKey, newKey)
			c := *calls
			if len(c) != 2 || c[0].op != "sync" || c[1].op != "rename" || c[0].name != c[1].name {
				t.Fatalf("calls = %+v, want a sync of the temporary file, then its rename", c)
			}
			if !strings.HasPrefix(filepath.Base(c[0].name), tempPrefix(path)) {
				t.Errorf("synced %s, want the temporary file next to %s", c[0].name, path)
			}
			if c[0].content != want {
				t.Errorf("temporary file at sync = %q, want the whole new content", c[0].content)
			}
		})
	}
}

// TestReplaceStepFails: when the fsync or the rename of the temporary file
// fails, the write fails, the target keeps its old content, and the
// temporary file (which holds the new key) is removed. A later write
// succeeds.
func TestReplaceStepFails(t *testing.T) {
	for _, k := range fileKinds {
		for _, step := range []string{"sync", "rename"} {
			t.Run(k.name+"/"+step, func(t *testing.T) {
				ctx := context.Background()
				path := filepath.Join(t.TempDir(), k.base)
				writeFile(t, path, k.content, 0o600)
				var syncErr, renameErr error
				if step == "sync" {
					syncErr = syscall.EIO
				} else {
					renameErr = &os.LinkError{Op: "rename", Err: syscall.EXDEV}
				}
				calls := hookReplace(t, syncErr, renameErr)
				tg := k.make(path)
				if _, err := tg.Read(ctx); err != nil {
					t.Fatal(err)
				}
				err := tg.Write(ctx, secret.New(newKey))
				if err == nil || !(errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EXDEV)) {
					t.Fatalf("Write with a failing %s = %v, want that failure", step, err)
				}
				noKeyIn(t, "error", err.Error())
				if step == "sync" {
					for _, c := range *calls {
						if c.op == "rename" {
							t.Errorf("renamed %s after its fsync failed", c.name)
						}
					}
				}
				if got := readFile(t, path); got != k.content {
					t.Errorf("file after a failed Write = %q, want the old content", got)
				}
				assertNoTemp(t, filepath.Dir(path))

				syncFile, renameFile = (*os.File).Sync, os.Rename
				if err := tg.Write(ctx, secret.New(newKey)); err != nil {
					t.Fatalf("Write after the failure = %v", err)
				}
				if got, want := readFile(t, path), strings.ReplaceAll(k.content, oldKey, newKey); got != want {
					t.Errorf("file after the second Write = %q, want %q", got, want)
				}
			})
		}
	}
}
