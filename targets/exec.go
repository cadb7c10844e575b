package targets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/secret"
)

// DefaultExecTimeout is how long a command may run when ExecOptions sets no
// timeout.
const DefaultExecTimeout = 30 * time.Second

// Limits on what is kept of a command's output: the first maxCapture bytes
// of each stream go to the debug log, the last maxErrorTail bytes of them
// into an error.
const (
	maxCapture   = 64 << 10
	maxErrorTail = 1 << 10
)

// execWaitDelay is how long a command that exited may keep its output open
// (a daemon it started in the background) before keyrotate stops reading.
const execWaitDelay = 2 * time.Second

// Exec is a command that takes the key on its standard input: a hook for a
// place keyrotate has no target kind for (reload a daemon, update a vault).
//
// An Exec is write-only. Read only proves that the command (and the verify
// command, if any) can be run, then returns an error wrapping
// rotate.ErrUnreadable. The rotation therefore runs the command on every run
// that distributes a key: again when it resumes an interrupted rotation, and
// with the old key on abort. The command must be idempotent: handed the key
// it already holds, it must succeed and leave things working.
//
// The key reaches the command only on its standard input, as the key string
// followed by one newline; never in its arguments or environment (which
// other users of the machine may read). The command runs without a shell,
// with keyrotate's environment plus KEYROTATE_KEY_FINGERPRINT (the key's
// fingerprint, safe to log), in keyrotate's working directory and in a
// process group of its own, which is killed when the timeout expires. Its
// exit status decides: 0 means the key is in place.
//
// What the command prints is captured (the first 64 KiB of each stream),
// redacted (see Redact) and logged at debug level; the end of it is part of
// the error when the command fails. A verify command, when given, is run the
// same way after the write to confirm it (exit status 0: the place holds the
// key); without one the write is trusted.
type Exec struct {
	command []string
	verify  []string
	timeout time.Duration
	log     *slog.Logger
}

var (
	_ rotate.Target    = (*Exec)(nil)
	_ rotate.Confirmer = (*Exec)(nil)
)

// ExecOptions are the optional settings of an Exec.
type ExecOptions struct {
	// Verify is the argv of a command that checks the key on its stdin:
	// exit status 0 means the place holds the key. Nil: trust the write.
	Verify []string
	// Timeout bounds each run of a command; 0 means DefaultExecTimeout.
	Timeout time.Duration
	// Log receives the commands' redacted output at debug level, and a
	// warning when a write is trusted without a verify command. Nil means
	// slog.Default() at the time of logging.
	Log *slog.Logger
}

// NewExec returns the target that runs command (argv[0] is the program,
// looked up on PATH when it has no slash) with the key on stdin.
func NewExec(command []string, opts ExecOptions) *Exec {
	t := &Exec{
		command: append([]string(nil), command...),
		timeout: opts.Timeout,
		log:     opts.Log,
	}
	if opts.Verify != nil {
		t.verify = append([]string(nil), opts.Verify...)
	}
	if t.timeout <= 0 {
		t.timeout = DefaultExecTimeout
	}
	return t
}

// String returns "exec:" and the command line, with the program's base
// name: "exec:reload --key-from-stdin". Arguments come from the config,
// which refuses key strings.
func (t *Exec) String() string { return "exec:" + commandLine(t.command) }

func commandLine(argv []string) string {
	if len(argv) == 0 {
		return "<no command>"
	}
	words := make([]string, len(argv))
	for i, a := range argv {
		if i == 0 {
			a = filepath.Base(a)
		}
		if a == "" || strings.ContainsFunc(a, func(r rune) bool {
			return unicode.IsSpace(r) || !unicode.IsPrint(r) || strings.ContainsRune(`"'\$`+"`", r)
		}) {
			a = strconv.Quote(a)
		}
		words[i] = a
	}
	return strings.Join(words, " ")
}

// Read checks that the command, and the verify command if any, can be run:
// each program exists (on PATH for a bare name) and is an executable file
// this user may execute. It then returns an error wrapping
// rotate.ErrUnreadable, as nobody can read a key back from a command. A
// failed check returns an error wrapping rotate.ErrInvalidTarget with a
// hint instead. Nothing is run.
func (t *Exec) Read(ctx context.Context) (secret.Key, error) {
	if err := ctx.Err(); err != nil {
		return secret.Key{}, err
	}
	if err := t.checkProgram("command", t.command); err != nil {
		return secret.Key{}, err
	}
	if t.verify != nil {
		if err := t.checkProgram("verify command", t.verify); err != nil {
			return secret.Key{}, err
		}
	}
	return secret.Key{}, fmt.Errorf("%s: a command takes the key but cannot show it: %w", t, rotate.ErrUnreadable)
}

