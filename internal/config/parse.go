package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// The fields of each mapping, in the order the hints list them.
var (
	topFields      = []string{"version", "defaults", "slots"}
	defaultsFields = []string{
		"grace", "max_age", "propagation_timeout", "lease_ttl", "probe", "model", "quotas", "quota_project",
		"retire", "quiet_period", "drain_timeout", "usage", "usage_delay", "schedule_topic",
	}
	quotaAPIs   = []string{"apikeys", "secretmanager"}
	quotaFields = []string{"reads", "writes"}
	slotFields  = []string{
		"name", "project", "secret", "secret_project_differs", "key", "service_account", "bound_key_restrictions",
		"verify", "probe", "model", "grace", "max_age", "retire", "quiet_period", "drain_timeout", "usage", "schedule_topic", "targets",
	}
	targetFields = []string{
		"type", "path", "var", "secret", "services", "command", "verify", "timeout", "repo", "org", "environment", "name",
		"token_env", "base_url", "reload", "service", "container", "namespace", "key", "kubeconfig", "context", "restart",
		"allow_world_readable", "env", "show_output",
	}
)

var (
	slotNameRE   = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	projectIDRE  = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	projectNumRE = regexp.MustCompile(`^[0-9]+$`)
	secretIDRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)
	keyIDRE      = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// Keys made without a key id get a UUID, which may start with a digit.
	keyUUIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	serviceRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?@([a-z0-9]([a-z0-9.-]*[a-z0-9])?\.iam|developer|appspot)\.gserviceaccount\.com$`)
	varRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// keyStringRE matches what standard (AIza…) and auth (AQ.…) API key
	// strings look like, so that no message repeats one.
	keyStringRE = regexp.MustCompile(`AIza[0-9A-Za-z_\-]*|AQ\.[0-9A-Za-z_.\-]*`)
	// modelRE matches a Gemini model id as models.list names them
	// (gemini-3.5-flash-lite, models/gemini-3.5-flash-lite).
	modelRE      = regexp.MustCompile(`^(models/)?[a-z0-9]([a-z0-9.-]{0,126}[a-z0-9])?$`)
	yamlLineRE   = regexp.MustCompile(`^yaml: line ([0-9]+): (.*)$`)
	yamlAnchorRE = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
)

type parser struct {
	file string
	dir  string
	errs []*Error

	// What each secret, key and dotenv variable is already used for, to
	// report the second use.
	secrets map[string]use
	keys    map[string]use
	vars    map[string]use
}

type use struct {
	what string // for example `the secret of slot "a"`
	line int
}

func newParser(path string) *parser {
	return &parser{
		file:    path,
		dir:     filepath.Dir(path),
		secrets: map[string]use{},
		keys:    map[string]use{},
		vars:    map[string]use{},
	}
}

func (p *parser) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	sort.SliceStable(p.errs, func(i, j int) bool {
		a, b := p.errs[i], p.errs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// at reports a problem at n (or at the top of the file for a nil n).
func (p *parser) at(n *yaml.Node, hint, format string, args ...any) {
	e := &Error{File: p.file, Msg: scrub(fmt.Sprintf(format, args...)), Fix: scrub(hint)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

// scrub replaces anything that looks like an API key string.
func scrub(s string) string {
	return keyStringRE.ReplaceAllString(s, "<redacted key string>")
}

// looksLikeKey reports whether s could be an API key string.
func looksLikeKey(s string) bool {
	return strings.HasPrefix(s, "AIza") || strings.HasPrefix(s, "AQ.")
}

func (p *parser) parse(data []byte) *Config {
	root := p.decode(data)
	if root == nil {
		return nil
	}
	cfg := &Config{
		Path: p.file,
		Defaults: Defaults{
			Grace:              DefaultGrace,
			MaxAge:             DefaultMaxAge,
			PropagationTimeout: DefaultPropagationTimeout,
			LeaseTTL:           DefaultLeaseTTL,
			Probe:              DefaultProbe,
			QuietPeriod:        DefaultQuietPeriod,
			DrainTimeout:       DefaultDrainTimeout,
			Usage:              UsageBestEffort,
			UsageDelay:         DefaultUsageDelay,
		},
	}
	f := p.mapping(root, "at the top level", topFields)
	if f == nil {
		return nil
	}
	p.version(root, f, cfg)
	if d, ok := f["defaults"]; ok {
		p.defaults(d.val, &cfg.Defaults)
	}
	sl, ok := f["slots"]
	if !ok || isNull(sl.val) {
		n := root
		if ok {
			n = sl.key
		}
		p.at(n, "add a slot under \"slots:\", for example\n  - name: gemini-prod\n    project: my-project\n    secret: projects/my-project/secrets/gemini-api-key",
			"no slots: there is nothing to rotate")
		return cfg
	}
	p.slots(sl.val, cfg)
	return cfg
}

// decode parses the YAML and returns the root node of its only document, or
// nil after reporting why there is none.
func (p *parser) decode(data []byte) (root *yaml.Node) {
	// yaml.v3 reports some malformed input by panicking past its own
	// recovery; a configuration file must never crash the tool.
	defer func() {
		if r := recover(); r != nil {
			p.at(nil, "check the file's YAML syntax", "cannot parse YAML: %v", r)
			root = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			p.at(nil, "start the file with \"version: 1\" and list the slots to rotate under \"slots:\"", "the file is empty")
		} else {
			p.syntax(data, err)
		}
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == io.EOF:
	case err != nil:
		p.syntax(data, err)
	default:
		n := &next
		if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
			n = n.Content[0]
		}
		p.at(n, "keep one document: remove the \"---\" line and merge what follows into the first document",
			"the file holds more than one YAML document")
	}
	root = &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if isNull(root) {
		p.at(nil, "start the file with \"version: 1\" and list the slots to rotate under \"slots:\"", "the file is empty")
		return nil
	}
	return root
}

// syntax reports a YAML syntax error at the line yaml.v3 names. yaml.v3 omits
// the line when the problem is on the first line, and for a few errors it
// does not track; for those, find the line here.
func (p *parser) syntax(data []byte, err error) {
	msg := err.Error()
	e := &Error{File: p.file, Fix: "fix the YAML syntax at or just after this line (indent with spaces, not tabs; quote values containing \": \" or \"#\")"}
	switch m := yamlLineRE.FindStringSubmatch(msg); {
	case m != nil:
		e.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	default:
		msg = strings.TrimPrefix(msg, "yaml: ")
		e.Line = 1
		if a := yamlAnchorRE.FindStringSubmatch(err.Error()); a != nil {
			if i := bytes.Index(data, []byte("*"+a[1])); i >= 0 {
				e.Line = 1 + bytes.Count(data[:i], []byte("\n"))
			}
			e.Fix = "define the anchor (&" + a[1] + ") before this alias uses it"
		} else if i := badByte(data); i >= 0 {
			e.Line = 1 + bytes.Count(data[:i], []byte("\n"))
			e.Fix = "save the file as UTF-8 text without control characters"
		}
	}
	e.Msg = scrub("invalid YAML: " + msg)
	e.Fix = scrub(e.Fix)
	p.errs = append(p.errs, e)
}

// badByte returns the offset of the first byte that YAML does not allow in a
// file (invalid UTF-8 or a control character), or -1.
func badByte(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f || r >= 0x80 && r <= 0x9f && r != 0x85 || r == 0xfffe || r == 0xffff {
			return i
		}
		i += n
	}
	return -1
}

// field is one key and its value (aliases resolved) in a mapping.
type field struct {
	key, val *yaml.Node
}

// deref follows aliases. An anchor never sits on an alias, so one step is
// enough; the bound only guards against a malformed tree.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 8; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// mapping returns the fields of n by name, after reporting unknown and
// repeated fields. It returns nil, after reporting it, if n is not a mapping.
func (p *parser) mapping(n *yaml.Node, where string, known []string) map[string]field {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		switch where {
		case "at the top level":
			p.at(n, "start the file with \"version: 1\"", "the file must be a YAML mapping of version, defaults and slots, not %s", kind(n))
		default:
			p.at(n, "write the fields as \"name: value\" lines, one per line: "+strings.Join(known, ", "),
				"%s must be a mapping, not %s", strings.TrimPrefix(where, "in "), kind(n))
		}
		return nil
	}
	out := map[string]field{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			p.at(k, "field names are plain words such as "+strings.Join(known, ", "), "field name must be a string, not %s", kind(k))
			continue
		}
		if k.Tag == "!!merge" {
			p.at(k, "write the fields out in full", "merge keys (<<) are not supported")
			continue
		}
		name := k.Value
		if !contains(known, name) {
			p.at(k, unknownHint(name, where, known), "unknown field %q %s", name, where)
			continue
		}
		if prev, dup := out[name]; dup {
			p.at(k, "remove one of them", "field %q given twice (first at line %d)", name, prev.key.Line)
			continue
		}
		out[name] = field{key: k, val: v}
	}
	return out
}

func kind(n *yaml.Node) string {
	switch n = deref(n); {
	case n == nil || n.Kind == 0:
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Tag == "!!null":
		return "null"
	default:
		return "a scalar"
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// unknownHint suggests the known field the user probably meant.
func unknownHint(name, where string, known []string) string {
	if where == "in a slot" && contains(defaultsFields, name) {
		return fmt.Sprintf("%s can only be set under \"defaults:\"; move it there", name)
	}
	if where == "at the top level" && (contains(slotFields, name) || contains(defaultsFields, name)) {
		if contains(defaultsFields, name) {
			if contains(slotFields, name) {
				return fmt.Sprintf("%s belongs under \"defaults:\" or in a slot", name)
			}
			return fmt.Sprintf("%s belongs under \"defaults:\"", name)
		}
		return fmt.Sprintf("%s belongs in a slot, under \"slots:\"", name)
	}
	if s := suggest(name, known); s != "" {
		return fmt.Sprintf("did you mean %q?", s)
	}
	return "the fields " + where + " are: " + strings.Join(known, ", ")
}

// suggest returns the known word closest to name, if it is close enough to be
// a typo: the same word in another case or separator style, or at most two
// edits (a swap of neighbours counts as one) away.
func suggest(name string, known []string) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "", " ", "").Replace(strings.ToLower(s))
	}
	best, bestD := "", 3
	for _, k := range known {
		if norm(k) == norm(name) {
			return k
		}
		d := editDistance(strings.ToLower(name), k)
		if d < bestD && d < len(k) {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return 1 << 30 // not a typo of any field name; keeps fuzzing fast
	}
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// str returns the value of a string field. A null value counts as absent
// (ok false, no report); a list or mapping is reported.
func (p *parser) str(f field) (string, bool) {
	if isNull(f.val) {
		return "", false
	}
	if f.val.Kind != yaml.ScalarNode {
		p.at(f.val, "write a single value after \""+f.key.Value+":\"", "%s must be a string, not %s", f.key.Value, kind(f.val))
		return "", false
	}
	return f.val.Value, true
}

// quote quotes s for a message, unless it looks like a key string.
func quote(s string) string {
	if looksLikeKey(s) {
		return "(a value that looks like an API key string)"
	}
	return strconv.Quote(s)
}

// keyString reports a value that looks like an API key string: the file
// must name keys, never hold them.
func (p *parser) keyString(f field, s string) bool {
	if !looksLikeKey(s) {
		return false
	}
	p.at(f.val, "remove the key string from this file (and rotate that key if the file was shared); "+
		"the config names keys and secrets, for example projects/my-project/locations/global/keys/my-key",
		"%s holds what looks like an API key string", f.key.Value)
	return true
}

func (p *parser) version(root *yaml.Node, f map[string]field, cfg *Config) {
	v, ok := f["version"]
	if !ok || isNull(v.val) {
		p.at(root, `add "version: 1" at the top of the file`, "missing version")
		return
	}
	n := v.val
	var got int
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&got) != nil {
		p.at(n, `write "version: 1" (a number, not quoted)`, "version must be the number 1, not %s", quoteNode(n))
		return
	}
	if got != 1 {
		p.at(n, `write "version: 1"; this keyrotate reads version 1 files only`, "unsupported version %d", got)
		return
	}
	cfg.Version = got
}

func quoteNode(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return quote(n.Value)
	}
	return kind(n)
}

func (p *parser) defaults(n *yaml.Node, d *Defaults) {
	if isNull(n) {
		return
	}
	f := p.mapping(n, "in defaults", defaultsFields)
	if f == nil {
		return
	}
	if x, ok := p.duration(f, "grace"); ok {
		if p.atLeast(f["grace"], x, 0, "grace is how long the old key survives a rotation; 0s deletes it at once") {
			d.Grace = x
		}
	}
	if x, ok := p.duration(f, "max_age"); ok {
		if p.above(f["max_age"], x, 0, "max_age is the age at which a key is due for rotation, for example 90d") {
			d.MaxAge = x
		}
	}
	if x, ok := p.duration(f, "propagation_timeout"); ok {
		fd := f["propagation_timeout"]
		switch {
		case x <= 0:
			p.at(fd.val, "a new key takes 1–10 minutes to start working; 10m is a good value", "propagation_timeout must be more than 0, not %s", fd.val.Value)
		case time.Duration(x) > time.Hour:
			p.at(fd.val, "a new key takes 1–10 minutes to start working; a key that does not work within an hour will not; use at most 1h (10m is a good value)",
				"propagation_timeout %s is longer than 1h", fd.val.Value)
		default:
			d.PropagationTimeout = x
		}
	}
	if x, ok := p.duration(f, "lease_ttl"); ok {
		if time.Duration(x) < time.Minute {
			p.at(f["lease_ttl"].val, "the lease is renewed while a rotation runs and must outlive a renewal; use at least 1m (15m is a good value)",
				"lease_ttl must be at least 1m, not %s", f["lease_ttl"].val.Value)
		} else {
			d.LeaseTTL = x
		}
	}
	p.probe(f, &d.Probe, &d.Model, "")
	p.drain(f, &d.Retire, &d.QuietPeriod, &d.DrainTimeout, &d.Usage, d.Grace)
	if x, ok := p.duration(f, "usage_delay"); ok && p.atLeast(f["usage_delay"], x, 0,
		"usage_delay is how late Cloud Monitoring may report a call (30m by default); 0s trusts what it reports at once") {
		d.UsageDelay = x
	}
	if fq, ok := f["quotas"]; ok && !isNull(fq.val) {
		p.quotas(fq.val, d)
	}
	p.scheduleTopic(f, &d.ScheduleTopic)
	if fq, ok := f["quota_project"]; ok {
		if v, ok := p.str(fq); ok {
			if !ValidProject(v) {
				p.at(fq.val, "the quota project is the project charged for the API Keys and Secret Manager calls; "+projectHint,
					"quota_project %s is not a project id or number", quote(v))
			} else {
				d.QuotaProject = v
			}
		}
	}
}

// drain parses the drain gate's fields of a slot or of the defaults into
// retire, quiet, drain and usage (left as they are when absent); grace is
// the grace set at the same level: retire: grace keeps the old key for it,
// retire: quiet falls back to it when Cloud Monitoring cannot answer under
// usage: best-effort, and retire: now refuses it.
func (p *parser) drain(f map[string]field, retire *string, quiet, drain *Duration, usage *string, grace Duration) {
	if fr, v, ok := p.text(f, "retire"); ok {
		switch {
		case !slices.Contains(Retires, v):
			p.at(fr.val, `write "retire: quiet" to delete the old key once Cloud Monitoring shows nothing uses it, `+
				`"retire: grace" to keep it for the grace period, or "retire: now" to delete it at once`,
				"retire must be quiet, grace or now, not %s", quote(v))
		case v == RetireNow && grace > 0:
			// With quiet, grace is what usage: best-effort falls back to
			// when Cloud Monitoring cannot answer; now keeps nothing.
			p.at(fr.key, "remove grace, or write \"retire: grace\" (or quiet) to keep the old key for it",
				"grace does not apply with retire: now, which deletes the old key at once")
		default:
			*retire = v
		}
	}
	if x, ok := p.duration(f, "quiet_period"); ok {
		if time.Duration(x) < time.Minute {
			p.at(f["quiet_period"].val, "Cloud Monitoring counts calls per minute; use at least 1m (10m is a good value)",
				"quiet_period must be at least 1m, not %s", f["quiet_period"].val.Value)
		} else {
			*quiet = x
		}
	}
	if x, ok := p.duration(f, "drain_timeout"); ok && p.atLeast(f["drain_timeout"], x, 0,
		"drain_timeout bounds the wait for the old key to be quiet; 0s does not wait (finalize deletes it once quiet)") {
		*drain = x
	}
	if fu, v, ok := p.text(f, "usage"); ok {
		if !slices.Contains(Usages, v) {
			p.at(fu.val, `write "usage: required" to keep the old key when Cloud Monitoring cannot answer, `+
				`or "usage: best-effort" to warn and fall back to the grace period`,
				"usage must be required or best-effort, not %s", quote(v))
		} else {
			*usage = v
		}
	}
}

// probe parses the probe and model fields of a slot or of the defaults
// into probe and model (left as they are when absent); inherited is the
// probe that applies when probe stays "" (a slot's, from the defaults).
func (p *parser) probe(f map[string]field, probe, model *string, inherited string) {
	if fp, ok := f["probe"]; ok {
		if v, ok := p.str(fp); ok && !p.keyString(fp, v) {
			if msg, hint := CheckProbe(v); msg != "" {
				p.at(fp.val, hint, "%s", msg)
			} else {
				*probe = v
			}
		}
	}
	fm, ok := f["model"]
	if !ok {
		return
	}
	v, ok := p.str(fm)
	if !ok || p.keyString(fm, v) {
		return
	}
	if msg, hint := CheckModel(v); msg != "" {
		p.at(fm.val, hint, "%s", msg)
	} else if *probe == ProbeListModels || *probe == "" && inherited == ProbeListModels {
		p.at(fm.key, "remove model, or probe with countTokens or generateContent",
			"model applies only to the countTokens and generateContent probes, not to listModels")
	} else {
		*model = v
	}
}

// CheckProbe checks a probe name (a value of probe); for a bad one it
// returns what is wrong and a hint.
func CheckProbe(v string) (msg, hint string) {
	if contains(Probes, v) {
		return "", ""
	}
	hint = "write countTokens (free, on the generation path; the default), " +
		"generateContent (the application's own call, a tiny billed call) " +
		"or listModels (the cheapest, but it does not exercise generation)"
	if s := suggest(v, Probes); s != "" {
		hint = fmt.Sprintf("did you mean %q?", s)
	}
	return "probe must be countTokens, generateContent or listModels, not " + quote(v), hint
}

// CheckModel checks the shape of a Gemini model id (a value of model),
// without asking the API whether it serves it; for a bad one it returns
// what is wrong and a hint.
func CheckModel(v string) (msg, hint string) {
	if modelRE.MatchString(v) {
		return "", ""
	}
	hint = "write a Gemini model id such as gemini-3.5-flash-lite (the API's model list, GET /v1beta/models, names them)"
	switch l := strings.ToLower(v); {
	case strings.Contains(v, ":"):
		hint = "write the model id alone, such as gemini-3.5-flash-lite; the call is chosen with probe:"
	case l != v && modelRE.MatchString(l):
		hint = fmt.Sprintf("write it in lower case: %q", l)
	}
	return "model " + quote(v) + " is not a Gemini model id", hint
}

// quotas parses defaults.quotas: per API, the reads and writes a project
// may make per minute (keyrotate paces its calls under them).
func (p *parser) quotas(n *yaml.Node, d *Defaults) {
	apis := p.mapping(n, "in defaults.quotas", quotaAPIs)
	for _, api := range quotaAPIs {
		fa, ok := apis[api]
		if !ok || isNull(fa.val) {
			continue
		}
		where := "in defaults.quotas." + api
		f := p.mapping(fa.val, where, quotaFields)
		var q Quota
		for _, name := range quotaFields {
			fd, ok := f[name]
			if !ok {
				continue
			}
			s, ok := p.str(fd)
			if !ok {
				continue
			}
			v, err := strconv.Atoi(s)
			if err != nil || v <= 0 || v > 1_000_000 {
				p.at(fd.val, "give the project's quota per minute as a whole number, e.g. 120 (see the API's quota page in the Cloud console)",
					"%s %s must be a whole number from 1 to 1000000, not %s", where[3:], name, quote(s))
				continue
			}
			if name == "reads" {
				q.Reads = v
			} else {
				q.Writes = v
			}
		}
		if d.Quotas == nil {
			d.Quotas = map[string]Quota{}
		}
		d.Quotas[api] = q
	}
}

// duration parses the named duration field if present; ok is false when it
// is absent or invalid (reported).
func (p *parser) duration(f map[string]field, name string) (Duration, bool) {
	fd, ok := f[name]
	if !ok {
		return 0, false
	}
	s, ok := p.str(fd)
	if !ok {
		return 0, false
	}
	if p.keyString(fd, s) {
		return 0, false
	}
	d, msg, hint := parseDuration(s)
	if msg != "" {
		p.at(fd.val, hint, "%s: %s", name, msg)
		return 0, false
	}
	return d, true
}

func (p *parser) atLeast(f field, d, least Duration, why string) bool {
	if d < least {
		p.at(f.val, why, "%s must not be negative, not %s", f.key.Value, f.val.Value)
		return false
	}
	return true
}

func (p *parser) above(f field, d, least Duration, why string) bool {
	if d <= least {
		p.at(f.val, why, "%s must be more than 0, not %s", f.key.Value, f.val.Value)
		return false
	}
	return true
}

func (p *parser) slots(n *yaml.Node, cfg *Config) {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		p.at(n, "list the slots, each starting with \"- name: ...\"", "slots must be a list, not %s", kind(n))
		return
	}
	if len(n.Content) == 0 {
		p.at(n, "add a slot under \"slots:\", for example\n  - name: gemini-prod\n    project: my-project\n    secret: projects/my-project/secrets/gemini-api-key",
			"no slots: there is nothing to rotate")
		return
	}
	names := map[string]int{}
	for _, item := range n.Content {
		s, ok := p.slot(item, names, &cfg.Defaults)
		if ok {
			cfg.Slots = append(cfg.Slots, s)
		}
	}
}

// slot parses one slot; ok is false when anything in it was reported.
func (p *parser) slot(n *yaml.Node, names map[string]int, defaults *Defaults) (Slot, bool) {
	n = deref(n)
	s := Slot{Line: n.Line, Verify: DefaultVerify}
	f := p.mapping(n, "in a slot", slotFields)
	if f == nil {
		return s, false
	}
	before := len(p.errs)
	p.slotName(n, f, names, &s)
	label := "slot"
	if s.Name != "" {
		label = fmt.Sprintf("slot %q", s.Name)
	}
	p.slotProject(n, f, &s, label)
	p.slotSecret(n, f, &s, label)
	p.slotKey(f, &s, label)
	p.slotProjects(f, &s)
	p.slotBinding(f, &s)
	p.slotVerify(f, &s, defaults)
	if x, ok := p.duration(f, "grace"); ok && p.atLeast(f["grace"], x, 0, "grace is how long the old key survives a rotation; 0s deletes it at once") {
		s.Grace = &x
	}
	if x, ok := p.duration(f, "max_age"); ok && p.above(f["max_age"], x, 0, "max_age is the age at which a key is due for rotation, for example 90d") {
		s.MaxAge = &x
	}
	var quiet, drain Duration = -1, -1
	var grace Duration
	if s.Grace != nil {
		grace = *s.Grace
	}
	p.drain(f, &s.Retire, &quiet, &drain, &s.Usage, grace)
	if quiet >= 0 {
		s.QuietPeriod = &quiet
	}
	if drain >= 0 {
		s.DrainTimeout = &drain
	}
	p.scheduleTopic(f, &s.ScheduleTopic)
	p.scheduleMaxAge(n, f, &s, defaults, label)
	p.slotTargets(f, &s, label)
	return s, len(p.errs) == before
}

// scheduleTopic reads schedule_topic, a Pub/Sub topic's full name.
func (p *parser) scheduleTopic(f map[string]field, topic *string) {
	ft, v, ok := p.text(f, "schedule_topic")
	if !ok {
		return
	}
	if !ValidTopic(v) {
		p.at(ft.val, "write the topic's full name, projects/PROJECT/topics/TOPIC (a topic id is 3-255 letters, digits and - _ . ~ + %, "+
			"starting with a letter and not with \"goog\")", "schedule_topic %s is not a Pub/Sub topic name", quote(v))
		return
	}
	*topic = v
}

// scheduleMaxAge checks that a slot with a schedule topic has a max_age
// Secret Manager takes as a rotation period: whole seconds, at least 1h and
// at most 100 years (Rotation.rotation_period).
func (p *parser) scheduleMaxAge(n *yaml.Node, f map[string]field, s *Slot, defaults *Defaults, label string) {
	if s.ScheduleTopic == "" && defaults.ScheduleTopic == "" {
		return
	}
	age := defaults.MaxAge
	at := n
	if s.MaxAge != nil {
		age, at = *s.MaxAge, f["max_age"].val
	}
	d := time.Duration(age)
	if d < time.Hour || d > maxRotationPeriod || d%time.Second != 0 {
		p.at(at, "Secret Manager's rotation period, which schedule_topic sets to max_age, is whole seconds from 1h to 100 years (36500d)",
			"%s: max_age %s cannot be a rotation schedule's period", label, time.Duration(age))
	}
}

// maxRotationPeriod is the longest rotation period Secret Manager takes:
// 3153600000s (100 years).
const maxRotationPeriod = 3153600000 * time.Second

// topicRe is a Pub/Sub topic's full name: a topic id starts with a letter,
// is 3-255 letters, digits and - _ . ~ + % and does not start with "goog"
// (Pub/Sub's resource names).
var topicRe = regexp.MustCompile(`^projects/([^/]+)/topics/([A-Za-z][A-Za-z0-9\-_.~+%]{2,254})$`)

// ValidTopic reports whether name is a Pub/Sub topic's full name,
// projects/PROJECT/topics/TOPIC.
func ValidTopic(name string) bool {
	m := topicRe.FindStringSubmatch(name)
	return m != nil && ValidProject(m[1]) && !strings.HasPrefix(m[2], "goog")
}

// text returns the value of the string field name when it is given, a
// string and not a key string (a value of another shape or a key string is
// reported; a null one counts as absent).
func (p *parser) text(f map[string]field, name string) (field, string, bool) {
	fd, ok := f[name]
	if !ok {
		return fd, "", false
	}
	v, ok := p.str(fd)
	if !ok || p.keyString(fd, v) {
		return fd, "", false
	}
	return fd, v, true
}

// slotName reads the slot's name, which must be a valid slot name used by
// no earlier slot (names maps each name to the line that gave it).
func (p *parser) slotName(n *yaml.Node, f map[string]field, names map[string]int, s *Slot) {
	if fn, ok := f["name"]; !ok || isNull(fn.val) {
		p.at(n, `add "name: gemini-prod" (lower-case letters, digits and dashes)`, "slot has no name")
		return
	}
	fn, v, ok := p.text(f, "name")
	if !ok {
		return
	}
	switch {
	case !slotNameRE.MatchString(v) || len(v) > 63:
		hint := "use 1–63 lower-case letters, digits and dashes, starting with a letter, for example gemini-prod"
		if fix := slugify(v); fix != "" && fix != v {
			hint = fmt.Sprintf("use lower-case letters, digits and dashes, starting with a letter (up to 63), for example %q", fix)
		}
		p.at(fn.val, hint, "invalid slot name %s", quote(v))
	case names[v] != 0:
		p.at(fn.val, "give each slot its own name", "slot name %q already used at line %d", v, names[v])
	default:
		names[v] = fn.val.Line
	}
	s.Name = v
}

// slotProject reads the project that owns the slot's API keys.
func (p *parser) slotProject(n *yaml.Node, f map[string]field, s *Slot, label string) {
	if fp, ok := f["project"]; !ok || isNull(fp.val) {
		p.at(n, `add "project: my-project" (the project id or number that owns the API keys)`, "%s has no project", label)
		return
	}
	fp, v, ok := p.text(f, "project")
	if !ok {
		return
	}
	if !validProject(v) {
		p.at(fp.val, projectHint, "project %s is not a project id or number", quote(v))
	}
	s.Project = v
}

// slotSecret reads the Secret Manager secret that holds the slot's current
// key string; no other slot or target may use it.
func (p *parser) slotSecret(n *yaml.Node, f map[string]field, s *Slot, label string) {
	if fs, ok := f["secret"]; !ok || isNull(fs.val) {
		p.at(n, fmt.Sprintf("add \"secret: %s\" (the Secret Manager secret that holds the current key string)", exampleSecret(s.Project)),
			"%s has no secret", label)
		return
	}
	fs, v, ok := p.text(f, "secret")
	if !ok {
		return
	}
	if msg, hint := checkSecret(v, s.Project, false); msg != "" {
		p.at(fs.val, hint, "secret: %s", msg)
	} else {
		p.claim(p.secrets, v, fs.val, fmt.Sprintf("the secret of %s", label),
			"each slot needs its own secret, and a target must not write another slot's secret",
			func(u use) string { return fmt.Sprintf("secret %q is already used as %s (line %d)", v, u.what, u.line) })
	}
	s.Secret = v
}

// slotKey reads the API key the slot names (optional); no other slot may
// name it.
func (p *parser) slotKey(f map[string]field, s *Slot, label string) {
	fk, v, ok := p.text(f, "key")
	if !ok {
		return
	}
	if msg, hint := checkKey(v, s.Project); msg != "" {
		p.at(fk.val, hint, "key: %s", msg)
	} else {
		p.claim(p.keys, v, fk.val, fmt.Sprintf("the key of %s", label),
			"one key belongs to one slot; remove \"key:\" from one of them",
			func(u use) string { return fmt.Sprintf("key %q is already used as %s (line %d)", v, u.what, u.line) })
	}
	s.Key = v
}

// slotBinding reads service_account, the service account new keys are
// bound to, and bound_key_restrictions, which applies only with it.
func (p *parser) slotBinding(f map[string]field, s *Slot) {
	if fa, v, ok := p.text(f, "service_account"); ok {
		if !serviceRE.MatchString(v) {
			hint := "write the service account's email, NAME@PROJECT.iam.gserviceaccount.com (gcloud iam service-accounts list)"
			if strings.ToLower(v) != v && serviceRE.MatchString(strings.ToLower(v)) {
				hint = fmt.Sprintf("write it in lower case: %q", strings.ToLower(v))
			}
			p.at(fa.val, hint, "service_account %s is not a service account email", quote(v))
		}
		s.ServiceAccount = v
	}
	if fb, v, ok := p.text(f, "bound_key_restrictions"); ok {
		switch {
		case v != BoundGemini && v != BoundCopy:
			p.at(fb.val, `write "gemini" to restrict new bound keys to the Gemini API, or "copy" to copy the old key's restrictions`,
				"bound_key_restrictions must be gemini or copy, not %s", quote(v))
		case s.ServiceAccount == "":
			p.at(fb.key, "remove bound_key_restrictions, or set service_account to bind new keys",
				"bound_key_restrictions applies only with service_account")
		}
		s.BoundKeyRestrictions = v
	}
}

