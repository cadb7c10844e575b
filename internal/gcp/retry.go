package gcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/api/googleapi"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RetryPolicy says how keyrotate retries a Google API call that failed
// transiently: gRPC UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED,
// HTTP 429, 500, 502, 503 and 504, a lost connection, or an attempt that got
// no answer within CallTimeout. It waits with exponential backoff and jitter,
// at least as long as a google.rpc.RetryInfo in the error asks, and never
// past the caller's context (the run's deadline). Every other error is
// returned at once.
//
// keyrotate retries itself rather than through the client libraries so that
// every call behaves the same and an error that ends the retries is the
// API's own, not a bare context.DeadlineExceeded.
type RetryPolicy struct {
	// Initial is the first wait between attempts (default 500ms); it grows
	// by half each time, up to Max (default 30s).
	Initial, Max time.Duration
	// CallTimeout bounds each attempt (default 30s), so that a hung call
	// fails and is retried instead of eating the whole run.
	CallTimeout time.Duration
	// MaxElapsed bounds the retries of one call when the context has no
	// earlier deadline (default 10m).
	MaxElapsed time.Duration

	// Log gets a line per retry, so that a run that waits on an API is
	// never silent: the call, its resource, the error, the attempt and
	// the next wait, at info, and at warn once the call has been retrying
	// for WarnAfter (default 30s). nil is slog.Default().
	Log       *slog.Logger
	WarnAfter time.Duration
	// OnRetry, when set, is told about each retry before its wait (for a
	// progress display).
	OnRetry func(Retrying)
	// Permanent, when set, says that an error that looks transient is not
	// worth retrying (a refused connection to a local emulator: nothing
	// will start listening there by itself).
	Permanent func(error) bool

	// call and resource name the call for the retry log (set by named).
	call, resource string
}

// Retrying describes a retry about to wait.
type Retrying struct {
	Call     string        // the permission-style name of the call, e.g. secretmanager.versions.access
	Resource string        // what it acts on
	Attempt  int           // the attempt that failed, 1-based
	Err      error         // its error
	Wait     time.Duration // until the next attempt
	Elapsed  time.Duration // since the first attempt
}

// named returns p for one call, named in the retry log.
func (p RetryPolicy) named(call, resource string) RetryPolicy {
	p.call, p.resource = call, resource
	return p
}

// DefaultRetry is the policy of calls made without one: the exported
// AccessVersion and AddVersion, and a rotate.Rotator whose Retry is zero. Tests may
// replace it with a faster policy.
var DefaultRetry = RetryPolicy{
	Initial: 500 * time.Millisecond, Max: 30 * time.Second,
	CallTimeout: 30 * time.Second, MaxElapsed: 10 * time.Minute, WarnAfter: 30 * time.Second,
}

// orDefault fills the zero fields of p from DefaultRetry.
func (p RetryPolicy) orDefault() RetryPolicy {
	d := DefaultRetry
	if p.Initial > 0 {
		d.Initial = p.Initial
	}
	if p.Max > 0 {
		d.Max = p.Max
	}
	if p.CallTimeout > 0 {
		d.CallTimeout = p.CallTimeout
	}
	if p.MaxElapsed > 0 {
		d.MaxElapsed = p.MaxElapsed
	}
	if p.WarnAfter > 0 {
		d.WarnAfter = p.WarnAfter
	}
	if p.Log != nil {
		d.Log = p.Log
	}
	if p.OnRetry != nil {
		d.OnRetry = p.OnRetry
	}
	if p.Permanent != nil {
		d.Permanent = p.Permanent
	}
	d.call, d.resource = p.call, p.resource
	return d
}

// Attempt is what a retried call (RetryPolicy.Do) learns about its own
// history.
type Attempt struct {
	n    int   // 1-based
	last error // the previous attempt's error, nil on the first
}

// retried reports whether an earlier attempt was made: its request may have
// landed even though its answer was lost.
func (a Attempt) retried() bool { return a.n > 1 }

// do calls f until it succeeds, fails permanently, or the retries end. f
// gets a context bounded by the per-call timeout. When the retries end, the
// error says how many attempts were made over how long and wraps the last
// real error (and the context's error, when the context ended them):
//
//	gave up after 5 attempts over 12s: rpc error: code = Unavailable desc = ... (context deadline exceeded)
func (p RetryPolicy) Do(ctx context.Context, f func(context.Context, Attempt) error) error {
	p = p.orDefault()
	b := &backoff.ExponentialBackOff{
		InitialInterval:     p.Initial,
		RandomizationFactor: backoff.DefaultRandomizationFactor,
		Multiplier:          backoff.DefaultMultiplier,
		MaxInterval:         p.Max,
	}
	b.Reset()
	start := time.Now()
	var last error
	for n := 1; ; n++ {
		callCtx, cancel := context.WithTimeout(ctx, p.CallTimeout)
		err := f(callCtx, Attempt{n: n, last: last})
		timedOut := callCtx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			return nil
		}
		wait, err := p.failed(ctx, b, n, start, err, timedOut, &last)
		if err != nil {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return p.gaveUp(ctx, n, start, last)
		case <-t.C:
		}
	}
}

