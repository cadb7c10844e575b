package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"gopkg.in/yaml.v3"
)

const testdata = "../../testdata/config"

// head is a valid start of a file; tests append slots to it.
const head = "version: 1\nslots:\n"

// slotYAML is one valid slot, at lines 3–5 after head.
const slotYAML = `  - name: gemini-prod
    project: my-project
    secret: projects/my-project/secrets/gemini-api-key
`

func TestLoadDesignExample(t *testing.T) {
	path := filepath.Join(testdata, "valid.yaml")
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%q): %v", path, err)
	}
	want := &Config{
		Path:    path,
		Version: 1,
		Defaults: Defaults{
			Grace:              0,
			MaxAge:             Duration(90 * 24 * time.Hour),
			PropagationTimeout: Duration(10 * time.Minute),
			LeaseTTL:           Duration(15 * time.Minute),
			Probe:              ProbeCountTokens,
			QuietPeriod:        DefaultQuietPeriod,
			DrainTimeout:       DefaultDrainTimeout,
			Usage:              UsageBestEffort,
			UsageDelay:         DefaultUsageDelay,
		},
		Slots: []Slot{{
			Name:           "gemini-prod",
			Project:        "my-project",
			Secret:         "projects/my-project/secrets/gemini-api-key",
			Key:            "projects/123/locations/global/keys/abc",
			ServiceAccount: "sa@my-project.iam.gserviceaccount.com",
			Verify:         "gemini",
			Targets: []Target{{
				Type: "dotenv",
				Path: filepath.Join(testdata, "app", ".env"),
				Var:  "GEMINI_API_KEY",
				Line: 15,
			}},
			Line: 8,
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load(%q) mismatch (-want +got):\n%s", path, diff)
	}
}

func TestLoadMulti(t *testing.T) {
	path := filepath.Join(testdata, "multi.yaml")
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%q): %v", path, err)
	}
	prod, ok := c.Slot("gemini-prod")
	if !ok {
		t.Fatalf("Slot(%q) not found", "gemini-prod")
	}
	batch, ok := c.Slot("gemini-batch")
	if !ok {
		t.Fatalf("Slot(%q) not found", "gemini-batch")
	}
	if _, ok := c.Slot("nope"); ok {
		t.Errorf("Slot(%q) found, want not found", "nope")
	}
	for _, tc := range []struct {
		name      string
		got, want time.Duration
	}{
		{"prod grace (own)", c.EffectiveGrace(prod), 36 * time.Hour},
		{"prod max_age (default)", c.EffectiveMaxAge(prod), 30 * 24 * time.Hour},
		{"batch grace (default)", c.EffectiveGrace(batch), 24 * time.Hour},
		{"batch max_age (own)", c.EffectiveMaxAge(batch), 7 * 24 * time.Hour},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if batch.Verify != "none" || prod.Verify != "gemini" {
		t.Errorf("Verify = %q, %q, want gemini, none", prod.Verify, batch.Verify)
	}
	wantPaths := []string{filepath.Join(testdata, "app/.env"), "/etc/worker/env", ""}
	for i, tg := range prod.Targets {
		if tg.Path != wantPaths[i] {
			t.Errorf("prod target %d path = %q, want %q", i, tg.Path, wantPaths[i])
		}
	}
	// Slot returns a pointer into the config, not a copy.
	if s, _ := c.Slot("gemini-prod"); s != &c.Slots[0] {
		t.Errorf("Slot returned a copy")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "keyrotate.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Errorf("Load(missing) = %v, want not ErrInvalid", err)
	}
	var h interface{ Hint() string }
	if !errors.As(err, &h) || !strings.Contains(h.Hint(), "--config") {
		t.Errorf("Load(missing) has no hint naming --config: %v", err)
	}
}

