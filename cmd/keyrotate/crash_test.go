package main

// Crash and concurrency tests of the real binary: keyrotate runs as a child
// process (the test binary itself, which TestMain turns into keyrotate when
// it is invoked under that name) against an emulator in this process. The
// emulator's hooks block a call before it is applied, which lets a test kill
// the child at an exact point of the protocol and then let the call land
// after its caller died: the harshest case for idempotency.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"google.golang.org/grpc/codes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emutest"
)

// crashTimeout bounds every wait of these tests for a child or a hook, so
// that a protocol that never reaches a call fails instead of hanging.
const crashTimeout = 60 * time.Second

// keyrotateBin is the "keyrotate" that testscript.Main put first in $PATH:
// a copy of this test binary that runs main when invoked under that name.
// No build is needed.
var keyrotateBin = sync.OnceValues(func() (string, error) {
	p, err := exec.LookPath("keyrotate")
	if err != nil {
		return "", err
	}
	if !strings.Contains(p, "testscript-main") {
		return "", fmt.Errorf("keyrotate in $PATH is %s, not the test binary installed by testscript.Main", p)
	}
	return p, nil
})

// crashWorld is the demo world on a fresh emulator, for child processes.
type crashWorld struct {
	t      *testing.T
	bin    string
	srv    *emulator.Server
	w      *seeded
	dotenv []byte // .env as seeded
	// apiKeysAddr is where the children reach the API Keys API. The
	// emulator reads a request whole before its hooks run, so a child
	// killed at a hook has sent its call, which lands when released.
	apiKeysAddr string
	// kinds, when not nil, is the all-kinds world (crash_kinds_test.go):
	// the slot has a target of every readable-or-confirmable kind.
	kinds *kindsWorld
	env   []string // more environment for the children
	// wrap, when set, is a command that runs the child (its argv before
	// keyrotate's), e.g. unshare (lease_ns_test.go).
	wrap []string
	// stdin, when set, is the children's standard input.
	stdin string
}

func newCrashWorld(t *testing.T) *crashWorld {
	t.Helper()
	return newCrashWorldWith(t, emulator.Options{}, nil)
}

// newMatrixWorld is the crash matrix's world: Secret Manager's per-secret
// write rate is off, because the matrix numbers the calls of an
// uninterrupted run and kills at each one. A 429 from that rate (the
// client paces itself to avoid it, but a loaded machine can delay a write
// past its pace) is still counted as a call but never reaches the hook, so
// the numbers would shift and the cell would miss its call. The rate and
// the pacing are tested in internal/emulator and rotate.
func newMatrixWorld(t *testing.T) *crashWorld {
	t.Helper()
	return newCrashWorldWith(t, emulator.Options{NoSecretWriteLimits: true}, nil)
}

// newCrashWorldWith starts the emulator with opts, seeds the demo world,
// then runs more (when not nil) to seed more.
func newCrashWorldWith(t *testing.T, opts emulator.Options, more func(*emulator.Server, *seeded) error) *crashWorld {
	t.Helper()
	bin, err := keyrotateBin()
	if err != nil {
		t.Fatal(err)
	}
	srv := emutest.Start(t, opts)
	w, err := seedDemo(srv, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if more != nil {
		if err := more(srv, w); err != nil {
			t.Fatal(err)
		}
	}
	dotenv, err := os.ReadFile(w.dotenv)
	if err != nil {
		t.Fatal(err)
	}
	return &crashWorld{t: t, bin: bin, srv: srv, w: w, dotenv: dotenv, apiKeysAddr: srv.APIKeysAddr}
}

func (cw *crashWorld) secretName() string {
	return "projects/" + demoProject + "/secrets/" + demoSecretID
}

// rotateArgs is the command of every run: the same for the run that is
// killed and for the runs that resume it, as an operator would repeat it.
func (cw *crashWorld) rotateArgs(grace bool) []string {
	args := []string{"--config", cw.w.config, "rotate", "--now"}
	if grace {
		args = append(args, "--grace", "1h")
	}
	return args
}

// child is a keyrotate process.
type child struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer    // read while it runs (stop_test.go)
	done           chan struct{} // closed when the process was waited for
	code           int           // exit code; -1 when killed by a signal
}

