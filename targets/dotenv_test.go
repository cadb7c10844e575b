package targets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

const (
	oldKey = "AQ.Ab8RN6old-canary-key_0000000000"
	newKey = "AQ.Ab8RN6new-canary-key_1111111111"
	// thirdKey is a key that neither the rotation's old nor new key is:
	// what another writer might put into the variable.
	thirdKey = "AQ.Ab8RN6third-canary-key_222222222"
)

const sampleEnv = "# app settings\r\nexport GEMINI_API_KEY = " + oldKey + "  # rotated by keyrotate\r\nMODEL=\"gemini-2.5-flash\"\r\n\r\nDB='postgres://x'"

func writeFile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // beat the umask
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// noKeyIn fails the test when s holds either canary key string.
func noKeyIn(t *testing.T, what, s string) {
	t.Helper()
	for _, k := range []string{oldKey, newKey} {
		if strings.Contains(s, k) {
			t.Errorf("%s contains a key string: %q", what, s)
		}
	}
}

// checkErr checks that err wraps want, and that neither it nor its hint
// contains a key string.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	noKeyIn(t, "error", err.Error())
	noKeyIn(t, "hint", errhint.Of(err))
	if errhint.Of(err) == "" {
		t.Errorf("err = %v has no hint", err)
	}
}

func TestDotEnvRoundTrip(t *testing.T) {
	for _, mode := range []fs.FileMode{0o600, 0o640} {
		t.Run(mode.String(), func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), ".env")
			writeFile(t, path, sampleEnv, mode)
			d := NewDotEnv(path, "GEMINI_API_KEY")

			got, err := d.Read(ctx)
			if err != nil {
				t.Fatalf("Read = %v", err)
			}
			if !got.Equal(secret.New(oldKey)) {
				t.Fatalf("Read = %v, want %v", got, secret.New(oldKey))
			}
			if err := d.Write(ctx, secret.New(newKey)); err != nil {
				t.Fatalf("Write = %v", err)
			}
			want := strings.Replace(sampleEnv, oldKey, newKey, 1)
			if got := readFile(t, path); got != want {
				t.Errorf("file after Write = %q, want %q", got, want)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != mode {
				t.Errorf("mode after Write = %v, want %v", fi.Mode(), mode)
			}
			got, err = d.Read(ctx)
			if err != nil || !got.Equal(secret.New(newKey)) {
				t.Fatalf("Read after Write = %v, %v, want %v", got, err, secret.New(newKey))
			}
			// Write again without a Read in between: the baseline is
			// what the last Write wrote.
			if err := d.Write(ctx, secret.New(oldKey)); err != nil {
				t.Fatalf("second Write = %v", err)
			}
			if got := readFile(t, path); got != sampleEnv {
				t.Errorf("file after second Write = %q, want %q", got, sampleEnv)
			}
			assertNoTemp(t, filepath.Dir(path))
		})
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), tempInfix) {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestDotEnvWriteIdempotent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, ".env")
	writeFile(t, path, sampleEnv, 0o600)
	d := NewDotEnv(path, "GEMINI_API_KEY")
	if _, err := d.Read(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx, secret.New(oldKey)); err != nil {
		t.Fatalf("Write of the same key = %v", err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Errorf("Write of the key the file already holds replaced the file")
	}
}

func TestDotEnvSymlink(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	realDir := filepath.Join(dir, "shared")
	if err := os.Mkdir(realDir, 0o755); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(realDir, "env")
	writeFile(t, real, sampleEnv, 0o640)
	link := filepath.Join(dir, ".env")
	if err := os.Symlink("shared/env", link); err != nil {
		t.Fatal(err)
	}
	d := NewDotEnv(link, "GEMINI_API_KEY")
	if _, err := d.Read(ctx); err != nil {
		t.Fatalf("Read = %v", err)
	}
	if err := d.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatalf("Write = %v", err)
	}
	fi, err := os.Lstat(link)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("%s is no longer a symlink: %v", link, fi.Mode())
	}
	if target, _ := os.Readlink(link); target != "shared/env" {
		t.Errorf("link points to %q, want %q", target, "shared/env")
	}
	if got, want := readFile(t, real), strings.Replace(sampleEnv, oldKey, newKey, 1); got != want {
		t.Errorf("real file = %q, want %q", got, want)
	}
	if fi, err := os.Stat(real); err != nil || fi.Mode() != 0o640 {
		t.Errorf("real file mode = %v, %v, want %v", fi.Mode(), err, fs.FileMode(0o640))
	}
	assertNoTemp(t, realDir)
	assertNoTemp(t, dir)
}

