package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/verify"
)

// TestEmulatorDownFailsFast: a stale *_EMULATOR_HOST (nothing listens
// there) fails a run within seconds, naming the variable, instead of
// retrying a refused connection in silence until --timeout.
func TestEmulatorDownFailsFast(t *testing.T) {
	for _, v := range []string{apiKeysEmulatorEnv, secretManagerEmulatorEnv, verify.EmulatorHostEnv, runEmulatorEnv} {
		t.Run(v, func(t *testing.T) {
			cw := newCrashWorld(t)
			addr := closedAddr(t)
			cw.env = []string{v + "=" + addr}
			if v == apiKeysEmulatorEnv {
				cw.apiKeysAddr = addr // start() sets it last
			}
			start := time.Now()
			c := cw.start("--config", cw.w.config, "--timeout", "40s", "plan")
			select {
			case <-c.done:
			case <-time.After(crashTimeout):
				c.kill()
				t.Fatalf("plan with a stale %s still runs after %s", v, crashTimeout)
			}
			took := time.Since(start)
			out := c.stderr.String()
			if took > 10*time.Second {
				t.Errorf("plan took %s to fail, want a few seconds", took.Round(time.Millisecond))
			}
			if c.code != exitFailed {
				t.Errorf("exit %d, want %d\nstderr:\n%s", c.code, exitFailed, out)
			}
			for _, want := range []string{
				"keyrotate: error: " + v + "=" + addr + ": nothing answers there: ",
				"keyrotate: hint: is `keyrotate emulator` running at " + addr + "? ",
				"unset " + v + " to use Google",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("stderr lacks %q:\n%s", want, out)
				}
			}
			t.Logf("failed after %s", took.Round(time.Millisecond))
		})
	}
}

// TestEmulatorRefused: a refused connection is not retried while an
// emulator is in use, and its hint names the variable whose address
// refused, also when the library attached a hint of its own.
func TestEmulatorRefused(t *testing.T) {
	h := hosts{secretManager: "127.0.0.1:4711"}
	grpcRefused := status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:4711: connect: connection refused"`)
	restRefused := fmt.Errorf("get key: %w", &netOpErr{addr: "127.0.0.1:4711"})
	for _, tc := range []struct {
		name      string
		h         hosts
		err       error
		permanent bool
		hint      string
	}{
		{"grpc refused by the emulator", h, grpcRefused, true, "is `keyrotate emulator` running at 127.0.0.1:4711? "},
		{"rest refused by the emulator", h, restRefused, true, "unset SECRETMANAGER_EMULATOR_HOST"},
		{"unavailable, not refused", h, status.Error(codes.Unavailable, "try again"), false, ""},
		{"refused without emulators", hosts{}, grpcRefused, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.h.refusedEmulator(tc.err); got != tc.permanent {
				t.Errorf("refusedEmulator(%v) = %v, want %v", tc.err, got, tc.permanent)
			}
			got := tc.h.emulatorDownHint(tc.err)
			if tc.hint == "" && got != "" || !strings.Contains(got, tc.hint) {
				t.Errorf("emulatorDownHint(%v) = %q, want %q in it", tc.err, got, tc.hint)
			}
		})
	}
}

// netOpErr is a refused REST connection as net/http reports it.
type netOpErr struct{ addr string }

func (e *netOpErr) Error() string { return "dial tcp " + e.addr + ": connect: connection refused" }
func (e *netOpErr) Unwrap() error { return syscall.ECONNREFUSED }

// TestEmulatorGoneMidRun: an emulator that goes away during a run (its
// address now refuses connections) ends the run within seconds with the
// variable named, instead of retrying until --timeout.
func TestEmulatorGoneMidRun(t *testing.T) {
	cw := newCrashWorld(t)
	px := newTCPProxy(t, cw.srv.SecretManagerAddr)
	cw.env = []string{secretManagerEmulatorEnv + "=" + px.addr}
	cw.srv.SetHook("secretmanager.GetSecret", func(_ context.Context, n int) error {
		if n == 1 {
			px.close() // the emulator is gone: its port refuses from now on
			return status.Error(codes.Unavailable, "connection reset")
		}
		return nil
	})
	start := time.Now()
	c := cw.start("--config", cw.w.config, "--timeout", "60s", "rotate", "--now")
	c.wait(t)
	took := time.Since(start)
	out := c.stderr.String()
	if took > 15*time.Second {
		t.Errorf("rotate took %s to stop, want a few seconds", took.Round(time.Millisecond))
	}
	if c.code != exitFailed {
		t.Errorf("exit %d, want %d (nothing changed)\nstderr:\n%s", c.code, exitFailed, out)
	}
	if want := "keyrotate: hint: is `keyrotate emulator` running at " + px.addr + "? "; !strings.Contains(out, want) {
		t.Errorf("stderr lacks %q:\n%s", want, out)
	}
	if err := cw.invariant(); err != nil {
		t.Error(err)
	}
	t.Logf("stopped after %s", took.Round(time.Millisecond))
}

// tcpProxy forwards connections to an address until closed; then its
// address refuses connections, as a stopped emulator's does.
type tcpProxy struct {
	addr string
	l    net.Listener
	mu   sync.Mutex
	conn []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: l.Addr().String(), l: l}
	t.Cleanup(p.close)
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conn = append(p.conn, in, out)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return p
}

func (p *tcpProxy) close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conn {
		c.Close()
	}
	p.conn = nil
}
