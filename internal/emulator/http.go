package emulator

import (
	"errors"
	"net/http"
	"time"
)

// serveHTTP serves h on addr and returns the address it listens on. It
// speaks HTTP/1.1 and cleartext HTTP/2 with prior knowledge, as gRPC
// clients dial an emulator (see apiKeysMux).
func (s *Server) serveHTTP(addr string, h http.Handler) (string, error) {
	ln, err := listen(addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: presized(h), ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener was closed under us; nothing to report
		}
	}()
	// Close, not Shutdown, as the gRPC ports Stop: a graceful Shutdown
	// holds a port for HTTP/2's GOAWAY timeout (a second) while a client
	// keeps its cleartext HTTP/2 connection open, as keyrotate's do until
	// their process ends (TestCloseDoesNotWaitForClients).
	s.closers = append(s.closers, func() { _ = srv.Close() })
	return ln.Addr().String(), nil
}

// presized runs h with its goroutine's stack grown first, in one step at
// the shallowest point of the request. net/http serves every request on a
// new goroutine, whose stack starts small; a handler that then grows it
// two or three times deep in JSON encoding or fmt pays a stack copy that
// walks every frame each time (runtime.morestack, golang/go#18138, the
// reason gRPC has worker goroutines). Growing it here costs one copy of
// a few frames.
func presized(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		growStack()
		h.ServeHTTP(w, r)
	})
}

// handlerStack is how much stack growStack makes room for: more than the
// deepest of the emulator's REST handlers uses (JSON encoding of an
// operation, Google's error bodies).
const handlerStack = 8 << 10

// growStack needs a frame of handlerStack bytes, so the runtime grows the
// caller's stack to fit it once.
//
//go:noinline
func growStack() {
	var pad [handlerStack]byte
	touchStack(&pad)
}

//go:noinline
func touchStack(p *[handlerStack]byte) { p[0] = 1 }
