package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/gcp"
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

// TestMonitoringClient: MONITORING_EMULATOR_HOST gives a metered client of
// the emulator; other emulators without it give none, so that a test
// world never asks Google about its keys.
func TestMonitoringClient(t *testing.T) {
	srv := emutest.Start(t, emulator.Options{})
	ctx := context.Background()
	h := hosts{apiKeys: srv.APIKeysAddr, secretManager: srv.SecretManagerAddr, gemini: srv.GeminiAddr}
	c, err := newClients(ctx, h, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.monitoring != nil {
		t.Error("a Monitoring client without MONITORING_EMULATOR_HOST while emulators are in use")
	}
	c.Close()

	h.monitoring = srv.MonitoringAddr
	meter := &gcp.Meter{}
	c, err = newClients(ctx, h, meter, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.monitoring == nil {
		t.Fatal("no Monitoring client with MONITORING_EMULATOR_HOST")
	}
	u := &gcp.Usage{Client: c.monitoring}
	// An unknown project answers PERMISSION_DENIED: the call was made.
	_, _ = u.RequestCounts(ctx, "no-such-project", time.Now(), time.Hour, time.Minute)
	if n := meter.Calls()["monitoring.ListTimeSeries"]; n != 1 {
		t.Errorf("metered ListTimeSeries calls = %d, want 1", n)
	}
}
