package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSpecialFileInputs: every path a user gives keyrotate to read is
// refused at once, with exit 2 and the path named, when it is a FIFO (an
// open for reading would wait forever for a writer, deaf to SIGTERM), a
// device (/dev/zero never ends) or larger than any real config or .env.
func TestSpecialFileInputs(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge")
	if err := os.WriteFile(huge, bytes.Repeat([]byte("# padding\n"), 200_000), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		path string // named in stderr
		want string // in stderr
	}{
		{"doctor dotenv fifo", []string{"doctor", "--dotenv", fifo}, fifo, "named pipe"},
		{"doctor dotenv dev zero", []string{"doctor", "--dotenv", "/dev/zero"}, "/dev/zero", "device"},
		{"doctor dotenv huge", []string{"doctor", "--dotenv", huge}, huge, "larger than 1 MiB"},
		{"config fifo", []string{"--config", fifo, "plan"}, fifo, "named pipe"},
		{"config dev zero", []string{"--config", "/dev/zero", "plan"}, "/dev/zero", "device"},
		{"config huge", []string{"--config", huge, "plan"}, huge, "larger than 1 MiB"},
		{"config fifo status", []string{"--config", fifo, "status"}, fifo, "named pipe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type result struct {
				stderr string
				exit   int
			}
			done := make(chan result, 1)
			go func() {
				var out, errOut bytes.Buffer
				app := newApp(&out, &errOut)
				app.Reader = strings.NewReader("")
				err := app.RunContext(context.Background(), append([]string{"keyrotate"}, tt.args...))
				code := report(&errOut, err)
				done <- result{errOut.String(), code}
			}()
			select {
			case r := <-done:
				if r.exit != exitUsage {
					t.Errorf("%v: exit %d, want %d (stderr %q)", tt.args, r.exit, exitUsage, r.stderr)
				}
				if !strings.Contains(r.stderr, tt.path) || !strings.Contains(r.stderr, tt.want) ||
					!strings.Contains(r.stderr, "keyrotate: hint:") {
					t.Errorf("%v: stderr = %q, want it to name %s, say %q and give a hint", tt.args, r.stderr, tt.path, tt.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%v: still running after 10s (blocked reading %s)", tt.args, tt.path)
			}
		})
	}
}
