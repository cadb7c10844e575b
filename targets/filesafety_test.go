package targets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/inputfile"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// fileTarget is a target kind that writes a local file.
type fileTarget interface {
	rotate.Target
	AllowWorldReadable()
}

// fileKinds are the target kinds that replace a local file, each with a
// realistic file holding oldKey.
var fileKinds = []struct {
	name, base, content string
	make                func(path string) fileTarget
}{
	{"dotenv", ".env", sampleEnv, func(p string) fileTarget { return NewDotEnv(p, "GEMINI_API_KEY") }},
	{"compose", "docker-compose.yml", composeMap, func(p string) fileTarget {
		return NewCompose(p, []string{"api", "worker"}, "GEMINI_API_KEY")
	}},
}

// readWithin fails the test when Read does not return within a few seconds.
func readWithin(t *testing.T, tg rotate.Target) (secret.Key, error) {
	t.Helper()
	type result struct {
		k   secret.Key
		err error
	}
	done := make(chan result, 1)
	go func() {
		k, err := tg.Read(context.Background())
		done <- result{k, err}
	}()
	select {
	case r := <-done:
		return r.k, r.err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: Read still blocked after 5s", tg)
		return secret.Key{}, nil
	}
}

// TestFileTargetSpecialAndLarge: a target path that is (or links to) a FIFO
// or device, or a file larger than inputfile.MaxSize, is refused in Read at
// once, naming the file.
func TestFileTargetSpecialAndLarge(t *testing.T) {
	for _, k := range fileKinds {
		t.Run(k.name, func(t *testing.T) {
			dir := t.TempDir()
			fifo := filepath.Join(dir, "fifo")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			toFIFO := filepath.Join(dir, "to-fifo")
			if err := os.Symlink(fifo, toFIFO); err != nil {
				t.Fatal(err)
			}
			large := filepath.Join(dir, "large")
			pad := strings.Repeat("# padding line for a file that is far too large\n", inputfile.MaxSize/48+1)
			writeFile(t, large, k.content+"\n"+pad, 0o600)
			toZero := filepath.Join(dir, "to-zero")
			if err := os.Symlink("/dev/zero", toZero); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct{ name, path, named, want string }{
				{"fifo", fifo, fifo, "named pipe"},
				{"symlink to fifo", toFIFO, fifo, "named pipe"},
				{"symlink to dev zero", toZero, "/dev/zero", "device"},
				{"larger than the limit", large, large, "larger than 1 MiB"},
			} {
				t.Run(c.name, func(t *testing.T) {
					_, err := readWithin(t, k.make(c.path))
					checkErr(t, err, rotate.ErrInvalidTarget)
					if msg := err.Error(); !strings.Contains(msg, c.named) || !strings.Contains(msg, c.want) {
						t.Errorf("Read = %q, want it to name %s and say %q", msg, c.named, c.want)
					}
				})
			}
		})
	}
}

// TestFileTargetWorldReadable: a file every user can read does not receive
// a key unless the target allows it; the refusal comes from Read, before
// any key exists, and leaves the file as it was.
func TestFileTargetWorldReadable(t *testing.T) {
	for _, k := range fileKinds {
		t.Run(k.name, func(t *testing.T) {
			for _, mode := range []fs.FileMode{0o644, 0o604, 0o666, 0o444} {
				t.Run("refused "+mode.String(), func(t *testing.T) {
					path := filepath.Join(t.TempDir(), k.base)
					writeFile(t, path, k.content, mode)
					_, err := k.make(path).Read(context.Background())
					checkErr(t, err, rotate.ErrInvalidTarget)
					var exposed *ExposedError
					if !errors.As(err, &exposed) || !strings.Contains(err.Error(), "every user of this machine can read it") ||
						!strings.Contains(err.Error(), path) {
						t.Errorf("Read = %v, want an *ExposedError naming %s and saying why", err, path)
					}
					if h := errhint.Of(err); !strings.Contains(h, "chmod o-r "+path) || !strings.Contains(h, "allow_world_readable: true") {
						t.Errorf("hint %q, want the chmod fix and the config field", h)
					}
					if got := readFile(t, path); got != k.content {
						t.Errorf("file changed by a refused Read")
					}
				})
			}
			for _, mode := range []fs.FileMode{0o600, 0o640, 0o660} {
				t.Run("accepted "+mode.String(), func(t *testing.T) {
					path := filepath.Join(t.TempDir(), k.base)
					writeFile(t, path, k.content, mode)
					if _, err := k.make(path).Read(context.Background()); err != nil {
						t.Errorf("Read = %v, want nil", err)
					}
				})
			}
			t.Run("allowed", func(t *testing.T) {
				ctx := context.Background()
				path := filepath.Join(t.TempDir(), k.base)
				writeFile(t, path, k.content, 0o644)
				tg := k.make(path)
				tg.AllowWorldReadable()
				if _, err := tg.Read(ctx); err != nil {
					t.Fatalf("Read with AllowWorldReadable = %v, want nil", err)
				}
				if err := tg.Write(ctx, secret.New(newKey)); err != nil {
					t.Fatalf("Write = %v", err)
				}
				if fi, err := os.Stat(path); err != nil || fi.Mode() != 0o644 {
					t.Errorf("mode after Write = %v, %v, want 0644 kept", fi.Mode(), err)
				}
			})
		})
	}
}

