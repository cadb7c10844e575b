package main

import (
	"context"
	"strings"
	"testing"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emutest"
)

func TestSecretLocation(t *testing.T) {
	for name, want := range map[string]string{
		"projects/p/secrets/s":                        "",
		"projects/p/locations/europe-west1/secrets/s": "europe-west1",
		"projects/p/locations/us-east1/secrets/s/x":   "",
	} {
		if got := secretLocation(name); got != want {
			t.Errorf("secretLocation(%q) = %q, want %q", name, got, want)
		}
	}
	if got, want := regionalEndpoint("us-central1"), "secretmanager.us-central1.rep.googleapis.com:443"; got != want {
		t.Errorf("regionalEndpoint = %q, want %q", got, want)
	}
}

// TestRegionalClients: one client per location, the global one for global
// secrets, all closed by Close.
func TestRegionalClients(t *testing.T) {
	srv := emutest.Start(t, emulator.Options{})
	for _, kv := range srv.Env() { // every emulator host variable
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	ctx := context.Background()
	c, err := newClients(ctx, hostsFromEnv(), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.addLocations(ctx, "", "us-east1", "europe-west1", "us-east1"); err != nil {
		t.Fatal(err)
	}
	if len(c.regional) != 2 {
		t.Fatalf("%d regional clients, want 2", len(c.regional))
	}
	if c.secretsFor("projects/p/secrets/s") != c.secrets {
		t.Error("a global secret does not get the global client")
	}
	east := c.secretsFor("projects/p/locations/us-east1/secrets/s")
	if east == c.secrets || east != c.secretsFor("projects/q/locations/us-east1/secrets/t") {
		t.Error("a regional secret does not get its location's one client")
	}
	if east == c.secretsFor("projects/p/locations/europe-west1/secrets/s") {
		t.Error("two locations share a client")
	}
	c.Close()
}