// checkProgram proves that argv's program can be executed, without running it.
func (t *Exec) checkProgram(role string, argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return rotate.WithHint(fmt.Errorf("%s: no %s: %w", t, role, rotate.ErrInvalidTarget),
			`name the program and its arguments in the target, for example command: ["/usr/local/bin/reload", "--key-from-stdin"]`)
	}
	prog := argv[0]
	path, err := exec.LookPath(prog)
	switch {
	case err == nil:
	case errors.Is(err, exec.ErrDot):
		return rotate.WithHint(fmt.Errorf("%s: %s %q is found only in the current directory (%s): %w", t, role, prog, path, rotate.ErrInvalidTarget),
			fmt.Sprintf("write its path, ./%s or an absolute path, in the config", prog))
	case errors.Is(err, exec.ErrNotFound):
		return rotate.WithHint(fmt.Errorf("%s: %s %q not found on PATH: %w", t, role, prog, rotate.ErrInvalidTarget),
			fmt.Sprintf("install %s, or write its absolute path as the first element of the target's %s", prog, argvField(role)))
	case errors.Is(err, fs.ErrNotExist):
		return rotate.WithHint(fmt.Errorf("%s: %s %s does not exist: %w", t, role, prog, rotate.ErrInvalidTarget),
			fmt.Sprintf("create %s, or fix the first element of the target's %s in the config", prog, argvField(role)))
	case errors.Is(err, syscall.EISDIR):
		return rotate.WithHint(fmt.Errorf("%s: %s %s is a directory, not a program: %w", t, role, prog, rotate.ErrInvalidTarget),
			fmt.Sprintf("name the program file itself as the first element of the target's %s", argvField(role)))
	case errors.Is(err, fs.ErrPermission):
		return rotate.WithHint(fmt.Errorf("%s: %s %s is not an executable file: %w", t, role, prog, rotate.ErrInvalidTarget),
			fmt.Sprintf("make %s executable (chmod +x %s), or fix the target's %s", prog, prog, argvField(role)))
	default:
		return rotate.WithHint(fmt.Errorf("%s: %s %s: %w: %w", t, role, prog, err, rotate.ErrInvalidTarget),
			fmt.Sprintf("check the first element of the target's %s", argvField(role)))
	}
	// LookPath looks at the mode bits only; the owner and the ACLs decide
	// whether this user may run it.
	if err := unix.Access(path, unix.X_OK); err != nil {
		return rotate.WithHint(fmt.Errorf("%s: %s %s cannot be executed by this user: %w", t, role, path, rotate.ErrInvalidTarget),
			fmt.Sprintf("give this user execute permission on %s", path))
	}
	return nil
}

func argvField(role string) string {
	if role == "verify command" {
		return "verify"
	}
	return "command"
}

// Write runs the command with key on its stdin and returns nil when it
// exits with status 0. It fails when the program cannot be started, exits
// with another status, is killed, or outlives the timeout (its whole process
// group is then killed). The error names the command and its status and
// ends with the redacted end of its output.
//
// Whether a failed command changed anything is the command's affair; it
// must leave the place holding the old key or the new one.
func (t *Exec) Write(ctx context.Context, key secret.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := t.run(ctx, "write", t.command, key)
	if err != nil && rotate.Hint(err) == "" && ctx.Err() == nil {
		err = rotate.WithHint(err,
			fmt.Sprintf("run %s by hand with a test value on stdin to see why it fails; it must exit 0 once the key is in place", filepath.Base(t.command[0])))
	}
	return err
}

// ConfirmedBy says, for plans, how a write is proved.
func (t *Exec) ConfirmedBy() string {
	if len(t.verify) == 0 {
		return "nothing: no verify command, the command's exit status is trusted"
	}
	return "the verify command"
}

// Confirm runs the verify command with key on its stdin: exit status 0
// means the place holds the key. Without a verify command the write is
// trusted: Confirm logs a warning saying so and returns nil.
func (t *Exec) Confirm(ctx context.Context, key secret.Key) error {
	if t.verify == nil {
		t.logger().Warn("no verify command: the command's exit status is trusted as proof of the write", "target", t.String())
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := t.run(ctx, "verify", t.verify, key)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("verify command, given key %s: %w", key.Fingerprint(), err)
	if rotate.Hint(err) == "" && ctx.Err() == nil {
		err = rotate.WithHint(err,
			fmt.Sprintf("run %s by hand with the key on stdin to see why it fails; it must exit 0 when the place holds the key", filepath.Base(t.verify[0])))
	}
	return err
}

func (t *Exec) logger() *slog.Logger {
	if t.log != nil {
		return t.log
	}
	return slog.Default()
}

// errExecTimeout is the cause of a command's context when its timeout
// expires, to tell it from a cancelled rotation.
var errExecTimeout = errors.New("command timed out")

// run runs argv with key on stdin, bounded by the timeout, and logs its
// redacted output. It returns an error for anything but exit status 0.
func (t *Exec) run(ctx context.Context, step string, argv []string, key secret.Key) error {
	name := filepath.Base(argv[0])
	rctx, cancel := context.WithTimeoutCause(ctx, t.timeout, errExecTimeout)
	defer cancel()
	cmd := exec.CommandContext(rctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(key.Reveal() + "\n")
	cmd.Env = append(os.Environ(), "KEYROTATE_KEY_FINGERPRINT="+key.Fingerprint())
	stdout, stderr := &capture{limit: maxCapture}, &capture{limit: maxCapture}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: a shell script's children too.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = execWaitDelay

	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start).Round(time.Millisecond)
	outText, errText := stdout.redacted(key), stderr.redacted(key)
	if errors.Is(err, exec.ErrWaitDelay) {
		// It exited 0, but something it started still holds its output.
		t.logger().Debug("the command exited 0 but left its output open; stopped reading it", "target", t.String(), "step", step)
		err = nil
	}
	status := "exit status 0"
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		status = exitStatus(ee)
	default:
		status = "not started"
	}
	timedOut := errors.Is(context.Cause(rctx), errExecTimeout)
	if timedOut {
		status = "killed after the timeout of " + t.timeout.String()
	}
	t.logger().Debug("ran command", "target", t.String(), "step", step, "program", name,
		"status", status, "elapsed", elapsed.String(), "key", key.Fingerprint(), "stdout", outText, "stderr", errText)

	switch {
	case err == nil:
		return nil
	case timedOut:
		return rotate.WithHint(fmt.Errorf("%s did not finish within %s; its process group was killed%s", name, t.timeout, tail(outText, errText)),
			fmt.Sprintf("raise the target's timeout (now %s, at most 1h) or make %s finish sooner", t.timeout, name))
	case ctx.Err() != nil:
		return fmt.Errorf("%s stopped: %w", name, ctx.Err())
	case ee != nil:
		return fmt.Errorf("%s failed with %s%s", name, status, tail(outText, errText))
	}
	// Not started: LookPath or exec failed. The error names the program,
	// never the key (it is on stdin only).
	return fmt.Errorf("start %s: %w", name, err)
}

