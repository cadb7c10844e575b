package emulator

import (
	"context"
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
	s.closers = append(s.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return ln.Addr().String(), nil
}