// slotVerify reads verify, the live check of each new key, and the probe
// and model it uses, which apply only with verify: gemini.
func (p *parser) slotVerify(f map[string]field, s *Slot, defaults *Defaults) {
	if fv, v, ok := p.text(f, "verify"); ok {
		if v != VerifyGemini && v != VerifyNone {
			p.at(fv.val, `write "verify: gemini" to probe the Gemini API with each new key, or "verify: none" to skip the live check`,
				"verify must be gemini or none, not %s", quote(v))
		}
		s.Verify = v
	}
	p.probe(f, &s.Probe, &s.Model, defaults.Probe)
	if s.Verify != VerifyNone {
		return
	}
	for _, name := range []string{"probe", "model"} {
		if fd, ok := f[name]; ok {
			p.at(fd.key, fmt.Sprintf("remove %s, or set verify: gemini to probe the Gemini API with each new key", name),
				"%s applies only with verify: gemini", name)
		}
	}
}

// slotTargets reads the list of the slot's targets.
func (p *parser) slotTargets(f map[string]field, s *Slot, label string) {
	ft, ok := f["targets"]
	if !ok || isNull(ft.val) {
		return
	}
	if ft.val.Kind != yaml.SequenceNode {
		p.at(ft.val, "list the targets, each starting with \"- type: ...\"", "targets must be a list, not %s", kind(ft.val))
		return
	}
	for _, item := range ft.val.Content {
		if t, ok := p.target(item, s, label); ok {
			s.Targets = append(s.Targets, t)
		}
	}
}