// exitStatus says how a command ended: "exit status 3" or "killed by
// signal terminated".
func exitStatus(ee *exec.ExitError) string {
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by signal " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ee.ExitCode())
}

// tail returns the end of the command's (redacted) stderr, else of its
// stdout, for an error message: quoted, so that it stays on one line.
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

// redacted returns the captured output with key removed (see Redact). When
// output was dropped, the last, incomplete line is dropped too: it may end
// in the first characters of a key that Redact could not recognise.
func (c *capture) redacted(key secret.Key) string {
	data, dropped := c.buf, c.dropped
	if dropped > 0 {
		i := bytes.LastIndexByte(data, '\n')
		dropped += int64(len(data) - (i + 1))
		data = data[:i+1]
	}
	s := Redact(string(data), key)
	if dropped > 0 {
		s += fmt.Sprintf("[%d more bytes not shown]", dropped)
	}
	return s
}

// keyShapeRE matches strings shaped like Google API key strings: standard
// keys (AIza and 35 more characters) and auth keys (AQ. and more).
var keyShapeRE = regexp.MustCompile(`AIza[0-9A-Za-z_\-]{16,}|AQ\.[0-9A-Za-z_.\-]{16,}`)

// fragmentLen is the length of the shortest piece of a key that Redact
// recognises inside other text. More than the four characters keyrotate
// ever shows; short enough that a key wrapped over lines of 8 or more
// characters is caught line by line.
const fragmentLen = 8

// Redact removes keys from text that a command printed, in three passes:
//
//  1. every occurrence of each key's string becomes the key's fingerprint;
//  2. anything shaped like a Google API key string (AIza…, AQ.…), such as
//     another key the command printed, becomes its fingerprint;
//  3. a line that still holds fragmentLen or more consecutive characters
//     of a key (a key cut in two, wrapped or framed by other text) is
//     replaced as a whole by a note naming the key's fingerprint.
//
// Control characters other than tab and newline become U+FFFD, so that the
// text cannot rewrite a terminal. What Redact cannot see: a key encoded
// (base64, hex, reversed) or split into pieces shorter than fragmentLen.
func Redact(text string, keys ...secret.Key) string {
	for _, k := range keys {
		if !k.IsZero() {
			text = strings.ReplaceAll(text, k.Reveal(), k.Fingerprint())
		}
	}
	text = keyShapeRE.ReplaceAllStringFunc(text, secret.Fingerprint)
	for _, k := range keys {
		text = withholdFragments(text, k)
	}
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if unicode.IsControl(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(text, string(utf8.RuneError)))
}

// withholdFragments replaces each line holding fragmentLen consecutive
// characters of k.
func withholdFragments(text string, k secret.Key) string {
	s := k.Reveal()
	n := min(fragmentLen, len(s))
	if n == 0 {
		return text
	}
	pieces := make(map[string]bool, len(s)-n+1)
	for i := 0; i+n <= len(s); i++ {
		pieces[s[i:i+n]] = true
	}
	lines := strings.SplitAfter(text, "\n")
	changed := false
	for li, line := range lines {
		for i := 0; i+n <= len(line); i++ {
			if pieces[line[i:i+n]] {
				nl := ""
				if strings.HasSuffix(line, "\n") {
					nl = "\n"
				}
				lines[li] = "[line withheld: it holds part of key " + k.Fingerprint() + "]" + nl
				changed = true
				break
			}
		}
	}
	if !changed {
		return text
	}
	return strings.Join(lines, "")
}
