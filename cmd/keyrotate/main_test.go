package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// TestMain lets the scripts run the real CLI as the command "keyrotate", in
// its own process, against an emulator in this test process.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"keyrotate": main})
}

type scriptWorld struct {
	// consumers are the unconfigured consumers the script started (emu
	// consume), stopped at its end.
	consumers []*emulator.Consumer
	srv       *emulator.Server
	w         *seeded
	dotenv    []byte // .env as seeded
	lastExit  int
	vault     bool // vaultProject was added (secrets_test.go)
}

func world(ts *testscript.TestScript) *scriptWorld {
	return ts.Value("world").(*scriptWorld)
}

// TestScripts runs testdata/script/*.txtar. Each script starts with the demo
// world seeded on a fresh emulator: $WORK/keyrotate.yaml, $WORK/app/.env.
func TestScripts(t *testing.T) {
	t.Parallel()
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			srv, err := emulator.Start(emulator.Options{})
			if err != nil {
				return err
			}
			env.Defer(func() {
				// A request that broke an API's published definition
				// fails the script that sent it (see internal/emutest).
				vs := srv.SchemaViolations()
				srv.Close()
				if len(vs) > 0 {
					env.T().Fatal(fmt.Sprintf("requests broke the published API definitions: %v", vs))
				}
			})
			w, err := seedDemo(srv, env.WorkDir)
			if err != nil {
				return err
			}
			dotenv, err := os.ReadFile(w.dotenv)
			if err != nil {
				return err
			}
			srv.ResetCalls()
			env.Vars = append(env.Vars, srv.Env()...)
			env.Values["world"] = &scriptWorld{srv: srv, w: w, dotenv: dotenv}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"kr":      cmdKR,
			"jsondoc": cmdJSONDoc, // json_test.go
			"exit":    cmdExit,
			"emu":     cmdEmu,
			"sm":      cmdSM,     // further Secret Manager secrets (secrets_test.go)
			"gh":      cmdGitHub, // github*.txtar: the GitHub API fake (github_test.go)
			"k8s":     cmdK8s,    // k8s*.txtar: the Kubernetes API server fake (k8s_test.go)
			"run":     cmdRun,    // cloudrun*.txtar: a Cloud Run service (cloudrun_test.go)
			"sleep": func(ts *testscript.TestScript, _ bool, args []string) {
				d, err := time.ParseDuration(args[0])
				ts.Check(err)
				time.Sleep(d)
			},
			"waitfile": cmdWaitFile,
		},
	})
}

// cmdWaitFile waits until a file exists, as a command started in the
// background (&name&) writes it: waitfile FILE. A fixed sleep is too short
// on a loaded machine, where the process may not even have started.
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfile FILE")
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(ts.MkAbs(args[0])); err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s did not appear within a minute", args[0])
		}
	}
}

// cmdKR runs keyrotate and checks that none of the emulator's key strings
// appears in its stdout or stderr.
func cmdKR(ts *testscript.TestScript, neg bool, args []string) {
	sw := world(ts)
	err := ts.Exec("keyrotate", args...)
	sw.lastExit = 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		sw.lastExit = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("keyrotate: %v", err)
	}
	out := ts.ReadFile("stdout") + ts.ReadFile("stderr")
	for _, k := range slices.Concat(sw.srv.Keys(demoProject, true), sw.srv.Keys("other-project", true), sw.srv.Keys(vaultProject, true)) {
		if k.KeyString != "" && strings.Contains(out, k.KeyString) {
			ts.Fatalf("the key string of %s appears in the output", k.Name)
		}
		if len(k.KeyString) > 12 && strings.Contains(out, k.KeyString[4:16]) {
			ts.Fatalf("part of the key string of %s appears in the output", k.Name)
		}
	}
	if neg && sw.lastExit == 0 {
		ts.Fatalf("keyrotate succeeded unexpectedly")
	}
	if !neg && sw.lastExit != 0 {
		ts.Fatalf("keyrotate exited %d", sw.lastExit)
	}
}

