package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestClosedStdout: `keyrotate rotate --now | head -1` — a reader that
// closes the pipe early, or at once — never kills the rotation: it
// finishes, the lease is released, the exit status is 0 (rotated), and
// stderr says the output was cut short.
func TestClosedStdout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		lines int // lines read before the pipe is closed
		args  []string
	}{
		{"head -1", 1, nil},
		{"closed at once", 0, nil},
		{"closed at once, json", 0, []string{"--output", "json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cw := newCrashWorld(t)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			args := append(append([]string{}, tc.args...), cw.rotateArgs(false)...)
			cmd := exec.Command(cw.bin, args...)
			cmd.Dir = cw.w.dir
			cmd.Env = append(os.Environ(), cw.srv.Env()...)
			cmd.Stdout = w
			var stderr syncBuffer
			cmd.Stderr = &stderr
			if tc.lines == 0 {
				r.Close()
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			if tc.lines > 0 {
				br := bufio.NewReader(r)
				for range tc.lines {
					if _, err := br.ReadString('\n'); err != nil {
						t.Fatalf("read the first line: %v", err)
					}
				}
				r.Close()
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			switch {
			case errors.As(err, &ee) && ee.ExitCode() == -1:
				t.Fatalf("keyrotate was killed by %v\nstderr:\n%s", ee.ProcessState, &stderr)
			case err != nil:
				t.Fatalf("keyrotate: %v, want exit 0 (rotated)\nstderr:\n%s", err, &stderr)
			}
			if err := cw.noKeyIn(stderr.String()); err != nil {
				t.Error(err)
			}
			if diff := cmp.Diff(cw.wantEnd(false), cw.endState()); diff != "" {
				t.Errorf("end state differs from a finished rotation (-want +got):\n%s", diff)
			}
			if !strings.Contains(stderr.String(), "keyrotate: warning: standard output could not be written (") {
				t.Errorf("stderr does not say the output was cut short:\n%s", &stderr)
			}
		})
	}
}
