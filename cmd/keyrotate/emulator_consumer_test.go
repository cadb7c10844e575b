package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/config"
)

// TestEmulatorConsumer runs `keyrotate emulator --seed DIR --consumer
// INTERVAL --monitoring-delay 30s` as a person does: the seeded config's
// drain gate matches the emulator (usage_delay its Monitoring delay, a
// short quiet period), a consumer calls with the seeded key, and the
// output says how to stop it — which works — without a key string.
func TestEmulatorConsumer(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr syncBuffer
	app := newApp(&stdout, &stderr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runApp(ctx, app, []string{"keyrotate", "emulator", "--seed", dir, "--consumer", "20ms", "--monitoring-delay", "30s"})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("emulator: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("emulator still serving 10s after its context ended")
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), "# try: ") {
		if time.Now().After(deadline) {
			t.Fatalf("no seed output in 20s:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := stdout.String()
	cfg, err := config.Load(filepath.Join(dir, "keyrotate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := &cfg.Slots[0]
	if got := time.Duration(cfg.Defaults.UsageDelay); got != 30*time.Second {
		t.Errorf("seeded usage_delay %s, want the emulator's --monitoring-delay 30s", got)
	}
	if cfg.EffectiveRetire(s) != config.RetireQuiet || cfg.EffectiveQuietPeriod(s) != time.Minute || cfg.EffectiveDrainTimeout(s) != 3*time.Minute {
		t.Errorf("seeded gate: retire %s, quiet_period %s, drain_timeout %s; want quiet, 1m, 3m",
			cfg.EffectiveRetire(s), cfg.EffectiveQuietPeriod(s), cfg.EffectiveDrainTimeout(s))
	}
	for _, want := range []string{
		"# the config's drain gate: quiet_period 1m, drain_timeout 3m, usage_delay 30s (this emulator's --monitoring-delay)\n",
		"# consumer c1 (configured nowhere) calls generateContent every 20ms with key projects/123456789012/locations/global/keys/gemini-prod-2026 (sha256:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	m := regexp.MustCompile(`(?m)^#   stop it:    curl -X DELETE (http://127\.0\.0\.1:[0-9]+/emulator/v1/consumers)/c1$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no stop line in:\n%s", out)
	}
	admin := m[1]
	if !strings.Contains(out, "#   list them:  curl "+admin+"\n") || !strings.Contains(out, `"every": "20ms"}' `+admin+"\n") {
		t.Errorf("no list or start line for %s in:\n%s", admin, out)
	}
	// It calls: the admin endpoint lists it with successful calls.
	var list struct {
		Consumers []struct {
			ID, Key string
			OK      int
		}
	}
	for {
		resp, err := http.Get(admin)
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Consumers) == 1 && list.Consumers[0].OK >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer not calling: %+v", list.Consumers)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The printed stop line stops it.
	req, _ := http.NewRequest(http.MethodDelete, admin+"/c1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE %s/c1: %s", admin, resp.Status)
	}
	if resp, err := http.Get(admin); err == nil {
		_ = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if len(list.Consumers) != 0 {
			t.Errorf("after the stop line: %+v still running", list.Consumers)
		}
	}
	env, err := os.ReadFile(filepath.Join(dir, "app", ".env"))
	if err != nil {
		t.Fatal(err)
	}
	if ks := envValue(env, "GEMINI_API_KEY"); ks == "" || strings.Contains(out+stderr.String(), ks) {
		t.Errorf("the output carries the seeded key string (or the .env has none)")
	}
}