func cmdExit(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: exit CODE")
	}
	want, _ := strconv.Atoi(args[0])
	if got := world(ts).lastExit; (got == want) == neg {
		ts.Fatalf("exit code = %d, want %d", got, want)
	}
}

// cmdEmu inspects and steers the emulator.
func cmdEmu(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: emu VERB ...")
	}
	sw := world(ts)
	srv := sw.srv
	switch verb, rest := args[0], args[1:]; verb {
	case "fail": // emu fail METHOD N CODE
		n, _ := strconv.Atoi(rest[1])
		code := codeByName(ts, rest[2])
		srv.Fail(rest[0], n, fake.Fault{Code: code})
	case "propagation":
		d, err := time.ParseDuration(rest[0])
		ts.Check(err)
		srv.SetPropagationDelay(d)
	case "disable-gemini":
		srv.SetServiceEnabled(demoProject, "generativelanguage.googleapis.com", false)
	case "deny": // emu deny PERMISSION: the caller lacks it
		srv.DenyPermission(rest[0])
	case "disable-api": // emu disable-api SERVICE: disabled in the demo project
		srv.SetServiceEnabled(demoProject, rest[0], false)
	case "consume": // emu consume seeded|current: a consumer nobody configured calls with that key
		k := sw.w.key
		if rest[0] == "current" {
			k = secret.New(latestPayload(sw))
		}
		c := srv.StartConsumer(k, 50*time.Millisecond, emulator.ConsumeGenerate)
		sw.consumers = append(sw.consumers, c)
		ts.Defer(c.Stop)
	case "consume-stop": // emu consume-stop: every consumer stops
		for _, c := range sw.consumers {
			c.Stop()
		}
	case "reset":
		srv.ResetCalls()
	case "calls": // emu calls total|mutating|METHOD N
		n, _ := strconv.Atoi(rest[1])
		var got int
		switch rest[0] {
		case "total":
			got = srv.CallsTotal()
		case "mutating":
			got = srv.MutatingCalls()
		default:
			got = srv.Calls(rest[0])
		}
		if (got == n) == neg {
			ts.Fatalf("calls %s = %d, want %d: %v", rest[0], got, n, srv.CallCounts())
		}
	case "key-in-urls": // emu key-in-urls N: requests whose URL carried a key string
		n, _ := strconv.Atoi(rest[0])
		if got := srv.KeyStringsInURLs(); (got == n) == neg {
			ts.Fatalf("requests with a key string in the URL = %d, want %d", got, n)
		}
	case "untouched":
		checkUntouched(ts, sw)
	case "restored":
		checkRestored(ts, sw)
	case "live": // emu live N: N keys not deleted
		n, _ := strconv.Atoi(rest[0])
		if got := len(liveKeys(srv)); (got == n) == neg {
			ts.Fatalf("live keys = %d, want %d", got, n)
		}
	case "keyfile": // emu keyfile current|seeded|stranger FILE: a key string into a file, for stdin
		var k string
		switch rest[0] {
		case "current":
			k = latestPayload(sw)
		case "seeded":
			k = sw.w.key.Reveal()
		case "stranger": // a key of a project no slot uses
			srv.AddProject("other-project", 987654321098)
			var err error
			_, k, err = srv.SeedKey("other-project", "stranger", &apikeys.V2Key{DisplayName: "someone else's"})
			ts.Check(err)
		}
		ts.Check(os.WriteFile(ts.MkAbs(rest[1]), []byte(k+"\n"), 0o600))
	case "env-from": // emu env-from FILE: the .env's key replaced by the one in FILE (drift)
		b, err := os.ReadFile(sw.w.dotenv)
		ts.Check(err)
		k := strings.TrimSpace(ts.ReadFile(rest[0]))
		ts.Check(os.WriteFile(sw.w.dotenv, []byte(strings.Replace(string(b), envValue(b, "GEMINI_API_KEY"), k, 1)), 0o600))
	case "suspend-current": // emu suspend-current: the secret's key answers CONSUMER_SUSPENDED, as a leaked key does
		for _, k := range srv.Keys(demoProject, false) {
			if k.KeyString == latestPayload(sw) {
				srv.SuspendKey(k.Name)
			}
		}
	case "report-current": // emu report-current: the secret's key answers "reported as leaked" (403, no details)
		for _, k := range srv.Keys(demoProject, false) {
			if k.KeyString == latestPayload(sw) {
				srv.MarkLeaked(k.Name)
			}
		}
	case "leftover": // emu leftover ID: a key a failed rotation left behind
		_, _, err := srv.SeedKey(demoProject, rest[0], &apikeys.V2Key{Annotations: map[string]string{
			"keyrotate.slot": "gemini-prod", "keyrotate.rotation": "20260101000000-leftover"}})
		ts.Check(err)
	case "put-key": // emu put-key current|seeded FILE TOKEN: every TOKEN in FILE becomes the key (no key string in the script)
		k := sw.w.key.Reveal()
		if rest[0] == "current" {
			k = latestPayload(sw)
		}
		fi, err := os.Stat(ts.MkAbs(rest[1]))
		ts.Check(err)
		ts.Check(os.WriteFile(ts.MkAbs(rest[1]), []byte(strings.ReplaceAll(ts.ReadFile(rest[1]), rest[2], k)), fi.Mode()))
	case "holds-key": // emu holds-key FILE TEMPLATE TOKEN: FILE is TEMPLATE, byte for byte, with TOKEN replaced by the secret's latest key
		if want := strings.ReplaceAll(ts.ReadFile(rest[1]), rest[2], latestPayload(sw)); (ts.ReadFile(rest[0]) == want) == neg {
			ts.Fatalf("%s is not %s with the secret's latest key in place of %s", rest[0], rest[1], rest[2])
		}
	case "quota-project": // emu quota-project require|off (quotaproject_test.go)
		cmdEmuQuotaProject(ts, sw, rest)
	case "rotated":
		checkRotated(ts, sw)
	case "invariant":
		checkInvariant(ts, sw)
	default:
		ts.Fatalf("emu: unknown verb %q", verb)
	}
}