func TestDotEnvReadInvalid(t *testing.T) {
	tests := []struct {
		name, content, wantMsg string
	}{
		{"missing var", "OTHER=" + oldKey + "\n", "not defined"},
		{"duplicate var", "GEMINI_API_KEY=" + oldKey + "\n# x\nexport GEMINI_API_KEY=" + newKey + "\n", "lines 1 and 3"},
		{"malformed var", "GEMINI_API_KEY='" + oldKey + "\n", "line 1"},
		{"only exported", "export GEMINI_API_KEY\n", "not defined"},
		{"empty file", "", "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), ".env")
			writeFile(t, path, tt.content, 0o600)
			d := NewDotEnv(path, "GEMINI_API_KEY")
			_, err := d.Read(context.Background())
			checkErr(t, err, rotate.ErrInvalidTarget)
			msg := err.Error()
			if !strings.Contains(msg, tt.wantMsg) || !strings.Contains(msg, path) {
				t.Errorf("Read error %q: want it to name %q and the path", msg, tt.wantMsg)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), ".env")
		_, err := NewDotEnv(path, "GEMINI_API_KEY").Read(context.Background())
		checkErr(t, err, rotate.ErrInvalidTarget)
	})
	t.Run("dangling symlink", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), ".env")
		if err := os.Symlink("nowhere", path); err != nil {
			t.Fatal(err)
		}
		_, err := NewDotEnv(path, "GEMINI_API_KEY").Read(context.Background())
		checkErr(t, err, rotate.ErrInvalidTarget)
	})
	t.Run("directory", func(t *testing.T) {
		_, err := NewDotEnv(t.TempDir(), "GEMINI_API_KEY").Read(context.Background())
		checkErr(t, err, rotate.ErrInvalidTarget)
	})
}

func TestDotEnvReadNotWritable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: file permissions do not apply (TestDotEnvReadNotWritableSimulated covers the error)")
	}
	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), ".env")
		writeFile(t, path, sampleEnv, 0o400)
		_, err := NewDotEnv(path, "GEMINI_API_KEY").Read(context.Background())
		checkErr(t, err, rotate.ErrInvalidTarget)
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, ".env")
		writeFile(t, path, sampleEnv, 0o600)
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		_, err := NewDotEnv(path, "GEMINI_API_KEY").Read(context.Background())
		checkErr(t, err, rotate.ErrInvalidTarget)
	})
}

// TestDotEnvReadNotWritableSimulated checks the error of an unwritable
// target even as root, by making the access check fail the way it does
// for other users.
func TestDotEnvReadNotWritableSimulated(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".env")
	writeFile(t, path, sampleEnv, 0o600)
	d := NewDotEnv(path, "GEMINI_API_KEY")
	d.writable = func(p string) error {
		return &fs.PathError{Op: "check write access", Path: filepath.Dir(p), Err: syscall.EACCES}
	}
	_, err := d.Read(context.Background())
	checkErr(t, err, rotate.ErrInvalidTarget)
	if !errors.Is(err, fs.ErrPermission) {
		t.Errorf("Read = %v, want it to wrap fs.ErrPermission too", err)
	}
}

func TestCheckWritable(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".env")
	writeFile(t, path, "", 0o600)
	if err := checkWritable(path); err != nil {
		t.Errorf("checkWritable(%s) = %v, want nil", path, err)
	}
	if os.Geteuid() == 0 {
		return
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if err := checkWritable(path); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("checkWritable(read-only %s) = %v, want permission error", path, err)
	}
}

func TestDotEnvWriteChanged(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"value changed to a third key", func(t *testing.T, path string) {
			writeFile(t, path, strings.Replace(sampleEnv, oldKey, thirdKey, 1), 0o600)
		}},
		{"value changed, same size, one byte", func(t *testing.T, path string) {
			writeFile(t, path, strings.Replace(sampleEnv, "old-canary", "old-canarY", 1), 0o600)
		}},
		{"symlink retargeted", func(t *testing.T, path string) {
			other := filepath.Join(filepath.Dir(path), "other.env")
			writeFile(t, other, sampleEnv, 0o600)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("other.env", path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path, d := readSampleEnv(t)
			tt.change(t, path)
			before := readFile(t, path)
			err := d.Write(ctx, secret.New(newKey))
			checkErr(t, err, rotate.ErrTargetChanged)
			if got := readFile(t, path); got != before {
				t.Errorf("file after refused Write = %q, want untouched %q", got, before)
			}
			assertNoTemp(t, filepath.Dir(path))
		})
	}

	t.Run("missing file", func(t *testing.T) {
		ctx := context.Background()
		path, d := readSampleEnv(t)
		os.Remove(path)
		checkErr(t, d.Write(ctx, secret.New(newKey)), rotate.ErrInvalidTarget)
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Write recreated the removed file: %v", err)
		}
	})
}