func TestParseGood(t *testing.T) {
	for _, tc := range []struct {
		name  string
		yaml  string
		check func(t *testing.T, c *Config)
	}{
		{"quotas", "version: 1\ndefaults:\n  quotas:\n    apikeys: {writes: 600}\n    secretmanager:\n      reads: 1200\n      writes: 900\nslots:\n" + slotYAML, func(t *testing.T, c *Config) {
			want := map[string]Quota{"apikeys": {Writes: 600}, "secretmanager": {Reads: 1200, Writes: 900}}
			if diff := cmp.Diff(want, c.Defaults.Quotas); diff != "" {
				t.Errorf("Quotas mismatch (-want +got):\n%s", diff)
			}
		}},
		{"schedule topic", "version: 1\ndefaults:\n  schedule_topic: projects/my-project/topics/rotations\nslots:\n" + slotYAML +
			"  - name: other\n    project: my-project\n    secret: projects/my-project/secrets/other\n    schedule_topic: projects/123/topics/other.rotations\n", func(t *testing.T, c *Config) {
			if got := c.EffectiveScheduleTopic(&c.Slots[0]); got != "projects/my-project/topics/rotations" {
				t.Errorf("EffectiveScheduleTopic(gemini-prod) = %q, want the default", got)
			}
			if got := c.EffectiveScheduleTopic(&c.Slots[1]); got != "projects/123/topics/other.rotations" {
				t.Errorf("EffectiveScheduleTopic(other) = %q, want its own", got)
			}
		}},
		{"quota project", "version: 1\ndefaults:\n  quota_project: billing-project\nslots:\n" + slotYAML, func(t *testing.T, c *Config) {
			if c.Defaults.QuotaProject != "billing-project" {
				t.Errorf("QuotaProject = %q, want %q", c.Defaults.QuotaProject, "billing-project")
			}
		}},
		{"defaults filled in", head + slotYAML, func(t *testing.T, c *Config) {
			want := Defaults{MaxAge: Duration(90 * 24 * time.Hour), PropagationTimeout: Duration(10 * time.Minute), LeaseTTL: Duration(15 * time.Minute), Probe: ProbeCountTokens,
				QuietPeriod: Duration(10 * time.Minute), DrainTimeout: Duration(time.Hour), Usage: UsageBestEffort, UsageDelay: Duration(30 * time.Minute)}
			if diff := cmp.Diff(want, c.Defaults); diff != "" {
				t.Errorf("Defaults mismatch (-want +got):\n%s", diff)
			}
			if c.Slots[0].Verify != "gemini" {
				t.Errorf("Verify = %q, want gemini", c.Slots[0].Verify)
			}
			if c.Slots[0].Grace != nil || c.Slots[0].MaxAge != nil {
				t.Errorf("Grace, MaxAge = %v, %v, want nil", c.Slots[0].Grace, c.Slots[0].MaxAge)
			}
		}},
		{"null defaults", "version: 1\ndefaults:\nslots:\n" + slotYAML, nil},
		{"drain gate by default", head + slotYAML, func(t *testing.T, c *Config) {
			s := &c.Slots[0]
			got := []any{c.EffectiveRetire(s), c.EffectiveQuietPeriod(s), c.EffectiveDrainTimeout(s), c.EffectiveUsage(s), time.Duration(c.Defaults.UsageDelay)}
			want := []any{RetireQuiet, 10 * time.Minute, time.Hour, UsageBestEffort, 30 * time.Minute}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("retire, quiet_period, drain_timeout, usage, usage_delay (-want +got):\n%s", diff)
			}
		}},
		{"drain gate settings", "version: 1\ndefaults: {retire: now, quiet_period: 5m, drain_timeout: 0s, usage: required, usage_delay: 0s}\nslots:\n" + slotYAML +
			"    retire: quiet\n    quiet_period: 20m\n    drain_timeout: 2h\n    usage: best-effort\n" +
			"  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/b\n", func(t *testing.T, c *Config) {
			a, b := &c.Slots[0], &c.Slots[1]
			got := []any{c.EffectiveRetire(a), c.EffectiveQuietPeriod(a), c.EffectiveDrainTimeout(a), c.EffectiveUsage(a),
				c.EffectiveRetire(b), c.EffectiveQuietPeriod(b), c.EffectiveDrainTimeout(b), c.EffectiveUsage(b), time.Duration(c.Defaults.UsageDelay)}
			want := []any{RetireQuiet, 20 * time.Minute, 2 * time.Hour, UsageBestEffort,
				RetireNow, 5 * time.Minute, time.Duration(0), UsageRequired, time.Duration(0)}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("effective drain settings (-want +got):\n%s", diff)
			}
		}},
		{"retire quiet with a grace to fall back to", head + slotYAML + "    retire: quiet\n    grace: 1h\n", func(t *testing.T, c *Config) {
			if r, g := c.EffectiveRetire(&c.Slots[0]), c.EffectiveGrace(&c.Slots[0]); r != RetireQuiet || g != time.Hour {
				t.Errorf("EffectiveRetire, EffectiveGrace = %q, %v; want quiet, 1h (best-effort's fallback)", r, g)
			}
		}},
		{"a grace means retire: grace", "version: 1\ndefaults: {grace: 1h}\nslots:\n" + slotYAML +
			"  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/b\n    retire: now\n    grace: 0s\n", func(t *testing.T, c *Config) {
			if got := c.EffectiveRetire(&c.Slots[0]); got != RetireGrace {
				t.Errorf("EffectiveRetire with a default grace = %q, want grace", got)
			}
			if got := c.EffectiveRetire(&c.Slots[1]); got != RetireNow {
				t.Errorf("EffectiveRetire with retire: now = %q, want now", got)
			}
		}},
		{"zero durations", "version: 1\ndefaults: {grace: 0}\nslots:\n" + slotYAML + "    grace: 0s\n", func(t *testing.T, c *Config) {
			if g := c.Slots[0].Grace; g == nil || *g != 0 {
				t.Errorf("Grace = %v, want 0", g)
			}
		}},
		{"project number", head + "  - name: a\n    project: 123456789012\n    secret: projects/123456789012/secrets/k\n", func(t *testing.T, c *Config) {
			if c.Slots[0].Project != "123456789012" {
				t.Errorf("Project = %q, want 123456789012", c.Slots[0].Project)
			}
		}},
		{"probe by default: countTokens on the default model", head + slotYAML, func(t *testing.T, c *Config) {
			if p, m := c.EffectiveProbe(&c.Slots[0]); p != ProbeCountTokens || m != "" {
				t.Errorf("EffectiveProbe = %q, %q; want countTokens and the probe's default model", p, m)
			}
		}},
		{"probe and model from defaults, a slot overrides", "version: 1\ndefaults:\n  probe: generateContent\n  model: gemini-3.8-flash\nslots:\n" + slotYAML +
			"  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/b\n    probe: countTokens\n" +
			"  - name: c\n    project: my-project\n    secret: projects/my-project/secrets/c\n    model: models/gemini-3.5-flash-lite\n" +
			"  - name: d\n    project: my-project\n    secret: projects/my-project/secrets/d\n    probe: listModels\n", func(t *testing.T, c *Config) {
			type pm struct{ Probe, Model string }
			var got []pm
			for i := range c.Slots {
				p, m := c.EffectiveProbe(&c.Slots[i])
				got = append(got, pm{p, m})
			}
			want := []pm{{"generateContent", "gemini-3.8-flash"}, {"countTokens", "gemini-3.8-flash"}, {"generateContent", "models/gemini-3.5-flash-lite"}, {"listModels", ""}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("EffectiveProbe mismatch (-want +got):\n%s", diff)
			}
		}},
		{"bound key restrictions narrowed", head + slotYAML + "    service_account: sa@my-project.iam.gserviceaccount.com\n    bound_key_restrictions: gemini\n", func(t *testing.T, c *Config) {
			if c.Slots[0].BoundKeyRestrictions != BoundGemini {
				t.Errorf("BoundKeyRestrictions = %q, want %q", c.Slots[0].BoundKeyRestrictions, BoundGemini)
			}
		}},
		{"secret in a central secrets project", head + "  - name: a\n    project: my-project\n    secret: projects/vault-project/secrets/k\n    secret_project_differs: true\n", func(t *testing.T, c *Config) {
			if !c.Slots[0].SecretProjectDiffers {
				t.Errorf("SecretProjectDiffers = false, want true")
			}
		}},
		// An id and a number cannot be compared without the API: the
		// preflight does it.
		{"project id, secret and key by number", head + "  - name: a\n    project: my-project\n    secret: projects/123456789012/secrets/k\n    key: projects/999/locations/global/keys/k\n", func(t *testing.T, c *Config) {
			if c.Slots[0].SecretProjectDiffers {
				t.Errorf("SecretProjectDiffers = true, want false by default")
			}
		}},
		{"project number, secret and key by id", head + "  - name: a\n    project: 123456789012\n    secret: projects/my-project/secrets/k\n    key: projects/my-project/locations/global/keys/k\n", nil},
		{"key in the project", head + slotYAML + "    key: projects/my-project/locations/global/keys/k\n", nil},
		{"secretmanager targets: another project, regional", head + slotYAML + "    targets:\n      - {type: secretmanager, secret: projects/vault-project/secrets/copy}\n      - {type: secretmanager, secret: projects/my-project/locations/europe-west1/secrets/copy}\n      - {type: secretmanager, secret: projects/123456/locations/northamerica-northeast1/secrets/copy}\n", func(t *testing.T, c *Config) {
			want := []string{"projects/vault-project/secrets/copy", "projects/my-project/locations/europe-west1/secrets/copy", "projects/123456/locations/northamerica-northeast1/secrets/copy"}
			for i, tg := range c.Slots[0].Targets {
				if tg.Type != TargetSecretManager || tg.Secret != want[i] {
					t.Errorf("target %d = %s %q, want secretmanager %q", i, tg.Type, tg.Secret, want[i])
				}
			}
		}},
		{"same regional secret in two locations", head + slotYAML + "    targets:\n      - {type: secretmanager, secret: projects/my-project/locations/us-east1/secrets/c}\n      - {type: secretmanager, secret: projects/my-project/locations/us-west1/secrets/c}\n      - {type: secretmanager, secret: projects/my-project/secrets/c}\n", nil},
		{"key with uuid id", head + slotYAML + "    key: projects/123/locations/global/keys/0f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b\n", nil},
		{"developer service account", head + slotYAML + "    service_account: 123-compute@developer.gserviceaccount.com\n", nil},
		{"verify none", head + slotYAML + "    verify: none\n", nil},
		{"empty targets", head + slotYAML + "    targets: []\n", nil},
		{"same var in two files", head + slotYAML + "    targets:\n      - {type: dotenv, path: a/.env, var: K}\n      - {type: dotenv, path: b/.env, var: K}\n", nil},
		{"two vars in one file", head + slotYAML + "    targets:\n      - {type: dotenv, path: .env, var: A}\n      - {type: dotenv, path: ./.env, var: B}\n", nil},
		{"flow style and anchors", "version: 1\nslots:\n  - &s {name: a, project: my-project, secret: projects/my-project/secrets/a}\n", func(t *testing.T, c *Config) {
			if c.Slots[0].Line != 3 {
				t.Errorf("Line = %d, want 3", c.Slots[0].Line)
			}
		}},
		{"document markers", "---\n" + head + slotYAML + "...\n", nil},
		{"comments only around", "# keyrotate\n" + head + slotYAML + "# end\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("keyrotate.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatalf("Parse:\n%s\nerror: %v", tc.yaml, err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	for _, tc := range []struct {
		name      string
		yaml      string
		line      int
		msg, hint string
	}{
		// file and YAML
		{"empty", "", 0, "empty", "version: 1"},
		{"comments only", "# nothing\n", 0, "empty", "version: 1"},
		{"null document", "---\n", 0, "empty", "version: 1"},
		// yaml.v3 reports the line where the enclosing list starts here.
		{"syntax", "version: 1\nslots:\n  - name: a\n   project: b\n", 2, "invalid YAML", "syntax"},
		{"syntax on line 1", "version: 1: 2\n", 1, "invalid YAML", "syntax"},
		{"tab", "version: 1\n\tslots: []\n", 2, "invalid YAML", "tabs"},
		{"control character", "version: 1\nslots: \x01\n", 2, "invalid YAML", "UTF-8"},
		{"unknown anchor", "version: 1\nslots:\n  - *nope\n", 3, "unknown anchor", "&nope"},
		{"two documents", head + slotYAML + "---\nversion: 1\n", 7, "more than one YAML document", "---"},
		{"not a mapping", "- a\n- b\n", 1, "must be a YAML mapping", "version: 1"},
		{"duplicate field", "version: 1\nversion: 1\nslots:\n" + slotYAML, 2, `field "version" given twice (first at line 1)`, "remove one"},
		{"merge key", "version: 1\nslots:\n  - <<: {name: a}\n", 3, "merge keys", "full"},

		// quotas
		{"quota not a number", "version: 1\ndefaults:\n  quotas:\n    apikeys:\n      writes: lots\nslots:\n" + slotYAML, 5, "defaults.quotas.apikeys writes must be a whole number", "per minute"},
		{"quota zero", "version: 1\ndefaults:\n  quotas:\n    secretmanager: {reads: 0}\nslots:\n" + slotYAML, 4, "secretmanager reads must be a whole number from 1", "per minute"},
		{"quota unknown API", "version: 1\ndefaults:\n  quotas:\n    gemini: {reads: 10}\nslots:\n" + slotYAML, 4, `unknown field "gemini" in defaults.quotas`, "apikeys, secretmanager"},
		{"quota unknown kind", "version: 1\ndefaults:\n  quotas:\n    apikeys: {write: 10}\nslots:\n" + slotYAML, 4, `unknown field "write"`, "writes"},

		// quota_project
		{"quota project not a project", "version: 1\ndefaults:\n  quota_project: My_Project\nslots:\n" + slotYAML, 3, `quota_project "My_Project" is not a project id or number`, "project charged"},
		{"quota project a list", "version: 1\ndefaults:\n  quota_project: [a]\nslots:\n" + slotYAML, 3, "quota_project must be a string", "single value"},
		{"quota project typo", "version: 1\ndefaults:\n  quota_projct: billing-project\nslots:\n" + slotYAML, 3, `unknown field "quota_projct"`, `did you mean "quota_project"?`},

		// schedule_topic
		{"schedule topic not a topic", "version: 1\ndefaults:\n  schedule_topic: keyrotate-events\nslots:\n" + slotYAML, 3, `schedule_topic "keyrotate-events" is not a Pub/Sub topic name`, "projects/PROJECT/topics/TOPIC"},
		{"schedule topic goog", head + slotYAML + "    schedule_topic: projects/my-project/topics/google-rotations\n", 6, "is not a Pub/Sub topic name", `not with "goog"`},
		{"schedule topic bad project", head + slotYAML + "    schedule_topic: projects/My_Project/topics/rotations\n", 6, "is not a Pub/Sub topic name", "projects/PROJECT/topics/TOPIC"},
		{"schedule topic typo", head + slotYAML + "    schedule_topc: projects/my-project/topics/rotations\n", 6, `unknown field "schedule_topc"`, `did you mean "schedule_topic"?`},
		{"schedule max age under an hour", head + slotYAML + "    schedule_topic: projects/my-project/topics/rotations\n    max_age: 30m\n", 7, "max_age 30m0s cannot be a rotation schedule's period", "from 1h to 100 years"},
		{"schedule default topic, short default max age", "version: 1\ndefaults:\n  max_age: 59m\n  schedule_topic: projects/my-project/topics/rotations\nslots:\n" + slotYAML, 6, "max_age 59m0s cannot be", "whole seconds"},
		{"quota project in a slot", "version: 1\nslots:\n  - name: a\n    project: my-project\n    secret: projects/my-project/secrets/s\n    quota_project: billing-project\n", 6, `unknown field "quota_project"`, "under \"defaults:\""},

		// the drain gate
		{"retire typo", head + slotYAML + "    retire: quite\n", 6, `retire must be quiet, grace or now, not "quite"`, `"retire: quiet"`},
		{"retire now with grace", head + slotYAML + "    retire: now\n    grace: 1h\n", 6, "grace does not apply with retire: now", "remove grace"},
		{"short quiet period", "version: 1\ndefaults:\n  quiet_period: 30s\nslots:\n" + slotYAML, 3, "quiet_period must be at least 1m", "per minute"},
		{"negative drain timeout", head + slotYAML + "    drain_timeout: -1m\n", 6, "drain_timeout must not be negative", "finalize"},
		{"usage typo", head + slotYAML + "    usage: besteffort\n", 6, `usage must be required or best-effort, not "besteffort"`, `"usage: required"`},
		{"usage_delay in a slot", head + slotYAML + "    usage_delay: 0s\n", 6, `unknown field "usage_delay" in a slot`, "defaults"},
		{"negative usage delay", "version: 1\ndefaults:\n  usage_delay: -1m\nslots:\n" + slotYAML, 3, "usage_delay must not be negative", "Cloud Monitoring"},

		// version
		{"missing version", "slots:\n" + slotYAML, 1, "missing version", `add "version: 1"`},
		{"version 2", "version: 2\nslots:\n" + slotYAML, 1, "unsupported version 2", "version: 1"},
		{"version string", "version: \"1\"\nslots:\n" + slotYAML, 1, `version must be the number 1, not "1"`, "not quoted"},

		// unknown fields
		{"unknown top-level field", "version: 1\nslot:\n" + slotYAML, 2, `unknown field "slot" at the top level`, `did you mean "slots"?`},
		{"unknown slot field", head + slotYAML + "    sercet: x\n", 6, `unknown field "sercet" in a slot`, `did you mean "secret"?`},
		{"camel case field", head + slotYAML + "    serviceAccount: x\n", 6, `unknown field "serviceAccount"`, `did you mean "service_account"?`},
		{"defaults field in slot", head + slotYAML + "    lease_ttl: 1h\n", 6, `unknown field "lease_ttl" in a slot`, "defaults"},
		{"unknown defaults field", "version: 1\ndefaults:\n  gracee: 1h\nslots:\n" + slotYAML, 3, `unknown field "gracee" in defaults`, `did you mean "grace"?`},
		{"no suggestion", head + slotYAML + "    colour: blue\n", 6, `unknown field "colour"`, "the fields in a slot are: name, project"},

		// durations
		{"bad duration", "version: 1\ndefaults:\n  max_age: soon\nslots:\n" + slotYAML, 3, `max_age: invalid duration "soon"`, "90d"},
		{"weeks", "version: 1\ndefaults:\n  max_age: 1w\nslots:\n" + slotYAML, 3, `unknown unit "w"`, "7d"},
		{"no unit", "version: 1\ndefaults:\n  max_age: 90\nslots:\n" + slotYAML, 3, `missing unit`, "90d"},
		{"negative grace", "version: 1\ndefaults:\n  grace: -1h\nslots:\n" + slotYAML, 3, "grace must not be negative", "0s"},
		{"zero max_age", "version: 1\ndefaults:\n  max_age: 0s\nslots:\n" + slotYAML, 3, "max_age must be more than 0", "90d"},
		{"zero propagation", "version: 1\ndefaults:\n  propagation_timeout: 0s\nslots:\n" + slotYAML, 3, "propagation_timeout must be more than 0", "1–10 minutes"},
		{"long propagation", "version: 1\ndefaults:\n  propagation_timeout: 2h\nslots:\n" + slotYAML, 3, "longer than 1h", "1–10 minutes"},
		{"short lease", "version: 1\ndefaults:\n  lease_ttl: 30s\nslots:\n" + slotYAML, 3, "lease_ttl must be at least 1m", "15m"},
		{"slot negative max_age", head + slotYAML + "    max_age: -1d\n", 6, "max_age must be more than 0", "90d"},
		{"duration list", head + slotYAML + "    grace: [1h]\n", 6, "grace must be a string, not a list", "single value"},

		// slots
		{"no slots field", "version: 1\n", 1, "no slots", "name: gemini-prod"},
		{"null slots", "version: 1\nslots:\n", 2, "no slots", "name: gemini-prod"},
		{"empty slots", "version: 1\nslots: []\n", 2, "no slots", "name: gemini-prod"},
		{"slots not a list", "version: 1\nslots: {name: a}\n", 2, "slots must be a list", "- name"},
		{"slot not a mapping", "version: 1\nslots:\n  - gemini-prod\n", 3, "a slot must be a mapping", "name, project"},
		{"no name", head + "  - project: my-project\n    secret: projects/my-project/secrets/a\n", 3, "slot has no name", "name: gemini-prod"},
		{"bad name", head + "  - name: Gemini_Prod\n    project: my-project\n    secret: projects/my-project/secrets/a\n", 3, `invalid slot name "Gemini_Prod"`, `"gemini-prod"`},
		{"long name", head + "  - name: a" + strings.Repeat("b", 63) + "\n    project: my-project\n    secret: projects/my-project/secrets/a\n", 3, "invalid slot name", "63"},
		{"duplicate name", head + slotYAML + "  - name: gemini-prod\n    project: my-project\n    secret: projects/my-project/secrets/b\n", 6, `slot name "gemini-prod" already used at line 3`, "own name"},
		{"no project", head + "  - name: a\n    secret: projects/my-project/secrets/a\n", 3, `slot "a" has no project`, "project: my-project"},
		{"bad project", head + "  - name: a\n    project: My Project\n    secret: projects/my-project/secrets/a\n", 4, `project "My Project" is not a project id or number`, "gcloud projects list"},
		{"short project", head + "  - name: a\n    project: abc\n    secret: projects/my-project/secrets/a\n", 4, "not a project id", "6–30"},
		{"no secret", head + "  - name: a\n    project: my-project\n", 3, `slot "a" has no secret`, "projects/my-project/secrets/gemini-api-key"},
		{"bare secret", head + "  - name: a\n    project: my-project\n    secret: gemini-api-key\n", 5, "not a full secret name", "projects/my-project/secrets/gemini-api-key"},
		{"regional secret", head + "  - name: a\n    project: my-project\n    secret: projects/my-project/locations/us-east1/secrets/k\n", 5, "a slot's own secret must be global", "add the regional one as a target"},
		{"secret version", head + "  - name: a\n    project: my-project\n    secret: projects/my-project/secrets/k/versions/3\n", 5, "names a secret version", "/versions/"},
		{"secret bad id", head + "  - name: a\n    project: my-project\n    secret: projects/my-project/secrets/a.b\n", 5, "secret id", "1–255"},
		{"secret bad project", head + "  - name: a\n    project: my-project\n    secret: projects/X/secrets/a\n", 5, "the project in", "project id"},
		{"shared secret", head + slotYAML + "  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/gemini-api-key\n", 8, `is already used as the secret of slot "gemini-prod" (line 5)`, "own secret"},
		{"bad key", head + slotYAML + "    key: projects/p/keys/k\n", 6, "is not an API key name", "locations/global/keys"},
		{"bare key", head + slotYAML + "    key: my-key\n", 6, "not a full key name", "projects/my-project/locations/global/keys/my-key"},
		{"regional key", head + slotYAML + "    key: projects/123/locations/us/keys/k\n", 6, `location global, not "us"`, "locations/global/keys/k"},
		{"bad key id", head + slotYAML + "    key: projects/123/locations/global/keys/Key_1\n", 6, "key id", "lower-case"},
		{"shared key", head + slotYAML + "    key: projects/1/locations/global/keys/k\n  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/b\n    key: projects/1/locations/global/keys/k\n", 10, `already used as the key of slot "gemini-prod" (line 6)`, "one slot"},
		{"secret in another project", head + "  - name: a\n    project: my-project\n    secret: projects/vault-project/secrets/k\n", 5,
			`secret "projects/vault-project/secrets/k" is in project "vault-project", not in the slot's project "my-project"`, "secret_project_differs: true"},
		{"secret in another project, by number", head + "  - name: a\n    project: 123456789012\n    secret: projects/42/secrets/k\n", 5,
			`is in project "42", not in the slot's project "123456789012"`, "secret_project_differs: true"},
		{"key in another project", head + slotYAML + "    key: projects/other-project/locations/global/keys/k\n", 6,
			`key "projects/other-project/locations/global/keys/k" is in project "other-project", not in the slot's project "my-project"`, "fix project: or key:"},
		{"key in another project, central secret", head + "  - name: a\n    project: my-project\n    secret: projects/vault-project/secrets/k\n    secret_project_differs: true\n    key: projects/vault-project/locations/global/keys/k\n", 7,
			`is in project "vault-project", not in the slot's project "my-project"`, "keys live in its project"},
		{"secret_project_differs without a difference", head + slotYAML + "    secret_project_differs: true\n", 6,
			"secret_project_differs is true, but secret", "remove secret_project_differs"},
		{"bound_key_restrictions unknown", head + slotYAML + "    service_account: sa@my-project.iam.gserviceaccount.com\n    bound_key_restrictions: narrow\n", 7,
			`bound_key_restrictions must be gemini or copy, not "narrow"`, `"gemini"`},
		{"bound_key_restrictions without service_account", head + slotYAML + "    bound_key_restrictions: gemini\n", 6,
			"bound_key_restrictions applies only with service_account", "set service_account"},
		{"secret_project_differs not a bool", head + slotYAML + "    secret_project_differs: yes please\n", 6,
			`secret_project_differs must be true or false, not "yes please"`, "central secrets project"},
		{"secret_project_differs misspelt", head + slotYAML + "    secret_project_differ: true\n", 6,
			`unknown field "secret_project_differ"`, `did you mean "secret_project_differs"?`},
		{"bad service account", head + slotYAML + "    service_account: me@gmail.com\n", 6, "not a service account email", "iam.gserviceaccount.com"},
		{"upper-case service account", head + slotYAML + "    service_account: SA@my-project.iam.gserviceaccount.com\n", 6, "not a service account email", "lower case"},
		{"bad verify", head + slotYAML + "    verify: yes\n", 6, `verify must be gemini or none, not "yes"`, "verify: none"},

		// probe, model
		{"probe misspelt", head + slotYAML + "    probe: counttokens\n", 6, `probe must be countTokens, generateContent or listModels, not "counttokens"`, `did you mean "countTokens"?`},
		{"probe typo", head + slotYAML + "    probe: generateContnet\n", 6, `probe must be countTokens`, `did you mean "generateContent"?`},
		{"probe unknown", head + slotYAML + "    probe: ping\n", 6, `not "ping"`, "countTokens (free"},
		{"probe in defaults misspelt", "version: 1\ndefaults:\n  probe: list_models\nslots:\n" + slotYAML, 3, `probe must be`, `did you mean "listModels"?`},
		{"model not a model id", head + slotYAML + "    model: Gemini 3.5 Flash\n", 6, `model "Gemini 3.5 Flash" is not a Gemini model id`, "gemini-3.5-flash-lite"},
		{"model upper case", head + slotYAML + "    model: Gemini-3.5-Flash-Lite\n", 6, "is not a Gemini model id", `"gemini-3.5-flash-lite"`},
		{"model with a method", head + slotYAML + "    model: models/gemini-3.5-flash-lite:generateContent\n", 6, "is not a Gemini model id", "probe:"},
		{"model in defaults", "version: 1\ndefaults:\n  model: tunedModels/x\nslots:\n" + slotYAML, 3, "is not a Gemini model id", "gemini-3.5-flash-lite"},
		{"model with listModels", head + slotYAML + "    probe: listModels\n    model: gemini-3.5-flash-lite\n", 7, "model applies only to the countTokens and generateContent probes", "remove model"},
		{"model with listModels from defaults", "version: 1\ndefaults:\n  probe: listModels\nslots:\n" + slotYAML + "    model: gemini-3.5-flash-lite\n", 8, "model applies only to the countTokens and generateContent probes", "remove model"},
		{"model in defaults with listModels", "version: 1\ndefaults:\n  probe: listModels\n  model: gemini-3.5-flash-lite\nslots:\n" + slotYAML, 4, "model applies only", "remove model"},
		{"probe with verify none", head + slotYAML + "    verify: none\n    probe: countTokens\n", 7, "probe applies only with verify: gemini", "remove probe"},
		{"name is a list", head + "  - name: [a]\n    project: my-project\n    secret: projects/my-project/secrets/a\n", 3, "name must be a string, not a list", "single value"},

		// targets
		{"targets not a list", head + slotYAML + "    targets: {type: dotenv}\n", 6, "targets must be a list", "- type"},
		{"target no type", head + slotYAML + "    targets:\n      - path: .env\n        var: K\n", 7, "target has no type", "type: dotenv"},
		{"target bad type", head + slotYAML + "    targets:\n      - type: env\n", 7, `unknown target type "env"`, `did you mean "dotenv"?`},
		{"dotenv no var", head + slotYAML + "    targets:\n      - type: dotenv\n        path: .env\n", 7, "dotenv target has no var", "var: GEMINI_API_KEY"},
		{"dotenv no path", head + slotYAML + "    targets:\n      - type: dotenv\n        var: K\n", 7, "dotenv target has no path", "path: app/.env"},
		{"dotenv bad var", head + slotYAML + "    targets:\n      - type: dotenv\n        path: .env\n        var: 1KEY\n", 9, `invalid variable name "1KEY"`, "GEMINI_API_KEY"},
		{"dotenv with secret", head + slotYAML + "    targets:\n      - type: dotenv\n        path: .env\n        var: K\n        secret: projects/p/secrets/s\n", 10, `field "secret" does not apply to a dotenv target`, "path, var and allow_world_readable"},
		{"dotenv allow_world_readable a string", head + slotYAML + "    targets:\n      - {type: dotenv, path: .env, var: K, allow_world_readable: \"yes\"}\n", 7, `allow_world_readable must be true or false, not "yes"`, "allow_world_readable: true"},
		{"dotenv allow_world_readable a list", head + slotYAML + "    targets:\n      - type: dotenv\n        path: .env\n        var: K\n        allow_world_readable: [true]\n", 10, "allow_world_readable must be true or false", "leave it out"},
		{"dotenv allow_world_readable typo", head + slotYAML + "    targets:\n      - type: dotenv\n        path: .env\n        var: K\n        allow_world_readble: true\n", 10, `allow_world_readble`, `did you mean "allow_world_readable"?`},
		{"secretmanager allow_world_readable", head + slotYAML + "    targets:\n      - type: secretmanager\n        secret: projects/my-project/secrets/copy\n        allow_world_readable: true\n", 9, `field "allow_world_readable" does not apply to a secretmanager target`, "takes secret"},
		{"dotenv tilde", head + slotYAML + "    targets:\n      - type: dotenv\n        path: ~/.env\n        var: K\n", 8, "not expanded", "relative to the directory"},
		{"dotenv directory", head + slotYAML + "    targets:\n      - type: dotenv\n        path: app/\n        var: K\n", 8, "names a directory", "app/.env"},
		{"secretmanager with var", head + slotYAML + "    targets:\n      - type: secretmanager\n        secret: projects/my-project/secrets/copy\n        var: K\n", 9, `field "var" does not apply to a secretmanager target`, "takes secret"},
		{"secretmanager no secret", head + slotYAML + "    targets:\n      - type: secretmanager\n", 7, "secretmanager target has no secret", "secret: projects/"},
		{"secretmanager own secret", head + slotYAML + "    targets:\n      - type: secretmanager\n        secret: projects/my-project/secrets/gemini-api-key\n", 8, "repeats the slot's own secret", "remove this target"},
		{"secretmanager multi-region", head + slotYAML + "    targets:\n      - type: secretmanager\n        secret: projects/p-123456/locations/eu/secrets/s\n", 8, `the location in "projects/p-123456/locations/eu/secrets/s" is not a region`, "us-east1"},
		{"secretmanager regional version", head + slotYAML + "    targets:\n      - type: secretmanager\n        secret: projects/p-123456/locations/us-east1/secrets/s/versions/2\n", 8, "names a secret version", "/versions/"},
		{"secretmanager regional bad project", head + slotYAML + "    targets:\n      - type: secretmanager\n        secret: projects/P/locations/us-east1/secrets/s\n", 8, "the project in", "project id"},
		{"secretmanager regional bad id", head + slotYAML + "    targets:\n      - type: secretmanager\n        secret: projects/p-123456/locations/us-east1/secrets/a.b\n", 8, "secret id", "1–255"},
		{"secretmanager regional too long", head + slotYAML + "    targets:\n      - type: secretmanager\n        secret: projects/p-123456/locations/us-east1/secrets/s/x\n", 8, "is not a secret name", "locations/LOCATION"},
		{"secretmanager other slot's secret", head + slotYAML + "  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/b\n    targets:\n      - type: secretmanager\n        secret: projects/my-project/secrets/gemini-api-key\n", 11, `already used as the secret of slot "gemini-prod" (line 5)`, ""},
		{"same secret target twice", head + slotYAML + "    targets:\n      - {type: secretmanager, secret: projects/my-project/secrets/c}\n  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/b\n    targets:\n      - {type: secretmanager, secret: projects/my-project/secrets/c}\n", 12, `already used as a secretmanager target of slot "gemini-prod" (line 7)`, "once"},
		{"same var twice", head + slotYAML + "    targets:\n      - {type: dotenv, path: app/.env, var: K}\n  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/b\n    targets:\n      - {type: dotenv, path: ./app/../app/.env, var: K}\n", 12, `app/.env=K is already written by a dotenv target of slot "gemini-prod" (line 7)`, "remove one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("keyrotate.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse:\n%s\n= %+v, want error", tc.yaml, c)
			}
			if c != nil {
				t.Errorf("Parse returned a config with an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("errors.As(%v, *Error) = false, want true", err)
			}
			for _, e := range Errors(err) {
				if e.Line == tc.line && strings.Contains(e.Msg, tc.msg) && strings.Contains(e.Hint(), tc.hint) {
					if e.File != "keyrotate.yaml" {
						t.Errorf("File = %q, want keyrotate.yaml", e.File)
					}
					return
				}
			}
			t.Errorf("Parse:\n%s\nerrors:\n%s\nwant one at line %d with message containing %q and hint containing %q", tc.yaml, dump(err), tc.line, tc.msg, tc.hint)
		})
	}
}