func (cw *crashWorld) start(args ...string) *child {
	cw.t.Helper()
	c := &child{done: make(chan struct{})}
	c.cmd = exec.Command(cw.bin, args...)
	if len(cw.wrap) > 0 {
		c.cmd = exec.Command(cw.wrap[0], append(append(slices.Clone(cw.wrap[1:]), cw.bin), args...)...)
	}
	c.cmd.Dir = cw.w.dir
	c.cmd.Env = append(append(os.Environ(), cw.srv.Env()...), "APIKEYS_EMULATOR_HOST="+cw.apiKeysAddr) // the last value wins
	c.cmd.Env = append(c.cmd.Env, cw.env...)
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	if cw.stdin != "" {
		c.cmd.Stdin = strings.NewReader(cw.stdin)
	}
	if err := c.cmd.Start(); err != nil {
		cw.t.Fatalf("start keyrotate: %v", err)
	}
	go func() {
		err := c.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			c.code = ee.ExitCode()
		default:
			c.code = -2
		}
		close(c.done)
	}()
	return c
}

// kill sends SIGKILL and waits for the process to be gone (reaped, so that
// its pid no longer exists and its lease can be taken over).
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

func (c *child) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(crashTimeout):
		c.kill()
		t.Fatalf("keyrotate did not finish within %s\nstdout:\n%s\nstderr:\n%s", crashTimeout, &c.stdout, &c.stderr)
	}
	return c.code
}

func (c *child) output() string { return c.stdout.String() + c.stderr.String() }

// run runs keyrotate to its end and checks that no key string leaked into
// its output.
func (cw *crashWorld) run(args ...string) *child {
	cw.t.Helper()
	c := cw.start(args...)
	c.wait(cw.t)
	if err := cw.noKeyIn(c.output()); err != nil {
		cw.t.Error(err)
	}
	return c
}

// noKeyIn reports a key string (or a 12-character piece of one) in out.
func (cw *crashWorld) noKeyIn(out string) error {
	for _, k := range cw.srv.Keys(demoProject, true) {
		if k.KeyString == "" {
			continue
		}
		if strings.Contains(out, k.KeyString) || (len(k.KeyString) > 16 && strings.Contains(out, k.KeyString[4:16])) {
			return fmt.Errorf("the key string of %s appears in keyrotate's output", k.Name)
		}
	}
	return nil
}

// versions returns the secret's versions with their payloads, oldest first.
func (cw *crashWorld) versions() ([]*secretmanagerpb.SecretVersion, []string) {
	vs := cw.srv.SecretVersions(cw.secretName())
	payloads := make([]string, len(vs))
	for i, v := range vs {
		p, _ := cw.srv.SecretPayload(v.GetName())
		payloads[i] = string(p)
	}
	return vs, payloads
}

func (cw *crashWorld) dotenvValue() (string, error) {
	b, err := os.ReadFile(cw.w.dotenv)
	if err != nil {
		return "", err
	}
	return envValue(b, "GEMINI_API_KEY"), nil
}

// temps lists the temp files of atomic writes next to the .env
// (".<base>.keyrotate-*.tmp") and says which of them hold a key string.
func (cw *crashWorld) temps() (all, withKey []string) {
	dir := filepath.Dir(cw.w.dotenv)
	matches, _ := filepath.Glob(filepath.Join(dir, ".*.keyrotate-*.tmp"))
	keys := cw.srv.Keys(demoProject, true)
	for _, m := range matches {
		all = append(all, filepath.Base(m))
		b, _ := os.ReadFile(m)
		for _, k := range keys {
			if k.KeyString != "" && bytes.Contains(b, []byte(k.KeyString)) {
				withKey = append(withKey, filepath.Base(m))
				break
			}
		}
	}
	return all, withKey
}

