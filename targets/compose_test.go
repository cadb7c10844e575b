package targets

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// composeMap is a realistic compose file in the map form: comments
// everywhere, an anchor and merge keys elsewhere, two services holding the
// key and one that does not.
const composeMap = `# Production stack for the chat service.
# Rotated by keyrotate: edit values by hand only outside rotations.
x-common: &common
  restart: unless-stopped   # survive reboots
  logging:
    driver: json-file
    options: {max-size: "10m", max-file: "3"}

services:
  api:  # the public API
    <<: *common
    image: ghcr.io/acme/chat-api:1.4.2
    environment:
      APP_ENV: production   # not staging
      # The Gemini key: keep it on one line.
      GEMINI_API_KEY: ` + oldKey + `  # rotated by keyrotate
      GEMINI_MODEL: "gemini-2.5-flash"
    ports:
      - "8080:8080"

  worker:
    <<: *common
    image: ghcr.io/acme/chat-worker:1.4.2
    environment:
      GEMINI_API_KEY: "` + oldKey + `"
      QUEUE: redis://queue:6379/0

  db:
    image: postgres:16   # pinned
    environment:
      POSTGRES_PASSWORD: example
`

// composeList is the list form, quoted and unquoted.
const composeList = `services:
  api:
    build: .
    environment:
      - APP_ENV=production
      - "GEMINI_API_KEY=` + oldKey + `"   # quoted, as the docs show
      - 'GEMINI_MODEL=gemini-2.5-flash'
  worker:
    environment:
      # comment inside the list
      - GEMINI_API_KEY=` + oldKey + `
      - OTHER_KEY=` + "AQ.not-ours" + `
volumes:
  data: {}
`

var composeCases = []struct {
	name     string
	content  string
	services []string
}{
	{"map form, two of three services", composeMap, []string{"api", "worker"}},
	{"map form, one service", strings.Replace(composeMap, "GEMINI_API_KEY: "+oldKey, "GEMINI_API_KEY: AQ.staging", 1), []string{"worker"}},
	{"list form", composeList, []string{"worker", "api"}},
	{"single-quoted map value", "services:\n  api:\n    environment:\n      GEMINI_API_KEY: '" + oldKey + "'\n", []string{"api"}},
	{"CRLF, no trailing newline", "services:\r\n  api:\r\n    environment:\r\n      - GEMINI_API_KEY=" + oldKey + "\r\n  web:\r\n    environment:\r\n      GEMINI_API_KEY: " + oldKey, []string{"api", "web"}},
	{"flow mapping", "services:\n  api: {image: x, environment: {A: b, GEMINI_API_KEY: " + oldKey + "}}\n", []string{"api"}},
	{"flow list", "services:\n  api:\n    environment: [A=b, \"GEMINI_API_KEY=" + oldKey + "\"]\n", []string{"api"}},
	{"byte order mark and non-ASCII comments", "\ufeff# Diensté — Übersicht\nservices:\n  api:\n    environment:\n      NAME: \"café\"  # ünïcode\n      GEMINI_API_KEY: " + oldKey + "\n", []string{"api"}},
	{"tabs in comments, key quoted", "services:\n  api:\n    environment:\n      \"GEMINI_API_KEY\": " + oldKey + "\t# tab before\n", []string{"api"}},
	{"literal dollar elsewhere", "services:\n  api:\n    command: echo $$HOME\n    environment:\n      PRICE: \"$$5\"\n      GEMINI_API_KEY: " + oldKey + "\n", []string{"api"}},
	{"merge keys and anchors around the environment", "x-env: &env\n  LOG: info\nservices:\n  api:\n    environment:\n      <<: *env\n      GEMINI_API_KEY: " + oldKey + "\n    labels: &labels\n      a: b\n  other:\n    labels: *labels\n", []string{"api"}},
}

