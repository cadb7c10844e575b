package inputfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readWithin calls Read and fails the test when it does not return within
// a few seconds: the bug this package exists for is a read that blocks.
func readWithin(t *testing.T, path string, limit int64) ([]byte, fs.FileInfo, error) {
	t.Helper()
	type result struct {
		data []byte
		fi   fs.FileInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		d, fi, err := Read(path, limit)
		done <- result{d, fi, err}
	}()
	select {
	case r := <-done:
		return r.data, r.fi, r.err
	case <-time.After(5 * time.Second):
		t.Fatalf("Read(%q) still blocked after 5s", path)
		return nil, nil, nil
	}
}

func TestReadRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, kind string
	}{
		{"fifo", fifo, "named pipe (FIFO)"},
		{"symlink to fifo", link, "named pipe (FIFO)"},
		{"directory", dir, "directory"},
		{"dev zero", "/dev/zero", "device"},
		{"dev null", "/dev/null", "device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat(tt.path); err != nil {
				t.Skipf("%s: %v", tt.path, err)
			}
			data, _, err := readWithin(t, tt.path, MaxSize)
			var nr *NotRegularError
			if !errors.As(err, &nr) || !errors.Is(err, ErrNotRegular) {
				t.Fatalf("Read(%q) = %d bytes, %v, want a *NotRegularError", tt.path, len(data), err)
			}
			if !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.kind) {
				t.Errorf("error %q does not name %s and %q", err, tt.path, tt.kind)
			}
		})
	}
}

func TestReadLimit(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		size    int
		limit   int64
		tooLong bool
	}{
		{"empty", 0, 10, false},
		{"below", 9, 10, false},
		{"at the limit", 10, 10, false},
		{"one past", 11, 10, true},
		{"far past", 3 << 20, MaxSize, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(path, []byte(strings.Repeat("x", tt.size)), 0o600); err != nil {
				t.Fatal(err)
			}
			data, fi, err := readWithin(t, path, tt.limit)
			if tt.tooLong {
				var tl *TooLargeError
				if !errors.As(err, &tl) || !errors.Is(err, ErrTooLarge) {
					t.Fatalf("Read = %d bytes, %v, want a *TooLargeError", len(data), err)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read = %v, want nil", err)
			}
			if data == nil || len(data) != tt.size || fi.Size() != int64(tt.size) {
				t.Errorf("Read = %d bytes (nil: %v), size %d, want %d", len(data), data == nil, fi.Size(), tt.size)
			}
		})
	}
}

func TestReadMissing(t *testing.T) {
	_, _, err := Read(filepath.Join(t.TempDir(), "nope"), MaxSize)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read(missing) = %v, want fs.ErrNotExist", err)
	}
}

func TestTooLargeMessage(t *testing.T) {
	for limit, want := range map[int64]string{MaxSize: "1 MiB", 4096: "4 KiB", 100: "100 bytes"} {
		if got := (&TooLargeError{Path: "p", Limit: limit}).Error(); got != "p is larger than "+want {
			t.Errorf("TooLargeError{%d}.Error() = %q, want %q", limit, got, "p is larger than "+want)
		}
	}
}