// slotProjects checks, without any API call, that the slot's key is in the
// slot's project and that its secret is too unless secret_project_differs
// says otherwise. A project named by id and one named by number cannot be
// compared here; the preflight compares them.
func (p *parser) slotProjects(f map[string]field, s *Slot) {
	if fd, ok := f["secret_project_differs"]; ok {
		if fd.val.Kind != yaml.ScalarNode || fd.val.Tag != "!!bool" || fd.val.Decode(&s.SecretProjectDiffers) != nil {
			p.at(fd.val, "write secret_project_differs: true when the slot's secret lives in another project than its keys (a central secrets project), or leave it out",
				"secret_project_differs must be true or false, not %s", quote(fd.val.Value))
		} else if s.SecretProjectDiffers && s.Secret != "" && projectOf(s.Secret) == s.Project {
			p.at(fd.val, "remove secret_project_differs: the secret is in the slot's project",
				"secret_project_differs is true, but secret %s is in the slot's project %s", quote(s.Secret), quote(s.Project))
		}
	}
	if !validProject(s.Project) {
		return
	}
	if fs, ok := f["secret"]; ok && s.Secret != "" && !s.SecretProjectDiffers && sameForm(projectOf(s.Secret), s.Project) && projectOf(s.Secret) != s.Project {
		p.at(fs.val, fmt.Sprintf("fix project: or secret:; if the secret lives in a central secrets project on purpose, "+
			"add \"secret_project_differs: true\" to the slot (the keys stay in project %s)", s.Project),
			"secret %s is in project %s, not in the slot's project %s", quote(s.Secret), quote(projectOf(s.Secret)), quote(s.Project))
	}
	if fk, ok := f["key"]; ok && s.Key != "" && sameForm(projectOf(s.Key), s.Project) && projectOf(s.Key) != s.Project {
		p.at(fk.val, "a slot's keys live in its project: fix project: or key: (rotating would replace and delete another project's key)",
			"key %s is in project %s, not in the slot's project %s", quote(s.Key), quote(projectOf(s.Key)), quote(s.Project))
	}
}

