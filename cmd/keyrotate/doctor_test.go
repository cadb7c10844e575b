package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/doctor"
	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emutest"
)

// doctorWorld is the demo world plus a key in each state the goldens show.
type doctorWorld struct {
	srv  *emulator.Server
	dir  string
	keys map[string]string // key id -> key string
}

func newDoctorWorld(t *testing.T) *doctorWorld {
	t.Helper()
	srv := emutest.Start(t, emulator.Options{Clock: fake.NewManualClock(time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC))})
	dir := t.TempDir()
	w0, err := seedDemo(srv, dir)
	if err != nil {
		t.Fatal(err)
	}
	w := &doctorWorld{srv: srv, dir: dir, keys: map[string]string{demoKeyID: w0.key.Reveal()}}
	gemini := func() *apikeys.V2Restrictions {
		return &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}}}
	}
	seed := func(id string, k *apikeys.V2Key) string {
		t.Helper()
		name, s, err := srv.SeedKey(demoProject, id, k)
		if err != nil {
			t.Fatal(err)
		}
		w.keys[id] = s
		return name
	}
	seed("gemini-staging", &apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: demoSA})
	seed("legacy-standard", &apikeys.V2Key{Restrictions: gemini()})
	seed("code-assist", &apikeys.V2Key{ServiceAccountEmail: demoSA, Restrictions: &apikeys.V2Restrictions{
		ApiTargets: []*apikeys.V2ApiTarget{{Service: "cloudaicompanion.googleapis.com"}}}})
	srv.SuspendKey(seed("leaked", &apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: demoSA}))
	srv.MarkLeaked(seed("reported", &apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: demoSA}))
	deleted := seed("retired", &apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: demoSA})
	svc, err := srv.APIKeysService(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Projects.Locations.Keys.Delete(deleted).Do(); err != nil {
		t.Fatal(err)
	}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return w
}

type doctorRun struct {
	stdout, stderr string
	exit           int
}

// doctor runs keyrotate in process with env as the environment doctor sees.
func (w *doctorWorld) doctor(t *testing.T, env map[string]string, stdin string, args ...string) doctorRun {
	t.Helper()
	saved := doctorLookupEnv
	doctorLookupEnv = func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
	defer func() { doctorLookupEnv = saved }()
	var out, errOut bytes.Buffer
	app := newApp(&out, &errOut)
	app.Reader = strings.NewReader(stdin)
	err := app.RunContext(context.Background(), append([]string{"keyrotate"}, args...))
	code := report(&errOut, err)
	run := doctorRun{stdout: out.String(), stderr: errOut.String(), exit: code}
	secrets := []string{stdin}
	for _, v := range env {
		secrets = append(secrets, v)
	}
	for _, k := range w.srv.Keys(demoProject, true) {
		secrets = append(secrets, k.KeyString)
	}
	checkNoKey(t, run.stdout+run.stderr, secrets)
	return run
}

// checkNoKey fails when a secret, or 12 consecutive characters of its key
// characters, appears in out.
func checkNoKey(t *testing.T, out string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(out, s) {
			t.Fatalf("a key string appears in the output:\n%s", out)
		}
		for _, core := range keyChars.FindAllString(s, -1) {
			for i := 0; i+12 <= len(core); i++ {
				if strings.Contains(out, core[i:i+12]) {
					t.Fatalf("12 characters of a key string appear in the output:\n%s", out)
				}
			}
		}
	}
}

var (
	keyChars      = regexp.MustCompile(`A[A-Za-z0-9._-]+`)
	fingerprintRe = regexp.MustCompile(`sha256:[0-9a-f]{12}`)
)

// loopbackRe matches a loopback address: the closed port of a test
// differs on each run.
var loopbackRe = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)

func normalize(s string) string {
	return loopbackRe.ReplaceAllString(fingerprintRe.ReplaceAllString(s, "sha256:<fp>"), "127.0.0.1:<port>")
}

