package main

// TestOutputGolden keeps, in testdata/golden, what a fixed sequence of
// command lines prints: stdout and stderr byte for byte (each apart), the
// exit code, and the .env whenever a run changed it (key strings shown as
// fingerprints), through the real binary (the test binary that
// testscript.Main installs as "keyrotate") against the in-process
// emulator. It is the proof that a refactoring changed no behaviour a user
// sees: the same command lines give the same output before and after.
// Rewrite the goldens with
//
//	go test ./cmd/keyrotate -run TestOutputGolden -update
//
// and review the diff: every changed line is a changed behaviour.
//
// Only what truly differs from run to run is replaced, by goldenNormalizer's
// table (goldenRules); everything else is compared as printed.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// goldenLeftoverRotation is the rotation id of the key TestOutputGolden
// seeds as left behind by a failed rotation: fixed, so not replaced.
const goldenLeftoverRotation = "20260101000000-leftover"

// goldenRule is one row of the replacement table: what matches re is
// replaced by repl, or, when numbered is set, by "<numbered-N>" where N
// counts the distinct matches in order of first appearance in the
// sequence, so that the goldens still say which key, fingerprint or
// rotation is the same as which.
type goldenRule struct {
	why      string
	re       *regexp.Regexp
	repl     string // for regexp.ReplaceAllString; unused when numbered
	numbered string
}

// goldenRules is the whole replacement table, applied in order to stdout,
// stderr and the command line of every run, after the world's temporary
// directory became $WORK. Nothing else is replaced.
var goldenRules = []goldenRule{
	{why: "the demo's temporary directory", re: regexp.MustCompile(`/[^\s:]*/keyrotate-demo-[0-9]+`), repl: "$$DEMO"},
	{why: "loopback ports", re: regexp.MustCompile(`127\.0\.0\.1:[0-9]+`), repl: "127.0.0.1:<port>"},
	{why: "rotation and run ids (wall-clock time and random letters; also in new keys' ids)",
		re: regexp.MustCompile(`\b20[0-9]{12}-[a-z0-9]{8}\b`), numbered: "rotation"},
	{why: "fingerprints of random key strings", re: regexp.MustCompile(`sha256:[0-9a-f]{12}\b`), numbered: "sha256:fp"},
	{why: "key uids (random)", re: regexp.MustCompile(`\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`), numbered: "uid"},
	{why: "wall-clock times (doctor's)", re: regexp.MustCompile(`\b[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2} UTC\b`), repl: "<time>"},
	{why: "wall-clock times (RFC 3339)", re: regexp.MustCompile(`\b[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})`), repl: "<time>"},
	{why: "measured durations: ages, run times, probe times",
		re:   regexp.MustCompile(`(\(age |took |probe\(s\), )[0-9][0-9.]*(ns|µs|ms|s|m|h)([0-9][0-9.]*(ms|s|m))*\b`),
		repl: "$1<dur>"},
	{why: "elapsed time while waiting for a new key", re: regexp.MustCompile(`[0-9][0-9hms.]* elapsed`), repl: "<dur> elapsed"},
	{why: "seconds since a key was made, and how long a new key took to work (JSON)",
		re: regexp.MustCompile(`("(age|propagation)_seconds": )[0-9.e+-]+`), repl: "$1<n>"},
	{why: "how many probes a new key needed (its propagation is timed)", re: regexp.MustCompile(`(after |probe )[0-9]+( probe\(s\)| failed)`), repl: "$1<n>$2"},
	{why: "times of day of the drain gate's per-minute data (15:04Z, 15:04:05Z)", re: regexp.MustCompile(`\b[0-9]{2}:[0-9]{2}(:[0-9]{2})?Z\b`), repl: "<hh:mm>"},
	{why: "how long the drain gate has left (its polls are timed)", re: regexp.MustCompile(`; [0-9][0-9hms.]* left\b`), repl: "; <dur> left"},
}

// goldenDemoRules are replaced too in the demo's output: its consumer
// calls on the wall clock while its clock runs faster, so how many calls
// fall in a minute of its time varies a little (elsewhere calls are made
// one by one, and their counts are kept).
var goldenDemoRules = []goldenRule{
	{why: "how many calls the demo's consumer made", re: regexp.MustCompile(`\b[0-9]+( ok\b| call\(s\))`), repl: "<n>$1"},
	{why: "the demo's consumer's rate", re: regexp.MustCompile(`\b[0-9]+\.[0-9]/min\b`), repl: "<r>/min"},
}

