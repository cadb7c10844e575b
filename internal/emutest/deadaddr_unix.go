//go:build unix

package emutest

import (
	"fmt"
	"syscall"
	"testing"
)

// DeadAddr returns a loopback host:port that refuses connections for the
// rest of t: a socket bound there that never listens. A port that was free
// and closed again is not dead: under CI, another test's server took one
// such port, and a test that wanted "connection refused" read
// "connection reset by peer" (internal/doctor TestDoctor). The bound socket
// keeps any other listener off the port; the kernel answers a connection to
// it with a reset, which the dialer reports as refused.
func DeadAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
