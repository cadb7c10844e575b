package targets

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// script writes a shell script into dir and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	writeFile(t, path, "#!/bin/sh\n"+body, 0o755)
	return path
}

// logBuffer returns a debug logger and what it wrote.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var b bytes.Buffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

// noKeyPart fails the test when s holds either canary key string or any
// piece of one 8 characters long (the shortest fragment Redact promises to
// catch) beyond the prefix the two share with every auth key.
func noKeyPart(t *testing.T, what, s string) {
	t.Helper()
	noKeyIn(t, what, s)
	for _, k := range []string{oldKey, newKey} {
		for i := len("AQ.Ab8RN6"); i+fragmentLen <= len(k); i++ {
			if strings.Contains(s, k[i:i+fragmentLen]) {
				t.Errorf("%s contains %q, part of a key string: %q", what, k[i:i+fragmentLen], s)
				return
			}
		}
	}
}

func TestExecWrite(t *testing.T) {
	dir := t.TempDir()
	store, env, args := filepath.Join(dir, "store"), filepath.Join(dir, "env"), filepath.Join(dir, "args")
	cmd := script(t, dir, "reload", `cat > "$STORE"; env > "$ENVFILE"; echo "$@" > "$ARGS"`+"\n")
	t.Setenv("STORE", store)
	t.Setenv("ENVFILE", env)
	t.Setenv("ARGS", args)
	log, logs := logBuffer()
	x := NewExec([]string{cmd, "--key-from-stdin"}, ExecOptions{Env: []string{"STORE", "ENVFILE", "ARGS"}, Log: log})
	ctx := context.Background()

	if _, err := x.Read(ctx); !errors.Is(err, rotate.ErrUnreadable) {
		t.Fatalf("Read = %v, want ErrUnreadable", err)
	}
	if err := x.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if got := readFile(t, store); got != newKey+"\n" {
		t.Errorf("stdin = %q, want the key and a newline", got)
	}
	e := readFile(t, env)
	noKeyPart(t, "the command's environment", e)
	if want := "KEYROTATE_KEY_FINGERPRINT=" + secret.Fingerprint(newKey); !strings.Contains(e, want) {
		t.Errorf("environment lacks %s", want)
	}
	if got := readFile(t, args); got != "--key-from-stdin\n" {
		t.Errorf("arguments = %q, want --key-from-stdin", got)
	}
	// Idempotent by contract: a second write runs the command again.
	if err := x.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatalf("second Write: %v", err)
	}
	if !strings.Contains(logs.String(), "ran command") {
		t.Errorf("no debug log of the run: %s", logs)
	}
	noKeyPart(t, "log", logs.String())
}

func TestExecString(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"/usr/local/bin/reload", "--key-from-stdin"}, "exec:reload --key-from-stdin"},
		{[]string{"systemctl", "reload", "my app"}, `exec:systemctl reload "my app"`},
		{[]string{"/bin/sh", "-c", "cat > $F"}, `exec:sh -c "cat > $F"`},
		{nil, "exec:<no command>"},
	} {
		if got := NewExec(tc.argv, ExecOptions{}).String(); got != tc.want {
			t.Errorf("NewExec(%q).String() = %q, want %q", tc.argv, got, tc.want)
		}
	}
}

func TestExecFailure(t *testing.T) {
	dir := t.TempDir()
	cmd := script(t, dir, "reload", "echo 'daemon not running' >&2\nexit 3\n")
	x := NewExec([]string{cmd}, ExecOptions{ShowOutput: true, Log: slog.New(slog.DiscardHandler)})
	err := x.Write(context.Background(), secret.New(newKey))
	if err == nil {
		t.Fatal("Write of a command exiting 3 succeeded")
	}
	for _, want := range []string{"reload", "exit status 3", "daemon not running"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if errors.Is(err, rotate.ErrInvalidTarget) {
		t.Errorf("error %v wraps ErrInvalidTarget: a failed run is not a config problem", err)
	}
	if h := errhint.Of(err); !strings.Contains(h, "by hand") {
		t.Errorf("hint = %q, want one saying to run the command by hand", h)
	}
}

// TestExecRedactsOutput: a command that prints the key every way it can;
// neither the error nor the log holds the key or a piece of it.
func TestExecRedactsOutput(t *testing.T) {
	dir := t.TempDir()
	body := `read -r k
echo "got key $k"
echo "$k" >&2
echo "same again: $k, $k"
printf '%s\n' "$k" | cut -c5-20
printf '%s\n' "$k" | fold -w 9
printf 'no newline at the end: %s' "$k" >&2
`
	for _, exit := range []int{0, 1} {
		t.Run(fmt.Sprintf("exit %d", exit), func(t *testing.T) {
			cmd := script(t, dir, fmt.Sprintf("echo%d", exit), body+fmt.Sprintf("exit %d\n", exit))
			log, logs := logBuffer()
			x := NewExec([]string{cmd}, ExecOptions{ShowOutput: true, Log: log})
			err := x.Write(context.Background(), secret.New(newKey))
			if (err != nil) != (exit != 0) {
				t.Fatalf("Write = %v, want error %v", err, exit != 0)
			}
			if err != nil {
				noKeyPart(t, "error", err.Error())
				noKeyPart(t, "hint", errhint.Of(err))
				if !strings.Contains(err.Error(), secret.Fingerprint(newKey)) {
					t.Errorf("error %q does not name the key by its fingerprint", err)
				}
			}
			noKeyPart(t, "log", logs.String())
			for _, want := range []string{"got key " + secret.Fingerprint(newKey), "line withheld"} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q: %s", want, logs)
				}
			}
		})
	}
}