// TestDotEnvWriteMerges: a Write merges its one value into the file as it
// is now. Edits made to the rest of the file since the Read — another
// slot's rotation writing its own variable, a person adding a line — are
// kept, never overwritten by the content the Read saw; and a variable that
// already holds the key is left alone.
func TestDotEnvWriteMerges(t *testing.T) {
	tests := []struct {
		name   string
		change string // the file as it is at the Write
		want   string
	}{
		{"other line edited",
			strings.Replace(sampleEnv, "MODEL", "MODEL2", 1),
			strings.Replace(strings.Replace(sampleEnv, "MODEL", "MODEL2", 1), oldKey, newKey, 1)},
		{"same size, one byte of another value",
			strings.Replace(sampleEnv, "flash", "flasH", 1),
			strings.Replace(strings.Replace(sampleEnv, "flash", "flasH", 1), oldKey, newKey, 1)},
		{"line added",
			sampleEnv + "\r\nOTHER_KEY=" + thirdKey,
			strings.Replace(sampleEnv, oldKey, newKey, 1) + "\r\nOTHER_KEY=" + thirdKey},
		{"value already the new key",
			strings.Replace(sampleEnv, oldKey, newKey, 1) + "\r\n# note",
			strings.Replace(sampleEnv, oldKey, newKey, 1) + "\r\n# note"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path, d := readSampleEnv(t)
			writeFile(t, path, tt.change, 0o600)
			if err := d.Write(ctx, secret.New(newKey)); err != nil {
				t.Fatalf("Write = %v, want nil", err)
			}
			if got := readFile(t, path); got != tt.want {
				t.Errorf("file after Write = %q, want %q", got, tt.want)
			}
			assertNoTemp(t, filepath.Dir(path))
		})
	}
}

func TestDotEnvWriteWithoutRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".env")
	writeFile(t, path, sampleEnv, 0o600)
	err := NewDotEnv(path, "GEMINI_API_KEY").Write(context.Background(), secret.New(newKey))
	if err == nil {
		t.Fatal("Write without Read = nil, want an error")
	}
	noKeyIn(t, "error", err.Error())
	if got := readFile(t, path); got != sampleEnv {
		t.Errorf("file after refused Write = %q, want untouched", got)
	}
}

func TestDotEnvWriteUnsafeKey(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), ".env")
	writeFile(t, path, "GEMINI_API_KEY='"+oldKey+"'\n", 0o600)
	d := NewDotEnv(path, "GEMINI_API_KEY")
	if _, err := d.Read(ctx); err != nil {
		t.Fatal(err)
	}
	err := d.Write(ctx, secret.New(newKey+"'\n"))
	checkErr(t, err, rotate.ErrInvalidTarget)
	if got := readFile(t, path); got != "GEMINI_API_KEY='"+oldKey+"'\n" {
		t.Errorf("file after refused Write = %q, want untouched", got)
	}
}

func TestDotEnvContextCanceled(t *testing.T) {
	path, d := readSampleEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Read(canceled) = %v, want context.Canceled", err)
	}
	if err := d.Write(ctx, secret.New(newKey)); !errors.Is(err, context.Canceled) {
		t.Errorf("Write(canceled) = %v, want context.Canceled", err)
	}
	if got := readFile(t, path); got != sampleEnv {
		t.Errorf("file after canceled Write = %q, want untouched", got)
	}
}

