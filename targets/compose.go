package targets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// Compose is one variable in the environment: section of one or more
// services of a Docker Compose file (docker-compose.yml, compose.yaml, ...),
// in the list form (- VAR=value, quoted or not) or the map form (VAR: value).
//
// The file is parsed with yaml.v3 to find the value of each service, but it
// is never re-rendered: Write splices the new key into the byte range that
// the value's node occupies in the original bytes, so comments, quoting,
// key order, indentation, anchors and line endings stay as they were. A value
// that the splice cannot reproduce exactly (escapes, a value over several
// lines, an anchor, tag or alias on it) is refused in preflight.
//
// All named services must hold the same value: they are one key's
// consumers. A value that is a ${VAR} or $VAR reference belongs to the
// environment or .env file that compose reads it from; a dotenv target on
// that file drives it, and this target refuses to overwrite the reference.
type Compose struct {
	path     string
	services []string
	variable string

	// writable checks that the file can be replaced; tests swap it to
	// simulate permission errors when running as root.
	writable func(path string) error
	// worldReadable: the file may be readable by every user.
	worldReadable bool

	mu   sync.Mutex // held by Write; guards seen
	seen fileSeen

	// reload, when set, recreates the services after each Write with
	// `docker compose up -d --no-deps --wait` and this timeout.
	reload time.Duration
}

// EnableReload makes every Write recreate the named services (containers
// read their environment only when they start) and wait until they are
// running and healthy, for at most timeout.
func (t *Compose) EnableReload(timeout time.Duration) {
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	t.reload = timeout
}

// Reloads tells the rotation to call Write even when the file already holds
// the key: an earlier run may have stopped between the write and the reload.
func (t *Compose) Reloads() bool { return t.reload > 0 }

var _ rotate.Target = (*Compose)(nil)

var _ rotate.Local = (*Compose)(nil)

// Local reports true: the file is on this machine, cheap to read again
// just before an old key is deleted.
func (t *Compose) Local() bool { return true }

// NewCompose returns the target for variable in the environment of each of
// services in the compose file at path.
func NewCompose(path string, services []string, variable string) *Compose {
	return &Compose{path: path, services: append([]string(nil), services...), variable: variable, writable: checkWritable}
}

// AllowWorldReadable lets Read accept a file that every user may read.
// Without it such a file is refused: the new key would be readable by all.
func (t *Compose) AllowWorldReadable() { t.worldReadable = true }

// String returns "compose:<path>#<service>[,<service>...]/<VAR>".
func (t *Compose) String() string {
	return "compose:" + t.path + "#" + strings.Join(t.services, ",") + "/" + t.variable
}

// Read returns the value that every named service holds. It fails with an
// error wrapping rotate.ErrInvalidTarget when the file is missing,
// unreadable or not YAML, when a service is missing or does not define the
// variable exactly once, when a value is a reference (${VAR}) or cannot be
// edited in place, when the services disagree, or when the file could not
// be replaced. It remembers the content it read, so that Write can refuse
// to overwrite a change made in between.
func (t *Compose) Read(ctx context.Context) (secret.Key, error) {
	if err := ctx.Err(); err != nil {
		return secret.Key{}, err
	}
	real, data, err := t.load()
	if err != nil {
		return secret.Key{}, err
	}
	vals, err := t.locate(data)
	if err != nil {
		return secret.Key{}, err
	}
	if err := replaceable(t, real, t.writable, t.worldReadable); err != nil {
		return secret.Key{}, err
	}
	if t.reload > 0 {
		if _, err := exec.LookPath("docker"); err != nil {
			return secret.Key{}, errhint.With(fmt.Errorf("%s: reload needs the docker command: %w: %w", t, err, rotate.ErrInvalidTarget),
				"install Docker (with the compose plugin) where keyrotate runs, or remove reload from the target and recreate the containers yourself")
		}
	}
	key := secret.New(vals[0].decoded())
	t.mu.Lock()
	t.seen = fileSeen{realPath: real, value: key, read: true}
	t.mu.Unlock()
	return key, nil
}

// Write puts key into the variable of every named service, changing no
// other byte of the file. Like DotEnv.Write it takes the file's write lock
// and merges the value into the file's latest content; it refuses with an
// error wrapping rotate.ErrTargetChanged when the value is not what the last
// Read (or Write) saw, and does nothing when every service already holds
// key. The replace is
// atomic (see replaceFile), keeps the file's mode and writes the file a
// symlink points to.
func (t *Compose) Write(ctx context.Context, key secret.Key) error {
	if err := t.write(ctx, key); err != nil {
		return err
	}
	return t.recreate(ctx, key)
}