// TestExecTimeout: a command that outlives its timeout is killed with
// everything it started (its process group), and the error names the
// timeout. The command must have started its background child before the
// timeout for the test to see that child killed: on a loaded machine (CI's
// two lanes of tests) a 300ms timeout once came before the shell had
// written the child's pid, and the test failed reading it. So a run whose
// command had not got that far is run again with twice the timeout (a
// measured fact, the pid file, decides, not an assumed start-up time).
func TestExecTimeout(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	// A child in the background keeps the output open: only killing the
	// whole process group ends it.
	cmd := script(t, dir, "slow", `sleep 30 & echo $! > "$PIDFILE"; wait`+"\n")
	t.Setenv("PIDFILE", pidFile)
	var pidText []byte
	for timeout := 300 * time.Millisecond; ; timeout *= 2 {
		x := NewExec([]string{cmd}, ExecOptions{Timeout: timeout, Env: []string{"PIDFILE"}, Log: slog.New(slog.DiscardHandler)})
		start := time.Now()
		err := x.Write(context.Background(), secret.New(newKey))
		if err == nil {
			t.Fatal("Write of a command that sleeps past the timeout succeeded")
		}
		if d := time.Since(start); d > timeout+10*time.Second {
			t.Errorf("Write took %s with a timeout of %s", d, timeout)
		}
		if want := fmt.Sprintf("did not finish within %s", timeout); !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want it to name the timeout (%q)", err, want)
		}
		if h := errhint.Of(err); !strings.Contains(h, "timeout") {
			t.Errorf("hint = %q, want one about the timeout", h)
		}
		var rerr error
		if pidText, rerr = os.ReadFile(pidFile); rerr == nil && len(bytes.TrimSpace(pidText)) > 0 {
			break
		}
		if timeout >= 5*time.Second {
			t.Fatalf("the command never started its background child before its timeout (%s): %v", timeout, rerr)
		}
		t.Logf("the command had not started its background child within %s; again with twice the timeout", timeout)
	}
	pid, perr := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if perr != nil {
		t.Fatal(perr)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if !alive(pid) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the command's child %d survived the timeout", pid)
			syscall.Kill(pid, syscall.SIGKILL)
			break
		}
	}
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func TestExecCancelled(t *testing.T) {
	dir := t.TempDir()
	cmd := script(t, dir, "slow", "sleep 30\n")
	x := NewExec([]string{cmd}, ExecOptions{Log: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := x.Write(ctx, secret.New(newKey)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Write with a cancelled context = %v, want context.DeadlineExceeded", err)
	}
}

func TestExecConfirm(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	t.Setenv("STORE", store)
	put := script(t, dir, "put", `cat > "$STORE"`+"\n")
	check := script(t, dir, "check", `cmp -s - "$STORE" || { echo "the store holds another key" >&2; exit 1; }`+"\n")
	log, logs := logBuffer()
	x := NewExec([]string{put}, ExecOptions{ReadBack: []string{check}, Env: []string{"STORE"}, ShowOutput: true, Log: log})
	ctx := context.Background()
	if _, err := x.Read(ctx); !errors.Is(err, rotate.ErrUnreadable) {
		t.Fatalf("Read = %v, want ErrUnreadable", err)
	}
	if err := x.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if err := x.Confirm(ctx, secret.New(newKey)); err != nil {
		t.Errorf("Confirm(new key) = %v, want nil", err)
	}
	err := x.Confirm(ctx, secret.New(oldKey))
	if err == nil {
		t.Fatal("Confirm(old key) = nil, want the verify command's rejection")
	}
	for _, want := range []string{"verify command", "exit status 1", "another key", secret.Fingerprint(oldKey)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	noKeyPart(t, "error", err.Error())
	noKeyPart(t, "log", logs.String())

	// Without a verify command the write is trusted, and the log says so.
	trusted := NewExec([]string{put}, ExecOptions{Env: []string{"STORE"}, Log: log})
	if err := trusted.Confirm(ctx, secret.New(oldKey)); err != nil {
		t.Errorf("Confirm without a verify command = %v, want nil", err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "trusted") {
		t.Errorf("log does not warn that the write is trusted: %s", logs)
	}
}

func TestExecReadPreflight(t *testing.T) {
	dir := t.TempDir()
	ok := script(t, dir, "ok", "exit 0\n")
	plain := filepath.Join(dir, "plain")
	writeFile(t, plain, "#!/bin/sh\n", 0o644)
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, tc := range []struct {
		name            string
		command, verify []string
		msg, hint       string
	}{
		{"missing file", []string{filepath.Join(dir, "nope")}, nil, "does not exist", "create"},
		{"not on PATH", []string{"keyrotate-no-such-command"}, nil, "not found on PATH", "absolute path"},
		{"not executable", []string{plain}, nil, "not an executable file", "chmod +x"},
		{"directory", []string{dir}, nil, "is a directory", "program file"},
		{"missing verify", []string{ok}, []string{filepath.Join(dir, "nope")}, "verify command", "verify"},
		{"no command", nil, nil, "no command", "command:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := NewExec(tc.command, ExecOptions{ReadBack: tc.verify})
			_, err := x.Read(context.Background())
			checkErr(t, err, rotate.ErrInvalidTarget)
			if errors.Is(err, rotate.ErrUnreadable) {
				t.Errorf("err = %v also wraps ErrUnreadable", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want it to contain %q", err, tc.msg)
			}
			if h := errhint.Of(err); !strings.Contains(h, tc.hint) {
				t.Errorf("hint = %q, want it to contain %q", h, tc.hint)
			}
		})
	}
	// A bare name found on PATH passes.
	x := NewExec([]string{"ok"}, ExecOptions{ReadBack: []string{ok}})
	if _, err := x.Read(context.Background()); !errors.Is(err, rotate.ErrUnreadable) {
		t.Errorf("Read of a command on PATH = %v, want ErrUnreadable", err)
	}
}

func TestRedact(t *testing.T) {
	k := secret.New(newKey)
	fp := k.Fingerprint()
	other := "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"
	withheld := "[line withheld: it holds part of key " + fp + "]"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"nothing", "reloaded\n", "reloaded\n"},
		{"exact", "key=" + newKey + "\n", "key=" + fp + "\n"},
		{"twice on a line", newKey + " " + newKey, fp + " " + fp},
		{"another key", "old " + other + "\n", "old " + secret.Fingerprint(other) + "\n"},
		{"fragment", "tail " + newKey[10:20] + "\nnext\n", withheld + "\nnext\n"},
		{"wrapped", newKey[:12] + "\n" + newKey[12:24] + "\n" + newKey[24:] + "\n", withheld + "\n" + withheld + "\n" + withheld + "\n"},
		{"last four may show", "ends in " + newKey[len(newKey)-4:], "ends in " + newKey[len(newKey)-4:]},
		{"control characters", "a\x1b[2Jb\r\tc\xff\n", "a\uFFFD[2Jb\uFFFD\tc\uFFFD\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Redact(tc.in, k); got != tc.want {
				t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestCaptureTruncates: past the limit, the last incomplete line goes too,
// so that a key cut by the limit leaves no piece behind.
func TestCaptureTruncates(t *testing.T) {
	k := secret.New(newKey)
	c := &capture{limit: 100}
	line := strings.Repeat("x", 80) + "\n"
	cut := strings.Repeat("y", 10) + newKey + "\n" // crosses the limit at byte 100
	fmt.Fprint(c, line+cut+line)
	got := c.redacted(k)
	if want := line + fmt.Sprintf("[%d more bytes not shown]", len(cut)+len(line)); got != want {
		t.Errorf("redacted = %q, want %q", got, want)
	}
	noKeyPart(t, "captured output", got)

	c = &capture{limit: 10}
	fmt.Fprint(c, newKey)
	if got, want := c.redacted(k), fmt.Sprintf("[%d more bytes not shown]", len(newKey)); got != want {
		t.Errorf("redacted = %q, want %q", got, want)
	}
}

// TestExecBackgroundChild: a command that exits 0 but leaves a child (a
// daemon it started) holding its output succeeds once the grace for
// output (childWaitDelay) is over; the child is left alone.
func TestExecBackgroundChild(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	cmd := script(t, dir, "daemonize", `sleep 30 & echo $! > "$PIDFILE"; echo started`+"\n")
	t.Setenv("PIDFILE", pidFile)
	log, logs := logBuffer()
	x := NewExec([]string{cmd}, ExecOptions{Env: []string{"PIDFILE"}, Log: log})
	start := time.Now()
	if err := x.Write(context.Background(), secret.New(newKey)); err != nil {
		t.Fatalf("Write = %v, want nil", err)
	}
	if d := time.Since(start); d > childWaitDelay+5*time.Second {
		t.Errorf("Write took %s", d)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, pidFile)))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	if !alive(pid) {
		t.Errorf("the command's background child %d was killed", pid)
	}
	if !strings.Contains(logs.String(), "left its output open") {
		t.Errorf("log does not say the output was left open: %s", logs)
	}
}

// TestExecCancelKillsGroup: a cancelled rotation (a signal) ends a command
// whose child holds its output, and kills the child too.
func TestExecCancelKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	cmd := script(t, dir, "slow", `sleep 60 & echo $! > "$PIDFILE"; wait`+"\n")
	t.Setenv("PIDFILE", pidFile)
	x := NewExec([]string{cmd}, ExecOptions{Timeout: time.Hour, Env: []string{"PIDFILE"}, Log: slog.New(slog.DiscardHandler)})
	cancelledWrite(t, x, pidFile, "the command's child")
}

// TestExecEnvironment: the command gets PATH, HOME, the locale, TZ, the
// variables the target names and the key's fingerprint; none of
// keyrotate's other variables (tokens, the webhook URL).
func TestExecEnvironment(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	cmd := script(t, dir, "dump", "env > "+envFile+"\n")
	for k, v := range map[string]string{
		"HOME": dir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "VAULT_ADDR": "https://vault.example",
		"GITHUB_TOKEN": "ghp_canary", "KEYROTATE_NOTIFY_WEBHOOK": "https://hooks.example/secret",
		"GOOGLE_APPLICATION_CREDENTIALS": "/secrets/sa.json", "OTHER_SECRET": "s3cr3t",
	} {
		t.Setenv(k, v)
	}
	x := NewExec([]string{cmd}, ExecOptions{Env: []string{"VAULT_ADDR", "NOT_SET"}, Log: slog.New(slog.DiscardHandler)})
	if err := x.Write(context.Background(), secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	env := envNames(readFile(t, envFile))
	for _, want := range []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ", "VAULT_ADDR", "KEYROTATE_KEY_FINGERPRINT"} {
		if !env[want] {
			t.Errorf("the command's environment lacks %s", want)
		}
		delete(env, want)
	}
	delete(env, "PWD") // the shell's own
	delete(env, "SHLVL")
	delete(env, "_")
	delete(env, "OLDPWD")
	if len(env) > 0 {
		t.Errorf("the command's environment has more: %v", env)
	}
}

// TestExecOutputHidden: without ShowOutput nothing a command prints
// reaches the error or the log, however it encodes the key; the error says
// how much was printed.
func TestExecOutputHidden(t *testing.T) {
	dir := t.TempDir()
	cmd := script(t, dir, "noisy", `read -r k
echo "stored $k"
printf 'u:%s' "$k" | base64
printf '%s' "$k" | od -An -tx1
echo "it went wrong" >&2
exit 1
`)
	log, logs := logBuffer()
	x := NewExec([]string{cmd}, ExecOptions{Log: log})
	err := x.Write(context.Background(), secret.New(newKey))
	if err == nil {
		t.Fatal("Write of a command exiting 1 succeeded")
	}
	for _, want := range []string{"exit status 1", "not shown", "on stdout", "14 on stderr", "show_output"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	for what, s := range map[string]string{"error": err.Error(), "log": logs.String()} {
		for _, bad := range []string{"went wrong", "stored", secret.Fingerprint(newKey) + "\n"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s shows the command's output (%q): %s", what, bad, s)
			}
		}
	}
	if !strings.Contains(logs.String(), "stderr_bytes=14") {
		t.Errorf("log does not count the output: %s", logs)
	}
}

// TestRedactEncodings: a canary key printed in each encoding a child may
// use (curl -v -u prints base64 of user:key; a Windows tool UTF-16; a
// careful one folds long lines). Every line that holds the encoded key is
// withheld, so that what is left shares no more than a few characters with
// the encoded key, and the lines around it are left alone.
func TestRedactEncodings(t *testing.T) {
	k := secret.New(newKey)
	b := []byte(newKey)
	utf16 := func(bigEndian bool) string {
		var out []byte
		for _, c := range b {
			if bigEndian {
				out = append(out, 0, c)
			} else {
				out = append(out, c, 0)
			}
		}
		return string(out)
	}
	fold := func(s string, width int, nl string) string {
		var lines []string
		for len(s) > width {
			lines, s = append(lines, s[:width]), s[width:]
		}
		return strings.Join(append(lines, s), nl)
	}
	percent := func(upper bool) string {
		var sb strings.Builder
		for _, c := range b {
			f := "%%%02x"
			if upper {
				f = "%%%02X"
			}
			fmt.Fprintf(&sb, f, c)
		}
		return sb.String()
	}
	xxd := func() string { // 0000: 4151 2e41 ...  AQ.A...
		var lines []string
		for off := 0; off < len(b); off += 8 {
			chunk := b[off:min(off+8, len(b))]
			var words []string
			for i := 0; i < len(chunk); i += 2 {
				words = append(words, hex.EncodeToString(chunk[i:min(i+2, len(chunk))]))
			}
			lines = append(lines, fmt.Sprintf("%08x: %s  %s", off, strings.Join(words, " "), chunk))
		}
		return strings.Join(lines, "\n")
	}
	var escaped strings.Builder
	for _, c := range b {
		fmt.Fprintf(&escaped, `\x%02x`, c)
	}
	for _, tc := range []struct{ name, enc string }{
		{"UTF-16LE", "data: " + utf16(false)},
		{"UTF-16BE", "data: " + utf16(true)},
		{"UTF-16LE folded", fold(utf16(false), 12, "\n")},
		{"base64 of u:key (curl -v -u)", "> Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+newKey))},
		{"base64 of us:key", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("us:"+newKey))},
		{"base64 of use:key", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("use:"+newKey))},
		{"base64url", "token=" + base64.RawURLEncoding.EncodeToString([]byte("\xfb\xff"+newKey+"\xfe"))},
		{"base64 folded", fold(base64.StdEncoding.EncodeToString([]byte("u:"+newKey)), 10, "\n")},
		{"hex", "key " + hex.EncodeToString(b)},
		{"HEX", "key " + strings.ToUpper(hex.EncodeToString(b))},
		{"hex folded", fold(hex.EncodeToString(b), 6, "\n")},
		{"xxd", xxd()},
		{"URL-encoded", "GET /?key=" + percent(false)},
		{"URL-encoded upper case", "key=" + percent(true)},
		{`\x escapes`, `"` + escaped.String() + `"`},
		{"folded at 3", fold(newKey, 3, "\n")},
		{"folded at 1", fold(newKey, 1, "\n")},
		{"folded at 4, CRLF", fold(newKey, 4, "\r\n")},
		{"folded with indent", fold(newKey, 4, "\n    ")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := "before\n" + tc.enc + "\nafter\n"
			got := Redact(in, k)
			if !strings.HasPrefix(got, "before\n") || !strings.HasSuffix(got, "\nafter\n") {
				t.Errorf("Redact changed the lines around the key: %q", got)
			}
			if !strings.Contains(got, "[line withheld: it holds part of key "+k.Fingerprint()+"]") {
				t.Errorf("Redact withheld nothing: %q", got)
			}
			var left strings.Builder
			for _, line := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(got, "before\n"), "after\n"), "\n") {
				if !strings.HasPrefix(line, "[line withheld") {
					left.WriteString(line)
				}
			}
			strip := func(s string) string {
				return strings.Map(func(r rune) rune {
					if unicode.IsSpace(r) || r == 0 || r == utf8.RuneError {
						return -1
					}
					return r
				}, s)
			}
			// The encoded key: enc, or for xxd (which frames it with
			// offsets) its two columns.
			material := []string{tc.enc}
			if tc.name == "xxd" {
				material = []string{hex.EncodeToString(b), newKey}
			}
			for _, m := range material {
				if n := longestCommon(strip(left.String()), strip(m)); n > 4 {
					t.Errorf("the lines left share %d characters with the encoded key: %q", n, left.String())
				}
			}
		})
	}
}

// longestCommon returns the length of the longest common substring of a
// and b.
func longestCommon(a, b string) int {
	best := 0
	prev := make([]int, len(b)+1)
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		for j := 1; j <= len(b); j++ {
			if a[i-1] == b[j-1] {
				cur[j] = prev[j-1] + 1
				best = max(best, cur[j])
			}
		}
		prev = cur
	}
	return best
}
