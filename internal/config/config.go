// Package config reads and validates keyrotate.yaml, the file that names
// the slots keyrotate rotates: for each slot, the Secret Manager secret that
// holds the current key string, optionally the API key behind it and the
// service account to bind new keys to, and the targets that consume the key.
//
// Parsing is validation only: it opens no file besides the configuration
// and makes no network call, so a Config that parses may still name a secret
// that does not exist (the rotation's preflight finds that out). What it does
// guarantee is that every name is well formed, every duration is in range,
// defaults are filled in, dotenv paths are resolved against the directory of
// the configuration file, and no two places in the file write the same
// secret or the same variable of the same file.
//
// A file with problems yields every problem at once, not just the first: the
// error returned joins one *Error per problem, each with the file, the line
// (and column) and a hint saying how to fix it. All of them wrap ErrInvalid.
// Values that look like API key strings are never repeated in messages.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/keyrotate/keyrotate/internal/inputfile"
)

// Defaults that apply when the file does not set them.
const (
	DefaultGrace              = Duration(0)
	DefaultMaxAge             = Duration(90 * day)
	DefaultPropagationTimeout = Duration(10 * time.Minute)
	DefaultLeaseTTL           = Duration(15 * time.Minute)
	DefaultVerify             = VerifyGemini
	DefaultProbe              = ProbeCountTokens
	DefaultQuietPeriod        = Duration(10 * time.Minute)
	DefaultDrainTimeout       = Duration(time.Hour)
	// DefaultUsageDelay is how late Cloud Monitoring may report a call.
	// Google's metrics list gives each metric a delay after sampling during
	// which data "is not visible" (the latency page's example is 240
	// seconds); the figure for serviceruntime's api/request_count could not
	// be confirmed here, and several serviceruntime metrics state up to 1800
	// seconds. The strictest plausible reading, 30 minutes, is the default:
	// the drain gate trusts only data at least this old.
	DefaultUsageDelay = Duration(30 * time.Minute)
)

// Values of Slot.Retire and Defaults.Retire: what a rotation does with the
// old key once every target holds the new one.
const (
	// RetireQuiet deletes it once Cloud Monitoring has seen no successful
	// request with it for quiet_period (the drain gate), waiting at most
	// drain_timeout; still in use then, it is kept for finalize.
	RetireQuiet = "quiet"
	// RetireGrace keeps it for grace and leaves it to finalize.
	RetireGrace = "grace"
	// RetireNow deletes it at once.
	RetireNow = "now"
)

// Retires are the values of retire.
var Retires = []string{RetireQuiet, RetireGrace, RetireNow}

// Values of Slot.Usage and Defaults.Usage: what the drain gate does when
// Cloud Monitoring cannot answer (API disabled, permission denied, outage).
const (
	// UsageRequired keeps the old key and stops with a hint naming the
	// permission or the API.
	UsageRequired = "required"
	// UsageBestEffort warns and falls back to the grace period.
	UsageBestEffort = "best-effort"
)

// Usages are the values of usage.
var Usages = []string{UsageBestEffort, UsageRequired}

// Values of Slot.Probe and Defaults.Probe: the Gemini API call that proves
// a key works (verify: gemini).
const (
	// ProbeCountTokens: POST models/{model}:countTokens, on the generation
	// path, free.
	ProbeCountTokens = "countTokens"
	// ProbeGenerateContent: POST models/{model}:generateContent with a
	// one-word prompt and one output token, the application's own call, a
	// tiny billed call.
	ProbeGenerateContent = "generateContent"
	// ProbeListModels: GET models?pageSize=1, the cheapest call, which
	// does not exercise generation.
	ProbeListModels = "listModels"
)

// Probes are the values of probe, the default first.
var Probes = []string{ProbeCountTokens, ProbeGenerateContent, ProbeListModels}

// Values of Slot.Verify.
const (
	VerifyGemini = "gemini" // probe the Gemini API with the new key before distributing it
	VerifyNone   = "none"   // skip the live check
)

// Values of Target.Type.
const (
	TargetDotEnv        = "dotenv"
	TargetCompose       = "compose"
	TargetSecretManager = "secretmanager"
	TargetExec          = "exec"
	TargetGitHub        = "github"
	TargetCloudRun      = "cloudrun"
	TargetK8s           = "k8s"
)

// Config is a parsed and validated keyrotate.yaml.
type Config struct {
	Path     string   `yaml:"-"` // the file it came from
	Version  int      `yaml:"version"`
	Defaults Defaults `yaml:"defaults"`
	Slots    []Slot   `yaml:"slots"`
}

