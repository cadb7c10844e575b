// Package emutest starts the emulator for tests, with the check every test
// that talks to it carries: a request that breaks the APIs' published
// definitions (the API Keys discovery document, the gRPC protos' field
// behaviours) fails the test that sent it, even when the product coped
// with the emulator's answer.
package emutest

import (
	"testing"

	"github.com/keyrotate/keyrotate/internal/emulator"
)

// Start starts an emulator with opts and registers, for the end of t, a
// check of its schema violations and its Close.
func Start(t testing.TB, opts emulator.Options) *emulator.Server {
	t.Helper()
	srv, err := emulator.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		Check(t, srv)
		srv.Close()
	})
	return srv
}

// Check fails t for each request srv recorded as breaking an API's
// published definition.
func Check(t testing.TB, srv *emulator.Server) {
	t.Helper()
	for _, v := range srv.SchemaViolations() {
		t.Errorf("request broke the published API definition: %s", v)
	}
}
