// Package childtest runs the running test binary again, as a child
// process, for tests and benchmarks whose other side must not share their
// process: an emulator whose CPU time and memory are measured apart from
// the rotator's, as `keyrotate emulator` would run beside keyrotate.
//
// The child is told what to be by an environment variable that its
// package's TestMain checks before running any test. It prints one JSON
// line saying what it set up (its addresses, what it seeded), then serves
// until its standard input closes. The protocol after that first line is
// the caller's: Stdin and Out stay open to it.
//
// It is a package of its own, not part of emutest, because the emulator's
// own internal tests use it, and emutest imports the emulator.
package childtest

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
)

// Child is a running child process.
type Child struct {
	// Stdin is the child's standard input: closing it tells the child
	// to end.
	Stdin io.WriteCloser
	// Out is the child's standard output, past its first line.
	Out *bufio.Reader

	cmd  *exec.Cmd
	once sync.Once
	err  error
}

// Start runs this test binary with no tests ("-test.run=^$") and env
// (NAME=value) added to this process's environment, its standard error
// this process's, and decodes the first line it prints into first. The
// child ends with tb, if not before (Wait).
func Start(tb testing.TB, env string, first any) *Child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &Child{Stdin: stdin, Out: bufio.NewReader(stdout), cmd: cmd}
	tb.Cleanup(func() { _ = c.Wait() })
	name, _, _ := strings.Cut(env, "=")
	line, err := c.Out.ReadBytes('\n')
	if err != nil {
		tb.Fatalf("child %s: no first line: %v", name, err)
	}
	if err := json.Unmarshal(line, first); err != nil {
		tb.Fatalf("child %s: first line: %v", name, err)
	}
	return c
}

// Wait closes the child's standard input, which tells it to end, and
// waits for it to exit. Only the first call waits; later ones return its
// error.
func (c *Child) Wait() error {
	c.once.Do(func() {
		c.Stdin.Close()
		c.err = c.cmd.Wait()
	})
	return c.err
}

// ProfileCPU starts a CPU profile written to the file that the
// environment variable name names (none when it is unset or empty), and
// returns what stops it and closes the file: for a child, whose profile
// go test's -cpuprofile does not cover, or for a part of a run.
func ProfileCPU(name string) (stop func(), err error) {
	file := os.Getenv(name)
	if file == "" {
		return func() {}, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
