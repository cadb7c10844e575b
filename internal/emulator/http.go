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
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
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