// TestDoctorGolden keeps doctor's text and JSON output for a representative
// set of problems in testdata/doctor (rewrite with -update), and checks the
// exit code and that no key string is printed.
func TestDoctorGolden(t *testing.T) {
	w := newDoctorWorld(t)
	key := func(id string) string { return w.keys[id] }
	cases := []struct {
		name  string
		env   map[string]string
		stdin string
		args  []string
		setup func(t *testing.T)
		exit  int
		// incomplete: the live probe could not run, the verdict is
		// "incomplete" (exit 1), not "healthy" and not a problem.
		incomplete bool
	}{
		{name: "healthy", env: map[string]string{"GEMINI_API_KEY": key(demoKeyID)}, args: []string{"--project", demoProject}},
		{name: "zero-width", env: map[string]string{"GEMINI_API_KEY": key(demoKeyID)[:24] + "\u200b" + key(demoKeyID)[24:]}, exit: 1},
		{name: "both-differ", env: map[string]string{"GEMINI_API_KEY": key(demoKeyID), "GOOGLE_API_KEY": key("gemini-staging")}, exit: 1},
		{name: "deleted", env: map[string]string{"GEMINI_API_KEY": key("retired")}, exit: 1},
		{name: "service-blocked", env: map[string]string{"GEMINI_API_KEY": key("code-assist")}, exit: 1},
		{name: "standard-rejected", env: map[string]string{"GEMINI_API_KEY": key("legacy-standard")}, exit: 1},
		{name: "suspended", env: map[string]string{"GEMINI_API_KEY": key("leaked")}, exit: 1},
		{name: "reported-leaked", env: map[string]string{"GEMINI_API_KEY": key("reported")}, exit: 1},
		{name: "no-credentials", env: map[string]string{"GEMINI_API_KEY": key(demoKeyID)},
			setup: func(t *testing.T) {
				t.Setenv("APIKEYS_EMULATOR_HOST", "")
				t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
			}},
		{name: "incomplete", env: map[string]string{"GEMINI_API_KEY": key(demoKeyID)}, exit: 1, incomplete: true,
			setup: func(t *testing.T) {
				t.Setenv("APIKEYS_EMULATOR_HOST", "")
				t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
				t.Setenv("GEMINI_EMULATOR_HOST", closedAddr(t))
			}},
		{name: "lookup-emulator-down", env: map[string]string{"GEMINI_API_KEY": key(demoKeyID)},
			setup: func(t *testing.T) { t.Setenv("APIKEYS_EMULATOR_HOST", closedAddr(t)) }},
		{name: "missing", env: map[string]string{}, exit: 1},
		{name: "stdin-quoted-bearer", stdin: "\"Bearer " + key(demoKeyID) + "\"\r\n", args: []string{"--stdin"}, exit: 1},
		{name: "dotenv-differs", env: map[string]string{"GEMINI_API_KEY": key("gemini-staging")}, args: []string{"--dotenv", "app/.env"}},
		{name: "other-project", env: map[string]string{"GEMINI_API_KEY": key(demoKeyID)}, args: []string{"--project", "987654321098"}, exit: 1},
	}
	t.Chdir(w.dir)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			for _, format := range []string{"text", "json"} {
				args := append([]string{"--output", format, "doctor"}, tc.args...)
				run := w.doctor(t, tc.env, tc.stdin, args...)
				if run.exit != tc.exit {
					t.Errorf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", format, run.exit, tc.exit, run.stdout, run.stderr)
				}
				switch {
				case tc.exit == 0 && run.stderr != "":
					t.Errorf("%s: stderr = %q, want nothing", format, run.stderr)
				case tc.incomplete && (!strings.HasPrefix(run.stderr, "keyrotate: error: doctor could not finish its checks: ") ||
					!strings.Contains(run.stderr, "\nkeyrotate: hint: ")):
					t.Errorf("%s: stderr = %q, want the incomplete verdict and a hint", format, run.stderr)
				case tc.incomplete:
				case tc.exit == 1 && !strings.HasPrefix(run.stderr, "keyrotate: error: doctor found a problem (") ||
					tc.exit == 1 && !strings.Contains(run.stderr, "\nkeyrotate: hint: "):
					t.Errorf("%s: stderr = %q, want the error and a hint", format, run.stderr)
				}
				got := normalize(run.stdout)
				golden := filepath.Join("testdata", "doctor", tc.name+".txt")
				if format == "json" {
					golden = filepath.Join("testdata", "doctor", tc.name+".json")
					var doc struct {
						Command    string `json:"command"`
						Healthy    bool   `json:"healthy"`
						Incomplete bool   `json:"incomplete"`
					}
					if err := json.Unmarshal([]byte(run.stdout), &doc); err != nil || doc.Command != "doctor" || doc.Healthy != (tc.exit == 0) {
						t.Errorf("json: %v, command %q, healthy %v; want one document of doctor, healthy %v", err, doc.Command, doc.Healthy, tc.exit == 0)
					}
					if doc.Incomplete != tc.incomplete {
						t.Errorf("json: incomplete %v, want %v", doc.Incomplete, tc.incomplete)
					}
				} else {
					got += "-- stderr --\n" + normalize(run.stderr)
				}
				compareGolden(t, filepath.Join(origDir, golden), got)
			}
		})
	}
}

