package emulator

import (
	"bufio"
	"errors"
	"net"
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
	ln = bufferedListener{ln}
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

// bufferedListener reads each connection it accepts through a buffer.
// net/http's HTTP/2 server reads frames straight from the connection, a
// read for each frame's 9-byte header and another for its payload: two
// system calls a frame, several a call, where gRPC's server reads through
// a buffer. Buffered, one read takes in whatever frames have arrived.
type bufferedListener struct{ net.Listener }

// restReadBuffer is the size of a connection's read buffer: one HTTP/2
// frame of the default maximum size (16 KiB); a larger read bypasses it.
const restReadBuffer = 16 << 10

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, restReadBuffer)}, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes a TCP connection, as net/http does before it
// closes an HTTP/1.1 connection (its closeWriter).
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