// recreate runs `docker compose up -d --no-deps --wait` for the services,
// so that their containers start with the new environment, and waits for
// them to be running and healthy. It is idempotent: compose recreates only
// containers whose configuration changed.
//
// docker runs as runBounded runs every child: in a process group of its own,
// killed at the timeout or when ctx is done, its output cut off
// childWaitDelay later even if something it started still holds it. Its
// environment is not keyrotate's but the minimum (see childEnv), the
// variables of docker and compose themselves (see dockerEnv), and the
// variables the compose file refers to (compose fills ${VAR} in from its
// environment; without them it would recreate the services differently).
// Its redacted output ends the error when it fails.
func (t *Compose) recreate(ctx context.Context, key secret.Key) error {
	if t.reload <= 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var refs []string
	if _, data, err := t.load(); err == nil {
		refs = composeReferences(string(data))
	}
	args := append([]string{"compose", "-f", t.path, "up", "-d", "--no-deps", "--wait"}, t.services...)
	r := runBounded(ctx, child{
		argv:    append([]string{"docker"}, args...),
		env:     childEnv(func(name string) bool { return dockerEnv(name) || slices.Contains(refs, name) }),
		timeout: t.reload,
	})
	// No target name: the rotation's "write <target>:" says it.
	what := "reload: docker " + strings.Join(args, " ")
	output := tail(r.stdout.redacted(key), r.stderr.redacted(key))
	hint := "the file holds the new key but the services did not come up with it: " +
		"check `docker compose ps` and the containers' logs, then run keyrotate again (or abort)"
	switch {
	case r.err == nil:
		return nil
	case r.timedOut:
		return errhint.With(fmt.Errorf("%s did not finish within %s; its process group was killed%s", what, t.reload, output),
			"the file holds the new key but the services did not come up with it in time: check `docker compose ps` and the containers' logs, "+
				"raise the target's timeout if they need longer, then run keyrotate again (or abort)")
	case r.cancelled:
		return fmt.Errorf("%s stopped, its process group was killed: %w", what, ctx.Err())
	}
	return errhint.With(fmt.Errorf("%s: %s%s", what, r.status, output), hint)
}

// dockerEnv reports whether name is a variable that the docker command or
// its compose plugin reads for its own settings: where the daemon is and
// how to reach it (DOCKER_HOST, DOCKER_CONTEXT, DOCKER_CONFIG, TLS, the
// rootless socket under XDG_RUNTIME_DIR, an ssh:// host's agent) and
// compose's COMPOSE_* (the project name decides which containers are
// recreated).
func dockerEnv(name string) bool {
	switch name {
	case "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS", "DOCKER_TLS_VERIFY",
		"DOCKER_API_VERSION", "DOCKER_DEFAULT_PLATFORM", "DOCKER_CONTENT_TRUST", "DOCKER_CONTENT_TRUST_SERVER",
		"DOCKER_CUSTOM_HEADERS", "BUILDKIT_PROGRESS", "XDG_RUNTIME_DIR", "SSH_AUTH_SOCK":
		return true
	}
	return strings.HasPrefix(name, "COMPOSE_")
}

func (t *Compose) write(ctx context.Context, key secret.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	real, data, unlock, err := t.seen.lockAndLoad(ctx, t, t.path, t.load)
	if err != nil {
		return err
	}
	defer unlock()
	vals, err := t.locate(data)
	if err != nil {
		return err
	}
	current := secret.New(vals[0].decoded())
	if current.Equal(key) {
		t.seen.value = key
		return nil
	}
	if err := t.seen.unchanged(t, t.path, current); err != nil {
		return err
	}
	out, err := t.splice(data, vals, key.Reveal())
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	renamed, err := replaceFile(real, out)
	if renamed {
		t.seen.value = key
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", t, err)
	}
	return nil
}