// goldenLearnedWait is the line dropped by goldenNormalizer (see there).
var goldenLearnedWait = regexp.MustCompile(`^\S+ +verify +waiting for key \S+ to be \S+ old before the first probe: keys of project \S+ took that long to work\n$`)

// goldenDrainPoll is a line of one poll of the drain gate (see
// goldenNormalizer).
var goldenDrainPoll = regexp.MustCompile(`^\S+ +retire +waiting for old key \S+ to be quiet for `)

// goldenNormalizer applies goldenRules, numbering as it goes.
type goldenNormalizer struct {
	workDir string
	extra   []goldenRule                 // applied after goldenRules
	seen    map[string]map[string]string // numbered prefix -> match -> replacement
}

func newGoldenNormalizer(workDir string) *goldenNormalizer {
	return &goldenNormalizer{workDir: workDir, seen: map[string]map[string]string{}}
}

func (n *goldenNormalizer) normalize(s string) string {
	if n.workDir != "" {
		s = strings.ReplaceAll(s, n.workDir, "$WORK")
	}
	for _, r := range append(goldenRules[:len(goldenRules):len(goldenRules)], n.extra...) {
		if r.numbered == "" {
			s = r.re.ReplaceAllString(s, r.repl)
			continue
		}
		seen := n.seen[r.numbered]
		if seen == nil {
			seen = map[string]string{}
			n.seen[r.numbered] = seen
		}
		s = r.re.ReplaceAllStringFunc(s, func(m string) string {
			if m == goldenLeftoverRotation {
				return m
			}
			if _, ok := seen[m]; !ok {
				seen[m] = fmt.Sprintf("<%s-%d>", r.numbered, len(seen)+1)
			}
			return seen[m]
		})
	}
	// Two rules on whole lines, both about when a new key starts to work:
	// a run of identical "waiting for the new key" lines (one per failed
	// probe; how many depends on timing) is kept once; and the line saying
	// that a key waits until it is as old as its project's keys were when
	// they worked is dropped: it is printed only when the wait begins
	// within that learned delay (a millisecond or so on the emulator).
	lines := strings.SplitAfter(s, "\n")
	lines = slices.CompactFunc(lines, func(a, b string) bool {
		return a == b && strings.Contains(a, "waiting for the new key to work: probe <n> failed")
	})
	// The drain gate's polls: how many fit before its timeout depends on
	// when on the minute grid it started; the first is kept.
	lines = slices.CompactFunc(lines, func(a, b string) bool {
		return goldenDrainPoll.MatchString(a) && goldenDrainPoll.MatchString(b)
	})
	lines = slices.DeleteFunc(lines, goldenLearnedWait.MatchString)
	return strings.Join(lines, "")
}

// goldenWorld runs keyrotate for TestOutputGolden: the real binary, an
// environment of its own (nothing of the caller's GEMINI_API_KEY, cloud
// engine or config variables), checked for key strings.
type goldenWorld struct {
	t        *testing.T
	cw       *crashWorld
	norm     *goldenNormalizer
	projects []string // whose keys must not appear in any output
	dir      string   // golden files
	step     int
	prefix   string
	dotenv   []byte // the .env as the last run left it
}

func newGoldenWorld(t *testing.T, cw *crashWorld, prefix string, projects ...string) *goldenWorld {
	return &goldenWorld{t: t, cw: cw, norm: newGoldenNormalizer(cw.w.dir), prefix: prefix,
		projects: append([]string{demoProject, "other-project"}, projects...),
		dir:      filepath.Join(origDir, "testdata", "golden"), dotenv: cw.dotenv}
}

// env is the children's whole environment: the emulator's variables, PATH
// (where keyrotate is), a HOME of the world's own, and extra.
func (g *goldenWorld) env(extra []string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + g.cw.w.dir, "TZ=UTC", "LANG=C"}
	for _, v := range []string{"TMPDIR", "GORACE", "GOCOVERDIR", "SYSTEMROOT"} {
		if s, ok := os.LookupEnv(v); ok {
			env = append(env, v+"="+s)
		}
	}
	return append(append(env, g.cw.srv.Env()...), extra...)
}

