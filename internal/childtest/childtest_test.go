package childtest_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/keyrotate/keyrotate/internal/childtest"
)

const childEnv = "KEYROTATE_CHILDTEST_CHILD"

func TestMain(m *testing.M) {
	if greeting := os.Getenv(childEnv); greeting != "" {
		// The child: its first line, then an echo of each line in
		// upper case until stdin closes.
		_ = json.NewEncoder(os.Stdout).Encode(hello{PID: os.Getpid(), Greeting: greeting})
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			fmt.Println(strings.ToUpper(in.Text()))
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type hello struct {
	PID      int
	Greeting string
}

// TestStart: the child is this binary, told what to be by the variable;
// its first line is decoded; the protocol after it is the caller's; Wait
// ends it (closing its stdin), and only the first Wait waits.
func TestStart(t *testing.T) {
	var h hello
	c := childtest.Start(t, childEnv+"=hi there", &h)
	if h.Greeting != "hi there" || h.PID == os.Getpid() || h.PID == 0 {
		t.Fatalf("first line %+v, want the greeting from another process", h)
	}
	if _, err := io.WriteString(c.Stdin, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := c.Out.ReadString('\n'); err != nil || line != "PING\n" {
		t.Fatalf("answer %q, %v; want PING", line, err)
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("Wait = %v, want the child's clean exit", err)
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("second Wait = %v, want the first one's nil", err)
	}
	if err := syscall.Kill(h.PID, 0); err == nil {
		t.Errorf("process %d still exists after Wait", h.PID)
	}
}

// TestStartEndsWithTest: a child the test does not wait for is ended and
// reaped when the test ends.
func TestStartEndsWithTest(t *testing.T) {
	var h hello
	t.Run("child", func(t *testing.T) {
		childtest.Start(t, childEnv+"=left", &h)
	})
	if err := syscall.Kill(h.PID, 0); err == nil {
		t.Errorf("process %d still exists after its test ended", h.PID)
	}
}