// projectOf returns P of a resource name projects/P/..., or "".
func projectOf(name string) string {
	parts := strings.SplitN(name, "/", 3)
	if len(parts) < 3 || parts[0] != "projects" || !validProject(parts[1]) {
		return ""
	}
	return parts[1]
}

// sameForm reports whether two projects are both ids or both numbers, so
// that a difference between them is a different project.
func sameForm(a, b string) bool {
	return a != "" && b != "" && projectNumRE.MatchString(a) == projectNumRE.MatchString(b)
}

// ProjectHint says what a project id or number looks like.
const ProjectHint = projectHint

const projectHint = "write the project id (6–30 lower-case letters, digits and dashes, starting with a letter, " +
	"not ending with a dash; see gcloud projects list) or the project number (digits only)"

// ValidProject reports whether s is a project id or a project number.
func ValidProject(s string) bool { return validProject(s) }

func validProject(s string) bool {
	return projectIDRE.MatchString(s) || projectNumRE.MatchString(s) && len(s) <= 30
}

func exampleSecret(project string) string {
	if !validProject(project) {
		project = "my-project"
	}
	return "projects/" + project + "/secrets/gemini-api-key"
}

// locationRE matches a Google Cloud region (us-east1, europe-west1,
// northamerica-northeast1): regional secrets live in regions, not in
// multi-regions such as "eu".
var locationRE = regexp.MustCompile(`^[a-z]+(-[a-z]+)+[0-9]+$`)

