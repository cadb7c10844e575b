// Package emutest starts the emulator and its sub-fakes for tests, each
// closed at the end of the test. The emulator comes with the check every
// test that talks to it carries: a request that breaks the APIs' published
// definitions (the API Keys discovery document, the gRPC protos' field
// behaviours) fails the test that sent it, even when the product coped
// with the emulator's answer.
package emutest

import (
	"context"
	"testing"

	"cloud.google.com/go/pubsub/v2"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/githubfake"
	"github.com/keyrotate/keyrotate/internal/emulator/k8sfake"
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

// StartGitHub starts a GitHub fake with opts, closed at the end of t.
func StartGitHub(t testing.TB, opts githubfake.Options) *githubfake.Server {
	t.Helper()
	f, err := githubfake.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// StartK8s starts a Kubernetes API server fake with opts, closed at the end
// of t.
func StartK8s(t testing.TB, opts k8sfake.Options) *k8sfake.Server {
	t.Helper()
	f, err := k8sfake.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// Check fails t for each request srv recorded as breaking an API's
// published definition.
func Check(t testing.TB, srv *emulator.Server) {
	t.Helper()
	for _, v := range srv.SchemaViolations() {
		t.Errorf("request broke the published API definition: %s", v)
	}
}

// PubSubClient returns Google's Pub/Sub client for project, connected to
// srv's Pub/Sub (pstest) over loopback, closed at the end of t.
func PubSubClient(t testing.TB, srv *emulator.Server, projectID string) *pubsub.Client {
	t.Helper()
	c, err := srv.PubSubClient(context.Background(), projectID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
