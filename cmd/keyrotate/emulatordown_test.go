package main

import (
	"fmt"
	"strings"
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