// splice returns data with every value replaced by the new key, encoded for
// the value's quoting style, and proves by parsing the result that each
// service now holds exactly the new key.
func (t *Compose) splice(data []byte, vals []composeValue, key string) ([]byte, error) {
	var out []byte
	last := 0
	for _, v := range vals { // in file order: locate sorts them
		enc, ok := encodeComposeValue(v.style, key)
		if !ok {
			return nil, t.unfit(v)
		}
		out = append(out, data[last:v.start]...)
		out = append(out, enc...)
		last = v.end
	}
	out = append(out, data[last:]...)
	after, err := t.locate(out)
	if err != nil {
		return nil, t.unfit(vals[0])
	}
	for i, v := range after {
		if v.decoded() != key || !v.list && v.tag != "!!str" {
			return nil, t.unfit(vals[i])
		}
	}
	return out, nil
}

func (t *Compose) unfit(v composeValue) error {
	return errhint.With(
		fmt.Errorf("write %s: the new key cannot be written as the value of %s in service %s (line %d of %s) without changing its meaning: %w",
			t, t.variable, v.service, v.line, t.path, rotate.ErrInvalidTarget),
		fmt.Sprintf("put the value of %s on line %d of %s in double quotes, then run keyrotate again", t.variable, v.line, t.path))
}