// invariant checks the invariant of docs/design.md now: every place (the secret's
// latest version, the .env) holds a key that works, the newest version is
// enabled, and the old key works unless every place holds another key.
func (cw *crashWorld) invariant() error {
	var errs []error
	env, err := cw.dotenvValue()
	if err != nil {
		return err
	}
	vs, payloads := cw.versions()
	if len(vs) == 0 {
		return errors.New("the secret has no version")
	}
	latest := payloads[len(payloads)-1]
	if st := vs[len(vs)-1].GetState(); st != secretmanagerpb.SecretVersion_ENABLED {
		errs = append(errs, fmt.Errorf("the newest secret version %s is %s", vs[len(vs)-1].GetName(), st))
	}
	if !cw.srv.KeyWorks(env) {
		errs = append(errs, errors.New(".env holds a key that does not work"))
	}
	if !cw.srv.KeyWorks(latest) {
		errs = append(errs, errors.New("the secret's latest version holds a key that does not work"))
	}
	old := cw.w.key.Reveal()
	if (env == old || latest == old) && !cw.srv.KeyWorks(old) {
		errs = append(errs, errors.New("the old key is dead while a place still holds it"))
	}
	errs = append(errs, cw.kindsInvariant()...)
	return errors.Join(errs...)
}

// signature summarizes the emulator's state, so that a test can see a
// released call land: every mutating call changes an etag, a deletion time,
// a version state or the number of keys or versions.
func (cw *crashWorld) signature() string {
	var b strings.Builder
	for _, k := range cw.srv.Keys(demoProject, true) {
		fmt.Fprintf(&b, "%s %s %s;", k.Name, k.Etag, k.DeleteTime)
	}
	if s, ok := cw.srv.Secret(cw.secretName()); ok {
		fmt.Fprintf(&b, "secret %s;", s.GetEtag())
	}
	for _, v := range cw.srv.SecretVersions(cw.secretName()) {
		fmt.Fprintf(&b, "%s %s;", v.GetName(), v.GetState())
	}
	b.WriteString(cw.kindsSignature())
	return b.String()
}