// Defaults apply to every slot that does not override them.
type Defaults struct {
	Grace              Duration `yaml:"grace"`               // keep the old key this long after success (0: delete at once)
	MaxAge             Duration `yaml:"max_age"`             // a key older than this is due
	PropagationTimeout Duration `yaml:"propagation_timeout"` // how long the live probe may wait for a new key
	LeaseTTL           Duration `yaml:"lease_ttl"`           // how long a rotation's lock lasts without renewal
	Probe              string   `yaml:"probe"`               // the live probe's call: ProbeCountTokens (default), ProbeGenerateContent or ProbeListModels
	Model              string   `yaml:"model,omitempty"`     // the model the generation probes name; "": the probe's default model
	// Quotas override Google's documented per-project quotas per minute,
	// by API ("apikeys", "secretmanager"), for projects whose quotas were
	// raised; keyrotate paces its calls under them. Zero fields keep the
	// documented value.
	Quotas map[string]Quota `yaml:"quotas,omitempty"`
	// QuotaProject is the project charged for the API Keys and Secret
	// Manager calls (sent as x-goog-user-project), for every slot; "":
	// the credentials' own (see README, "Quota project"). A --quota-project
	// flag or GOOGLE_CLOUD_QUOTA_PROJECT overrides it.
	QuotaProject string `yaml:"quota_project,omitempty"`

	// Retire, QuietPeriod, DrainTimeout and Usage are the drain gate's
	// settings (see Slot); "" / 0 where the file does not set them (see
	// EffectiveRetire).
	Retire       string   `yaml:"retire,omitempty"`
	QuietPeriod  Duration `yaml:"quiet_period,omitempty"`
	DrainTimeout Duration `yaml:"drain_timeout,omitempty"`
	Usage        string   `yaml:"usage,omitempty"`
	// UsageDelay is how late Cloud Monitoring may report a call: the drain
	// gate counts only data at least this old (DefaultUsageDelay).
	UsageDelay Duration `yaml:"usage_delay,omitempty"`
	// ScheduleTopic is the Pub/Sub topic (projects/P/topics/T) that Secret
	// Manager notifies when a slot's rotation is due, once the schedule is
	// set on its secret; "": none (see Slot.ScheduleTopic).
	ScheduleTopic string `yaml:"schedule_topic,omitempty"`
}

// Quota is a per-project quota per minute of one API.
type Quota struct {
	Reads  int `yaml:"reads,omitempty"`
	Writes int `yaml:"writes,omitempty"`
}

// Slot is one logical credential: a secret holding the current key string,
// the key behind it, and the targets that consume it.
type Slot struct {
	Name           string    `yaml:"name"`
	Project        string    `yaml:"project"`                   // project id or number that owns the keys
	Secret         string    `yaml:"secret"`                    // projects/P/secrets/S
	Key            string    `yaml:"key,omitempty"`             // projects/P/locations/global/keys/K, or "": find it from the secret
	ServiceAccount string    `yaml:"service_account,omitempty"` // bind new keys to this account, or "": copy the old key's binding
	Verify         string    `yaml:"verify"`                    // VerifyGemini or VerifyNone
	Probe          string    `yaml:"probe,omitempty"`           // "": Defaults.Probe
	Model          string    `yaml:"model,omitempty"`           // "": Defaults.Model
	Grace          *Duration `yaml:"grace,omitempty"`           // nil: Defaults.Grace
	MaxAge         *Duration `yaml:"max_age,omitempty"`         // nil: Defaults.MaxAge
	// Retire is RetireQuiet, RetireGrace or RetireNow; "": the defaults'
	// (see EffectiveRetire).
	Retire       string    `yaml:"retire,omitempty"`
	QuietPeriod  *Duration `yaml:"quiet_period,omitempty"`  // nil: Defaults.QuietPeriod
	DrainTimeout *Duration `yaml:"drain_timeout,omitempty"` // nil: Defaults.DrainTimeout
	Usage        string    `yaml:"usage,omitempty"`         // UsageRequired or UsageBestEffort; "": Defaults.Usage
	// ScheduleTopic is the Pub/Sub topic that Secret Manager notifies
	// (SECRET_ROTATE) when the slot's rotation is due: the rotation
	// schedule set on its secret has a period of max_age; "":
	// Defaults.ScheduleTopic.
	ScheduleTopic string   `yaml:"schedule_topic,omitempty"`
	Targets       []Target `yaml:"targets,omitempty"`
	Line          int      `yaml:"-"` // line of the slot in the file

	// SecretProjectDiffers allows Secret to live in another project than
	// Project (a central secrets project); the keys stay in Project.
	SecretProjectDiffers bool `yaml:"secret_project_differs,omitempty"`
	// BoundKeyRestrictions decides the restrictions of a key newly bound to
	// ServiceAccount when the old key is not restricted to the Gemini API
	// alone: BoundGemini narrows its API restriction to the Gemini API (what
	// the default org policy allows), BoundCopy copies them (the
	// organization allows bound keys with them). "": refuse such a migration.
	BoundKeyRestrictions string `yaml:"bound_key_restrictions,omitempty"`
}