// encodeComposeValue returns key as the bytes that stand for it in a value
// of the given style, or false if it cannot be written there verbatim.
// Compose interpolates $, so a literal $ is written $$.
func encodeComposeValue(style yaml.Style, key string) (string, bool) {
	if key == "" || !utf8.ValidString(key) {
		return "", false
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r <= 0x9f || r == 0x2028 || r == 0x2029 || r == 0xfeff {
			return "", false
		}
	}
	switch style {
	case yaml.DoubleQuotedStyle:
		if strings.ContainsAny(key, `"\`) {
			return "", false
		}
	case yaml.SingleQuotedStyle:
		if strings.ContainsRune(key, '\'') {
			return "", false
		}
	default: // plain: only characters that cannot end or change a plain scalar
		for i := 0; i < len(key); i++ {
			c := key[i]
			alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
			if !alnum && (i == 0 || !strings.ContainsRune(".-~+/=$", rune(c))) {
				return "", false
			}
		}
	}
	return strings.ReplaceAll(key, "$", "$$"), true
}

// composeValue is where one service's value of the variable sits in the
// file.
type composeValue struct {
	service    string
	line       int        // 1-based line of the definition
	start, end int        // byte range of the value (inside any quotes)
	raw        string     // the value as written, compose's $$ escapes included
	style      yaml.Style // the quoting of the scalar that holds it
	list       bool       // "- VAR=value" rather than "VAR: value"
	tag        string     // the scalar's resolved tag (map form: !!str, !!int, ...)
}

// decoded returns the value compose passes to the container: $$ stands for $.
func (v composeValue) decoded() string { return strings.ReplaceAll(v.raw, "$$", "$") }

// load resolves symlinks and reads the file (see readTarget).
func (t *Compose) load() (real string, data []byte, err error) {
	return readTarget(t, t.path,
		fmt.Sprintf("fix the target's path in the config: %s does not exist", t.path),
		"a compose file (docker-compose.yml, compose.yaml)")
}

// invalid returns an error wrapping rotate.ErrInvalidTarget with a hint.
func (t *Compose) invalid(hint, format string, args ...any) error {
	return errhint.With(fmt.Errorf("%s: %s: %w", t, fmt.Sprintf(format, args...), rotate.ErrInvalidTarget), hint)
}

// locate finds the value of the variable in each named service, in file
// order, after checking every rule of the target (see Read).
func (t *Compose) locate(data []byte) ([]composeValue, error) {
	root, err := parseCompose(data)
	if err == nil && !utf8.Valid(data) {
		err = errors.New("the file is not UTF-8 text")
	}
	if err != nil {
		return nil, t.invalid(fmt.Sprintf("fix the YAML of %s (docker compose config shows the same problem)", t.path),
			"%s is not a compose file: %v", t.path, err)
	}
	services := mappingValue(root, "services")
	if services == nil || services.Kind != yaml.MappingNode {
		return nil, t.invalid(fmt.Sprintf("point the target at a compose file with a top-level services: section, or fix the path %s", t.path),
			"%s has no services: section", t.path)
	}
	lines := lineStarts(data)
	var vals []composeValue
	for _, name := range t.services {
		v, err := t.locateService(data, lines, services, name)
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
	}
	for i := 1; i < len(vals); i++ {
		if vals[i].raw != vals[0].raw {
			return nil, t.disagree(vals)
		}
	}
	// The ranges are distinct (no aliases), sort them for splicing.
	sorted := append([]composeValue(nil), vals...)
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && sorted[j].start < sorted[j-1].start; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	for i := 1; i < len(sorted); i++ {
		if sorted[i].start < sorted[i-1].end {
			return nil, t.invalid("write the variable in each service's own environment",
				"services %s and %s share one definition of %s", sorted[i-1].service, sorted[i].service, t.variable)
		}
	}
	return sorted, nil
}

func (t *Compose) disagree(vals []composeValue) error {
	var groups [][]composeValue
outer:
	for _, v := range vals {
		for i, g := range groups {
			if g[0].raw == v.raw {
				groups[i] = append(g, v)
				continue outer
			}
		}
		groups = append(groups, []composeValue{v})
	}
	parts := make([]string, len(groups))
	for i, g := range groups {
		names := make([]string, len(g))
		for j, v := range g {
			names[j] = fmt.Sprintf("%s (line %d)", v.service, v.line)
		}
		verb, what := "holds", "another"
		if len(g) > 1 {
			verb = "hold"
		}
		if i == 0 {
			what = "one value"
		}
		parts[i] = strings.Join(names, " and ") + " " + verb + " " + what
	}
	return t.invalid(
		fmt.Sprintf("make every service of the target hold the same, current key in %s, or give the services that use another key their own slot", t.path),
		"the services disagree: in %s, %s of %s", t.path, strings.Join(parts, ", "), t.variable)
}

// locateService finds the one definition of the variable in the
// environment of the service name.
func (t *Compose) locateService(data []byte, lines []int, services *yaml.Node, name string) (composeValue, error) {
	svcKey, svc := mappingEntry(services, name)
	if svc == nil {
		return composeValue{}, t.invalid(fmt.Sprintf("fix the service names of the target in the config: %s has %s", t.path, serviceNames(services)),
			"service %s not found in %s", name, t.path)
	}
	if lines := entryLines(services, name); len(lines) > 1 {
		return composeValue{}, t.invalid(fmt.Sprintf("keep one definition of service %s in %s (docker compose rejects the file as it is)", name, t.path),
			"service %s is defined more than once in %s, on %s", name, t.path, lineList(lines))
	}
	if lines := entryLines(svc, "environment"); len(lines) > 1 {
		return composeValue{}, t.invalid(fmt.Sprintf("keep one environment: section in service %s of %s", name, t.path),
			"service %s has more than one environment: section in %s, on %s", name, t.path, lineList(lines))
	}
	if svc.Kind == yaml.AliasNode {
		return composeValue{}, t.invalid(fmt.Sprintf("write service %s out in full in %s instead of an alias", name, t.path),
			"service %s on line %d of %s is an alias", name, svcKey.Line, t.path)
	}
	if svc.Kind != yaml.MappingNode {
		return composeValue{}, t.invalid(fmt.Sprintf("give service %s an environment: section holding %s in %s", name, t.variable, t.path),
			"service %s on line %d of %s has no environment", name, svcKey.Line, t.path)
	}
	envKey, env := mappingEntry(svc, "environment")
	if env == nil {
		if merged := mergedHas(svc, "environment"); merged {
			return composeValue{}, t.invalid(
				fmt.Sprintf("write an environment: section with %s in service %s itself: "+
					"keyrotate edits one service's value, not a shared anchor", t.variable, name),
				"the environment of service %s (line %d of %s) comes from a merge key (<<)", name, svcKey.Line, t.path)
		}
		return composeValue{}, t.missing(name, svcKey.Line, svc)
	}
	switch env.Kind {
	case yaml.AliasNode:
		return composeValue{}, t.invalid(
			fmt.Sprintf("write %s in service %s's own environment: keyrotate edits one service's value, not a shared anchor", t.variable, name),
			"the environment of service %s on line %d of %s is an alias", name, envKey.Line, t.path)
	case yaml.MappingNode:
		return t.locateMap(data, lines, name, svcKey.Line, svc, env)
	case yaml.SequenceNode:
		return t.locateList(data, lines, name, svcKey.Line, svc, env)
	case yaml.ScalarNode:
		if env.Tag == "!!null" {
			return composeValue{}, t.missing(name, svcKey.Line, svc)
		}
	}
	return composeValue{}, t.invalid(
		fmt.Sprintf("write the environment of service %s as a list (- %s=value) or a mapping (%s: value)", name, t.variable, t.variable),
		"the environment of service %s on line %d of %s is neither a list nor a mapping", name, envKey.Line, t.path)
}

func (t *Compose) missing(service string, line int, svc *yaml.Node) error {
	hint := fmt.Sprintf("add %s to the environment: of service %s in %s, or fix the variable or service name in the config", t.variable, service, t.path)
	if _, ef := mappingEntry(svc, "env_file"); ef != nil {
		hint = fmt.Sprintf("service %s reads env_file: if %s is set there, use a dotenv target on that file instead; "+
			"else add it to the service's environment: in %s", service, t.variable, t.path)
	}
	return t.invalid(hint, "%s is not in the environment of service %s (line %d of %s)", t.variable, service, line, t.path)
}

func (t *Compose) locateMap(data []byte, lines []int, service string, svcLine int, svc, env *yaml.Node) (composeValue, error) {
	var defs []int
	var key, val *yaml.Node
	for i := 0; i+1 < len(env.Content); i += 2 {
		k := env.Content[i]
		if k.Kind == yaml.ScalarNode && k.Value == t.variable {
			defs = append(defs, k.Line)
			key, val = k, env.Content[i+1]
		}
	}
	switch {
	case len(defs) == 0 && mergedHas(env, t.variable):
		return composeValue{}, t.invalid(
			fmt.Sprintf("write %s in service %s's own environment: keyrotate edits one service's value, not a shared anchor", t.variable, service),
			"%s reaches the environment of service %s (line %d of %s) through a merge key (<<)", t.variable, service, svcLine, t.path)
	case len(defs) == 0:
		return composeValue{}, t.missing(service, svcLine, svc)
	case len(defs) > 1:
		return composeValue{}, t.twice(service, defs)
	}
	line := key.Line
	switch {
	case val.Kind == yaml.AliasNode:
		return composeValue{}, t.invalid(fmt.Sprintf("write the value of %s in service %s itself, not through an alias", t.variable, service),
			"the value of %s in service %s (line %d of %s) is an alias", t.variable, service, line, t.path)
	case val.Kind != yaml.ScalarNode:
		return composeValue{}, t.invalid(fmt.Sprintf("write %s: <current key> in service %s", t.variable, service),
			"the value of %s in service %s (line %d of %s) is not a single value", t.variable, service, line, t.path)
	case val.Tag == "!!null" && val.Style&yaml.TaggedStyle == 0:
		return composeValue{}, t.passThrough(service, line)
	}
	v, err := t.scalarValue(data, lines, service, line, val, 0)
	if err != nil {
		return composeValue{}, err
	}
	v.tag = val.Tag
	return v, nil
}

func (t *Compose) locateList(data []byte, lines []int, service string, svcLine int, svc, env *yaml.Node) (composeValue, error) {
	var defs []int
	var item *yaml.Node
	prefix := t.variable + "="
	for _, n := range env.Content {
		d := n
		if d.Kind == yaml.AliasNode && d.Alias != nil {
			d = d.Alias
		}
		if d.Kind != yaml.ScalarNode || d.Value != t.variable && !strings.HasPrefix(d.Value, prefix) {
			continue
		}
		defs = append(defs, n.Line)
		item = n
	}
	switch {
	case len(defs) == 0:
		return composeValue{}, t.missing(service, svcLine, svc)
	case len(defs) > 1:
		return composeValue{}, t.twice(service, defs)
	case item.Kind == yaml.AliasNode:
		return composeValue{}, t.invalid(fmt.Sprintf("write - %s=<current key> in service %s itself, not through an alias", t.variable, service),
			"the definition of %s in service %s (line %d of %s) is an alias", t.variable, service, item.Line, t.path)
	case item.Value == t.variable:
		return composeValue{}, t.passThrough(service, item.Line)
	}
	return t.scalarValue(data, lines, service, item.Line, item, len(prefix))
}

func (t *Compose) twice(service string, defs []int) error {
	return t.invalid(fmt.Sprintf("keep one definition of %s in service %s of %s and delete the others (%s)", t.variable, service, t.path, lineList(defs)),
		"%s is defined more than once in the environment of service %s in %s, on %s", t.variable, service, t.path, lineList(defs))
}

// passThrough reports a variable without a value: compose passes it on from
// the shell's environment.
func (t *Compose) passThrough(service string, line int) error {
	return t.invalid(
		fmt.Sprintf("compose takes the value of %s from the environment it runs in or the .env file next to %s: "+
			"rotate it with a dotenv target on that .env file (var %s) instead of this compose target", t.variable, t.path, t.variable),
		"%s has no value in service %s (line %d of %s)", t.variable, service, line, t.path)
}

// scalarValue returns the value in the scalar n, whose first skip bytes
// (of the scalar's content) are "VAR=" in the list form.
func (t *Compose) scalarValue(data []byte, lines []int, service string, line int, n *yaml.Node, skip int) (composeValue, error) {
	inPlace := func(why string) error {
		return t.invalid(
			fmt.Sprintf("write the value of %s on line %d of %s on one line, "+
				"plain or in double quotes, without escapes, anchors or tags", t.variable, n.Line, t.path),
			"the value of %s in service %s (line %d of %s) %s, which keyrotate does not edit", t.variable, service, n.Line, t.path, why)
	}
	if n.Anchor != "" || n.Style&yaml.TaggedStyle != 0 {
		return composeValue{}, inPlace("has an anchor or a tag")
	}
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return composeValue{}, inPlace("is a block scalar (| or >)")
	}
	off, ok := offsetOf(data, lines, n.Line, n.Column)
	if !ok {
		return composeValue{}, inPlace("cannot be found in the file's bytes")
	}
	start, end := off, off
	style := n.Style & (yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle)
	switch style {
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		q := byte('"')
		if style == yaml.SingleQuotedStyle {
			q = '\''
		}
		if data[off] != q {
			return composeValue{}, inPlace("cannot be found in the file's bytes")
		}
		start = off + 1
		end = bytes.IndexByte(data[start:], q)
		if end < 0 {
			return composeValue{}, inPlace("cannot be found in the file's bytes")
		}
		end += start
		if style == yaml.SingleQuotedStyle && end+1 < len(data) && data[end+1] == '\'' {
			return composeValue{}, inPlace("uses an escaped quote ('')")
		}
	default:
		end = off + len(n.Value)
	}
	if end > len(data) || string(data[start:end]) != n.Value {
		return composeValue{}, inPlace("uses escapes or spans several lines")
	}
	raw := n.Value[skip:]
	if ref, name := composeReference(raw); ref {
		what := "a reference"
		if name != "" {
			what = "a reference to ${" + name + "}"
		}
		return composeValue{}, t.invalid(
			fmt.Sprintf("compose fills the value of %s in service %s in from the environment it runs in or the .env file next to %s: "+
				"rotate it with a dotenv target on that .env file (var %s) instead of overwriting the reference here",
				t.variable, service, t.path, varOr(name, t.variable)),
			"the value of %s in service %s (line %d of %s) is %s", t.variable, service, n.Line, t.path, what)
	}
	return composeValue{service: service, line: line, start: start + skip, end: end, raw: raw, style: style, list: skip > 0}, nil
}

func varOr(name, def string) string {
	if name != "" {
		return name
	}
	return def
}

// composeReference reports whether s holds a $ that compose interpolates
// ($$ is a literal $), and the name of the variable referenced first when it
// is a plain name (only the name: a default after ":-" may be a key).
func composeReference(s string) (ref bool, name string) {
	refs := composeReferences(s)
	if len(refs) == 0 {
		return false, ""
	}
	return true, refs[0]
}

// composeReferences returns, for each $ in s that compose interpolates, the
// name of the variable it refers to ("" when it is not a plain name), in
// order. A default (${A:-$B}) is searched too.
func composeReferences(s string) []string {
	var refs []string
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			i++
			continue
		}
		j := i + 1
		if j < len(s) && s[j] == '{' {
			j++
		}
		k := j
		for k < len(s) && (isNameStart(s[k]) || '0' <= s[k] && s[k] <= '9') {
			k++
		}
		name := ""
		if k > j && isNameStart(s[j]) {
			name = s[j:k]
		}
		refs = append(refs, name)
	}
	return refs
}

// parseCompose parses the one YAML document of a compose file and returns
// its root node.
func parseCompose(data []byte) (root *yaml.Node, err error) {
	// yaml.v3 reports some malformed input by panicking past its own
	// recovery; a target file must never crash the tool.
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("cannot parse YAML")
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, errors.New("the file is empty")
		}
		return nil, err
	}
	var next yaml.Node
	if err := dec.Decode(&next); err != io.EOF {
		return nil, errors.New("the file holds more than one YAML document")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the file is not a YAML mapping")
	}
	return doc.Content[0], nil
}

// mappingEntry returns the key and value nodes of the last entry named
// name in the mapping n (as YAML loaders do), or nils.
func mappingEntry(n *yaml.Node, name string) (key, val *yaml.Node) {
	for i := 0; n != nil && n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == name && k.Tag != "!!merge" {
			key, val = k, n.Content[i+1]
		}
	}
	return key, val
}

// entryLines returns the lines of the keys named name in the mapping n.
func entryLines(n *yaml.Node, name string) []int {
	var lines []int
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == name && k.Tag != "!!merge" {
			lines = append(lines, k.Line)
		}
	}
	return lines
}

func mappingValue(n *yaml.Node, name string) *yaml.Node {
	_, v := mappingEntry(n, name)
	if v != nil && v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	return v
}

// mergedHas reports whether a merge key (<<) of the mapping n, or of the
// mappings it merges, brings in an entry name. Each mapping is visited
// once, so that chains of merges cannot make it slow.
func mergedHas(n *yaml.Node, name string) bool {
	return mergedHasSeen(n, name, map[*yaml.Node]bool{n: true})
}

func mergedHasSeen(n *yaml.Node, name string, seen map[*yaml.Node]bool) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Tag != "!!merge" {
			continue
		}
		srcs := []*yaml.Node{n.Content[i+1]}
		if s := n.Content[i+1]; s.Kind == yaml.SequenceNode {
			srcs = s.Content
		}
		for _, s := range srcs {
			if s.Kind == yaml.AliasNode {
				s = s.Alias
			}
			if s == nil || s.Kind != yaml.MappingNode || seen[s] {
				continue
			}
			seen[s] = true
			if k, _ := mappingEntry(s, name); k != nil || mergedHasSeen(s, name, seen) {
				return true
			}
		}
	}
	return false
}

// composeServiceName reports whether s is a name compose accepts for a
// service: [a-zA-Z0-9][a-zA-Z0-9_.-]*.
func composeServiceName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return s != ""
}

func serviceNames(services *yaml.Node) string {
	var names []string
	for i := 0; i < len(services.Content); i += 2 {
		// Only names compose accepts, and none that looks like a key
		// string pasted in the wrong place.
		k := services.Content[i]
		if k.Kind == yaml.ScalarNode && composeServiceName(k.Value) && !strings.HasPrefix(k.Value, "AIza") && !strings.HasPrefix(k.Value, "AQ.") {
			names = append(names, k.Value)
		}
	}
	switch {
	case len(names) == 0:
		return "no services"
	case len(names) > 10:
		return "services " + strings.Join(names[:10], ", ") + ", ..."
	}
	return "services " + strings.Join(names, ", ")
}

// lineStarts returns the byte offset at which each line starts, counting
// line breaks as yaml.v3 does (CRLF, CR, LF, NEL, LS, PS). A UTF-8 byte
// order mark does not count as a column.
func lineStarts(data []byte) []int {
	first := 0
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		first = 3
	}
	starts := []int{first}
	for i := first; i < len(data); {
		switch {
		case data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n':
			i += 2
		case data[i] == '\r' || data[i] == '\n':
			i++
		case bytes.HasPrefix(data[i:], []byte("\u0085")) || bytes.HasPrefix(data[i:], []byte("\u2028")) || bytes.HasPrefix(data[i:], []byte("\u2029")):
			_, n := utf8.DecodeRune(data[i:])
			i += n
		default:
			i++
			continue
		}
		starts = append(starts, i)
	}
	return starts
}

// offsetOf converts yaml.v3's 1-based line and column (in characters) to a
// byte offset.
func offsetOf(data []byte, starts []int, line, col int) (int, bool) {
	if line < 1 || line > len(starts) || col < 1 {
		return 0, false
	}
	off := starts[line-1]
	for c := 1; c < col; c++ {
		if off >= len(data) || data[off] == '\n' || data[off] == '\r' {
			return 0, false
		}
		_, n := utf8.DecodeRune(data[off:])
		off += n
	}
	if off >= len(data) {
		return 0, false
	}
	return off, true
}