// run runs keyrotate with args in the world's directory (stdin and extra
// environment optional; what names them, for the golden, is note, never
// a key string) and compares what it printed with the golden file
// NN-name.txt.
func (g *goldenWorld) run(name, note, stdin string, extra []string, args ...string) int {
	g.t.Helper()
	g.step++
	cmd := exec.Command(g.cw.bin, args...)
	cmd.Dir = g.cw.w.dir
	cmd.Env = g.env(extra)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	code := 0
	start := time.Now()
	defer func() {
		g.t.Logf("%02d %s: exit %d, %s", g.step, name, code, time.Since(start).Round(time.Millisecond))
	}()
	if err := cmd.Run(); err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			g.t.Fatalf("keyrotate %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	g.noKey(stdout.String() + stderr.String())
	var b strings.Builder
	b.WriteString("$ keyrotate")
	for _, a := range args {
		b.WriteString(" " + g.norm.normalize(a))
	}
	b.WriteString("\n")
	if note != "" {
		b.WriteString("# " + note + "\n")
	}
	fmt.Fprintf(&b, "# exit %d\n", code)
	section := func(label, text string) {
		text = g.norm.normalize(text)
		if text != "" && !strings.HasSuffix(text, "\n") {
			fmt.Fprintf(&b, "-- %s (no newline at end) --\n%s\n", label, text)
			return
		}
		fmt.Fprintf(&b, "-- %s --\n%s", label, text)
	}
	section("stdout", stdout.String())
	section("stderr", stderr.String())
	// The files keyrotate writes: the .env, when this run changed it, with
	// each key string shown as its fingerprint.
	env, err := os.ReadFile(g.cw.w.dotenv)
	if err != nil {
		g.t.Fatal(err)
	}
	if string(env) != string(g.dotenv) {
		g.dotenv = env
		fi, err := os.Stat(g.cw.w.dotenv)
		if err != nil {
			g.t.Fatal(err)
		}
		section(fmt.Sprintf("file app/.env (changed; mode %v; key strings shown as <fingerprint>)", fi.Mode().Perm()), g.fingerprinted(string(env)))
	}
	g.noKey(b.String())
	golden := filepath.Join(g.dir, fmt.Sprintf("%s%02d-%s.txt", g.prefix, g.step, name))
	g.compare(golden, b.String())
	return code
}

func (g *goldenWorld) compare(golden, got string) {
	g.t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			g.t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			g.t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		g.t.Fatalf("%v (run go test ./cmd/keyrotate -run TestOutputGolden -update)", err)
	}
	if got != string(want) {
		var replaced []string
		for _, r := range goldenRules {
			replaced = append(replaced, r.why)
		}
		g.t.Errorf("output differs from %s (after replacing only: %s):\n%s\nwant:\n%s", golden, strings.Join(replaced, "; "), got, want)
	}
}

// noKey fails the test when output holds a key string, or a 12-character
// piece of one, of any key the emulator issued in the world's projects
// (fleetWorld.leaks).
func (g *goldenWorld) noKey(out string) {
	g.t.Helper()
	fw := &fleetWorld{crashWorld: g.cw, projects: g.projects}
	if err := fw.leaks("the output", out); err != nil {
		g.t.Fatal(err)
	}
}

// fingerprinted is text with every key string of the world's projects
// replaced by <its fingerprint>.
func (g *goldenWorld) fingerprinted(text string) string {
	for _, p := range g.projects {
		for _, k := range g.cw.srv.Keys(p, true) {
			if k.KeyString != "" {
				text = strings.ReplaceAll(text, k.KeyString, "<"+secret.Fingerprint(k.KeyString)+">")
			}
		}
	}
	return text
}

// currentKey is the key string the secret's latest version holds.
func (g *goldenWorld) currentKey() string {
	_, payloads := g.cw.versions()
	return payloads[len(payloads)-1]
}

// stranger seeds a key of a project no slot uses and returns its string.
func (g *goldenWorld) stranger() string {
	g.cw.srv.AddProject("other-project", 987654321098)
	_, k, err := g.cw.srv.SeedKey("other-project", "stranger", &apikeys.V2Key{DisplayName: "someone else's"})
	if err != nil {
		g.t.Fatal(err)
	}
	return k
}