// failed decides what follows attempt n's error err: the wait before the
// next attempt, or the error to return. It keeps in *last the error to
// report. Not inlined: Do's frame stays on the stack under every call, and
// at 10,000 rotations in flight a stack that grows past 16 KiB costs more
// than all else a rotation holds (rotate's TestFleetStackDepth).
//
//go:noinline
func (p *RetryPolicy) failed(ctx context.Context, b *backoff.ExponentialBackOff, n int, start time.Time, err error, timedOut bool, last *error) (time.Duration, error) {
	if ctx.Err() != nil {
		// The run ended during this attempt: its error is the
		// context's, so name the one before it if there was one.
		if *last == nil || !isContextErr(err) {
			*last = err
		}
		return 0, p.gaveUp(ctx, n, start, *last)
	}
	if timedOut {
		err = fmt.Errorf("no answer within %s (per-call timeout): %w", p.CallTimeout, err)
	} else if !transient(err) || p.Permanent != nil && p.Permanent(err) {
		return 0, err
	}
	// A deadline error that races the run's own deadline (the server
	// or the transport noticed first) says less than the error before.
	if *last == nil || !isContextErr(err) {
		*last = err
	}
	wait := b.NextBackOff()
	if d, ok := retryDelay(err); ok && d > wait {
		wait = d
	}
	if time.Since(start)+wait > p.MaxElapsed {
		return 0, fmt.Errorf("gave up after %s over %s: %w", attempts(n), roundDur(time.Since(start)), *last)
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		// Waiting would only run into the deadline: stop now, with
		// the real error.
		return 0, fmt.Errorf("gave up after %s over %s: %w (the next retry, in %s, would pass the deadline: %w)",
			attempts(n), roundDur(time.Since(start)), *last, roundDur(wait), context.DeadlineExceeded)
	}
	p.notify(ctx, Retrying{Call: p.call, Resource: p.resource, Attempt: n, Err: err, Wait: wait, Elapsed: time.Since(start)})
	return wait, nil
}

// notify logs a retry and tells OnRetry.
func (p RetryPolicy) notify(ctx context.Context, r Retrying) {
	log := p.Log
	if log == nil {
		log = slog.Default()
	}
	lvl := slog.LevelInfo
	if r.Elapsed >= p.WarnAfter {
		lvl = slog.LevelWarn
	}
	call := r.Call
	if call == "" {
		call = "an API call"
	}
	log.Log(ctx, lvl, "retrying "+call+" after a transient error", "call", r.Call, "resource", r.Resource,
		"attempt", r.Attempt, "error", firstLine(r.Err.Error()), "next_in", roundDur(r.Wait).String(), "retrying_for", roundDur(r.Elapsed).String())
	if p.OnRetry != nil {
		p.OnRetry(r)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func (p RetryPolicy) gaveUp(ctx context.Context, n int, start time.Time, last error) error {
	cause := context.Cause(ctx)
	if isContextErr(last) {
		// No real error to show: the first attempt had no answer.
		return fmt.Errorf("no answer after %s over %s: %w", attempts(n), roundDur(time.Since(start)), last)
	}
	return fmt.Errorf("gave up after %s over %s: %w (%w)", attempts(n), roundDur(time.Since(start)), last, cause)
}

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d
}

func isContextErr(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		status.Code(err) == codes.DeadlineExceeded && status.Convert(err).Message() == context.DeadlineExceeded.Error() ||
		status.Code(err) == codes.Canceled
}

// transient reports whether err is worth retrying.
func transient(err error) bool {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		switch ge.Code {
		case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	if st, ok := grpcStatus(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
			return true
		}
		return false
	}
	// A REST call that got no HTTP answer: connection refused or reset,
	// a broken stream.
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// grpcStatus returns the gRPC status err carries, if any. A googleapi.Error
// (REST) also answers GRPCStatus, with nil: not a gRPC error.
func grpcStatus(err error) (*status.Status, bool) {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) || se.GRPCStatus() == nil {
		return nil, false
	}
	return se.GRPCStatus(), true
}

// retryDelay returns the delay a google.rpc.RetryInfo in err asks for.
func retryDelay(err error) (time.Duration, bool) {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		for _, d := range ge.Details {
			m, ok := d.(map[string]any)
			if !ok || m["@type"] != "type.googleapis.com/google.rpc.RetryInfo" {
				continue
			}
			s, _ := m["retryDelay"].(string)
			if d, err := time.ParseDuration(s); err == nil && d > 0 {
				return d, true
			}
		}
		return 0, false
	}
	if st, ok := grpcStatus(err); ok {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
				return ri.GetRetryDelay().AsDuration(), true
			}
		}
	}
	return 0, false
}

// Transient reports whether err is worth trying again later: a throttled
// or unavailable API, a lost connection (the same errors a call here
// retries by itself).
func Transient(err error) bool { return transient(err) }