func TestComposeRoundTrip(t *testing.T) {
	for _, tt := range composeCases {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "docker-compose.yml")
			writeFile(t, path, tt.content, 0o640)
			c := NewCompose(path, tt.services, "GEMINI_API_KEY")

			got, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("Read = %v", err)
			}
			if !got.Equal(secret.New(oldKey)) {
				t.Fatalf("Read = %v, want %v", got, secret.New(oldKey))
			}
			if err := c.Write(ctx, secret.New(newKey)); err != nil {
				t.Fatalf("Write = %v", err)
			}
			want := strings.ReplaceAll(tt.content, oldKey, newKey)
			if got := readFile(t, path); got != want {
				t.Errorf("file after Write = %q, want %q", got, want)
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode() != 0o640 {
				t.Errorf("mode after Write = %v, %v, want %v", fi.Mode(), err, fs.FileMode(0o640))
			}
			got, err = c.Read(ctx)
			if err != nil || !got.Equal(secret.New(newKey)) {
				t.Fatalf("Read after Write = %v, %v, want %v", got, err, secret.New(newKey))
			}
			// Back again without a Read: the baseline is what the last
			// Write wrote (abort restores the old key this way).
			if err := c.Write(ctx, secret.New(oldKey)); err != nil {
				t.Fatalf("second Write = %v", err)
			}
			if got := readFile(t, path); got != tt.content {
				t.Errorf("file after second Write = %q, want %q", got, tt.content)
			}
			assertNoTemp(t, filepath.Dir(path))
		})
	}
}