func TestDotEnvString(t *testing.T) {
	d := NewDotEnv("app/.env", "GEMINI_API_KEY")
	if got, want := d.String(), "dotenv:app/.env#GEMINI_API_KEY"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestDotEnvNoKeyInOutput runs every failing path with canary keys and
// checks that no error, hint or String holds a key string.
func TestDotEnvNoKeyInOutput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	contents := []string{
		"GEMINI_API_KEY=" + oldKey + "\nGEMINI_API_KEY=" + newKey + "\n",
		"GEMINI_API_KEY=\"" + oldKey + "\n",
		"GEMINI_API_KEY='" + oldKey + "' " + newKey + "\n",
		"OTHER=" + oldKey + "\n",
	}
	for i, c := range contents {
		path := filepath.Join(dir, "env"+string(rune('a'+i)))
		writeFile(t, path, c, 0o600)
		d := NewDotEnv(path, "GEMINI_API_KEY")
		_, err := d.Read(ctx)
		checkErr(t, err, rotate.ErrInvalidTarget)
		noKeyIn(t, "String", d.String())
	}
	path := filepath.Join(dir, ".env")
	writeFile(t, path, sampleEnv, 0o600)
	d := NewDotEnv(path, "GEMINI_API_KEY")
	k, err := d.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	noKeyIn(t, "formatted key", k.String()+k.GoString())
	writeFile(t, path, strings.Replace(sampleEnv, oldKey, thirdKey, 1), 0o600)
	err = d.Write(ctx, secret.New(newKey))
	checkErr(t, err, rotate.ErrTargetChanged)
	noKeyIn(t, "error", err.Error())
	noKeyIn(t, "hint", errhint.Of(err))
}

// readSampleEnv writes sampleEnv to a new .env and reads it through a
// DotEnv target, as a rotation does before it writes.
func readSampleEnv(t *testing.T) (string, *DotEnv) {
	t.Helper()
	path := filepath.Join(t.TempDir(), ".env")
	writeFile(t, path, sampleEnv, 0o600)
	d := NewDotEnv(path, "GEMINI_API_KEY")
	if _, err := d.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	return path, d
}

func TestCleanTemp(t *testing.T) {
	dir := t.TempDir()
	realDir := filepath.Join(dir, "real")
	if err := os.Mkdir(realDir, 0o700); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(realDir, ".env")
	writeFile(t, real, sampleEnv, 0o600)
	link := filepath.Join(dir, "app.env")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	leftovers := []string{
		filepath.Join(realDir, "..env.keyrotate-123456.tmp"),
		filepath.Join(realDir, "..env.keyrotate-9.tmp"),
	}
	keep := []string{
		filepath.Join(realDir, "..env.keyrotate-.tmp"),      // no random part
		filepath.Join(realDir, ".other.keyrotate-1.tmp"),    // another file's
		filepath.Join(realDir, "..env.keyrotate-1.tmp.bak"), // not ours
		filepath.Join(dir, ".app.env.keyrotate-1.tmp"),      // next to the link, not the file
	}
	for _, p := range append(append([]string{}, leftovers...), keep...) {
		writeFile(t, p, "GEMINI_API_KEY="+newKey+"\n", 0o600)
	}
	if err := os.Mkdir(filepath.Join(realDir, "..env.keyrotate-dir.tmp"), 0o700); err != nil {
		t.Fatal(err)
	}

	removed, err := CleanTemp(context.Background(), link)
	if err != nil {
		t.Fatalf("CleanTemp = %v", err)
	}
	if strings.Join(removed, "\n") != strings.Join(leftovers, "\n") {
		t.Errorf("CleanTemp removed %q, want %q", removed, leftovers)
	}
	for _, p := range leftovers {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	for _, p := range append(keep, real, filepath.Join(realDir, "..env.keyrotate-dir.tmp")) {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}

	// A missing file or directory is nothing to clean.
	if removed, err := CleanTemp(context.Background(), filepath.Join(dir, "nope", ".env")); err != nil || len(removed) != 0 {
		t.Errorf("CleanTemp(missing dir) = %q, %v, want nothing", removed, err)
	}
	gone := filepath.Join(dir, "gone.env")
	p := filepath.Join(dir, ".gone.env.keyrotate-1.tmp")
	writeFile(t, p, "x", 0o600)
	if removed, err := CleanTemp(context.Background(), gone); err != nil || len(removed) != 1 {
		t.Errorf("CleanTemp(missing file) = %q, %v, want %s removed", removed, err, p)
	}
}

// TestCleanTempSparesAWriteInProgress checks that CleanTemp never removes
// the temporary file of a write that is still going on (another keyrotate
// process writing a file in the same directory, holding the directory's
// lock): it waits for the lock, and gives up when its context ends.
func TestCleanTempSparesAWriteInProgress(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, ".env")
	writeFile(t, real, sampleEnv, 0o600)
	inProgress := filepath.Join(dir, "..env.keyrotate-42.tmp")
	writeFile(t, inProgress, "GEMINI_API_KEY="+newKey+"\n", 0o600)

	unlock, err := lockDir(context.Background(), real) // the writer
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if removed, err := CleanTemp(ctx, real); err == nil || len(removed) != 0 {
		t.Errorf("CleanTemp while a write holds the lock = %q, %v; want it to wait and give up at the deadline", removed, err)
	}
	if _, err := os.Lstat(inProgress); err != nil {
		t.Fatalf("the temporary file of a write in progress was removed: %v", err)
	}

	done := make(chan []string)
	go func() {
		removed, err := CleanTemp(context.Background(), real)
		if err != nil {
			t.Errorf("CleanTemp = %v", err)
		}
		done <- removed
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := os.Lstat(inProgress); err != nil {
		t.Fatalf("the temporary file of a write in progress was removed: %v", err)
	}
	unlock() // the writer dies without renaming: now it is a leftover
	if removed := <-done; len(removed) != 1 || removed[0] != inProgress {
		t.Errorf("CleanTemp after the write = %q, want %s removed", removed, inProgress)
	}
}

// TestReplaceFileFailure checks that a failed replace leaves the file and
// no temporary file behind.
func TestReplaceFileFailure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".env")
	writeFile(t, path, sampleEnv, 0o600)
	// Renaming a file over a non-empty directory fails after the
	// temporary file was written.
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := replaceFile(sub, []byte("x")); err == nil {
		t.Errorf("replaceFile(directory) = nil, want an error")
	}
	if _, err := replaceFile(filepath.Join(dir, "missing"), []byte("x")); err == nil {
		t.Errorf("replaceFile(missing) = nil, want an error")
	}
	assertNoTemp(t, dir)
	if got := readFile(t, path); got != sampleEnv {
		t.Errorf("file = %q, want untouched", got)
	}
}