// setDotenvKey puts k in place of the .env's GEMINI_API_KEY value.
func (g *goldenWorld) setDotenvKey(k string) {
	b, err := os.ReadFile(g.cw.w.dotenv)
	if err != nil {
		g.t.Fatal(err)
	}
	g.dotenv = []byte(strings.Replace(string(b), envValue(b, "GEMINI_API_KEY"), k, 1))
	if err := os.WriteFile(g.cw.w.dotenv, g.dotenv, 0o600); err != nil {
		g.t.Fatal(err)
	}
}

// goldenEmulator is the emulator of TestOutputGolden's worlds. Secret
// Manager's per-secret write rate is off: each run is a new process, which
// cannot know the writes of the run before it, so whether one of its first
// writes is refused (and retried, visibly) depends on how soon it starts.
// Within one process keyrotate paces its writes whatever the emulator does;
// the rate itself is tested in emulator/ and rotate/.
var goldenEmulator = emulator.Options{NoSecretWriteLimits: true}

// TestOutputGolden: see the top of this file.
func TestOutputGolden(t *testing.T) {
	t.Parallel()
	// Three worlds apart, run at once: most of their time is waiting (for
	// a new key to work, for Secret Manager's write rate).
	for _, w := range []struct {
		name string
		run  func(*testing.T)
	}{{"demo", goldenDemo}, {"slot", goldenSlot}, {"fleet", goldenFleet}} {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			w.run(t)
		})
	}
}

// goldenDemo runs `keyrotate demo` as people run it (its own emulator on
// its fast clock, a consumer nobody configured).
func goldenDemo(t *testing.T) {
	g := newGoldenWorld(t, newCrashWorldWith(t, goldenEmulator, nil), "demo-")
	g.norm.extra = goldenDemoRules
	g.run("demo", "", "", nil, "demo")
}