// waitLanded waits until the emulator's state differs from before: the call
// released from a hook has been applied. It polls this process's emulator,
// not a child.
func (cw *crashWorld) waitLanded(before string) error {
	deadline := time.Now().Add(10 * time.Second)
	for cw.signature() == before {
		if time.Now().After(deadline) {
			return errors.New("the released call did not change the emulator's state")
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// endState is what a rotation leaves behind, stated without names, so that
// the end of an interrupted rotation can be compared with an uninterrupted
// one's.
type endState struct {
	Keys           int  // keys in the project, deleted or not
	NewKeys        int  // of which not the old key
	NewLive        bool // the key the secret holds is not deleted and works
	NewCopiesOld   bool // ... with the old key's restrictions, binding and display name
	NewAnnotated   bool // ... annotated with the slot and the rotation
	OldDeleted     bool
	OldWorks       bool
	OldDeleteAfter bool // the old key carries keyrotate.delete-after
	Versions       string
	Latest         string // "new", "old" or "other"
	VersionsOfNew  int    // versions holding the new key
	Aliases        string
	RecordLeft     bool
	DotenvExact    bool // the .env is the seeded one with only the value changed
	TempFiles      []string
	Targets        string // all-kinds world: which key each further target holds (kindsEnd)
}

func (cw *crashWorld) endState() endState {
	var es endState
	old, _ := cw.srv.Key(cw.w.keyName)
	keys := cw.srv.Keys(demoProject, true)
	es.Keys = len(keys)
	for _, k := range keys {
		if k.Name != cw.w.keyName {
			es.NewKeys++
		}
	}
	vs, payloads := cw.versions()
	latest := ""
	if len(payloads) > 0 {
		latest = payloads[len(payloads)-1]
	}
	var nk *apikeys.V2Key
	for _, k := range keys {
		if k.KeyString == latest && k.Name != cw.w.keyName {
			nk = k
		}
	}
	switch {
	case latest == cw.w.key.Reveal():
		es.Latest = "old"
	case nk != nil:
		es.Latest = "new"
	default:
		es.Latest = "other"
	}
	if nk != nil {
		es.NewLive = nk.DeleteTime == "" && cw.srv.KeyWorks(nk.KeyString)
		es.NewCopiesOld = old != nil && jsonOf(old.Restrictions) == jsonOf(nk.Restrictions) &&
			old.ServiceAccountEmail == nk.ServiceAccountEmail && old.DisplayName == nk.DisplayName
		es.NewAnnotated = nk.Annotations["keyrotate.slot"] == "gemini-prod" && nk.Annotations["keyrotate.rotation"] != ""
		for _, p := range payloads {
			if p == nk.KeyString {
				es.VersionsOfNew++
			}
		}
		want := bytes.Replace(cw.dotenv, []byte(cw.w.key.Reveal()), []byte(nk.KeyString), 1)
		got, _ := os.ReadFile(cw.w.dotenv)
		es.DotenvExact = bytes.Equal(got, want)
	}
	if old != nil {
		es.OldDeleted = old.DeleteTime != ""
		es.OldDeleteAfter = old.Annotations["keyrotate.delete-after"] != ""
	}
	es.OldWorks = cw.srv.KeyWorks(cw.w.key.Reveal())
	var states []string
	for _, v := range vs {
		states = append(states, fmt.Sprintf("%s:%s", v.GetName()[strings.LastIndex(v.GetName(), "/")+1:], v.GetState()))
	}
	es.Versions = strings.Join(states, " ")
	if s, ok := cw.srv.Secret(cw.secretName()); ok {
		var as []string
		for a, n := range s.GetVersionAliases() {
			as = append(as, fmt.Sprintf("%s=%d", a, n))
		}
		sort.Strings(as)
		es.Aliases = strings.Join(as, " ")
		_, es.RecordLeft = s.GetAnnotations()["keyrotate.rotation"]
	}
	es.TempFiles, _ = cw.temps()
	es.Targets = cw.kindsEnd(latest)
	return es
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// wantEnd is the end state of one uninterrupted rotation.
func wantEnd(grace bool) endState {
	es := endState{
		Keys: 2, NewKeys: 1, NewLive: true, NewCopiesOld: true, NewAnnotated: true,
		OldDeleted: true, Versions: "1:DISABLED 2:ENABLED", Latest: "new", VersionsOfNew: 1,
		Aliases: "current=2 previous=1", DotenvExact: true,
	}
	if grace {
		es.OldDeleted, es.OldWorks, es.OldDeleteAfter = false, true, true
		es.Versions = "1:ENABLED 2:ENABLED"
	}
	return es
}

// wantEnd is the end state of one uninterrupted rotation in this world.
func (cw *crashWorld) wantEnd(grace bool) endState {
	es := wantEnd(grace)
	if cw.kinds != nil {
		es.Targets = kindsAllNew
	}
	return es
}

// recordCalls installs hooks that record the order of the calls that matter
// to the crash matrix (the mutating ones and operation polls), numbered per
// method as the emulator numbers them.
func recordCalls(srv *emulator.Server) func() []string {
	var mu sync.Mutex
	var seq []string
	all, isMutating := emulator.Methods()
	for _, m := range all {
		if !isMutating(m) && m != "apikeys.GetOperation" {
			continue
		}
		srv.SetHook(m, func(_ context.Context, n int) error {
			mu.Lock()
			defer mu.Unlock()
			seq = append(seq, fmt.Sprintf("%s #%d", m, n))
			return nil
		})
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seq...)
	}
}

// crashCase kills a rotation when it reaches the n-th call of method.
type crashCase struct {
	name   string
	method string
	n      int
	grace  bool
	// plantTemp leaves a temp file of an interrupted .env write holding the
	// new key, as a kill during that write would (the write makes no API
	// call, so no hook can stop it there).
	plantTemp bool
	// withoutNow reruns `rotate` without --now, as a scheduled job would.
	withoutNow bool
	// allKinds runs the row in the all-kinds world (crash_kinds_test.go).
	allKinds bool
	// stateCode, when not OK, makes the emulator answer refusals that only
	// a key's state explains with this code (emulator.SetStateCodes):
	// Google documents none, so the runs must decide by state.
	stateCode codes.Code
}

var crashCases = []crashCase{
	{name: "lock", method: "secretmanager.UpdateSecret", n: 1},
	{name: "create", method: "apikeys.CreateKey", n: 1},
	{name: "create poll", method: "apikeys.GetOperation", n: 1},
	{name: "add version", method: "secretmanager.AddSecretVersion", n: 1},
	{name: "dotenv write (temp left)", method: "secretmanager.AddSecretVersion", n: 1, plantTemp: true},
	{name: "record distributed", method: "secretmanager.UpdateSecret", n: 2},
	{name: "delete old", method: "apikeys.DeleteKey", n: 1},
	{name: "delete poll", method: "apikeys.GetOperation", n: 2},
	{name: "disable old version", method: "secretmanager.DisableSecretVersion", n: 1},
	{name: "aliases and unlock", method: "secretmanager.UpdateSecret", n: 3},
	{name: "aliases and unlock, rerun without --now", method: "secretmanager.UpdateSecret", n: 3, withoutNow: true},
	{name: "grace: mark old key", method: "apikeys.UpdateKey", n: 1, grace: true},
}

// The all-kinds world (crash_kinds_test.go) on every kill point above, and
// on those of its further targets: the new versions of the extra secret
// (another project) and of the regional secret, the exec command (its
// script blocked before it stores the key) and the GitHub PUT (blocked in a
// proxy in front of the fake), the Kubernetes Secret PUTs (blocked in the
// fake, their body read: the key with the restart-pending mark, then the mark
// cleared once the api rollout finished) and the Cloud Run UpdateService (blocked in the
// emulator). A blocked exec script or PUT goes on after
// keyrotate was killed, as a landed API call does.
func init() {
	base := crashCases
	for _, c := range base {
		c.name, c.allKinds = "all kinds: "+c.name, true
		crashCases = append(crashCases, c)
	}
	for _, c := range base {
		c.name, c.stateCode = "FAILED_PRECONDITION for state refusals: "+c.name, codes.FailedPrecondition
		crashCases = append(crashCases, c)
	}
	crashCases = append(crashCases,
		crashCase{name: "all kinds: extra secret version", method: "secretmanager.AddSecretVersion", n: 2, allKinds: true},
		crashCase{name: "all kinds: regional secret version", method: "secretmanager.AddSecretVersion", n: 3, allKinds: true},
		crashCase{name: "all kinds: exec store", method: kindsExecStore, n: 1, allKinds: true},
		crashCase{name: "all kinds: github PUT", method: kindsGitHubPut, n: 1, allKinds: true},
		crashCase{name: "all kinds: k8s Secret PUT (key, restart mark)", method: kindsK8sPut, n: 1, allKinds: true},
		crashCase{name: "all kinds: k8s Secret PUT (mark cleared after rollout)", method: kindsK8sPut, n: 2, allKinds: true},
		crashCase{name: "all kinds: cloudrun update", method: "run.UpdateService", n: 1, allKinds: true},
	)
}

// crashRow is one line of the matrix's table.
type crashRow struct {
	c         crashCase
	record    string // whether a rotation record was left for the next run
	atKill    string // the invariant at the moment of the kill
	afterLand string // the invariant once the blocked call landed
	tempAt    string // temp files holding a key when the next run started
	reruns    []int
	result    string
}

func TestCrashMatrix(t *testing.T) {
	t.Parallel()
	start := time.Now()
	// The uninterrupted runs: the reference end states, and the order of
	// calls that the matrix numbers.
	for _, grace := range []bool{false, true} {
		cw := newMatrixWorld(t)
		calls := recordCalls(cw.srv)
		c := cw.run(cw.rotateArgs(grace)...)
		if c.code != 0 {
			t.Fatalf("uninterrupted rotate (grace %v) exited %d\n%s", grace, c.code, c.output())
		}
		t.Logf("uninterrupted rotation (grace %v), calls in order: %s", grace, strings.Join(calls(), ", "))
		if diff := cmp.Diff(wantEnd(grace), cw.endState()); diff != "" {
			t.Fatalf("uninterrupted rotation (grace %v): end state (-want +got):\n%s", grace, diff)
		}
		counts := cw.srv.CallCounts()
		want := map[string]int{
			"secretmanager.UpdateSecret": 3, "apikeys.CreateKey": 1, "apikeys.GetOperation": 2,
			"secretmanager.AddSecretVersion": 1, "apikeys.DeleteKey": 1, "secretmanager.DisableSecretVersion": 1,
		}
		if grace {
			want["apikeys.DeleteKey"], want["secretmanager.DisableSecretVersion"], want["apikeys.UpdateKey"] = 0, 0, 1
		}
		for m, n := range want {
			if counts[m] != n {
				t.Fatalf("uninterrupted rotation (grace %v): %d call(s) of %s, want %d: the matrix's numbering is off", grace, counts[m], m, n)
			}
		}
	}

	// The all-kinds world's uninterrupted run: its further targets add two
	// AddSecretVersion calls (the extra secret's and the regional secret's,
	// after the slot secret's).
	{
		cw := newMatrixWorld(t)
		cw.addKinds()
		calls := recordCalls(cw.srv)
		c := cw.run(cw.rotateArgs(false)...)
		if c.code != 0 {
			t.Fatalf("uninterrupted rotate (all kinds) exited %d\n%s", c.code, c.output())
		}
		t.Logf("uninterrupted rotation (all kinds), calls in order: %s", strings.Join(calls(), ", "))
		if diff := cmp.Diff(cw.wantEnd(false), cw.endState()); diff != "" {
			t.Fatalf("uninterrupted rotation (all kinds): end state (-want +got):\n%s", diff)
		}
		for _, name := range []string{cw.kinds.extraSecret, cw.kinds.regionalSecret} {
			if v := cw.srv.SecretVersions(name); len(v) != 2 {
				t.Fatalf("uninterrupted rotation (all kinds): %s has %d versions, want 2", name, len(v))
			}
		}
		// The key with the restart-pending mark, then (the rollout done) the
		// mark cleared.
		if n := cw.kinds.k8s.Calls("UpdateSecret"); n != 2 {
			t.Fatalf("uninterrupted rotation (all kinds): %d Kubernetes Secret PUT(s), want 2: the matrix's numbering is off", n)
		}
		for d, gen := range map[string]int64{"api": 2, "worker": 1} { // restart: [api]
			if dep, _ := cw.kinds.k8s.Deployment(kindsK8sNS, d); dep.Generation != gen {
				t.Fatalf("uninterrupted rotation (all kinds): deployment %s at generation %d, want %d", d, dep.Generation, gen)
			}
		}
		want := map[string]int{
			"secretmanager.UpdateSecret": 3, "apikeys.CreateKey": 1, "apikeys.DeleteKey": 1,
			"secretmanager.AddSecretVersion": 3, "secretmanager.DisableSecretVersion": 1,
			"run.UpdateService": 1,
		}
		for m, n := range want {
			if got := cw.srv.Calls(m); got != n {
				t.Fatalf("uninterrupted rotation (all kinds): %d call(s) of %s, want %d: the matrix's numbering is off", got, m, n)
			}
		}
	}

	var mu sync.Mutex
	rows := make([]*crashRow, len(crashCases))
	t.Run("kill", func(t *testing.T) {
		for i, c := range crashCases {
			t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
				t.Parallel()
				row := &crashRow{c: c, record: "-", atKill: "-", afterLand: "-", tempAt: "none", result: "?"}
				mu.Lock()
				rows[i] = row
				mu.Unlock()
				crashAt(t, c, row)
			})
		}
	})

	var b strings.Builder
	fmt.Fprintf(&b, "| kill at | call | command | invariant at kill | after the call landed | record left | key in temp file | reruns (exit codes) | end state |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r == nil {
			continue
		}
		name := r.c.name
		args := "rotate --now"
		if r.c.grace {
			args += " --grace 1h"
		}
		if r.c.withoutNow {
			args += "; rerun: rotate"
		}
		codes := make([]string, len(r.reruns))
		for i, c := range r.reruns {
			codes[i] = fmt.Sprint(c)
		}
		fmt.Fprintf(&b, "| %s | %s #%d | `%s` | %s | %s | %s | %s | %s | %s |\n",
			name, r.c.method, r.c.n, args, r.atKill, r.afterLand, r.record, r.tempAt, strings.Join(codes, ", "), r.result)
	}
	t.Logf("crash matrix (%s):\n%s", time.Since(start).Round(100*time.Millisecond), b.String())
}