// Values of Slot.BoundKeyRestrictions.
const (
	BoundGemini = "gemini"
	BoundCopy   = "copy"
)

// Target is one more place that receives the key, besides the slot's secret.
type Target struct {
	Type   string `yaml:"type"`             // TargetDotEnv, TargetSecretManager, TargetCompose, TargetExec, TargetGitHub, TargetCloudRun or TargetK8s
	Path   string `yaml:"path,omitempty"`   // dotenv: the file, resolved against the config file's directory
	Var    string `yaml:"var,omitempty"`    // dotenv: the variable
	Secret string `yaml:"secret,omitempty"` // secretmanager: projects/P/secrets/S or projects/P/locations/L/secrets/S (regional)

	// AllowWorldReadable (dotenv, compose): the file may be readable by
	// every user of the machine; without it such a file is refused.
	AllowWorldReadable bool `yaml:"allow_world_readable,omitempty"`

	Services   []string  `yaml:"services,omitempty"`    // compose: the services whose environment holds Var
	Reload     bool      `yaml:"reload,omitempty"`      // compose: recreate the services after a write (docker compose up -d --wait)
	Command    []string  `yaml:"command,omitempty"`     // exec: argv of the command that takes the key on stdin
	ReadBack   []string  `yaml:"verify,omitempty"`      // exec: argv of a command that checks the key on stdin (the target's read-back)
	Timeout    *Duration `yaml:"timeout,omitempty"`     // exec: how long each command may run
	Env        []string  `yaml:"env,omitempty"`         // exec: variables of keyrotate's environment the commands get (besides PATH, HOME, locale, TZ)
	ShowOutput bool      `yaml:"show_output,omitempty"` // exec: show the commands' redacted output in errors and debug logs

	Repo        string `yaml:"repo,omitempty"`        // github: owner/name (repository or environment secret)
	Org         string `yaml:"org,omitempty"`         // github: organization (organization secret)
	Environment string `yaml:"environment,omitempty"` // github: environment of Repo
	Name        string `yaml:"name,omitempty"`        // github: the secret's name
	TokenEnv    string `yaml:"token_env,omitempty"`   // github: variable holding the token
	BaseURL     string `yaml:"base_url,omitempty"`    // github: API base URL (GitHub Enterprise, tests)

	Service   string `yaml:"service,omitempty"`   // cloudrun: projects/P/locations/L/services/S
	Container string `yaml:"container,omitempty"` // cloudrun: the container's name ("": the only container)

	Kubeconfig string   `yaml:"kubeconfig,omitempty"` // k8s: kubeconfig file ("": $KUBECONFIG, ~/.kube/config or in-cluster)
	Context    string   `yaml:"context,omitempty"`    // k8s: kubeconfig context ("": its current context)
	Namespace  string   `yaml:"namespace,omitempty"`  // k8s: the Secret's namespace (Name is the Secret)
	Key        string   `yaml:"key,omitempty"`        // k8s: the key in the Secret's data
	Restart    []string `yaml:"restart,omitempty"`    // k8s: deployments to restart and wait for (Timeout: how long)

	Line int `yaml:"-"`
}

// Load reads the file at path and parses it with Parse. An unreadable file is
// reported as such (errors.Is(err, fs.ErrNotExist) works), not as ErrInvalid.
func Load(path string) (*Config, error) {
	data, _, err := inputfile.Read(path, inputfile.MaxSize)
	if err != nil {
		hint := "check the path and its permissions"
		switch {
		case errors.Is(err, fs.ErrNotExist):
			hint = "create the file, or name it with --config or KEYROTATE_CONFIG"
		case errors.Is(err, inputfile.ErrNotRegular):
			hint = "name the YAML config file itself: keyrotate reads only regular files"
		case errors.Is(err, inputfile.ErrTooLarge):
			hint = fmt.Sprintf("a keyrotate config is a few kilobytes (at most %d bytes): check that the path names the config file", inputfile.MaxSize)
		}
		return nil, &loadError{err: fmt.Errorf("read config: %w", err), hint: hint}
	}
	return Parse(path, data)
}

