package targets

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// Limits on what is kept of a child's output: the first maxCapture bytes
// of each stream are kept, the last maxErrorTail bytes of them go into an
// error.
const (
	maxCapture   = 64 << 10
	maxErrorTail = 1 << 10
)

// childWaitDelay is how long keyrotate keeps reading a child's output once
// the child has exited, or once it was killed: something it started (a
// daemon, a process that left its group) may hold the pipes open forever.
// After it, keyrotate closes the pipes and goes on.
const childWaitDelay = 2 * time.Second

// child is a program keyrotate runs: an exec target's command or verify
// command, or compose's docker. Both run through runBounded, so that every
// child is bounded the same way.
type child struct {
	argv    []string
	stdin   string        // "" gives the child an empty stdin
	env     []string      // the child's whole environment (see childEnv)
	timeout time.Duration // > 0
}

// childRun is how a child ended.
type childRun struct {
	// err is nil for exit status 0, an *exec.ExitError for another status
	// or a signal, or the error that kept the program from starting.
	err error
	// status says how it ended, for people: "exit status 3", "killed after
	// the timeout of 3s", "stopped: context canceled", "not started".
	status string
	// timedOut: the timeout expired and the child's process group was
	// killed. cancelled: ctx was done first, and the group was killed.
	timedOut, cancelled bool
	// leftOpen: it exited 0, but something it started kept its output
	// open past childWaitDelay; keyrotate stopped reading it.
	leftOpen       bool
	elapsed        time.Duration
	stdout, stderr *capture
}

// errChildTimeout is the cause of a child's context when its timeout
// expires, to tell it from a cancelled rotation.
var errChildTimeout = errors.New("child timed out")

// runBounded runs c in a process group of its own and waits for it, for at
// most c.timeout. When the timeout expires or ctx is done (a signal to
// keyrotate), the whole group is killed with SIGKILL: a shell script's
// children die with it. Whatever still holds the child's output after that
// (or after the child exited) is cut off after childWaitDelay, so runBounded
// returns within about c.timeout + childWaitDelay whatever the child does.
func runBounded(ctx context.Context, c child) childRun {
	rctx, cancel := context.WithTimeoutCause(ctx, c.timeout, errChildTimeout)
	defer cancel()
	cmd := exec.CommandContext(rctx, c.argv[0], c.argv[1:]...)
	cmd.Stdin = strings.NewReader(c.stdin)
	cmd.Env = c.env
	if cmd.Env == nil {
		cmd.Env = []string{} // nil would mean keyrotate's own environment
	}
	r := childRun{stdout: &capture{limit: maxCapture}, stderr: &capture{limit: maxCapture}}
	cmd.Stdout, cmd.Stderr = r.stdout, r.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: a shell script's children too.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = childWaitDelay

	start := time.Now()
	err := cmd.Run()
	r.elapsed = time.Since(start).Round(time.Millisecond)
	if errors.Is(err, exec.ErrWaitDelay) {
		// It exited 0, but something it started still holds its output.
		r.leftOpen, err = true, nil
	}
	r.err = err
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.status = "exit status 0"
	case errors.As(err, &ee):
		r.status = exitStatus(ee)
	default:
		r.status = "not started"
	}
	switch {
	case err == nil:
	case errors.Is(context.Cause(rctx), errChildTimeout):
		r.timedOut = true
		r.status = "killed after the timeout of " + c.timeout.String()
	case ctx.Err() != nil:
		r.cancelled = true
		r.status = "stopped: " + ctx.Err().Error()
	}
	return r
}

// exitStatus says how a command ended: "exit status 3" or "killed by
// signal terminated".
func exitStatus(ee *exec.ExitError) string {
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by signal " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ee.ExitCode())
}

// childEnv returns the environment a child gets: not keyrotate's (which may
// hold tokens, webhook URLs and other secrets), but only what a program
// needs to run as this user — PATH, HOME, the locale (LANG, LANGUAGE,
// LC_*) and TZ — plus the variables of keyrotate's environment that pass
// accepts, plus extra ("NAME=value").
func childEnv(pass func(name string) bool, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			continue
		}
		switch {
		case name == "PATH" || name == "HOME" || name == "TZ" || name == "LANG" || name == "LANGUAGE" || strings.HasPrefix(name, "LC_"):
		case pass != nil && pass(name):
		default:
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// tail returns the end of a child's (redacted) stderr, else of its
// stdout, for an error message: quoted, so that it stays on one line (a
// line break in it would read as a line of keyrotate's own).
func tail(stdout, stderr string) string {
	what, s := "stderr", strings.TrimSpace(stderr)
	if s == "" {
		what, s = "stdout", strings.TrimSpace(stdout)
	}
	if s == "" {
		return "; it printed nothing"
	}
	if len(s) > maxErrorTail {
		s = s[len(s)-maxErrorTail:]
		for i := 0; i < utf8.UTFMax && i < len(s) && !utf8.RuneStart(s[0]); i++ {
			s = s[1:]
		}
		s = "…" + s
	}
	return fmt.Sprintf("; its %s ends: %q", what, s)
}

// capture keeps the first limit bytes written to it and counts the rest.
type capture struct {
	buf     []byte
	limit   int
	dropped int64
}

func (c *capture) Write(p []byte) (int, error) {
	room := max(0, min(c.limit-len(c.buf), len(p)))
	c.buf = append(c.buf, p[:room]...)
	c.dropped += int64(len(p) - room)
	return len(p), nil
}

// size is how many bytes were written, kept or not.
func (c *capture) size() int64 { return int64(len(c.buf)) + c.dropped }
