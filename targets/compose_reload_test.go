package targets

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/secret"
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
		if strings.Contains(err.Error(), newKey) || strings.Contains(rotate.Hint(err), newKey) {
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