// goldenSlot runs one slot's life: plan, rotations, status, verify,
// drift and repair, a stopped rotation and its abort, rollback, finalize,
// a leak, revoke, doctor, and usage and config errors.
func goldenSlot(t *testing.T) {
	cw := newCrashWorldWith(t, goldenEmulator, nil)
	g := newGoldenWorld(t, cw, "slot-")
	// Every run is in the world's directory, whose keyrotate.yaml is the
	// default config: paths print relative, the same length on every run
	// (status aligns its table on them).
	g.run("plan", "", "", nil, "plan")
	g.run("rotate", "", "", nil, "rotate", "--now")
	g.run("status", "", "", nil, "status")
	g.run("status-json", "", "", nil, "-o", "json", "status")
	g.run("verify", "", "", nil, "verify")
	g.run("rotate-retry", "", "", nil, "rotate", "--now")
	g.run("rotate-again", "", "", nil, "rotate", "--now", "--again", "--retire", "now")

	// Drift: the .env holds a key of another project.
	stranger := g.stranger()
	g.setDotenvKey(stranger)
	g.run("drift-status", "the .env holds a stranger's key", "", nil, "status")
	g.run("drift-verify", "", "", nil, "verify")
	g.run("drift-plan", "", "", nil, "plan", "--now")
	g.run("repair", "", "", nil, "repair")
	g.run("repair-nothing", "", "", nil, "-o", "json", "repair")

	// A rotation stopped at the deletion of the old key, then aborted.
	// The fault's message is fixed: the emulator's default names the call's
	// number, which would tie the golden to how many calls came before.
	cw.srv.Fail("apikeys.DeleteKey", fake.Next, fake.Fault{Code: codes.PermissionDenied, Message: "The caller does not have permission"})
	g.run("rotate-stopped", "apikeys.DeleteKey fails once (PERMISSION_DENIED)", "", nil, "rotate", "--now", "--again", "--retire", "now")
	g.run("status-stopped", "", "", nil, "status")
	g.run("abort", "", "", nil, "abort", "gemini-prod")
	g.run("abort-nothing", "", "", nil, "abort", "gemini-prod")

	// Rollback of the last finished rotation (the abort put its new key
	// back), to the key that rotation superseded.
	g.run("rollback", "", "", nil, "rollback", "gemini-prod")

	// Grace, a key left behind, finalize.
	g.run("rotate-grace", "", "", nil, "rotate", "--now", "--again", "--grace", "1h")
	if _, _, err := cw.srv.SeedKey(demoProject, "gemini-prod-leftover", &apikeys.V2Key{Annotations: map[string]string{
		"keyrotate.slot": "gemini-prod", "keyrotate.rotation": goldenLeftoverRotation}}); err != nil {
		t.Fatal(err)
	}
	g.run("finalize-dry-run", "a key left by rotation "+goldenLeftoverRotation+" was seeded", "", nil, "finalize", "--dry-run")
	g.run("finalize", "", "", nil, "finalize")
	g.run("finalize-json", "", "", nil, "-o", "json", "finalize")

	// A leak: the slot's current key, then a key of no slot.
	g.run("leaked", "stdin: the current key", g.currentKey()+"\n", nil, "rotate", "--leaked")
	g.run("leaked-stranger", "stdin: the stranger's key", stranger+"\n", nil, "rotate", "--leaked")
	g.run("revoke-no-yes", "", "", nil, "revoke", "--key", "projects/987654321098/locations/global/keys/stranger")
	g.run("revoke", "", "", nil, "revoke", "--key", "projects/987654321098/locations/global/keys/stranger", "--yes")

	// doctor on the current key and on a deleted one.
	g.run("doctor-good", "GEMINI_API_KEY: the current key", "", []string{"GEMINI_API_KEY=" + g.currentKey()}, "doctor")
	g.run("doctor-good-json", "GEMINI_API_KEY: the current key", "", []string{"GEMINI_API_KEY=" + g.currentKey()}, "-o", "json", "doctor")
	g.run("doctor-deleted", "GEMINI_API_KEY: the seeded key (deleted)", "", []string{"GEMINI_API_KEY=" + cw.w.key.Reveal()}, "doctor")
	g.run("doctor-missing", "no GEMINI_API_KEY", "", nil, "doctor")

	// Usage and config errors.
	g.run("usage-command", "", "", nil, "plna")
	g.run("usage-flag", "", "", nil, "plan", "--sloot", "gemini-prod")
	g.run("usage-global-flag", "", "", nil, "--confg", "keyrotate.yaml", "status")
	g.run("usage-missing-flag", "", "", nil, "revoke", "--yes")
	g.run("usage-bad-value", "", "", nil, "--timeout", "soon", "plan")
	g.run("usage-args", "", "", nil, "abort")
	g.run("usage-no-slot", "", "", nil, "abort", "nope")
	g.run("usage-output", "", "", nil, "--output", "xml", "plan")
	writeGoldenFile(t, cw.w.dir, "unknown.yaml", "version: 1\nslots:\n  - name: gemini-prod\n    project: demo-project\n    sercet: projects/demo-project/secrets/gemini-api-key\n")
	g.run("config-unknown-field", "", "", nil, "--config", "unknown.yaml", "plan")
	g.run("config-missing", "", "", nil, "--config", "nosuchfile.yaml", "plan")
	writeGoldenFile(t, cw.w.dir, "malformed.yaml", "version: 1\nslots:\n  - name: [unclosed\n")
	g.run("config-malformed", "", "", nil, "--config", "malformed.yaml", "plan")
}

func writeGoldenFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// goldenFleet rotates the demo slot and a fleet of 2 projects × 1 slot
// with --parallel. The step lines of slots rotated at once interleave as
// the scheduler has it, so the parallel runs are kept as JSON (one
// document, in the config's order); the text report is kept from a run
// with --parallel 1.
func goldenFleet(t *testing.T) {
	fw := newFleetWorld(t, goldenEmulator, 2, 1)
	g := newGoldenWorld(t, fw.crashWorld, "fleet-", fw.projects...)
	g.run("plan", "", "", nil, "plan")
	g.run("rotate-parallel-json", "", "", nil, "-o", "json", "rotate", "--now", "--parallel", "4")
	g.run("retry-parallel-json", "", "", nil, "-o", "json", "rotate", "--now", "--parallel", strconv.Itoa(len(fw.slots)))
	g.run("status-json", "", "", nil, "-o", "json", "status")
	g.run("rotate-again-parallel-1", "", "", nil, "rotate", "--now", "--again", "--parallel", "1", "--retire", "now")
}
