// Package doctor finds out why an API key does not work: the checklist
// people work through by hand when Gemini answers "API key not valid" — is
// the variable set and under which name, does it carry junk, is it a key at
// all, which key and project is it, was it deleted, do its restrictions and
// binding allow Gemini, and what does the API itself say — run as code.
// Every check is a Finding; the Report names the most likely cause and what
// to do next. The live probe, the one check that decides health, is package
// verify's.
//
// Fixes are in words that name no keyrotate command (only the doctor's own
// inputs: --env, --dotenv, --project, --model); where keyrotate has a
// command for the fix, the finding carries a typed Remedy for cmd/keyrotate
// to word (Report.Advise).
//
// Nothing here prints key material: findings name characters by code point
// and position, keys by fingerprint, and every message that comes from an
// API is scrubbed of the strings under test.
package doctor

import (
	"context"
	"strings"

	apikeysapi "cloud.google.com/go/apikeys/apiv2"
	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/verify"
)

// Status is the outcome of one check.
type Status string

// The statuses, from good to bad; skip means the check could not run.
const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	StatusSkip Status = "skip"
)

// Finding IDs. They are stable: scripts may match on them.
const (
	FindSource             = "source"              // the variable, file or stdin holds a value
	FindSourceBoth         = "source-both"         // GEMINI_API_KEY and GOOGLE_API_KEY both set
	FindSourceDotEnv       = "source-dotenv"       // the .env value against the environment
	FindValue              = "value"               // no junk around or in the value
	FindWhitespace         = "whitespace"          // leading or trailing spaces or tabs
	FindLineBreak          = "line-break"          // CR, LF or another line separator
	FindInvisible          = "invisible"           // zero-width, BOM, control and other invisible characters
	FindNonASCII           = "non-ascii"           // visible characters outside ASCII
	FindQuotes             = "quotes"              // surrounding quotes kept in the value
	FindPrefix             = "prefix"              // "Bearer ", "key=", "x-goog-api-key:" ...
	FindFormat             = "format"              // standard key, auth key, or neither
	FindLength             = "length"              // truncated or too long
	FindCredentials        = "credentials"         // Google credentials for the API Keys API
	FindLookup             = "lookup"              // LookupKey: the key's project and name
	FindProject            = "project"             // the key's project against --project
	FindDeleted            = "deleted"             // soft-deleted, and until when it can be undeleted
	FindAPITargets         = "api-targets"         // API restrictions allow generativelanguage
	FindClientRestrictions = "client-restrictions" // browser, server, Android, iOS restrictions
	FindBinding            = "binding"             // bound to a service account (auth key) or not
	FindProbe              = "probe"               // the live Gemini call
)

// causeOrder ranks the findings for the summary: the first failing one in
// this order is the most likely cause. Problems of the key itself come
// before junk around it (removing junk does not help a suspended key); a
// variable the SDKs do not read comes last (the key checked may be fine).
var causeOrder = []string{
	FindSource, FindFormat, FindLength, FindLookup, FindProject, FindDeleted, FindProbe,
	FindAPITargets, FindBinding, FindLineBreak, FindInvisible, FindNonASCII, FindQuotes,
	FindPrefix, FindWhitespace, FindClientRestrictions, FindSourceDotEnv, FindSourceBoth,
	FindCredentials,
}

