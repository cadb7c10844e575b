package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// The demo world: one project, one bound Gemini key restricted to the
// Gemini API, its secret, and an app whose .env holds the key.
const (
	demoProject       = "demo-project"
	demoProjectNumber = 123456789012
	demoSecretID      = "gemini-api-key"
	demoTopic         = "projects/" + demoProject + "/topics/keyrotate-rotations"
	demoSubscription  = "projects/" + demoProject + "/subscriptions/keyrotate-listen"
	demoKeyID         = "gemini-prod-2026"
	demoSA            = "gemini-caller@demo-project.iam.gserviceaccount.com"
)

type seeded struct {
	dir, config, dotenv string
	keyName             string
	key                 secret.Key
}

// seedFiles are the files seedDemo writes into dir: the config and the .env.
func seedFiles(dir string) []string {
	return []string{filepath.Join(dir, "keyrotate.yaml"), filepath.Join(dir, "app", ".env")}
}

// seedGate is what a seeded config sets beyond the demo world's usual
// defaults: the drain gate's timing, and for the demo (whose clock runs
// faster than the wall clock) the lease and propagation windows. Zero
// fields are left as without it.
type seedGate struct {
	usageDelay, quietPeriod, drainTimeout time.Duration
	leaseTTL, propagationTimeout          time.Duration
}

// defaults are the lines of the config's defaults section; usageDelay is
// how late the emulator's Cloud Monitoring reports a call (what a nil
// gate's config says; a gate names its own).
func (g *seedGate) defaults(usageDelay time.Duration) string {
	prop, lease := 2*time.Minute, 15*time.Minute
	if g != nil && g.propagationTimeout > 0 {
		prop = g.propagationTimeout
	}
	if g != nil && g.leaseTTL > 0 {
		lease = g.leaseTTL
	}
	d := fmt.Sprintf("  grace: 0s\n  max_age: 90d\n  propagation_timeout: %s\n  lease_ttl: %s\n", shortDur(prop), shortDur(lease))
	if g == nil {
		return d + fmt.Sprintf("  usage_delay: %s  # how late this emulator's Cloud Monitoring reports a call\n", usageDelay)
	}
	d += "  # the drain gate: delete the old key once Cloud Monitoring has seen it quiet\n"
	d += fmt.Sprintf("  retire: quiet\n  quiet_period: %s\n  drain_timeout: %s\n", shortDur(g.quietPeriod), shortDur(g.drainTimeout))
	d += fmt.Sprintf("  usage_delay: %s   # how late this emulator's Cloud Monitoring reports a call\n", shortDur(g.usageDelay))
	return d
}

// shortDur writes d as a config does and people read it: 10m, 1h30m, 4s,
// 90d (config.Duration's form without its trailing zero units).
func shortDur(d time.Duration) string {
	s := config.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// seedDemo seeds srv with the demo world and writes keyrotate.yaml and
// app/.env into dir.
func seedDemo(srv *emulator.Server, dir string) (*seeded, error) {
	return seedDemoWith(srv, dir, nil)
}

// seedDemoWith is seedDemo with the config's drain gate set as gate says
// (nil: not set, keyrotate's defaults apply).
func seedDemoWith(srv *emulator.Server, dir string, gate *seedGate) (*seeded, error) {
	srv.AddProject(demoProject, demoProjectNumber)
	srv.RejectStandardKeys(true) // the late-2026 Gemini policy
	name, keyString, err := seedSlot(srv, demoProject, demoKeyID, demoSecretID, "Gemini API (prod)", demoSA)
	if err != nil {
		return nil, err
	}
	// The topic Secret Manager's rotation schedule notifies (the config's
	// schedule_topic, for `schedule`), and a pull subscription on it (for
	// `listen`).
	if err := srv.CreateTopic(demoTopic); err != nil {
		return nil, err
	}
	if err := srv.CreateSubscription(demoSubscription, demoTopic, time.Minute); err != nil {
		return nil, err
	}
	files := seedFiles(dir)
	s := &seeded{dir: dir, keyName: name, key: secret.New(keyString), config: files[0], dotenv: files[1]}
	if err := os.MkdirAll(filepath.Dir(s.dotenv), 0o755); err != nil {
		return nil, err
	}
	env := "# Settings for the chat service. Loaded by docker compose and by `source`.\n" +
		"APP_ENV=production\n" +
		"LOG_LEVEL=info   # debug when investigating\n" +
		"\n" +
		"# Gemini, rotated by keyrotate: do not edit by hand.\n" +
		"export GEMINI_API_KEY=\"" + keyString + "\"\n" +
		"GEMINI_MODEL='gemini-2.5-flash'\n" +
		"DATABASE_URL=postgres://chat@db:5432/chat?sslmode=disable\n"
	if err := os.WriteFile(s.dotenv, []byte(env), 0o600); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`version: 1
defaults:
%s  # schedule_topic: %s  # uncomment for keyrotate schedule (max_age must then be 1h or more)
slots:
  - name: gemini-prod
    project: %s
    secret: projects/%s/secrets/%s
    verify: gemini
    targets:
      - type: dotenv
        path: app/.env
        var: GEMINI_API_KEY
`, gate.defaults(srv.MonitoringDelay()), demoTopic, demoProject, demoProject, demoSecretID)
	if err := os.WriteFile(s.config, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return s, nil
}

// seedFleet adds projects × slots more slots to a seeded demo world, to try
// fleet runs (--parallel, --shard) by hand: projects fleet-p00, fleet-p01,
// ... (numbers 700000000000 + i), each slot a bound, restricted key and a
// secret holding it, all appended to the config. Each slot's key is due
// (created 100 days ago by the emulator's clock? no: max_age 90d is not
// reached, so fleet runs use --now or a shorter max_age in the config).
func seedFleet(srv *emulator.Server, w *seeded, projects, slots int) ([]string, error) {
	var names []string
	var cfg strings.Builder
	for p := range projects {
		id := fmt.Sprintf("fleet-p%02d", p)
		srv.AddProject(id, int64(700000000000+p))
		for s := range slots {
			name := fmt.Sprintf("fleet-p%02d-s%03d", p, s)
			if _, _, err := seedSlot(srv, id, name+"-2026", name, "Gemini "+name, "gemini@"+id+".iam.gserviceaccount.com"); err != nil {
				return nil, err
			}
			fmt.Fprintf(&cfg, "  - name: %s\n    project: %s\n    secret: projects/%s/secrets/%s\n    verify: gemini\n", name, id, id, name)
			names = append(names, name)
		}
	}
	f, err := os.OpenFile(w.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(cfg.String()); err != nil {
		f.Close()
		return nil, err
	}
	return names, f.Close()
}

// seedSlot seeds what one slot rotates: a key bound to sa and restricted to
// the Gemini API, and a secret whose one version holds it.
func seedSlot(srv *emulator.Server, project, keyID, secretID, displayName, sa string) (name, keyString string, err error) {
	name, keyString, err = srv.SeedKey(project, keyID, &apikeys.V2Key{
		DisplayName:         displayName,
		Restrictions:        &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}}},
		ServiceAccountEmail: sa,
	})
	if err != nil {
		return "", "", fmt.Errorf("seed key: %w", err)
	}
	sec, err := srv.SeedSecret(project, secretID, nil)
	if err != nil {
		return "", "", fmt.Errorf("seed secret: %w", err)
	}
	if _, err := srv.SeedSecretVersion(sec, []byte(keyString)); err != nil {
		return "", "", fmt.Errorf("seed secret version: %w", err)
	}
	return name, keyString, nil
}
