//go:build !unix

package emutest

import (
	"net"
	"testing"
)

// DeadAddr returns a loopback host:port where nothing listens: a port that
// was free, closed again (on unix, a bound socket keeps it dead for the
// whole test).
func DeadAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