// TestFileTargetPlanted: a file that belongs to another user, in a
// directory every user can write (a sticky /tmp), may have been put there
// to receive the key: Read refuses it, even when world-readable files are
// allowed. The same user's own file there is fine. As root the other user
// is real (chown); otherwise this process's identity is replaced.
func TestFileTargetPlanted(t *testing.T) {
	for _, k := range fileKinds {
		t.Run(k.name, func(t *testing.T) {
			sticky := t.TempDir()
			if err := os.Chmod(sticky, 0o1777); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(sticky, k.base)
			writeFile(t, path, k.content, 0o600)
			if _, err := k.make(path).Read(context.Background()); err != nil {
				t.Fatalf("Read of this user's own file in a sticky directory = %v, want nil", err)
			}

			if os.Geteuid() == 0 {
				if err := os.Chown(path, 41001, 41001); err != nil {
					t.Fatal(err)
				}
			} else {
				saved := self
				t.Cleanup(func() { self = saved })
				self = func() identity { id := saved(); id.uid++; return id }
			}
			tg := k.make(path)
			tg.AllowWorldReadable()
			_, err := tg.Read(context.Background())
			checkErr(t, err, rotate.ErrInvalidTarget)
			var exposed *ExposedError
			if !errors.As(err, &exposed) || !strings.Contains(err.Error(), "a directory that every user can write") ||
				!strings.Contains(err.Error(), sticky) {
				t.Errorf("Read = %v, want an *ExposedError naming the directory and why", err)
			}
		})
	}
}

// TestWouldOwn: the owner and group a replaced file would get, by who
// replaces it.
func TestWouldOwn(t *testing.T) {
	dir := func(mode fs.FileMode, gid uint32) fs.FileInfo {
		return fakeInfo{mode: fs.ModeDir | mode, sys: &syscall.Stat_t{Gid: gid}}
	}
	const app, me, secrets, mine, other = 100, 200, 300, 400, 500
	tests := []struct {
		name string
		id   identity
		dir  fs.FileInfo
		want owner
		got  owner
	}{
		{"root keeps all", identity{uid: 0, gid: 0, chown: true}, dir(0o755, 0), owner{app, secrets}, owner{app, secrets}},
		{"own file, own group", identity{uid: me, gid: mine}, dir(0o755, 0), owner{me, mine}, owner{me, mine}},
		{"own file, supplementary group", identity{uid: me, gid: mine, groups: []uint32{secrets}}, dir(0o755, 0), owner{me, secrets}, owner{me, secrets}},
		{"own file, foreign group", identity{uid: me, gid: mine}, dir(0o755, 0), owner{me, other}, owner{me, mine}},
		{"own file, group from a setgid directory", identity{uid: me, gid: mine}, dir(fs.ModeSetgid|0o775, other), owner{me, other}, owner{me, other}},
		{"another user's file", identity{uid: me, gid: mine, groups: []uint32{secrets}}, dir(0o775, 0), owner{app, secrets}, owner{me, secrets}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.id.wouldOwn(tt.dir, tt.want); got != tt.got {
				t.Errorf("wouldOwn(%v) = %v, want %v", tt.want, got, tt.got)
			}
		})
	}
}

