package targets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// fakeDocker puts a docker command first on PATH that logs its arguments
// and stdin-free output, and exits with code.
func fakeDocker(t *testing.T, script string) (logPath string) {
	t.Helper()
	dir := t.TempDir()
	logPath = filepath.Join(dir, "docker.log")
	body := "#!/bin/sh\necho \"$@\" >> " + logPath + "\n" + script + "\n"
	if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return logPath
}

func TestComposeReload(t *testing.T) {
	const oldKey, newKey = "AIzaSyOLD-old-old-old-old-old-old-00000", "AQ.new-key-new-key-new-key-new-key-0000"
	dir := t.TempDir()
	path := filepath.Join(dir, "compose.yaml")
	src := "services:\n  api:\n    image: x\n    environment:\n      GEMINI_API_KEY: " + oldKey + "\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("recreates the services after the write, and on a rerun", func(t *testing.T) {
		log := fakeDocker(t, "exit 0")
		c := NewCompose(path, []string{"api"}, "GEMINI_API_KEY")
		c.EnableReload(0)
		if !c.Reloads() {
			t.Fatal("Reloads() = false with reload enabled")
		}
		if _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ { // the second Write finds the key in place and still reloads
			if err := c.Write(ctx, secret.New(newKey)); err != nil {
				t.Fatalf("Write #%d: %v", i+1, err)
			}
		}
		b, _ := os.ReadFile(log)
		want := "compose -f " + path + " up -d --no-deps --wait api\n"
		if string(b) != want+want {
			t.Errorf("docker ran %q, want %q twice", b, want)
		}
	})

	t.Run("a failed reload is an error without the key", func(t *testing.T) {
		fakeDocker(t, "echo 'container api: GEMINI_API_KEY="+newKey+" unhealthy' >&2; exit 1")
		c := NewCompose(path, []string{"api"}, "GEMINI_API_KEY")
		c.EnableReload(0)
		if _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		err := c.Write(ctx, secret.New(newKey))
		if err == nil || !strings.Contains(err.Error(), "unhealthy") {
			t.Fatalf("Write = %v, want the reload's failure", err)
		}
		if strings.Contains(err.Error(), newKey) || strings.Contains(errhint.Of(err), newKey) {
			t.Errorf("the error shows the key: %v", err)
		}
	})

	t.Run("no docker command stops preflight", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		c := NewCompose(path, []string{"api"}, "GEMINI_API_KEY")
		c.EnableReload(0)
		if _, err := c.Read(ctx); !errors.Is(err, rotate.ErrInvalidTarget) {
			t.Errorf("Read without docker = %v, want ErrInvalidTarget", err)
		}
	})
}

// grandchildPID reads the pid a fake child wrote into path.
func grandchildPID(t *testing.T, path string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, path)))
	if err != nil {
		t.Fatalf("pid file %s: %v", path, err)
	}
	return pid
}

// dies fails the test unless pid is gone within a few seconds (and kills
// it then, so that nothing outlives the test).
func dies(t *testing.T, pid int, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); alive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("%s %d is still alive", what, pid)
			syscall.Kill(pid, syscall.SIGKILL)
			return
		}
	}
}

// hangingDocker is a docker whose child keeps the output pipe open and
// which never exits itself; it writes the child's pid into the returned
// file.
func hangingDocker(t *testing.T) (pidFile string) {
	t.Helper()
	pidFile = filepath.Join(t.TempDir(), "pid")
	fakeDocker(t, "echo pulling; sleep 60 & echo $! > "+pidFile+"; wait")
	return pidFile
}

func reloadingCompose(t *testing.T, timeout time.Duration) *Compose {
	t.Helper()
	path := filepath.Join(t.TempDir(), "compose.yaml")
	writeFile(t, path, "services:\n  api:\n    image: x\n    environment:\n      GEMINI_API_KEY: "+oldKey+"\n", 0o600)
	c := NewCompose(path, []string{"api"}, "GEMINI_API_KEY")
	c.EnableReload(timeout)
	if _, err := c.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestComposeReloadTimeout: docker's child keeps the pipe open and docker
// never exits. The reload ends at its timeout (plus the grace for the
// pipes, on a loaded machine), the whole process group is dead, and the
// error says what happened on one line.
//
// Docker must have started its child before the timeout for the test to
// see that child killed; a reload that timed out before (a loaded
// machine: see TestExecTimeout) runs again with twice the timeout.
func TestComposeReloadTimeout(t *testing.T) {
	pidFile := hangingDocker(t)
	for timeout := 300 * time.Millisecond; ; timeout *= 2 {
		c := reloadingCompose(t, timeout)
		start := time.Now()
		err := c.Write(context.Background(), secret.New(newKey))
		took := time.Since(start)
		if err == nil {
			t.Fatal("Write with a reload that never ends succeeded")
		}
		if took > timeout+5*time.Second {
			t.Errorf("Write took %s with a reload timeout of %s", took, timeout)
		}
		if want := fmt.Sprintf("did not finish within %s; its process group was killed", timeout); !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want it to name the timeout and the kill (%q)", err, want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error spans several lines: %q", err)
		}
		if h := errhint.Of(err); !strings.Contains(h, "timeout") {
			t.Errorf("hint = %q, want one about the timeout", h)
		}
		if b, _ := os.ReadFile(pidFile); len(bytes.TrimSpace(b)) > 0 {
			break
		}
		if timeout >= 5*time.Second {
			t.Fatalf("docker never started its child before the reload's timeout (%s)", timeout)
		}
		t.Logf("docker had not started its child within %s; again with twice the timeout", timeout)
	}
	dies(t, grandchildPID(t, pidFile), "docker's child")
}

