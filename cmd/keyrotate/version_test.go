package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionMatchesGoVersionM builds keyrotate with VCS stamping on, and
// checks that --version prints the module version and the commit, its time
// and the modified bit as `go version -m` reads them from the same binary.
func TestVersionMatchesGoVersionM(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	run := func(dir, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		// GOFLAGS may turn stamping off (-buildvcs=false); the flag below
		// turns it on for this build.
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	top := strings.TrimSpace(run(".", "git", "rev-parse", "--show-toplevel"))
	bin := filepath.Join(t.TempDir(), "keyrotate")
	src := top
	// In a clone (CI's checkout), build in place: the packages compiled
	// for the tests are reused, where a build in a fresh clone compiles
	// them all again (the directory is part of what the build cache
	// keys on). A linked worktree gets no stamp: build from a clone of
	// its HEAD.
	if dirs := strings.Fields(run(".", "git", "rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir")); len(dirs) != 2 || dirs[0] != dirs[1] {
		src = filepath.Join(t.TempDir(), "src")
		run(".", "git", "clone", "--quiet", "--shared", top, src)
	}
	run(src, "go", "build", "-buildvcs=true", "-o", bin, "./cmd/keyrotate")
	head := strings.TrimSpace(run(src, "git", "rev-parse", "HEAD"))

	// go version -m: "\tmod\tPATH\tVERSION\t..." and "\tbuild\tvcs.KEY=VALUE".
	var mod, version string
	vcs := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(run(".", "go", "version", "-m", bin)))
	for sc.Scan() {
		f := strings.Split(strings.TrimPrefix(sc.Text(), "\t"), "\t")
		switch {
		case len(f) >= 3 && f[0] == "mod":
			mod, version = f[1], f[2]
		case len(f) == 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs."):
			k, v, _ := strings.Cut(f[1], "=")
			vcs[k] = v
		}
	}
	if mod == "" || vcs["vcs.revision"] != head {
		t.Fatalf("go version -m: mod %q, vcs %v; want the module and revision %s", mod, vcs, head)
	}
	got := run(".", bin, "--version")
	for _, want := range []string{
		"keyrotate " + version + "\n",
		"  module    " + mod + "\n",
		"  commit    " + vcs["vcs.revision"] + "\n",
		"  time      " + vcs["vcs.time"] + "\n",
		"  modified  " + vcs["vcs.modified"] + "\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("keyrotate --version printed:\n%s\nwant a line %q", got, want)
		}
	}
	if cmd := run(".", bin, "version"); cmd != got {
		t.Errorf("keyrotate version printed:\n%s\nwant what --version printed:\n%s", cmd, got)
	}
}