type fakeInfo struct {
	mode fs.FileMode
	sys  any
}

func (f fakeInfo) Name() string       { return "x" }
func (f fakeInfo) Size() int64        { return 0 }
func (f fakeInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.mode.IsDir() }
func (f fakeInfo) Sys() any           { return f.sys }

// Ids of users and groups that need not exist: the ownership test gives
// files to them and runs a child process as them.
const (
	appUID     = 41001 // owns the application's files
	rotatorUID = 41002 // runs the rotation
	secretsGID = 41010 // both are members
	otherGID   = 41011 // only the application's group
)

// TestOwnershipKept: a file owned by appuser:secrets and mode 0660, rotated
// by another member of secrets, would end up owned by the rotating user
// (only root may give a file away) and locked away from the application.
// Read refuses it before any key exists, naming the file, the owner it would
// get and the fix; and a write that cannot keep the owner fails before the
// rename instead of replacing the file. A file the rotating user owns keeps
// its group, and root keeps both. The rotating user is a real other uid:
// the test, as root, runs a child process with dropped credentials.
func TestOwnershipKept(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to other users and run a child process as one (TestWouldOwn covers the rules)")
	}
	bin := childBinary(t)
	for _, k := range fileKinds {
		t.Run(k.name, func(t *testing.T) {
			setup := func(t *testing.T, uid, gid int) string {
				t.Helper()
				dir := filepath.Join(sharedDir(t), "app")
				if err := os.Mkdir(dir, 0o770); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(dir, 0, secretsGID); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, 0o770); err != nil { // beat the umask
					t.Fatal(err)
				}
				path := filepath.Join(dir, k.base)
				writeFile(t, path, k.content, 0o660)
				if err := os.Chown(path, uid, gid); err != nil {
					t.Fatal(err)
				}
				return path
			}
			checkFile := func(t *testing.T, path, content string, want owner) {
				t.Helper()
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := ownerOf(fi); got != want || fi.Mode() != 0o660 {
					t.Errorf("file is %v %v, want %v %v", got, fi.Mode(), want, fs.FileMode(0o660))
				}
				if got := readFile(t, path); got != content {
					t.Errorf("file content = %q, want %q", got, content)
				}
				assertNoTemp(t, filepath.Dir(path))
			}
			rotated := strings.ReplaceAll(k.content, oldKey, newKey)

			t.Run("another user's file is refused in Read", func(t *testing.T) {
				path := setup(t, appUID, secretsGID)
				out := runChild(t, bin, k.name, "rotate", path)
				have, would := owner{appUID, secretsGID}, owner{rotatorUID, secretsGID}
				for _, want := range []string{
					"read error: ", path, "invalid target",
					"is owned by " + have.String(), "would leave it owned by " + would.String(),
					fmt.Sprintf("hint: rotate as uid %d (or as root)", appUID),
					fmt.Sprintf("chown %d:%d %s", rotatorUID, secretsGID, path),
				} {
					if !strings.Contains(out, want) {
						t.Errorf("child output %q does not contain %q", out, want)
					}
				}
				checkFile(t, path, k.content, have)
			})
			t.Run("a write that cannot keep the owner fails before the rename", func(t *testing.T) {
				path := setup(t, appUID, secretsGID)
				out := runChild(t, bin, k.name, "replace", path)
				if !strings.Contains(out, "replace error: ") || !strings.Contains(out, "owner error") {
					t.Errorf("child output %q, want an *OwnerError from replaceFile", out)
				}
				checkFile(t, path, k.content, owner{appUID, secretsGID})
			})
			t.Run("a group the rotating user is not in is refused", func(t *testing.T) {
				path := setup(t, rotatorUID, otherGID)
				out := runChild(t, bin, k.name, "rotate", path)
				if !strings.Contains(out, "read error: ") || !strings.Contains(out, "would leave it owned by "+owner{rotatorUID, rotatorUID}.String()) {
					t.Errorf("child output %q, want the refusal naming the group it would get", out)
				}
				checkFile(t, path, k.content, owner{rotatorUID, otherGID})
			})
			t.Run("own file keeps its group", func(t *testing.T) {
				path := setup(t, rotatorUID, secretsGID)
				if out := runChild(t, bin, k.name, "rotate", path); !strings.Contains(out, "rotated\n") {
					t.Fatalf("child output %q, want rotated", out)
				}
				checkFile(t, path, rotated, owner{rotatorUID, secretsGID})
			})
			t.Run("root keeps owner and group", func(t *testing.T) {
				path := setup(t, appUID, secretsGID)
				if out := childRotate(k.make(path)); out != "rotated\n" {
					t.Fatalf("rotate as root: %q", out)
				}
				checkFile(t, path, rotated, owner{appUID, secretsGID})
			})
		})
	}
}