// TestComposeReloadCancelled: a signal (ctx done) ends the reload at once
// and kills docker's process group.
func TestComposeReloadCancelled(t *testing.T) {
	pidFile := hangingDocker(t)
	c := reloadingCompose(t, time.Hour)
	cancelledWrite(t, c, pidFile, "docker's child")
}

// cancelledWrite calls Write with a context cancelled once the child has
// written pidFile; Write must return context.Canceled within seconds and
// the child must die.
func cancelledWrite(t *testing.T, target rotate.Target, pidFile, what string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for !fileExists(pidFile) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	err := target.Write(ctx, secret.New(newKey))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Write = %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Write took %s after cancel", took)
	}
	dies(t, grandchildPID(t, pidFile), what)
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Size() > 0
}

// TestComposeReloadEscapedChild: a child that left docker's process group
// (setsid) cannot be killed with it, but it cannot hold the reload either:
// the pipes are closed childWaitDelay after the kill.
func TestComposeReloadEscapedChild(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid command on this machine")
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	fakeDocker(t, "setsid sh -c 'echo $$ > "+pidFile+"; exec sleep 60' & wait")
	c := reloadingCompose(t, 300*time.Millisecond)
	start := time.Now()
	err := c.Write(context.Background(), secret.New(newKey))
	took := time.Since(start)
	for !fileExists(pidFile) && time.Since(start) < 5*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	defer syscall.Kill(grandchildPID(t, pidFile), syscall.SIGKILL)
	if err == nil || !strings.Contains(err.Error(), "did not finish within 300ms") {
		t.Errorf("Write = %v, want the timeout", err)
	}
	if took > 300*time.Millisecond+childWaitDelay+5*time.Second {
		t.Errorf("Write took %s with a timeout of 300ms", took)
	}
}

// TestComposeReloadOutput: docker's output ends the error on one line
// (a line break in it would print as one more "error:" line of keyrotate's),
// redacted.
func TestComposeReloadOutput(t *testing.T) {
	fakeDocker(t, "echo 'container api: unhealthy' >&2; echo 'dependency failed to start: GEMINI_API_KEY="+newKey+"' >&2; exit 1")
	c := reloadingCompose(t, time.Minute)
	err := c.Write(context.Background(), secret.New(newKey))
	if err == nil {
		t.Fatal("Write with a failing reload succeeded")
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error spans several lines: %q", err)
	}
	for _, want := range []string{"exit status 1", "container api: unhealthy", "dependency failed to start"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	noKeyPart(t, "error", err.Error())
}

// TestComposeReloadEnvironment: docker gets its own variables, compose's,
// and the ones the file refers to; not keyrotate's other secrets.
func TestComposeReloadEnvironment(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	fakeDocker(t, "env > "+envFile)
	for k, v := range map[string]string{
		"DOCKER_HOST": "unix:///run/user/1000/docker.sock", "DOCKER_CONFIG": "/cfg", "DOCKER_CONTEXT": "ctx",
		"XDG_RUNTIME_DIR": "/run/user/1000", "COMPOSE_PROJECT_NAME": "chat", "IMAGE_TAG": "1.4", "LOG_LEVEL": "debug",
		"LANG": "C.UTF-8", "TZ": "UTC",
		"GITHUB_TOKEN": "ghp_canary", "KEYROTATE_NOTIFY_WEBHOOK": "https://hooks.example/secret", "OTHER_SECRET": "s3cr3t",
	} {
		t.Setenv(k, v)
	}
	path := filepath.Join(dir, "compose.yaml")
	writeFile(t, path, "services:\n  api:\n    image: chat/api:${IMAGE_TAG:-latest}\n    environment:\n      GEMINI_API_KEY: "+oldKey+"\n      LOG: $LOG_LEVEL\n", 0o600)
	c := NewCompose(path, []string{"api"}, "GEMINI_API_KEY")
	c.EnableReload(time.Minute)
	if _, err := c.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(context.Background(), secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	env := envNames(readFile(t, envFile))
	for _, want := range []string{"PATH", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "XDG_RUNTIME_DIR", "COMPOSE_PROJECT_NAME", "IMAGE_TAG", "LOG_LEVEL", "LANG", "TZ"} {
		if !env[want] {
			t.Errorf("docker's environment lacks %s", want)
		}
	}
	for _, bad := range []string{"GITHUB_TOKEN", "KEYROTATE_NOTIFY_WEBHOOK", "OTHER_SECRET"} {
		if env[bad] {
			t.Errorf("docker's environment has %s", bad)
		}
	}
}

// envNames returns the names in the output of env.
func envNames(out string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if name, _, ok := strings.Cut(line, "="); ok {
			names[name] = true
		}
	}
	return names
}