// Finding is the result of one check. Message and Fix never hold key
// material.
type Finding struct {
	ID      string `json:"id"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	// Fix says what to do, in the library's words, which name no command
	// of the program that runs the doctor.
	Fix string `json:"fix,omitempty"`
	// Remedy, when its Kind is set, is a fix that the calling program can
	// offer with its own commands; it words it and puts it in Fix with
	// Report.Advise.
	Remedy Remedy `json:"-"`
}

// RemedyKind is a fix that uses the calling program's own commands.
type RemedyKind int

// The remedies. Finding.Fix says the same without the command, except
// where noted.
const (
	RemedyNone RemedyKind = iota
	// RemedyRotate: rotating the slot that holds the key also fixes the
	// finding; an alternative to Fix.
	RemedyRotate
	// RemedyMigrate: a standard key; bind new keys to a service account
	// (service_account on the slot) and rotate. Remedy.KeyRead says that
	// the key's metadata was read, so that the advice can name the
	// service account's project and the org policy.
	RemedyMigrate
	// RemedyStdin: pipe the key into the doctor on standard input.
	RemedyStdin
	// RemedyCheckVar: run the doctor on the variable Remedy.Var, the one
	// the SDKs use; an alternative to Fix.
	RemedyCheckVar
)

// Remedy is a fix as a kind and the facts its words need.
type Remedy struct {
	Kind    RemedyKind
	Var     string // RemedyCheckVar: the variable to check
	KeyRead bool   // RemedyMigrate: the key's metadata was read
}

// Summary names the most likely cause and the next step.
type Summary struct {
	// Cause is the ID of the finding that explains the problem, "" when
	// healthy.
	Cause   string `json:"cause,omitempty"`
	Message string `json:"message"`
	Next    string `json:"next,omitempty"`
	// NextOf is the ID of the finding whose fix Next is, "" when Next is
	// the summary's own.
	NextOf string `json:"-"`
}

// Source says where the value came from.
type Source struct {
	Kind string `json:"kind"` // "env", "dotenv" or "stdin"
	Var  string `json:"var,omitempty"`
	File string `json:"file,omitempty"`
}

func (s Source) String() string {
	switch s.Kind {
	case "dotenv":
		if s.Var == "" {
			return s.File
		}
		return s.Var + " in " + s.File
	case "stdin":
		return "standard input"
	}
	if s.Var == "" {
		return "the environment"
	}
	return "environment variable " + s.Var
}

// Report is what Check found.
type Report struct {
	Source Source `json:"source"`
	// Fingerprint is the fingerprint of the value as found.
	Fingerprint string `json:"fingerprint,omitempty"`
	// CleanFingerprint is the fingerprint after removing junk (whitespace,
	// quotes, prefixes, invisible characters), when that changed the value:
	// the fingerprint keyrotate shows for the key itself.
	CleanFingerprint string `json:"clean_fingerprint,omitempty"`
	// KeyType is "standard" (AIza…), "auth" (AQ.…) or "unknown".
	KeyType string `json:"key_type,omitempty"`
	// KeyName and Project come from LookupKey (the project by number).
	KeyName        string    `json:"key_name,omitempty"`
	Project        string    `json:"project,omitempty"`
	ServiceAccount string    `json:"service_account,omitempty"`
	Findings       []Finding `json:"findings"`
	Summary        Summary   `json:"summary"`
	// Healthy is true when no finding failed and the live probe ran and
	// the Gemini API accepted the key or answered for it.
	Healthy bool `json:"healthy"`
	// Incomplete is true when nothing failed but the live probe, the check
	// that decides health, could not run or finish: the verdict is neither
	// healthy nor a problem. Unchecked lists the IDs of the findings that
	// could not be checked (their messages say why).
	Incomplete bool     `json:"incomplete,omitempty"`
	Unchecked  []string `json:"unchecked,omitempty"`
	// ProbeError is the live probe's failure, classified (nil when the
	// probe passed or did not run), for callers that add their own advice
	// to a cause (errors.Is(r.ProbeError, ErrLeaked)). Its message is
	// scrubbed like the findings.
	ProbeError *verify.ProbeError `json:"-"`
}

// Advise replaces the fix of finding id with fix, in the summary's next
// step too where that is the finding's fix: for a caller that words a
// Remedy, or knows better advice for a finding.
func (r *Report) Advise(id, fix string) {
	for i, f := range r.Findings {
		if f.ID == id {
			r.Findings[i].Fix = fix
		}
	}
	if r.Summary.NextOf == id {
		r.Summary.Next = fix
	}
}

// Finding returns the finding with this ID, if any.
func (r *Report) Finding(id string) (Finding, bool) {
	for _, f := range r.Findings {
		if f.ID == id {
			return f, true
		}
	}
	return Finding{}, false
}

// Input says where to read the key. The key never comes from a command-line
// argument: arguments are visible to every user of the machine and stay in
// shell history.
type Input struct {
	// Env looks up an environment variable, as os.LookupEnv does. Nil is an
	// empty environment.
	Env func(name string) (string, bool)
	// Var names the variable to read. Empty means GEMINI_API_KEY, or
	// GOOGLE_API_KEY when GEMINI_API_KEY is unset or empty.
	Var string
	// DotEnv, when not nil, is the content of a .env file: the key is read
	// from it (Var as above) and compared with the environment. DotEnvPath
	// names the file in messages.
	DotEnv     []byte
	DotEnvPath string
	// Stdin means that Value is the line read from standard input (without
	// its final newline).
	Stdin bool
	Value string
}

// Doctor diagnoses API keys. The zero Doctor runs the local checks only.
type Doctor struct {
	// Keys reads key metadata (LookupKey, GetKey). Nil skips those checks;
	// KeysErr then says why (for example: no Application Default
	// Credentials).
	Keys *apikeys.Service
	// Lookup is the API Keys API over gRPC, for LookupKey only (the REST
	// call would carry the key string in its URL). Nil, like a nil Keys,
	// skips the key's checks.
	Lookup  *apikeysapi.Client
	KeysErr error
	// Probe calls the Gemini API with the key. Nil skips the live probe.
	Probe *verify.Gemini
	// Project, when set, is the project (id or number) the key should
	// belong to.
	Project string
}

// Check runs every check that applies to in and returns the report.
func (d *Doctor) Check(ctx context.Context, in Input) *Report {
	c := &checkup{d: d, r: &Report{Findings: []Finding{}}}
	raw, ok := c.source(in)
	if ok {
		c.raw = raw
		c.r.Fingerprint = secret.Fingerprint(raw)
		clean, removed := c.hygiene(raw)
		c.clean = clean
		if clean != raw && clean != "" {
			c.r.CleanFingerprint = secret.Fingerprint(clean)
			c.after = "after removing " + joinAnd(removed) + ", "
		}
		if c.format(clean) {
			c.remote(ctx)
		}
	}
	c.summarize()
	return c.r
}

// checkup is one run of the checks.
type checkup struct {
	d     *Doctor
	r     *Report
	raw   string // the value as found
	clean string // without junk
	after string // "after removing …, " when clean != raw
}

func (c *checkup) add(id string, st Status, msg, fix string) {
	c.r.Findings = append(c.r.Findings, Finding{ID: id, Status: st, Message: msg, Fix: fix})
}

// addRemedy adds a finding whose fix the caller may word with its own
// commands; fix is the library's words for it.
func (c *checkup) addRemedy(id string, st Status, msg, fix string, rem Remedy) {
	c.r.Findings = append(c.r.Findings, Finding{ID: id, Status: st, Message: msg, Fix: fix, Remedy: rem})
}

// scrub replaces the strings under test with their fingerprints, in any text
// that came from outside (API error messages).
func (c *checkup) scrub(s string) string {
	for _, k := range []string{c.raw, c.clean} {
		if len(k) >= 8 && strings.Contains(s, k) {
			s = strings.ReplaceAll(s, k, secret.Fingerprint(k))
		}
	}
	if c.clean != "" {
		s = scrubKeyLike(s)
	}
	return s
}

// scrubKeyLike hides anything shaped like an API key (AIza… or AQ.…), in
// case an API quotes a key we did not send in that exact form.
func scrubKeyLike(s string) string {
	for _, p := range []string{"AIza", "AQ."} {
		for from := 0; ; {
			i := strings.Index(s[from:], p)
			if i < 0 {
				break
			}
			i += from
			j := i + len(p)
			for j < len(s) && isKeyChar(s[j]) {
				j++
			}
			if j-i < 12 {
				from = j
				continue
			}
			fp := secret.Fingerprint(s[i:j])
			s = s[:i] + fp + s[j:]
			from = i + len(fp)
		}
	}
	return s
}

func isKeyChar(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_' || b == '-' || b == '.'
}

// CauseIncomplete is Summary.Cause when the checks that decide health could
// not all run (Report.Incomplete).
const CauseIncomplete = "incomplete"

// summarize picks the most likely cause and sets Healthy (or Incomplete).
func (c *checkup) summarize() {
	r := c.r
	r.Healthy = true
	for _, f := range r.Findings {
		if f.Status == StatusFail {
			r.Healthy = false
		}
	}
	if !r.Healthy {
		for _, id := range causeOrder {
			for _, f := range r.Findings {
				if f.ID == id && f.Status == StatusFail {
					r.Summary = Summary{Cause: f.ID, Message: f.Message, Next: f.Fix, NextOf: f.ID}
					if n := c.count(StatusFail) - 1; n > 0 {
						r.Summary.Message += " (and " + plural(n, "more problem") + " above)"
					}
					return
				}
			}
		}
	}
	if f, ok := r.Finding(FindProbe); !ok || f.Status == StatusSkip {
		// Only the live probe proves that the key works: without it,
		// nothing failing is no verdict.
		r.Healthy, r.Incomplete = false, true
		for _, f := range r.Findings {
			if f.Status == StatusSkip {
				r.Unchecked = append(r.Unchecked, f.ID)
			}
		}
		r.Summary = Summary{Cause: CauseIncomplete,
			Message: "the key was not proven to work: the live probe could not run, and nothing else can prove it; not checked: " + strings.Join(r.Unchecked, ", ")}
		if f, ok := r.Finding(FindProbe); ok && f.Fix != "" {
			r.Summary.Next, r.Summary.NextOf = f.Fix, f.ID
		} else {
			r.Summary.Next = "run doctor again where the Gemini API can be reached"
		}
		return
	}
	who := "the key"
	if r.KeyType == "auth" {
		who = "the auth key"
	} else if r.KeyType == "standard" {
		who = "the standard key"
	}
	msg := who + " looks healthy"
	if f, ok := r.Finding(FindProbe); ok && f.Status == StatusOK {
		msg = who + " works"
	}
	if c.r.Project != "" {
		msg += " (project " + strings.TrimPrefix(c.r.Project, "projects/") + ")"
	}
	r.Summary = Summary{Message: msg}
	if n := c.count(StatusWarn); n > 0 {
		r.Summary.Message += ", with " + plural(n, "warning")
		for _, f := range r.Findings {
			if f.Status == StatusWarn && f.Fix != "" {
				r.Summary.Next, r.Summary.NextOf = f.Fix, f.ID
				break
			}
		}
	}
}

func (c *checkup) count(st Status) int {
	n := 0
	for _, f := range c.r.Findings {
		if f.Status == st {
			n++
		}
	}
	return n
}