// checkSecret returns a message and a hint if s is not the name of a global
// Secret Manager secret or, if regional, of a regional one
// (projects/PROJECT/locations/LOCATION/secrets/SECRET).
func checkSecret(s, project string, regional bool) (msg, hint string) {
	parts := strings.Split(s, "/")
	form := "write projects/PROJECT/secrets/SECRET, for example " + exampleSecret(project)
	if regional {
		form += ", or projects/PROJECT/locations/LOCATION/secrets/SECRET for a regional secret"
	}
	switch {
	case len(parts) == 1:
		return fmt.Sprintf("%s is not a full secret name", quote(s)), "write " + strings.Replace(exampleSecret(project), "gemini-api-key", parts[0], 1)
	case len(parts) >= 6 && parts[0] == "projects" && parts[2] == "locations" && parts[4] == "secrets":
		switch {
		case !regional:
			return fmt.Sprintf("%s is a regional secret; a slot's own secret must be global (regional secrets can be secretmanager targets)", quote(s)),
				"use a global secret, projects/PROJECT/secrets/SECRET, and add the regional one as a target"
		case len(parts) >= 8 && parts[6] == "versions":
			return fmt.Sprintf("%s names a secret version, not a secret", quote(s)), "drop the \"/versions/...\" part: keyrotate adds versions itself"
		case len(parts) != 6:
			return fmt.Sprintf("%s is not a secret name", quote(s)), form
		case !validProject(parts[1]):
			return fmt.Sprintf("the project in %s is not a project id or number", quote(s)), projectHint
		case !locationRE.MatchString(parts[3]):
			return fmt.Sprintf("the location in %s is not a region", quote(s)),
				"regional secrets live in a region such as us-east1 or europe-west1 (gcloud secrets locations list)"
		case !secretIDRE.MatchString(parts[5]):
			return fmt.Sprintf("the secret id in %s is not valid", quote(s)), "a secret id has 1–255 letters, digits, dashes and underscores"
		}
		return "", ""
	case len(parts) >= 6 && parts[0] == "projects" && parts[2] == "secrets" && parts[4] == "versions":
		return fmt.Sprintf("%s names a secret version, not a secret", quote(s)), "drop the \"/versions/...\" part: keyrotate adds versions itself"
	case len(parts) != 4 || parts[0] != "projects" || parts[2] != "secrets":
		return fmt.Sprintf("%s is not a secret name", quote(s)), form
	case !validProject(parts[1]):
		return fmt.Sprintf("the project in %s is not a project id or number", quote(s)), projectHint
	case !secretIDRE.MatchString(parts[3]):
		return fmt.Sprintf("the secret id in %s is not valid", quote(s)), "a secret id has 1–255 letters, digits, dashes and underscores"
	}
	return "", ""
}

