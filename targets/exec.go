package targets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// DefaultExecTimeout is how long a command may run when ExecOptions sets no
// timeout.
const DefaultExecTimeout = 30 * time.Second

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
// in keyrotate's working directory and in a process group of its own, which
// is killed when the timeout expires or the rotation is cancelled (see
// runBounded). Its exit status decides: 0 means the key is in place.
//
// The command does not inherit keyrotate's environment, which may hold
// tokens and other secrets: it gets PATH, HOME, the locale and TZ, the
// variables ExecOptions.Env names, and KEYROTATE_KEY_FINGERPRINT (the key's
// fingerprint, safe to log).
//
// What the command prints is not shown anywhere, only counted: a careless
// or hostile program can print the key in ways no redaction recognises.
// With ExecOptions.ShowOutput, it is captured (the first 64 KiB of each
// stream), redacted (see Redact) and logged at debug level, and the end of
// it is part of the error when the command fails. A verify command, when
// given, is run the same way after the write to confirm it (exit status 0:
// the place holds the key); without one the write is trusted.
type Exec struct {
	command    []string
	verify     []string
	timeout    time.Duration
	env        []string
	showOutput bool
	log        *slog.Logger
}

var (
	_ rotate.Target    = (*Exec)(nil)
	_ rotate.Confirmer = (*Exec)(nil)
)

// ExecOptions are the optional settings of an Exec.
type ExecOptions struct {
	// ReadBack is the argv of a command that checks the key on its stdin
	// (the config's verify:): exit status 0 means the place holds the
	// key. Nil: trust the write.
	ReadBack []string
	// Timeout bounds each run of a command; 0 means DefaultExecTimeout.
	Timeout time.Duration
	// Env names variables of keyrotate's environment that the commands
	// get besides PATH, HOME, the locale and TZ.
	Env []string
	// ShowOutput puts the commands' redacted output in the debug log and
	// the end of it in errors. Without it, their output is only counted.
	ShowOutput bool
	// Log receives a debug entry for each run of a command, and a
	// warning when a write is trusted without a verify command. Nil means
	// slog.Default() at the time of logging.
	Log *slog.Logger
}