func TestComposeReadInvalid(t *testing.T) {
	env := func(lines ...string) string {
		return "services:\n  api:\n    image: x\n    environment:\n" + strings.Join(lines, "") + "  worker:\n    environment:\n      GEMINI_API_KEY: " + oldKey + "\n"
	}
	tests := []struct {
		name     string
		content  string
		services []string
		wantMsg  []string // in the error
		wantHint string
	}{
		{"missing service", composeMap, []string{"api", "frontend"}, []string{"service frontend not found"}, "api, worker, db"},
		{"missing var", env("      OTHER: x\n"), []string{"api"}, []string{"not in the environment of service api", "line 2"}, "add GEMINI_API_KEY"},
		{"no environment", "services:\n  api:\n    image: x\n    env_file: .env\n", []string{"api"}, []string{"not in the environment of service api"}, "dotenv target"},
		{"empty environment", "services:\n  api:\n    environment:\n", []string{"api"}, []string{"not in the environment"}, "add GEMINI_API_KEY"},
		{"var twice, map", env("      GEMINI_API_KEY: " + oldKey + "\n      # again\n      GEMINI_API_KEY: " + oldKey + "\n"), []string{"api"}, []string{"more than once", "service api", "lines 5 and 7"}, "keep one definition"},
		{"var twice, list", "services:\n  api:\n    environment:\n      - GEMINI_API_KEY=" + oldKey + "\n      - GEMINI_API_KEY\n", []string{"api"}, []string{"more than once", "lines 4 and 5"}, "delete the others"},
		{"braced reference", env("      GEMINI_API_KEY: ${GEMINI_API_KEY}\n"), []string{"api"}, []string{"reference to ${GEMINI_API_KEY}", "service api", "line 5"}, "dotenv target on that .env file (var GEMINI_API_KEY)"},
		{"plain reference, list", "services:\n  api:\n    environment:\n      - GEMINI_API_KEY=$PROD_KEY\n", []string{"api"}, []string{"reference to ${PROD_KEY}", "line 4"}, "dotenv target"},
		{"reference with a default", env("      GEMINI_API_KEY: \"${GEMINI_API_KEY:-" + oldKey + "}\"\n"), []string{"api"}, []string{"reference"}, "dotenv target"},
		{"pass-through, list", "services:\n  api:\n    environment:\n      - GEMINI_API_KEY\n", []string{"api"}, []string{"has no value", "line 4"}, "dotenv target"},
		{"pass-through, map", env("      GEMINI_API_KEY:\n"), []string{"api"}, []string{"has no value", "line 5"}, "dotenv target"},
		{"services disagree", env("      GEMINI_API_KEY: " + newKey + "\n"), []string{"api", "worker"}, []string{"disagree", "api (line 5)", "worker (line 8)"}, "same"},
		{"three services, two agree", strings.Replace(composeMap, "POSTGRES_PASSWORD: example", "GEMINI_API_KEY: "+newKey, 1), []string{"api", "worker", "db"}, []string{"disagree", "api (line 16) and worker (line 25) hold one value, db (line 31) holds another"}, "own slot"},
		{"block scalar", env("      GEMINI_API_KEY: |\n        " + oldKey + "\n"), []string{"api"}, []string{"block scalar"}, "on one line"},
		{"escapes", env("      GEMINI_API_KEY: \"AQ\\x41" + oldKey[3:] + "\"\n"), []string{"api"}, []string{"escapes"}, "without escapes"},
		{"two lines", env("      GEMINI_API_KEY: AQ.first\n        second\n"), []string{"api"}, []string{"several lines"}, "on one line"},
		{"anchor on the value", env("      GEMINI_API_KEY: &k " + oldKey + "\n"), []string{"api"}, []string{"anchor or a tag"}, "anchors"},
		{"alias value", "x: &k " + oldKey + "\nservices:\n  api:\n    environment:\n      GEMINI_API_KEY: *k\n", []string{"api"}, []string{"is an alias"}, "not through an alias"},
		{"shared environment", "x-env: &env\n  GEMINI_API_KEY: " + oldKey + "\nservices:\n  api:\n    environment: *env\n", []string{"api"}, []string{"environment of service api", "alias"}, "shared anchor"},
		{"merged environment", "x: &base\n  environment:\n    GEMINI_API_KEY: " + oldKey + "\nservices:\n  api:\n    <<: *base\n", []string{"api"}, []string{"merge key"}, "shared anchor"},
		{"merged variable", "x: &e\n  GEMINI_API_KEY: " + oldKey + "\nservices:\n  api:\n    environment:\n      <<: *e\n", []string{"api"}, []string{"merge key"}, "shared anchor"},
		{"service twice", "services:\n  api:\n    environment: {GEMINI_API_KEY: a}\n  api:\n    environment: {GEMINI_API_KEY: a}\n", []string{"api"}, []string{"service api is defined more than once", "lines 2 and 4"}, "keep one definition"},
		{"environment twice", "services:\n  api:\n    environment: {GEMINI_API_KEY: a}\n    environment: {GEMINI_API_KEY: a}\n", []string{"api"}, []string{"more than one environment", "lines 3 and 4"}, "keep one environment"},
		{"no services", "version: '3'\napi:\n  environment:\n    GEMINI_API_KEY: x\n", []string{"api"}, []string{"no services: section"}, "services:"},
		{"not YAML", "services:\n  api: [\n", []string{"api"}, []string{"not a compose file"}, "fix the YAML"},
		{"empty file", "", []string{"api"}, []string{"empty"}, "fix the YAML"},
		{"two documents", "services: {}\n---\nservices: {}\n", []string{"api"}, []string{"more than one YAML document"}, "fix the YAML"},
		{"not UTF-8", "services:\n  api:\n    environment:\n      A: \"\xff\"\n      GEMINI_API_KEY: x\n", []string{"api"}, []string{"not a compose file"}, "fix the YAML"},
		{"environment is a string", "services:\n  api:\n    environment: GEMINI_API_KEY=x\n", []string{"api"}, []string{"neither a list nor a mapping"}, "as a list"},
		{"value is a mapping", env("      GEMINI_API_KEY: {a: b}\n"), []string{"api"}, []string{"not a single value"}, "GEMINI_API_KEY: <current key>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "compose.yaml")
			writeFile(t, path, tt.content, 0o600)
			c := NewCompose(path, tt.services, "GEMINI_API_KEY")
			_, err := c.Read(context.Background())
			checkErr(t, err, rotate.ErrInvalidTarget)
			msg := err.Error()
			for _, w := range append(tt.wantMsg, path) {
				if !strings.Contains(msg, w) {
					t.Errorf("Read error %q: want it to contain %q", msg, w)
				}
			}
			if h := errhint.Of(err); !strings.Contains(h, tt.wantHint) {
				t.Errorf("Read hint %q: want it to contain %q", h, tt.wantHint)
			}
			noKeyIn(t, "String", c.String())
		})
	}

	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "compose.yaml")
		_, err := NewCompose(path, []string{"api"}, "GEMINI_API_KEY").Read(context.Background())
		checkErr(t, err, rotate.ErrInvalidTarget)
	})
	t.Run("dangling symlink", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "compose.yaml")
		if err := os.Symlink("nowhere", path); err != nil {
			t.Fatal(err)
		}
		_, err := NewCompose(path, []string{"api"}, "GEMINI_API_KEY").Read(context.Background())
		checkErr(t, err, rotate.ErrInvalidTarget)
	})
	t.Run("directory", func(t *testing.T) {
		_, err := NewCompose(t.TempDir(), []string{"api"}, "GEMINI_API_KEY").Read(context.Background())
		checkErr(t, err, rotate.ErrInvalidTarget)
	})
}