// sharedDir returns a new directory that other users may enter (t.TempDir's
// parents are private).
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "keyrotate-owner-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// childBinary copies the test binary where other users may run it.
func childBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(sharedDir(t), "targets.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// runChild runs TestOwnershipChild in bin as rotatorUID (groups: its own
// and secretsGID) and returns what it printed.
func runChild(t *testing.T, bin, kind, action, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestOwnershipChild$", "-test.count=1")
	cmd.Env = []string{"KEYROTATE_OWNER_CHILD=" + kind + " " + action, "KEYROTATE_OWNER_PATH=" + path, "PATH=/usr/bin:/bin", "HOME=/"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: rotatorUID, Gid: rotatorUID, Groups: []uint32{secretsGID},
	}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	noKeyIn(t, "child output", out.String())
	return out.String()
}

// TestOwnershipChild is the child process of TestOwnershipKept: it reads
// and writes the target it is given, or replaces the file directly
// (bypassing Read's checks), and prints the outcome.
func TestOwnershipChild(t *testing.T) {
	spec, ok := os.LookupEnv("KEYROTATE_OWNER_CHILD")
	if !ok {
		t.Skip("the child process of TestOwnershipKept")
	}
	kind, action, _ := strings.Cut(spec, " ")
	path := os.Getenv("KEYROTATE_OWNER_PATH")
	for _, k := range fileKinds {
		if k.name != kind {
			continue
		}
		switch action {
		case "rotate":
			fmt.Print(childRotate(k.make(path)))
		case "replace":
			data := []byte(strings.ReplaceAll(k.content, oldKey, newKey))
			if _, err := replaceFile(path, data); err != nil {
				var oe *OwnerError
				if errors.As(err, &oe) {
					fmt.Printf("replace error: owner error: %v\n", err)
				} else {
					fmt.Printf("replace error: %v\n", err)
				}
			} else {
				fmt.Println("replaced")
			}
		}
	}
}

// childRotate reads tg and writes the new key, and says how it went.
func childRotate(tg rotate.Target) string {
	ctx := context.Background()
	if _, err := tg.Read(ctx); err != nil {
		return fmt.Sprintf("read error: %v\nhint: %s\n", err, errhint.Of(err))
	}
	if err := tg.Write(ctx, secret.New(newKey)); err != nil {
		return fmt.Sprintf("write error: %v\nhint: %s\n", err, errhint.Of(err))
	}
	return "rotated\n"
}

// TestK8sKubeconfigSpecial: a kubeconfig that is a FIFO or device, named by
// the target or by $KUBECONFIG, is refused at once instead of blocking the
// run (client-go would wait on the FIFO forever).
func TestK8sKubeconfigSpecial(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "kubeconfig")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, kubeconfig, env, want string }{
		{"target names a fifo", fifo, "", "named pipe"},
		{"KUBECONFIG names a fifo", "", fifo, "named pipe"},
		{"target names a device", "/dev/zero", "", "device"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", c.env)
			tg := NewK8s(K8sConfig{Kubeconfig: c.kubeconfig, Namespace: k8sNS, Name: k8sSecret, Key: k8sKey})
			_, err := readWithin(t, tg)
			checkErr(t, err, rotate.ErrInvalidTarget)
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("Read = %v, want it to say %q", err, c.want)
			}
		})
	}
}