// NewExec returns the target that runs command (argv[0] is the program,
// looked up on PATH when it has no slash) with the key on stdin.
func NewExec(command []string, opts ExecOptions) *Exec {
	t := &Exec{
		command:    append([]string(nil), command...),
		timeout:    opts.Timeout,
		env:        append([]string(nil), opts.Env...),
		showOutput: opts.ShowOutput,
		log:        opts.Log,
	}
	if opts.ReadBack != nil {
		t.verify = append([]string(nil), opts.ReadBack...)
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
		return errhint.With(fmt.Errorf("%s: no %s: %w", t, role, rotate.ErrInvalidTarget),
			`name the program and its arguments in the target, for example command: ["/usr/local/bin/reload", "--key-from-stdin"]`)
	}
	prog := argv[0]
	path, err := exec.LookPath(prog)
	switch {
	case err == nil:
	case errors.Is(err, exec.ErrDot):
		return errhint.With(fmt.Errorf("%s: %s %q is found only in the current directory (%s): %w", t, role, prog, path, rotate.ErrInvalidTarget),
			fmt.Sprintf("write its path, ./%s or an absolute path, in the config", prog))
	case errors.Is(err, exec.ErrNotFound):
		return errhint.With(fmt.Errorf("%s: %s %q not found on PATH: %w", t, role, prog, rotate.ErrInvalidTarget),
			fmt.Sprintf("install %s, or write its absolute path as the first element of the target's %s", prog, argvField(role)))
	case errors.Is(err, fs.ErrNotExist):
		return errhint.With(fmt.Errorf("%s: %s %s does not exist: %w", t, role, prog, rotate.ErrInvalidTarget),
			fmt.Sprintf("create %s, or fix the first element of the target's %s in the config", prog, argvField(role)))
	case errors.Is(err, syscall.EISDIR):
		return errhint.With(fmt.Errorf("%s: %s %s is a directory, not a program: %w", t, role, prog, rotate.ErrInvalidTarget),
			fmt.Sprintf("name the program file itself as the first element of the target's %s", argvField(role)))
	case errors.Is(err, fs.ErrPermission):
		return errhint.With(fmt.Errorf("%s: %s %s is not an executable file: %w", t, role, prog, rotate.ErrInvalidTarget),
			fmt.Sprintf("make %s executable (chmod +x %s), or fix the target's %s", prog, prog, argvField(role)))
	default:
		return errhint.With(fmt.Errorf("%s: %s %s: %w: %w", t, role, prog, err, rotate.ErrInvalidTarget),
			fmt.Sprintf("check the first element of the target's %s", argvField(role)))
	}
	// LookPath looks at the mode bits only; the owner and the ACLs decide
	// whether this user may run it.
	if err := unix.Access(path, unix.X_OK); err != nil {
		return errhint.With(fmt.Errorf("%s: %s %s cannot be executed by this user: %w", t, role, path, rotate.ErrInvalidTarget),
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
// with another status, is killed, or outlives the timeout or ctx (its whole
// process group is then killed). The error names the command and its
// status and ends with how much it printed or, with ShowOutput, the
// redacted end of its output.
//
// Whether a failed command changed anything is the command's affair; it
// must leave the place holding the old key or the new one.
func (t *Exec) Write(ctx context.Context, key secret.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := t.run(ctx, "write", t.command, key)
	if err != nil && errhint.Of(err) == "" && ctx.Err() == nil {
		err = errhint.With(err,
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
	if errhint.Of(err) == "" && ctx.Err() == nil {
		err = errhint.With(err,
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

// run runs argv with key on stdin, bounded by the timeout (see runBounded),
// and logs how it ended. It returns an error for anything but exit status 0.
func (t *Exec) run(ctx context.Context, step string, argv []string, key secret.Key) error {
	name := filepath.Base(argv[0])
	r := runBounded(ctx, child{
		argv:    argv,
		stdin:   key.Reveal() + "\n",
		env:     childEnv(func(v string) bool { return slices.Contains(t.env, v) }, "KEYROTATE_KEY_FINGERPRINT="+key.Fingerprint()),
		timeout: t.timeout,
	})
	attrs := []any{"target", t.String(), "step", step, "program", name,
		"status", r.status, "elapsed", r.elapsed.String(), "key", key.Fingerprint()}
	var output string
	if t.showOutput {
		outText, errText := r.stdout.redacted(key), r.stderr.redacted(key)
		attrs = append(attrs, "stdout", outText, "stderr", errText)
		output = tail(outText, errText)
	} else {
		attrs = append(attrs, "stdout_bytes", r.stdout.size(), "stderr_bytes", r.stderr.size())
		output = notShown(r.stdout.size(), r.stderr.size())
	}
	t.logger().Debug("ran command", attrs...)
	if r.leftOpen {
		t.logger().Debug("the command exited 0 but left its output open; stopped reading it", "target", t.String(), "step", step)
	}

	var ee *exec.ExitError
	switch {
	case r.err == nil:
		return nil
	case r.timedOut:
		return errhint.With(fmt.Errorf("%s did not finish within %s; its process group was killed%s", name, t.timeout, output),
			fmt.Sprintf("raise the target's timeout (now %s, at most 1h) or make %s finish sooner", t.timeout, name))
	case r.cancelled:
		return fmt.Errorf("%s stopped, its process group was killed: %w", name, ctx.Err())
	case errors.As(r.err, &ee):
		return fmt.Errorf("%s failed with %s%s", name, r.status, output)
	}
	// Not started: LookPath or exec failed. The error names the program,
	// never the key (it is on stdin only).
	return fmt.Errorf("start %s: %w", name, r.err)
}

// notShown says how much a command printed whose output is not shown.
func notShown(stdout, stderr int64) string {
	if stdout == 0 && stderr == 0 {
		return "; it printed nothing"
	}
	return fmt.Sprintf("; its output is not shown (%d bytes on stdout, %d on stderr; show_output: true on the target shows it, redacted)", stdout, stderr)
}