// closedAddr returns a loopback host:port where nothing listens, for the
// rest of t (emutest.DeadAddr).
func closedAddr(t *testing.T) string { return emutest.DeadAddr(t) }

// origDir is the package directory, where the goldens are, whatever the
// working directory of a test.
var origDir, _ = os.Getwd()

func compareGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/keyrotate -run TestDoctorGolden -update)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\n%s\nwant:\n%s", golden, got, want)
	}
}

// TestDoctorRefusesArgument: a key given as an argument is refused with
// exit 2 and a hint, and not echoed.
func TestDoctorRefusesArgument(t *testing.T) {
	w := newDoctorWorld(t)
	k := w.keys[demoKeyID]
	run := w.doctor(t, map[string]string{}, "", "doctor", k)
	if run.exit != exitUsage {
		t.Errorf("exit %d, want %d", run.exit, exitUsage)
	}
	if !strings.Contains(run.stderr, "keyrotate: error: doctor takes no arguments (1 given, not shown)") ||
		!strings.Contains(run.stderr, "keyrotate: hint: pass the key in a variable (--env VAR)") {
		t.Errorf("stderr = %q, want the refusal and the hint", run.stderr)
	}
	for _, args := range [][]string{{"doctor", "--stdin", "--env", "X"}, {"doctor", "--dotenv", "nonexistent/.env"}} {
		if run := w.doctor(t, map[string]string{}, "", args...); run.exit != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, run.exit, exitUsage, run.stderr)
		}
	}
}

// TestDoctorHelp keeps `keyrotate doctor --help` in a golden file.
func TestDoctorHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := newApp(&out, &errOut).RunContext(context.Background(), []string{"keyrotate", "doctor", "--help"}); err != nil {
		t.Fatal(err)
	}
	compareGolden(t, filepath.Join(origDir, "testdata", "doctor", "help.txt"), out.String())
}

// TestDoctorRemedyWords: the CLI words each remedy the doctor library
// returns with its own command, after the library's words where the
// command is an alternative.
func TestDoctorRemedyWords(t *testing.T) {
	cases := []struct {
		name string
		f    doctor.Finding
		want string
	}{
		{"rotate", doctor.Finding{Fix: "put the current key into the variable", Remedy: doctor.Remedy{Kind: doctor.RemedyRotate}},
			"put the current key into the variable, or rotate: `keyrotate rotate --slot SLOT`"},
		{"migrate by shape", doctor.Finding{Fix: "x", Remedy: doctor.Remedy{Kind: doctor.RemedyMigrate}}, migrateNext},
		{"migrate by metadata", doctor.Finding{Fix: "x", Remedy: doctor.Remedy{Kind: doctor.RemedyMigrate, KeyRead: true}}, migrateKeyNext},
		{"stdin", doctor.Finding{Fix: "pipe the key in from where it is stored", Remedy: doctor.Remedy{Kind: doctor.RemedyStdin}},
			"pipe the key in from where it is stored, for example `keyrotate doctor --stdin < key.txt`"},
		{"check var", doctor.Finding{Fix: "unset GOOGLE_API_KEY (or give it the same key)", Remedy: doctor.Remedy{Kind: doctor.RemedyCheckVar, Var: "GOOGLE_API_KEY"}},
			"unset GOOGLE_API_KEY (or give it the same key), or check the key the SDKs use: `keyrotate doctor --env GOOGLE_API_KEY`"},
		{"none", doctor.Finding{Fix: "retry later"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := remedyFix(tc.f); got != tc.want {
				t.Errorf("remedyFix(%+v) = %q, want %q", tc.f, got, tc.want)
			}
		})
	}
	// The next step follows the advice given for the finding it names.
	rep := &doctor.Report{Findings: []doctor.Finding{{ID: doctor.FindSource, Status: doctor.StatusFail, Fix: "pipe the key in from where it is stored",
		Remedy: doctor.Remedy{Kind: doctor.RemedyStdin}}},
		Summary: doctor.Summary{Cause: doctor.FindSource, Next: "pipe the key in from where it is stored", NextOf: doctor.FindSource}}
	adviseDoctor(rep)
	if want := "pipe the key in from where it is stored, for example `keyrotate doctor --stdin < key.txt`"; rep.Summary.Next != want || rep.Findings[0].Fix != want {
		t.Errorf("after adviseDoctor: fix %q, next %q, want both %q", rep.Findings[0].Fix, rep.Summary.Next, want)
	}
}