// checkKey returns a message and a hint if s is not the name of an API key.
func checkKey(s, project string) (msg, hint string) {
	if !validProject(project) {
		project = "my-project"
	}
	parts := strings.Split(s, "/")
	form := "write projects/PROJECT/locations/global/keys/KEY_ID (gcloud services api-keys list shows the names), or leave key out to find the key from the secret"
	switch {
	case len(parts) == 1:
		return fmt.Sprintf("%s is not a full key name", quote(s)), fmt.Sprintf("write projects/%s/locations/global/keys/%s", project, parts[0])
	case len(parts) != 6 || parts[0] != "projects" || parts[2] != "locations" || parts[4] != "keys":
		return fmt.Sprintf("%s is not an API key name", quote(s)), form
	case !validProject(parts[1]):
		return fmt.Sprintf("the project in %s is not a project id or number", quote(s)), projectHint
	case parts[3] != "global":
		return fmt.Sprintf("API keys live in location global, not %s", quote(parts[3])), "write projects/" + parts[1] + "/locations/global/keys/" + parts[5]
	case !keyIDRE.MatchString(parts[5]) && !keyUUIDRE.MatchString(parts[5]):
		return fmt.Sprintf("the key id in %s is not valid", quote(s)),
			"a key id is 1–63 lower-case letters, digits and dashes, starting with a letter and not ending with a dash (or a key's UUID)"
	}
	return "", ""
}