// TestDotEnvConcurrentWritesOneFile: many targets on one file, each for its
// own variable, all read before any writes (as the slots of a fleet run
// read in preflight), then write at once. Every write must land and keep
// the others': each merges into the file's latest content under the file's
// lock. Without the lock, writes based on the same old content overwrite
// each other's variables; without the merge, they refuse.
func TestDotEnvConcurrentWritesOneFile(t *testing.T) {
	const n = 16
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), ".env")
	var b strings.Builder
	b.WriteString("# many keys\n")
	for i := range n {
		fmt.Fprintf(&b, "KEY_%02d=old-%02d\n", i, i)
	}
	writeFile(t, path, b.String(), 0o600)
	ds := make([]*DotEnv, n)
	for i := range ds {
		ds[i] = NewDotEnv(path, fmt.Sprintf("KEY_%02d", i))
		if _, err := ds[i].Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.Write(ctx, secret.New(fmt.Sprintf("new-%02d", i)))
		}()
	}
	wg.Wait()
	f := ParseEnv([]byte(readFile(t, path)))
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Write KEY_%02d = %v, want nil", i, errs[i])
		}
		if got, _ := f.Lookup(fmt.Sprintf("KEY_%02d", i)); got != fmt.Sprintf("new-%02d", i) {
			t.Errorf("KEY_%02d = %q after the writes, want %q", i, got, fmt.Sprintf("new-%02d", i))
		}
	}
	assertNoTemp(t, filepath.Dir(path))
}

// TestDotEnvWriteWaitsForLock: a Write waits while another process holds
// the file's lock, and gives up when its context ends.
func TestDotEnvWriteWaitsForLock(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), ".env")
	writeFile(t, path, "GEMINI_API_KEY="+oldKey+"\n", 0o600)
	d := NewDotEnv(path, "GEMINI_API_KEY")
	if _, err := d.Read(ctx); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockDir(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := d.Write(short, secret.New(newKey)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Write while the lock is held = %v, want a context deadline error", err)
	}
	if got := readFile(t, path); got != "GEMINI_API_KEY="+oldKey+"\n" {
		t.Errorf("file changed while the lock was held: %q", got)
	}
	done := make(chan error)
	go func() { done <- d.Write(ctx, secret.New(newKey)) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Write returned %v while the lock was held", err)
	default:
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatalf("Write after unlock = %v", err)
	}
	if got := readFile(t, path); got != "GEMINI_API_KEY="+newKey+"\n" {
		t.Errorf("file = %q after the write", got)
	}
}