type loadError struct {
	err  error
	hint string
}

func (e *loadError) Error() string { return e.err.Error() }
func (e *loadError) Unwrap() error { return e.err }
func (e *loadError) Hint() string  { return e.hint }

// Parse parses and validates data, the content of the file at path. path is
// used in messages and to resolve relative dotenv paths; it is not opened.
// On any problem it returns a nil Config and every problem found (see Error).
func Parse(path string, data []byte) (*Config, error) {
	p := newParser(path)
	cfg := p.parse(data)
	if err := p.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Slot returns the slot with the given name.
func (c *Config) Slot(name string) (*Slot, bool) {
	for i := range c.Slots {
		if c.Slots[i].Name == name {
			return &c.Slots[i], true
		}
	}
	return nil, false
}

// EffectiveGrace returns the slot's grace period: its own, else the default.
func (c *Config) EffectiveGrace(s *Slot) time.Duration {
	if s != nil && s.Grace != nil {
		return time.Duration(*s.Grace)
	}
	return time.Duration(c.Defaults.Grace)
}

// EffectiveRetire returns what a rotation of s does with the old key: the
// slot's retire, else a slot's own grace > 0 means RetireGrace, else the
// defaults' retire, else a default grace > 0 means RetireGrace, else
// RetireQuiet. (A grace set before retire existed keeps meaning what it
// meant.)
func (c *Config) EffectiveRetire(s *Slot) string {
	switch {
	case s != nil && s.Retire != "":
		return s.Retire
	case s != nil && s.Grace != nil && *s.Grace > 0:
		return RetireGrace
	case c.Defaults.Retire != "":
		return c.Defaults.Retire
	case c.Defaults.Grace > 0:
		return RetireGrace
	}
	return RetireQuiet
}

// EffectiveScheduleTopic returns the Pub/Sub topic of the slot's rotation
// schedule: its own, else the default; "" for none.
func (c *Config) EffectiveScheduleTopic(s *Slot) string {
	if s != nil && s.ScheduleTopic != "" {
		return s.ScheduleTopic
	}
	return c.Defaults.ScheduleTopic
}

// EffectiveQuietPeriod returns the slot's quiet period: its own, else the
// default.
func (c *Config) EffectiveQuietPeriod(s *Slot) time.Duration {
	if s != nil && s.QuietPeriod != nil {
		return time.Duration(*s.QuietPeriod)
	}
	return time.Duration(c.Defaults.QuietPeriod)
}

// EffectiveDrainTimeout returns how long a rotation of s waits for its old
// key to be quiet: its own, else the default.
func (c *Config) EffectiveDrainTimeout(s *Slot) time.Duration {
	if s != nil && s.DrainTimeout != nil {
		return time.Duration(*s.DrainTimeout)
	}
	return time.Duration(c.Defaults.DrainTimeout)
}

// EffectiveUsage returns the slot's policy when Cloud Monitoring cannot
// answer: its own, else the default.
func (c *Config) EffectiveUsage(s *Slot) string {
	if s != nil && s.Usage != "" {
		return s.Usage
	}
	return c.Defaults.Usage
}

// EffectiveMaxAge returns the slot's maximum key age: its own, else the
// default.
func (c *Config) EffectiveMaxAge(s *Slot) time.Duration {
	if s != nil && s.MaxAge != nil {
		return time.Duration(*s.MaxAge)
	}
	return time.Duration(c.Defaults.MaxAge)
}

// EffectiveProbe returns the slot's live probe call and the model it names
// (its own, else the defaults; a model "" means the probe's default model,
// and listModels names none).
func (c *Config) EffectiveProbe(s *Slot) (probe, model string) {
	probe, model = c.Defaults.Probe, c.Defaults.Model
	if probe == "" {
		probe = DefaultProbe
	}
	if s != nil && s.Probe != "" {
		probe = s.Probe
	}
	if s != nil && s.Model != "" {
		model = s.Model
	}
	if probe == ProbeListModels {
		model = ""
	}
	return probe, model
}