// slugify turns s into a valid slot name if that is simple, else "".
func slugify(s string) string {
	t := strings.Map(func(r rune) rune {
		switch {
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-':
			return r
		case r == '_' || r == ' ' || r == '.':
			return '-'
		}
		return -1
	}, s)
	if !slotNameRE.MatchString(t) || len(t) > 63 {
		return ""
	}
	return t
}

// claim records that value is used for what, or reports the earlier use
// with the message msg(earlier use).
func (p *parser) claim(m map[string]use, value string, n *yaml.Node, what, hint string, msg func(use) string) {
	if prev, ok := m[value]; ok {
		p.at(n, hint, "%s", msg(prev))
		return
	}
	m[value] = use{what: what, line: n.Line}
}

func (p *parser) target(n *yaml.Node, s *Slot, label string) (Target, bool) {
	n = deref(n)
	t := Target{Line: n.Line}
	f := p.mapping(n, "in a target", targetFields)
	if f == nil {
		return t, false
	}
	before := len(p.errs)
	ty, ok := f["type"]
	if !ok || isNull(ty.val) {
		p.at(n, `add "type: dotenv" or "type: secretmanager"`, "target has no type")
		return t, false
	}
	v, ok := p.str(ty)
	if !ok {
		return t, false
	}
	t.Type = v
	kind, ok := targetKinds[v]
	if !ok {
		names := targetKindNames()
		hint := "supported target types: " + strings.Join(names, ", ")
		if s := suggest(v, append(names, "env", "secret_manager")); s != "" {
			switch s {
			case "env":
				s = TargetDotEnv
			case "secret_manager":
				s = TargetSecretManager
			}
			hint = fmt.Sprintf("did you mean %q? %s", s, hint)
		}
		p.at(ty.val, hint, "unknown target type %s", quote(v))
		return t, false
	}
	for _, name := range targetFields {
		if name == "type" || contains(kind.own, name) || contains(kind.optional, name) {
			continue
		}
		if fo, ok := f[name]; ok {
			p.at(fo.key, fmt.Sprintf("remove %q: %s %s target takes %s", name, article(v), v, andList(append(kind.own, kind.optional...))),
				"field %q does not apply to %s %s target", name, article(v), v)
		}
	}
	for _, name := range kind.own {
		if fo, ok := f[name]; !ok || isNull(fo.val) {
			p.at(n, ownHint(v, name), "%s target has no %s", v, name)
		}
	}
	where := fmt.Sprintf("a %s target of %s", v, label)
	kind.parse(p, f, s, &t, where)
	return t, len(p.errs) == before
}