func TestComposeReadNotWritable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: file permissions do not apply (TestComposeReadNotWritableSimulated covers the error)")
	}
	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "compose.yaml")
		writeFile(t, path, composeMap, 0o400)
		_, err := NewCompose(path, []string{"api"}, "GEMINI_API_KEY").Read(context.Background())
		checkErr(t, err, rotate.ErrInvalidTarget)
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "compose.yaml")
		writeFile(t, path, composeMap, 0o600)
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		_, err := NewCompose(path, []string{"api"}, "GEMINI_API_KEY").Read(context.Background())
		checkErr(t, err, rotate.ErrInvalidTarget)
	})
}

func TestComposeReadNotWritableSimulated(t *testing.T) {
	for _, which := range []string{"file", "directory"} {
		t.Run(which, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "compose.yaml")
			writeFile(t, path, composeMap, 0o600)
			c := NewCompose(path, []string{"api"}, "GEMINI_API_KEY")
			c.writable = func(p string) error {
				if which == "directory" {
					p = filepath.Dir(p)
				}
				return &fs.PathError{Op: "check write access", Path: p, Err: syscall.EACCES}
			}
			_, err := c.Read(context.Background())
			checkErr(t, err, rotate.ErrInvalidTarget)
			if !errors.Is(err, fs.ErrPermission) {
				t.Errorf("Read = %v, want it to wrap fs.ErrPermission too", err)
			}
			if h := errhint.Of(err); !strings.Contains(h, "writable") {
				t.Errorf("hint %q does not say what to make writable", h)
			}
		})
	}
}

func TestComposeWriteIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "compose.yaml")
	writeFile(t, path, composeMap, 0o600)
	c := NewCompose(path, []string{"api", "worker"}, "GEMINI_API_KEY")
	if _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, secret.New(oldKey)); err != nil {
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

func TestComposeSymlink(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	realDir := filepath.Join(dir, "deploy")
	if err := os.Mkdir(realDir, 0o755); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(realDir, "compose.prod.yaml")
	writeFile(t, real, composeList, 0o640)
	link := filepath.Join(dir, "docker-compose.yml")
	if err := os.Symlink("deploy/compose.prod.yaml", link); err != nil {
		t.Fatal(err)
	}
	c := NewCompose(link, []string{"api", "worker"}, "GEMINI_API_KEY")
	if _, err := c.Read(ctx); err != nil {
		t.Fatalf("Read = %v", err)
	}
	if err := c.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatalf("Write = %v", err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("%s is no longer a symlink: %v, %v", link, fi.Mode(), err)
	}
	if got, want := readFile(t, real), strings.ReplaceAll(composeList, oldKey, newKey); got != want {
		t.Errorf("real file = %q, want %q", got, want)
	}
	if fi, err := os.Stat(real); err != nil || fi.Mode() != 0o640 {
		t.Errorf("real file mode = %v, %v, want %v", fi.Mode(), err, fs.FileMode(0o640))
	}
	assertNoTemp(t, realDir)
	assertNoTemp(t, dir)
	// CleanTemp looks where Write puts its temporary files.
	leftover := filepath.Join(realDir, tempPrefix(real)+"1.tmp")
	writeFile(t, leftover, "x", 0o600)
	if removed, err := CleanTemp(context.Background(), link); err != nil || len(removed) != 1 || removed[0] != leftover {
		t.Errorf("CleanTemp(%s) = %q, %v, want %s removed", link, removed, err, leftover)
	}
}

func TestComposeWriteChanged(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"value changed to a third key", func(t *testing.T, path string) {
			writeFile(t, path, strings.ReplaceAll(composeMap, oldKey, thirdKey), 0o600)
		}},
		{"symlink retargeted", func(t *testing.T, path string) {
			other := filepath.Join(filepath.Dir(path), "other.yaml")
			writeFile(t, other, composeMap, 0o600)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("other.yaml", path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "compose.yaml")
			writeFile(t, path, composeMap, 0o600)
			c := NewCompose(path, []string{"api", "worker"}, "GEMINI_API_KEY")
			if _, err := c.Read(ctx); err != nil {
				t.Fatal(err)
			}
			tt.change(t, path)
			before := readFile(t, path)
			checkErr(t, c.Write(ctx, secret.New(newKey)), rotate.ErrTargetChanged)
			if got := readFile(t, path); got != before {
				t.Errorf("file after refused Write = %q, want untouched %q", got, before)
			}
			assertNoTemp(t, filepath.Dir(path))
		})
	}
	t.Run("missing file", func(t *testing.T) {
		ctx := context.Background()
		path := filepath.Join(t.TempDir(), "compose.yaml")
		writeFile(t, path, composeMap, 0o600)
		c := NewCompose(path, []string{"api"}, "GEMINI_API_KEY")
		if _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		os.Remove(path)
		checkErr(t, c.Write(ctx, secret.New(newKey)), rotate.ErrInvalidTarget)
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Write recreated the removed file: %v", err)
		}
	})
}

// TestComposeWriteMerges: like DotEnv, a Write merges its value into the
// file as it is now, keeping edits made elsewhere since the Read.
func TestComposeWriteMerges(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "compose.yaml")
	writeFile(t, path, composeMap, 0o600)
	c := NewCompose(path, []string{"api", "worker"}, "GEMINI_API_KEY")
	if _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(composeMap, "# pinned", "# pinned!", 1)
	writeFile(t, path, edited, 0o600)
	if err := c.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatalf("Write = %v, want nil", err)
	}
	if got, want := readFile(t, path), strings.ReplaceAll(edited, oldKey, newKey); got != want {
		t.Errorf("file after Write = %q, want %q", got, want)
	}
}

func TestComposeWriteUnfitKey(t *testing.T) {
	tests := []struct {
		name, content, key string
	}{
		{"space in plain value", "services:\n  api:\n    environment:\n      GEMINI_API_KEY: " + oldKey + "\n", newKey + " #x"},
		{"number in plain value", "services:\n  api:\n    environment:\n      GEMINI_API_KEY: " + oldKey + "\n", "12345"},
		{"quote in double quotes", "services:\n  api:\n    environment:\n      - \"GEMINI_API_KEY=" + oldKey + "\"\n", newKey + "\""},
		{"quote in single quotes", "services:\n  api:\n    environment:\n      GEMINI_API_KEY: '" + oldKey + "'\n", newKey + "'"},
		{"line break", "services:\n  api:\n    environment:\n      GEMINI_API_KEY: \"" + oldKey + "\"\n", newKey + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "compose.yaml")
			writeFile(t, path, tt.content, 0o600)
			c := NewCompose(path, []string{"api"}, "GEMINI_API_KEY")
			if _, err := c.Read(ctx); err != nil {
				t.Fatal(err)
			}
			err := c.Write(ctx, secret.New(tt.key))
			checkErr(t, err, rotate.ErrInvalidTarget)
			if got := readFile(t, path); got != tt.content {
				t.Errorf("file after refused Write = %q, want untouched", got)
			}
		})
	}
	t.Run("dollar escaped", func(t *testing.T) {
		ctx := context.Background()
		path := filepath.Join(t.TempDir(), "compose.yaml")
		content := "services:\n  api:\n    environment:\n      - GEMINI_API_KEY=" + oldKey + "\n"
		writeFile(t, path, content, 0o600)
		c := NewCompose(path, []string{"api"}, "GEMINI_API_KEY")
		if _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Write(ctx, secret.New("AQ.a$b")); err != nil {
			t.Fatalf("Write = %v", err)
		}
		if got, want := readFile(t, path), strings.Replace(content, oldKey, "AQ.a$$b", 1); got != want {
			t.Errorf("file = %q, want %q", got, want)
		}
		if k, err := c.Read(ctx); err != nil || !k.Equal(secret.New("AQ.a$b")) {
			t.Errorf("Read = %v, %v, want the key with one $", k, err)
		}
	})
}

func TestComposeWriteWithoutRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "compose.yaml")
	writeFile(t, path, composeMap, 0o600)
	err := NewCompose(path, []string{"api"}, "GEMINI_API_KEY").Write(context.Background(), secret.New(newKey))
	if err == nil {
		t.Fatal("Write without Read = nil, want an error")
	}
	noKeyIn(t, "error", err.Error())
	if got := readFile(t, path); got != composeMap {
		t.Errorf("file after refused Write = %q, want untouched", got)
	}
}

func TestComposeContextCanceled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "compose.yaml")
	writeFile(t, path, composeMap, 0o600)
	c := NewCompose(path, []string{"api"}, "GEMINI_API_KEY")
	if _, err := c.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Read(canceled) = %v, want context.Canceled", err)
	}
	if err := c.Write(ctx, secret.New(newKey)); !errors.Is(err, context.Canceled) {
		t.Errorf("Write(canceled) = %v, want context.Canceled", err)
	}
	if got := readFile(t, path); got != composeMap {
		t.Errorf("file after canceled Write = %q, want untouched", got)
	}
}

func TestComposeString(t *testing.T) {
	tests := []struct {
		services []string
		want     string
	}{
		{[]string{"api"}, "compose:deploy/docker-compose.yml#api/GEMINI_API_KEY"},
		{[]string{"api", "worker.v2"}, "compose:deploy/docker-compose.yml#api,worker.v2/GEMINI_API_KEY"},
	}
	for _, tt := range tests {
		if got := NewCompose("deploy/docker-compose.yml", tt.services, "GEMINI_API_KEY").String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

// TestComposeNoKeyInOutput runs failing paths whose files hold the canary
// keys in many places and checks that no error, hint or String holds one.
func TestComposeNoKeyInOutput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	contents := []string{
		"services:\n  api:\n    environment:\n      GEMINI_API_KEY: " + oldKey + "\n      GEMINI_API_KEY: " + newKey + "\n",
		"services:\n  api:\n    environment:\n      GEMINI_API_KEY: " + oldKey + "\n  " + newKey + ":\n    environment:\n      GEMINI_API_KEY: " + newKey + "\n",
		"services:\n  api:\n    environment:\n      GEMINI_API_KEY: \"${X:-" + oldKey + "}\"\n",
		"services:\n  api:\n    environment:\n      GEMINI_API_KEY: \"" + oldKey + "\\n\"\n",
		"services:\n  api:\n    environment:\n      " + oldKey + ": x\n",
		"services:\n  api:\n    environment: [" + oldKey + "\n",
		oldKey + ": [" + newKey + "\n",
		"services:\n  api:\n    environment:\n      GEMINI_API_KEY: " + oldKey + "\n  worker:\n    environment:\n      - GEMINI_API_KEY=" + newKey + "\n",
	}
	for i, content := range contents {
		path := filepath.Join(dir, "compose"+string(rune('a'+i))+".yaml")
		writeFile(t, path, content, 0o600)
		c := NewCompose(path, []string{"api", "worker"}, "GEMINI_API_KEY")
		_, err := c.Read(ctx)
		checkErr(t, err, rotate.ErrInvalidTarget)
		noKeyIn(t, "String", c.String())
	}
	path := filepath.Join(dir, "compose.yaml")
	writeFile(t, path, composeMap, 0o600)
	c := NewCompose(path, []string{"api", "worker"}, "GEMINI_API_KEY")
	k, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	noKeyIn(t, "formatted key", k.String()+k.GoString())
	writeFile(t, path, strings.ReplaceAll(composeMap, oldKey, thirdKey), 0o600)
	err = c.Write(ctx, secret.New(newKey))
	checkErr(t, err, rotate.ErrTargetChanged)
	noKeyIn(t, "error", err.Error())
	noKeyIn(t, "hint", errhint.Of(err))
}

// FuzzCompose checks the splice: for any input that parses and holds a
// variable in a service's environment, writing a new key yields a file in
// which every byte outside the values' ranges is unchanged, and which
// parses back to the new key in every service.
func FuzzCompose(f *testing.F) {
	for _, tt := range composeCases {
		f.Add([]byte(tt.content))
	}
	f.Add([]byte("services:\n  a:\n    environment: {K: v}\n  b:\n    environment: [K=v]\n"))
	f.Add([]byte("services:\n  a:\n    environment:\n      K: 'v'\n      L: \"w\"\n"))
	f.Add([]byte("services: {a: {environment: {K: \"\"}}}"))
	f.Add([]byte("services:\r  a:\r    environment:\r      - K=\u00e9\u2028"))
	f.Fuzz(func(t *testing.T, in []byte) {
		services, variable := fuzzTarget(in)
		if variable == "" {
			return
		}
		c := NewCompose("fuzz.yml", services, variable)
		vals, err := c.locate(in)
		if err != nil { // perhaps the services disagree: try the first alone
			c = NewCompose("fuzz.yml", services[:1], variable)
			vals, err = c.locate(in)
		}
		if err != nil {
			if !errors.Is(err, rotate.ErrInvalidTarget) {
				t.Fatalf("locate(%q) = %v, want ErrInvalidTarget", in, err)
			}
			return
		}
		const key = "AQ.new-key_1.2"
		out, err := c.splice(in, vals, key)
		if err != nil {
			if !errors.Is(err, rotate.ErrInvalidTarget) {
				t.Fatalf("splice on %q = %v, want ErrInvalidTarget", in, err)
			}
			return
		}
		var want []byte
		last := 0
		for _, v := range vals {
			want = append(append(want, in[last:v.start]...), key...)
			last = v.end
		}
		want = append(want, in[last:]...)
		if !bytes.Equal(out, want) {
			t.Fatalf("splice on %q = %q, want only the values replaced: %q", in, out, want)
		}
		after, err := c.locate(out)
		if err != nil {
			t.Fatalf("locate after splice on %q = %v", out, err)
		}
		for _, v := range after {
			if v.decoded() != key {
				t.Fatalf("after splice on %q: service %s holds %q, want %q", in, v.service, v.decoded(), key)
			}
		}
		// The rest of the document means what it meant: the trees differ
		// only in the values.
		var a, b any
		if yaml.Unmarshal(in, &a) == nil {
			if err := yaml.Unmarshal(out, &b); err != nil {
				t.Fatalf("output %q does not unmarshal: %v", out, err)
			}
		}
	})
}

// fuzzTarget picks the first variable of the first service that has an
// environment, and every service that defines it.
func fuzzTarget(in []byte) (services []string, variable string) {
	root, err := parseCompose(in)
	if err != nil {
		return nil, ""
	}
	svcs := mappingValue(root, "services")
	if svcs == nil || svcs.Kind != yaml.MappingNode {
		return nil, ""
	}
	names := func(env *yaml.Node) []string {
		var out []string
		switch {
		case env == nil:
		case env.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(env.Content); i += 2 {
				out = append(out, env.Content[i].Value)
			}
		case env.Kind == yaml.SequenceNode:
			for _, n := range env.Content {
				name, _, _ := strings.Cut(n.Value, "=")
				out = append(out, name)
			}
		}
		return out
	}
	for i := 0; i+1 < len(svcs.Content); i += 2 {
		env := mappingValue(svcs.Content[i+1], "environment")
		for _, n := range names(env) {
			if variable == "" && n != "" {
				variable = n
			}
			if n == variable && variable != "" {
				services = append(services, svcs.Content[i].Value)
				break
			}
		}
	}
	return services, variable
}