func dump(err error) string {
	var b strings.Builder
	for _, e := range Errors(err) {
		b.WriteString("  " + e.Error() + "\n    hint: " + e.Hint() + "\n")
	}
	return b.String()
}

func TestUnknownFieldFile(t *testing.T) {
	path := filepath.Join(testdata, "unknown-field.yaml")
	_, err := Load(path)
	errs := Errors(err)
	if len(errs) == 0 {
		t.Fatalf("Load(%q) = %v, want *Error", path, err)
	}
	// The unknown field is reported, and so is the missing secret it was
	// meant to be.
	want := []string{
		path + `:3: slot "gemini-prod" has no secret`,
		path + `:5: unknown field "sercet" in a slot`,
	}
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load(%q) errors mismatch (-want +got):\n%s", path, diff)
	}
	if h := errs[1].Hint(); h != `did you mean "secret"?` {
		t.Errorf("hint = %q, want %q", h, `did you mean "secret"?`)
	}
	if errs[1].Column != 5 {
		t.Errorf("column = %d, want 5", errs[1].Column)
	}
}

// All problems come at once, in file order.
func TestManyErrors(t *testing.T) {
	path := filepath.Join(testdata, "many-errors.yaml")
	_, err := Load(path)
	type pos struct {
		Line int
		Msg  string
	}
	var got []pos
	for _, e := range Errors(err) {
		got = append(got, pos{e.Line, e.Msg})
	}
	want := []pos{
		{4, `max_age: unknown unit "w" in duration "1w"`},
		{5, "propagation_timeout 2h is longer than 1h"},
		{7, `invalid slot name "Gemini_Prod"`},
		{12, `secret: "projects/my-project/locations/us-east1/secrets/gemini-dev" is a regional secret; a slot's own secret must be global (regional secrets can be secretmanager targets)`},
		{13, `verify must be gemini or none, not "maybe"`},
		{16, `secret "projects/my-project/secrets/gemini-api-key" is already used as the secret of slot "Gemini_Prod" (line 9)`},
		{17, `field "var" does not apply to a secretmanager target`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load(%q) errors mismatch (-want +got):\n%s", path, diff)
	}
	if !strings.Contains(err.Error(), path+":4: ") {
		t.Errorf("Error() = %q, want FILE:LINE: prefixes", err)
	}
}

func TestNoKeyStringInErrors(t *testing.T) {
	const k = "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"
	const a = "AQ.Ab8RN6Lm3xYzQ_secret-part"
	for _, in := range []string{
		head + slotYAML + "    key: " + k + "\n",
		head + "  - name: " + k + "\n    project: my-project\n    secret: projects/my-project/secrets/a\n",
		head + slotYAML + "    targets:\n      - type: dotenv\n        path: .env\n        var: " + a + "\n",
		head + slotYAML + "    " + k + ": x\n",
		head + slotYAML + "    verify: " + a + "\n",
		head + slotYAML + "    targets:\n      - type: " + k + "\n",
		"version: 1\ndefaults:\n  grace: " + k + "\nslots:\n" + slotYAML,
		"version: 1\nslots: *" + k + "\n",
	} {
		_, err := Parse("keyrotate.yaml", []byte(in))
		if err == nil {
			t.Errorf("Parse(%q) = nil error, want error", in)
			continue
		}
		for _, e := range Errors(err) {
			if s := e.Error() + e.Hint(); strings.Contains(s, "AIzaSy") || strings.Contains(s, "AQ.Ab") {
				t.Errorf("Parse(%q) error repeats the key string: %s (hint %s)", in, e, e.Hint())
			}
		}
	}
}

func TestResolvePath(t *testing.T) {
	for _, tc := range []struct {
		config, path, want string
	}{
		{"keyrotate.yaml", "app/.env", "app/.env"},
		{"keyrotate.yaml", "./.env", ".env"},
		{"deploy/keyrotate.yaml", "app/.env", "deploy/app/.env"},
		{"deploy/keyrotate.yaml", "../.env", ".env"},
		{"/srv/deploy/keyrotate.yaml", "app/.env", "/srv/deploy/app/.env"},
		{"/srv/deploy/keyrotate.yaml", "/etc/app/.env", "/etc/app/.env"},
		{"/srv/deploy/keyrotate.yaml", "/etc//app/./.env", "/etc/app/.env"},
		{"../x/keyrotate.yaml", "a/../b/.env", "../x/b/.env"},
	} {
		in := head + slotYAML + "    targets:\n      - {type: dotenv, path: " + tc.path + ", var: K}\n"
		c, err := Parse(tc.config, []byte(in))
		if err != nil {
			t.Errorf("Parse(%q) with path %q: %v", tc.config, tc.path, err)
			continue
		}
		if got := c.Slots[0].Targets[0].Path; got != filepath.FromSlash(tc.want) {
			t.Errorf("path %q in %q resolved to %q, want %q", tc.path, tc.config, got, tc.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string // substring of the error and hint; "" for none
	}{
		{"90d", 90 * 24 * time.Hour, ""},
		{"1d12h", 36 * time.Hour, ""},
		{"1d12h30m", 36*time.Hour + 30*time.Minute, ""},
		{"36h", 36 * time.Hour, ""},
		{"1.5h", 90 * time.Minute, ""},
		{"10m", 10 * time.Minute, ""},
		{"0s", 0, ""},
		{"0", 0, ""},
		{"0d", 0, ""},
		{"-1h", -time.Hour, ""}, // parses; the config rejects negatives
		{"-2d", -48 * time.Hour, ""},
		{"", 0, "empty"},
		{"1w", 0, "unknown unit \"w\""},
		{"2weeks", 0, "7d"},
		{"1y", 0, "365d"},
		{"1H", 0, "lower case"},
		{"90", 0, "missing unit"},
		{"1.5d", 0, "whole number"},
		{"1h1d", 0, "days must come first"},
		{"1d1d", 0, "days given twice"},
		{"1d-1h", 0, "sign"},
		{"d", 0, "invalid duration"},
		{"1days", 0, "write days as d"},
		{"99999999999d", 0, "too long"},
		{"106751d23h47m16.854775807s", 106751*24*time.Hour + 23*time.Hour + 47*time.Minute + 16854775807*time.Nanosecond, ""},
		{"106751d23h47m17s", 0, "too long"},
		{"soon", 0, "invalid duration"},
	} {
		got, err := ParseDuration(tc.in)
		if tc.err == "" {
			if err != nil || time.Duration(got) != tc.want {
				t.Errorf("ParseDuration(%q) = %v, %v, want %v", tc.in, time.Duration(got), err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseDuration(%q) = %v, want error containing %q", tc.in, time.Duration(got), tc.err)
			continue
		}
		var h interface{ Hint() string }
		errors.As(err, &h)
		if text := err.Error() + " / " + h.Hint(); !strings.Contains(text, tc.err) {
			t.Errorf("ParseDuration(%q) error = %q, want it to contain %q", tc.in, text, tc.err)
		}
	}
}

func TestDurationString(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{90 * time.Second, "1m30s"},
		{36 * time.Hour, "1d12h0m0s"},
		{90 * 24 * time.Hour, "90d"},
		{-48 * time.Hour, "-2d"},
	} {
		if got := Duration(tc.in).String(); got != tc.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tc.in, got, tc.want)
		}
		back, err := ParseDuration(Duration(tc.in).String())
		if err != nil || time.Duration(back) != tc.in {
			t.Errorf("ParseDuration(%q) = %v, %v, want %v", Duration(tc.in).String(), back, err, tc.in)
		}
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(testdata, "*.yaml"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(""))
	f.Add([]byte("version: 1\nslots: [{name: a, project: my-project, secret: projects/1/secrets/s, targets: [{type: dotenv, path: x, var: Y}]}]\n"))
	f.Add([]byte("version: 1\nslots:\n  - &a {name: a}\n  - *a\n  - <<: *a\n"))
	f.Add([]byte("a: 1\n---\nb: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const path = "/cfg/keyrotate.yaml"
		c, err := Parse(path, data)
		if err != nil {
			if c != nil {
				t.Errorf("Parse returned a config and an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			j, ok := err.(interface{ Unwrap() []error })
			if !ok {
				t.Fatalf("error %T is not joined", err)
			}
			for _, e := range j.Unwrap() {
				ce, ok := e.(*Error)
				if !ok {
					t.Fatalf("error %T %v is not a *Error", e, e)
				}
				if ce.Line < 0 || ce.Column < 0 {
					t.Errorf("error %v at line %d column %d", ce, ce.Line, ce.Column)
				}
				if ce.File != path || ce.Msg == "" || ce.Hint() == "" {
					t.Errorf("error %+v lacks file, message or hint", ce)
				}
			}
			return
		}
		// Whatever parses renders back to YAML that parses to the same
		// configuration.
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		c2, err := Parse(path, out)
		if err != nil {
			t.Fatalf("Parse(Marshal(Parse(%q))):\n%s\nerror: %v", data, out, err)
		}
		ignoreLines := cmpopts.IgnoreFields(Slot{}, "Line")
		ignoreTargetLines := cmpopts.IgnoreFields(Target{}, "Line")
		if diff := cmp.Diff(c, c2, ignoreLines, ignoreTargetLines); diff != "" {
			t.Errorf("round trip mismatch (-first +second):\n%s", diff)
		}
	})
}