func codeByName(ts *testscript.TestScript, name string) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if strings.EqualFold(c.String(), name) {
			return c
		}
	}
	ts.Fatalf("unknown code %q", name)
	return 0
}

func liveKeys(srv *emulator.Server) []*apikeys.V2Key {
	var live []*apikeys.V2Key
	for _, k := range srv.Keys(demoProject, true) {
		if k.DeleteTime == "" {
			live = append(live, k)
		}
	}
	return live
}

func dotenvValue(ts *testscript.TestScript, sw *scriptWorld) string {
	b, err := os.ReadFile(sw.w.dotenv)
	ts.Check(err)
	return envValue(b, "GEMINI_API_KEY")
}

func latestPayload(sw *scriptWorld) string {
	vs := sw.srv.SecretVersions("projects/" + demoProject + "/secrets/" + demoSecretID)
	p, _ := sw.srv.SecretPayload(vs[len(vs)-1].Name)
	return string(p)
}

// checkUntouched: the old key is the only key and works, the secret and the
// .env are as seeded, no rotation record is left.
func checkUntouched(ts *testscript.TestScript, sw *scriptWorld) {
	live := liveKeys(sw.srv)
	if len(live) != 1 || live[0].Name != sw.w.keyName {
		ts.Fatalf("keys changed: %d live key(s)", len(live))
	}
	if b, _ := os.ReadFile(sw.w.dotenv); string(b) != string(sw.dotenv) {
		ts.Fatalf(".env changed")
	}
	secretName := "projects/" + demoProject + "/secrets/" + demoSecretID
	if vs := sw.srv.SecretVersions(secretName); len(vs) != 1 {
		ts.Fatalf("secret has %d versions, want 1", len(vs))
	}
	if s, _ := sw.srv.Secret(secretName); s.Annotations["keyrotate.rotation"] != "" {
		ts.Fatalf("rotation record left on the secret")
	}
}