// targetKind is what the parser knows of one type of target: the fields it
// needs, the fields it may have, and how to check them.
type targetKind struct {
	own, optional []string
	// hints says how to add each field of own that is missing.
	hints map[string]string
	parse func(p *parser, f map[string]field, s *Slot, t *Target, where string)
}

// targetKinds lists the target types; each type's checks live in its own
// function.
var targetKinds = map[string]targetKind{
	TargetDotEnv: {
		own: []string{"path", "var"}, optional: []string{"allow_world_readable"},
		parse: (*parser).dotenvTarget,
	},
	TargetCompose: {
		own: []string{"path", "services", "var"}, optional: []string{"reload", "timeout", "allow_world_readable"},
		hints: composeHints, parse: (*parser).composeTarget,
	},
	TargetSecretManager: {
		own:   []string{"secret"},
		parse: (*parser).secretManagerTarget,
	},
	TargetExec: {
		own: []string{"command"}, optional: []string{"verify", "timeout", "env", "show_output"},
		hints: execHints, parse: (*parser).execTarget,
	},
	TargetGitHub: {
		own: []string{"name", "token_env"}, optional: []string{"repo", "org", "environment", "base_url"},
		hints: githubHints, parse: (*parser).githubTarget,
	},
	TargetCloudRun: {
		own: []string{"service", "var"}, optional: []string{"container"},
		hints: cloudRunHints, parse: (*parser).cloudRunTarget,
	},
	TargetK8s: {
		own: []string{"namespace", "name", "key"}, optional: []string{"kubeconfig", "context", "restart", "timeout"},
		hints: k8sHints, parse: (*parser).k8sTarget,
	},
}

// article is "a" or "an" before a word.
func article(w string) string {
	if w != "" && strings.ContainsRune("aeiou", rune(w[0])) {
		return "an"
	}
	return "a"
}

// andList joins words as "a, b and c".
func andList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

func targetKindNames() []string {
	names := make([]string, 0, len(targetKinds))
	for k := range targetKinds {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

func (p *parser) dotenvTarget(f map[string]field, s *Slot, t *Target, where string) {
	if fp, ok := f["path"]; ok {
		if path, ok := p.str(fp); ok && !p.keyString(fp, path) {
			switch {
			case path == "~" || strings.HasPrefix(path, "~/"):
				p.at(fp.val, "write an absolute path, or one relative to the directory of this config file", "path %s: \"~\" is not expanded", quote(path))
			case strings.ContainsRune(path, 0):
				p.at(fp.val, "remove the NUL character", "path contains a NUL character")
			case strings.HasSuffix(path, "/") || path == "." || path == "..":
				p.at(fp.val, "name the file, for example app/.env", "path %s names a directory, not a file", quote(path))
			default:
				t.Path = p.resolve(path)
			}
		}
	}
	p.varField(f, t)
	p.worldReadable(f, t)
	if t.Path != "" && t.Var != "" {
		p.claim(p.vars, t.Path+"\x00"+t.Var, f["var"].val, where,
			"each variable of each file has one slot and one target; remove one of them",
			func(u use) string {
				return fmt.Sprintf("%s=%s is already written by %s (line %d)", t.Path, t.Var, u.what, u.line)
			})
	}
}

// worldReadable reads allow_world_readable, the choice of a file target
// (dotenv, compose) to accept a file that every user can read.
func (p *parser) worldReadable(f map[string]field, t *Target) {
	fa, ok := f["allow_world_readable"]
	if !ok {
		return
	}
	if fa.val.Kind != yaml.ScalarNode || fa.val.Tag != "!!bool" || fa.val.Decode(&t.AllowWorldReadable) != nil {
		p.at(fa.val, "write allow_world_readable: true to let every user of the machine read the file and its key (or leave it out)",
			"allow_world_readable must be true or false, not %s", quote(fa.val.Value))
	}
}

func (p *parser) secretManagerTarget(f map[string]field, s *Slot, t *Target, where string) {
	if fs, ok := f["secret"]; ok {
		if sec, ok := p.str(fs); ok && !p.keyString(fs, sec) {
			if msg, hint := checkSecret(sec, s.Project, true); msg != "" {
				p.at(fs.val, hint, "secret: %s", msg)
			} else if sec == s.Secret {
				p.at(fs.val, "remove this target: the slot's own secret always receives the new key", "target repeats the slot's own secret")
			} else {
				p.claim(p.secrets, sec, fs.val, where,
					"each secret receives one slot's key once; remove one of them",
					func(u use) string {
						return fmt.Sprintf("secret %q is already used as %s (line %d)", sec, u.what, u.line)
					})
			}
			t.Secret = sec
		}
	}
}

func ownHint(typ, name string) string {
	if h := targetKinds[typ].hints[name]; h != "" {
		return h
	}
	switch name {
	case "path":
		return `add "path: app/.env" (relative to this config file's directory)`
	case "var":
		return `add "var: GEMINI_API_KEY" (the variable that holds the key)`
	}
	return `add "secret: projects/my-project/secrets/other-secret" (a secret that also receives the key)`
}

// resolve returns path relative to the config file's directory, or path
// itself (cleaned) if absolute.
func (p *parser) resolve(path string) string {
	if filepath.IsAbs(path) {
		return filepath.Clean(path)
	}
	return filepath.Join(p.dir, path)
}

// Suggest returns the word of known that name is most likely a typo of,
// or "": the same rule that suggests config fields, for other callers'
// names (commands, flags, slots).
func Suggest(name string, known []string) string { return suggest(name, known) }

// varField reads a target's var: the name of an environment variable.
func (p *parser) varField(f map[string]field, t *Target) {
	fv, ok := f["var"]
	if !ok {
		return
	}
	if name, ok := p.str(fv); ok && !p.keyString(fv, name) {
		if !varRE.MatchString(name) {
			p.at(fv.val, "a variable name has letters, digits and underscores and does not start with a digit, for example GEMINI_API_KEY",
				"invalid variable name %s", quote(name))
		} else {
			t.Var = name
		}
	}
}
