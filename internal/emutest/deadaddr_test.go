package emutest_test

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/keyrotate/keyrotate/internal/emutest"
)

// TestDeadAddrStaysDead: a dial to DeadAddr is refused, and no listener can
// take its port while the test runs (a port closed again could be taken by
// another test's server, which answers the dial instead).
func TestDeadAddrStaysDead(t *testing.T) {
	addr := emutest.DeadAddr(t)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("dial %s succeeded", addr)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s: %v, want connection refused", addr, err)
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		l.Close()
		t.Errorf("a listener took the dead address %s", addr)
	}
}