// checkRestored: after abort or rollback the old key is again the only
// live key, the .env is byte for byte as seeded, the secret's latest
// version holds the old key, and no record is left.
func checkRestored(ts *testscript.TestScript, sw *scriptWorld) {
	live := liveKeys(sw.srv)
	if len(live) != 1 || live[0].Name != sw.w.keyName || !sw.srv.KeyWorks(sw.w.key.Reveal()) {
		ts.Fatalf("want only the old key live and working; got %d live key(s)", len(live))
	}
	if b, _ := os.ReadFile(sw.w.dotenv); string(b) != string(sw.dotenv) {
		ts.Fatalf(".env is not back to its seeded bytes")
	}
	if latestPayload(sw) != sw.w.key.Reveal() {
		ts.Fatalf("secret latest does not hold the old key")
	}
	secretName := "projects/" + demoProject + "/secrets/" + demoSecretID
	if s, _ := sw.srv.Secret(secretName); s.Annotations["keyrotate.rotation"] != "" {
		ts.Fatalf("rotation record left on the secret")
	}
}

// checkRotated: exactly one new live key with the old key's restrictions,
// binding and display name; the old key soft-deleted; the secret's latest
// version and the .env hold the new key; the .env differs only there.
func checkRotated(ts *testscript.TestScript, sw *scriptWorld) {
	live := liveKeys(sw.srv)
	if len(live) != 1 || live[0].Name == sw.w.keyName {
		ts.Fatalf("want exactly one live key, a new one; got %d", len(live))
	}
	nk := live[0]
	old, _ := sw.srv.Key(sw.w.keyName)
	if old.DeleteTime == "" {
		ts.Fatalf("old key not deleted")
	}
	if fmt.Sprint(old.Restrictions.ApiTargets[0].Service) != nk.Restrictions.ApiTargets[0].Service ||
		old.ServiceAccountEmail != nk.ServiceAccountEmail || old.DisplayName != nk.DisplayName {
		ts.Fatalf("new key does not copy restrictions, binding and display name")
	}
	if !sw.srv.KeyWorks(nk.KeyString) {
		ts.Fatalf("new key does not work")
	}
	if latestPayload(sw) != nk.KeyString {
		ts.Fatalf("secret latest does not hold the new key")
	}
	want := strings.Replace(string(sw.dotenv), sw.w.key.Reveal(), nk.KeyString, 1)
	if b, _ := os.ReadFile(sw.w.dotenv); string(b) != want {
		ts.Fatalf(".env differs from the seeded one beyond the key's value")
	}
	secretName := "projects/" + demoProject + "/secrets/" + demoSecretID
	if s, _ := sw.srv.Secret(secretName); s.Annotations["keyrotate.rotation"] != "" {
		ts.Fatalf("rotation record left on the secret")
	}
}

// checkInvariant: every place holds a key that works, and the old key
// still works unless everything holds the new one.
func checkInvariant(ts *testscript.TestScript, sw *scriptWorld) {
	env, latest := dotenvValue(ts, sw), latestPayload(sw)
	if !sw.srv.KeyWorks(env) {
		ts.Fatalf(".env holds a key that does not work")
	}
	if !sw.srv.KeyWorks(latest) {
		ts.Fatalf("secret latest holds a key that does not work")
	}
	if !sw.srv.KeyWorks(sw.w.key.Reveal()) && (env == sw.w.key.Reveal() || latest == sw.w.key.Reveal()) {
		ts.Fatalf("the old key is dead while a place still holds it")
	}
}

var _ = filepath.Join