// crashAt runs one row of the matrix: kill at the call, check the
// invariant, let the call land, rerun the same command until it exits 0,
// compare the end state with an uninterrupted run's.
func crashAt(t *testing.T, c crashCase, row *crashRow) {
	defer func() {
		if t.Failed() && !strings.HasPrefix(row.result, "FAIL") {
			row.result = "FAIL"
		}
	}()
	cw := newMatrixWorld(t)
	if c.allKinds {
		cw.addKinds()
	}
	cw.srv.SetStateCodes(c.stateCode)
	reached := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before srv.Close
	blocked := c.method == kindsExecStore || c.method == kindsGitHubPut || c.method == kindsK8sPut
	if blocked {
		cw.kinds.blockAt(t, c.method, c.n, reached, release)
	} else {
		cw.srv.SetHook(c.method, func(_ context.Context, n int) error {
			if n != c.n {
				return nil
			}
			close(reached)
			<-release // then the call proceeds, although its caller is dead
			return nil
		})
	}

	args := cw.rotateArgs(c.grace)
	first := cw.start(args...)
	select {
	case <-reached:
	case <-first.done:
		row.result = fmt.Sprintf("FAIL: exited %d before the call", first.code)
		t.Fatalf("keyrotate exited %d before reaching %s #%d\n%s", first.code, c.method, c.n, first.output())
	case <-time.After(crashTimeout):
		first.kill()
		row.result = "FAIL: call never reached"
		t.Fatalf("keyrotate did not reach %s #%d within %s", c.method, c.n, crashTimeout)
	}
	first.kill()
	if err := cw.noKeyIn(first.output()); err != nil {
		t.Error(err)
	}

	row.atKill = "ok"
	if err := cw.invariant(); err != nil {
		row.atKill = "BROKEN"
		t.Errorf("invariant at the kill: %v", err)
	}
	before := cw.signature()
	releaseOnce.Do(func() { close(release) })
	if c.method != "apikeys.GetOperation" { // a poll changes nothing
		if err := cw.waitLanded(before); err != nil {
			t.Fatal(err)
		}
	}
	if !blocked {
		cw.srv.SetHook(c.method, nil)
	}
	row.afterLand = "ok"
	if err := cw.invariant(); err != nil {
		row.afterLand = "BROKEN"
		t.Errorf("invariant once the blocked call landed: %v", err)
	}

	if c.plantTemp {
		// What a kill between writing the temp file and renaming it leaves.
		vs, payloads := cw.versions()
		newKey := payloads[len(vs)-1]
		if newKey == cw.w.key.Reveal() {
			t.Fatal("plantTemp: the secret does not hold the new key yet")
		}
		tmp := filepath.Join(filepath.Dir(cw.w.dotenv), "."+filepath.Base(cw.w.dotenv)+".keyrotate-4242.tmp")
		if err := os.WriteFile(tmp, bytes.Replace(cw.dotenv, []byte(cw.w.key.Reveal()), []byte(newKey), 1), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if s, _ := cw.srv.Secret(cw.secretName()); s.GetAnnotations()["keyrotate.rotation"] != "" {
		row.record = "yes"
	} else {
		row.record = "no"
	}
	if _, withKey := cw.temps(); len(withKey) > 0 {
		row.tempAt = strings.Join(withKey, " ") + " (the next run must remove it)"
	}

	if c.withoutNow {
		args = slices.DeleteFunc(args, func(a string) bool { return a == "--now" })
	}
	var last *child
	for i := 0; i < 3; i++ {
		last = cw.run(args...)
		row.reruns = append(row.reruns, last.code)
		if i == 0 && row.record == "yes" && !strings.Contains(last.output(), "resuming rotation") {
			t.Errorf("the first rerun did not resume the rotation of the record:\n%s", last.output())
		}
		if last.code == 0 {
			break
		}
		// The killed holder's pid is gone: its lease must be taken over at
		// once, not after it expires.
		t.Errorf("rerun %d exited %d, want 0 at once:\n%s", i+1, last.code, last.output())
		if err := cw.invariant(); err != nil {
			t.Errorf("invariant after rerun %d (exit %d): %v", i+1, last.code, err)
		}
	}
	if last.code != 0 {
		row.result = "FAIL: no rerun succeeded"
		t.Fatalf("3 reruns of `keyrotate %s` did not succeed; last exit %d:\n%s", strings.Join(args, " "), last.code, last.output())
	}

	got := cw.endState()
	diff := cmp.Diff(cw.wantEnd(c.grace), got)
	switch {
	case diff == "" && row.record == "yes":
		row.result = "same as uninterrupted (resumed)"
	case diff == "":
		row.result = "same as uninterrupted"
	case got.NewKeys > 1:
		row.result = fmt.Sprintf("FAIL: %d new keys (rotated again)", got.NewKeys)
		t.Errorf("BUG: the rerun of the same command made a second rotation after the killed run's %s #%d had landed: "+
			"%d new keys, versions %s. Output of the rerun:\n%s\nend state (-want +got):\n%s",
			c.method, c.n, got.NewKeys, got.Versions, last.output(), diff)
	default:
		row.result = "FAIL: end state differs"
		t.Errorf("end state after the kill at %s #%d and %d rerun(s) (-want +got):\n%s", c.method, c.n, len(row.reruns), diff)
	}
}

// TestEightProcesses starts 8 rotations of one slot at once. A hook holds
// every lock write until all 8 have sent theirs, so they truly race for the
// compare-and-swap: exactly one may rotate; the others stop with exit 4
// (or 0, having found nothing to do). Secret Manager would refuse six of
// eight simultaneous writes to one secret (2 a second): the per-secret rate
// is off here, so that all eight can be in flight at once.
func TestEightProcesses(t *testing.T) {
	t.Parallel()
	const n = 8
	start := time.Now()
	cw := newCrashWorldWith(t, emulator.Options{NoSecretWriteLimits: true}, nil)
	var arrived atomic.Int32
	all := make(chan struct{})
	cw.srv.SetHook("secretmanager.UpdateSecret", func(ctx context.Context, call int) error {
		if call > n {
			return nil
		}
		if arrived.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
			return nil
		case <-ctx.Done(): // the caller died before the others arrived
			return ctx.Err()
		}
	})

	children := make([]*child, n)
	for i := range children {
		children[i] = cw.start(cw.rotateArgs(false)...)
	}
	killAll := func() {
		for _, c := range children {
			c.kill()
		}
	}
	select {
	case <-all:
	case <-time.After(crashTimeout):
		killAll()
		t.Fatalf("only %d of %d processes reached the lock within %s", arrived.Load(), n, crashTimeout)
	}

	codes := map[int]int{}
	var list []string
	for i, c := range children {
		code := c.wait(t)
		codes[code]++
		list = append(list, fmt.Sprint(code))
		if err := cw.noKeyIn(c.output()); err != nil {
			t.Error(err)
		}
		if code != 0 && code != 4 {
			t.Errorf("process %d exited %d, want 0 or 4:\n%s", i, code, c.output())
		}
		if code == 4 && !strings.Contains(c.stderr.String(), "hint:") {
			t.Errorf("process %d exited 4 without a hint:\n%s", i, c.stderr.String())
		}
	}
	t.Logf("8 concurrent `rotate --now`: exit codes %s (%d x 0, %d x 4); CreateKey calls %d; %s",
		strings.Join(list, " "), codes[0], codes[4], cw.srv.Calls("apikeys.CreateKey"), time.Since(start).Round(100*time.Millisecond))
	for i, c := range children {
		if c.code == 4 {
			t.Logf("a loser's stderr (process %d):\n%s", i, c.stderr.String())
			break
		}
	}
	if got := cw.srv.Calls("apikeys.CreateKey"); got != 1 {
		t.Errorf("CreateKey calls = %d, want 1", got)
	}
	if codes[0] != 1 {
		t.Errorf("%d processes exited 0, want exactly 1 (the winner; the lock writes raced, so every other run must see the winner's lease)", codes[0])
	}
	if diff := cmp.Diff(wantEnd(false), cw.endState()); diff != "" {
		t.Errorf("end state (-want +got):\n%s", diff)
	}
	if err := cw.invariant(); err != nil {
		t.Error(err)
	}
}
