package rotate_test

import (
	"context"
	"errors"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// fastRetry keeps the fault matrix quick: the real policy waits 500ms and up.
var fastRetry = gcp.RetryPolicy{Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond, CallTimeout: 2 * time.Second, MaxElapsed: 10 * time.Second}

// Outcome classes, as the CLI maps them to exit codes.
const (
	classOK       = "ok (exit 0)"
	classPlain    = "plain error (exit 1)"
	classPartWay  = "ErrStoppedPartWay (exit 4)"
	classVerify   = "ErrVerifyFailed (exit 3)"
	classInFlight = "ErrRotationInProgress (exit 4)"
)

func classOf(err error) string {
	switch {
	case err == nil:
		return classOK
	case errors.Is(err, rotate.ErrStoppedPartWay):
		return classPartWay
	case errors.Is(err, rotate.ErrVerifyFailed):
		return classVerify
	case errors.Is(err, rotate.ErrRotationInProgress):
		return classInFlight
	}
	return classPlain
}

// hints returns every hint attached anywhere in err's tree.
func hints(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if h, ok := e.(interface{ Hint() string }); ok && h.Hint() != "" {
			out = append(out, h.Hint())
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

// faultCell is one method of the matrix.
type faultCell struct {
	method string
	// firstRun: the slot's secret has no version and the slot names the
	// key (the path that calls GetKeyString).
	firstRun bool
	grace    bool
	// resource is a part of the message that names what the call acts on.
	resource string
	// early: the method fails before any change (a plain error); else the
	// run stops part-way.
	early bool
	// createUnsure: a transient CreateKey failure may have made the key, so
	// the run stops part-way where a definite refusal changes nothing.
	createUnsure bool
}

var faultCells = []faultCell{
	{method: "secretmanager.GetSecret", resource: "secrets/gemini-api-key", early: true},
	{method: "secretmanager.AccessSecretVersion", resource: "secrets/gemini-api-key/versions/latest", early: true},
	{method: "apikeys.LookupKey", resource: "look up key sha256:", early: true},
	{method: "apikeys.GetKey", resource: "keys/gemini-2026", early: true},
	{method: "apikeys.GetKeyString", firstRun: true, resource: "keys/gemini-2026", early: true},
	{method: "secretmanager.UpdateSecret", resource: "secrets/gemini-api-key", early: true},
	{method: "apikeys.CreateKey", resource: "keys/gemini-prod-", early: true, createUnsure: true},
	{method: "apikeys.GetOperation", resource: "operations/"},
	{method: "gemini.CountTokens", resource: "keys/gemini-prod-"},
	{method: "secretmanager.AddSecretVersion", resource: "secrets/gemini-api-key"},
	{method: "apikeys.DeleteKey", resource: "keys/gemini-2026"},
	{method: "secretmanager.DisableSecretVersion", resource: "secrets/gemini-api-key/versions/1"},
	{method: "apikeys.UpdateKey", grace: true, resource: "keys/gemini-2026"},
}

// matrix collects one row per cell for the table the test logs.
var matrix = struct {
	sync.Mutex
	rows map[string]map[string]string
}{rows: map[string]map[string]string{}}

func record(method, kase, outcome string) {
	matrix.Lock()
	defer matrix.Unlock()
	if matrix.rows[method] == nil {
		matrix.rows[method] = map[string]string{}
	}
	matrix.rows[method][kase] = outcome
}

// TestFaultMatrix fails each method a rotation calls in three ways: once
// with a transient code (the retry hides it: success), transiently until
// the run's deadline, and permanently (the caller lacks the IAM
// permission). Every run that fails ends safe: the invariant holds, the
// message names the resource and the real error, the class is right, and
// a second run without faults finishes with exactly one new key.
// TestFaultMatrixStateCodes runs every cell of the fault matrix with the
// emulator answering FAILED_PRECONDITION to the refusals only a key's state
// explains (emulator.SetStateCodes): Google documents no code for them, and
// the runs must reach the same outcomes by reading the state.
func TestFaultMatrixStateCodes(t *testing.T) {
	t.Parallel()
	for i, c := range faultCells {
		for _, kase := range []string{"transient-once", "transient-until-deadline", "permanent"} {
			t.Run(c.method+"/"+kase, func(t *testing.T) {
				t.Parallel()
				runFaultCell(t, c, kase, i, codes.FailedPrecondition)
			})
		}
	}
}

func TestFaultMatrix(t *testing.T) {
	t.Parallel()
	cases := []string{"transient-once", "transient-until-deadline", "permanent"}
	t.Run("cells", func(t *testing.T) {
		for i, c := range faultCells {
			for _, kase := range cases {
				t.Run(c.method+"/"+kase, func(t *testing.T) {
					t.Parallel() // each cell has its own emulator
					outcome := runFaultCell(t, c, kase, i, codes.OK)
					t.Logf("MATRIX | %s | %s | %s", c.method, kase, outcome)
					record(c.method, kase, outcome)
				})
			}
		}
	})
	var b strings.Builder
	b.WriteString("\n| method | " + strings.Join(cases, " | ") + " |\n|---|---|---|---|\n")
	methods := make([]string, 0, len(matrix.rows))
	for m := range matrix.rows {
		methods = append(methods, m)
	}
	sort.Strings(methods)
	for _, m := range methods {
		b.WriteString("| " + m)
		for _, k := range cases {
			b.WriteString(" | " + matrix.rows[m][k])
		}
		b.WriteString(" |\n")
	}
	t.Log(b.String())
}

func newFaultWorld(t *testing.T, c faultCell) *world {
	w := newWorld(t)
	w.r.Retry = fastRetry
	if c.firstRun {
		name := "projects/" + project + "/secrets/gemini-first"
		if _, err := w.srv.SeedSecret(project, "gemini-first", nil); err != nil {
			t.Fatal(err)
		}
		w.slot.Secret = name
		w.slot.Key = w.oldName
	}
	return w
}

// runFaultCell runs one cell of the fault matrix and returns its outcome
// for the matrix's table. An outage until the deadline is first tried
// with a 4s deadline: the run must reach the faulted call and see the
// outage before it. On a loaded machine (-race, other tests beside) a
// late call (UpdateKey, after Secret Manager's write pacing) was once
// sent 67ms before the deadline and got no answer at all: that run saw
// no outage to name, and says so ("no answer after 1 attempt"). The cell
// is then run again, in a new world, with twice the deadline (up to
// 16s); what it asserts stays as it is.
func runFaultCell(t *testing.T, c faultCell, kase string, i int, code codes.Code) string {
	deadline := 4 * time.Second
	for {
		outcome, late := runFaultCellWithin(t, c, kase, i, code, deadline)
		if !late {
			return outcome
		}
		t.Logf("the run reached %s only as its %s deadline fell, and had no answer from it: again with %s", c.method, deadline, 2*deadline)
		deadline *= 2
	}
}

// runFaultCellWithin is runFaultCell with deadline for the outage until
// the deadline. It reports late, and checks nothing but the invariant and
// leaks, when that run had no answer from the faulted call and deadline
// may grow (under 16s).
func runFaultCellWithin(t *testing.T, c faultCell, kase string, i int, code codes.Code, deadline time.Duration) (outcome string, late bool) {
	w := newFaultWorld(t, c)
	w.srv.SetStateCodes(code)
	var opts rotate.Options
	if c.grace {
		g := time.Hour
		opts.Grace = &g
	}
	opts.Force = true
	ctx := context.Background()
	want := classOK
	switch kase {
	case "transient-once":
		f := fake.Fault{Code: codes.Unavailable}
		if i%2 == 1 {
			// A quota error with a (short) RetryInfo, honoured by the retry.
			f = fake.Fault{Code: codes.ResourceExhausted, RetryDelay: 50 * time.Millisecond}
		}
		w.srv.Fail(c.method, 1, f)
	case "transient-until-deadline":
		w.srv.Fail(c.method, fake.Next, fake.Fault{Code: codes.Unavailable, Message: "injected outage: " + c.method, Times: fake.Always})
		if c.method == "gemini.CountTokens" {
			// The probe's deadline is the propagation window.
			w.slot.PropagationTimeout = 300 * time.Millisecond
			want = classVerify
		} else {
			// The deadline leaves room to reach the faulted call: a
			// late one (DeleteKey, UpdateKey, DisableSecretVersion)
			// comes after Secret Manager's write rate has paced the
			// rotation for over a second, and under -race on a loaded
			// machine 1.5s was not always enough to get there (nor,
			// once, 4s: see runFaultCell).
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, deadline)
			defer cancel()
			// The outage ends as the run's cleanup (the release of the
			// lease) begins, its stop event: the cleanup reaches the API,
			// and every call of the run itself was answered before it.
			// (Ended at the deadline instead, a call sent as the deadline
			// fell could reach the emulator after it and succeed: a
			// loaded -race run saw a CreateKey accepted that way.)
			events := w.r.Events
			w.r.Events = func(e rotate.Event) {
				if e.Step == rotate.StepStop {
					w.srv.ClearFaults()
				}
				events(e)
			}
			want = classPartWay
			if c.early && !c.createUnsure {
				want = classPlain
			}
		}
	case "permanent":
		if c.method == "gemini.CountTokens" {
			w.srv.SetServiceEnabled(project, "generativelanguage.googleapis.com", false)
			want = classVerify
		} else {
			w.srv.DenyPermission(emulator.PermissionOf(c.method))
			want = classPartWay
			if c.early {
				want = classPlain
			}
		}
	}

	res, err := w.r.Rotate(ctx, w.slot, opts)
	w.noLeaks(res, err)
	got := classOf(err)
	w.srv.ClearFaults()
	if kase == "transient-until-deadline" && c.method != "gemini.CountTokens" {
		if err != nil && deadline < 16*time.Second && strings.Contains(err.Error(), "no answer after") && !strings.Contains(err.Error(), "injected outage") {
			w.checkInvariant()
			return "", true
		}
	}
	// With the Gemini API disabled no key works: check the invariant with
	// it on again (the disabled API changed no target).
	w.srv.SetServiceEnabled(project, "generativelanguage.googleapis.com", true)
	if got != want {
		t.Errorf("first Rotate: class %s, want %s; error: %v", got, want, err)
	}
	w.checkInvariant()
	outcome = got
	if err != nil {
		msg := err.Error()
		if !strings.Contains(msg, c.resource) {
			t.Errorf("error does not name the resource (%q): %v", c.resource, err)
		}
		switch kase {
		case "transient-until-deadline":
			if !strings.Contains(msg, "injected outage") {
				t.Errorf("error does not name the last real error: %v", err)
			}
			if c.method != "gemini.CountTokens" && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("errors.Is(err, context.DeadlineExceeded) = false: %v", err)
			}
			outcome += ": " + lastRealError(msg)
		case "permanent":
			if c.method == "gemini.CountTokens" {
				if !strings.Contains(msg, "SERVICE_DISABLED") {
					t.Errorf("error does not name SERVICE_DISABLED: %v", err)
				}
				outcome += ": SERVICE_DISABLED, new key deleted"
				break
			}
			perm := emulator.PermissionOf(c.method)
			hs := strings.Join(hints(err), " / ")
			if !strings.Contains(msg, perm) || !strings.Contains(hs, perm) || !strings.Contains(hs, "roles/") {
				t.Errorf("permission error does not name %s and its role:\nerror: %v\nhints: %s", perm, err, hs)
			}
			outcome += ": " + perm + " → " + roleIn(hs)
			if top := errhint.Of(err); !strings.Contains(top, "roles/") {
				outcome += " (role only in an inner hint)"
			}
		}
	} else if kase != "transient-once" {
		t.Errorf("first Rotate succeeded despite %s at %s", kase, c.method)
	}
	if err == nil {
		w.checkOneNewKey(c, 1)
		return outcome, false
	}

	// A second run without faults finishes with exactly one new key.
	w.srv.AllowPermission(emulator.PermissionOf(c.method))
	w.srv.SetServiceEnabled(project, "generativelanguage.googleapis.com", true)
	w.slot.PropagationTimeout = 5 * time.Second
	res, err = w.r.Rotate(context.Background(), w.slot, opts)
	w.noLeaks(res, err)
	if err != nil || !res.Rotated {
		t.Fatalf("second Rotate = %+v, %v; want a finished rotation", res, err)
	}
	w.checkInvariant()
	w.checkOneNewKey(c, 2)
	return outcome + "; rerun ok", false
}

// checkInvariant is world.invariant for a secret that may have no version.
func (w *world) checkInvariant() {
	w.t.Helper()
	env := w.envValue()
	if !w.srv.KeyWorks(env) {
		w.t.Errorf(".env holds a key that does not work")
	}
	if vs := w.srv.SecretVersions(w.slot.Secret); len(vs) > 0 {
		p, _ := w.srv.SecretPayload(vs[len(vs)-1].Name)
		if !w.srv.KeyWorks(string(p)) {
			w.t.Errorf("the secret's latest version holds a key that does not work")
		}
		if !w.srv.KeyWorks(w.oldKey) && (env == w.oldKey || string(p) == w.oldKey) {
			w.t.Errorf("the old key is dead but a place still holds it")
		}
	}
}

// checkOneNewKey checks the end of a finished rotation: one live new key
// (plus the old one under grace), .env and the secret holding it, and no
// duplicate version of it.
func (w *world) checkOneNewKey(c faultCell, runs int) {
	w.t.Helper()
	var fresh []string
	for _, k := range w.liveKeys() {
		if k.Name != w.oldName {
			fresh = append(fresh, k.KeyString)
		}
	}
	if len(fresh) != 1 {
		w.t.Fatalf("live new keys = %d, want exactly 1", len(fresh))
	}
	oldLive := false
	for _, k := range w.liveKeys() {
		oldLive = oldLive || k.Name == w.oldName
	}
	if oldLive != c.grace {
		w.t.Errorf("old key live = %t, want %t", oldLive, c.grace)
	}
	if w.envValue() != fresh[0] {
		w.t.Errorf(".env does not hold the new key")
	}
	vs := w.srv.SecretVersions(w.slot.Secret)
	wantVersions := 2
	if c.firstRun {
		wantVersions = 1
	}
	if len(vs) != wantVersions {
		w.t.Errorf("secret versions = %d, want %d (no duplicate of the new key)", len(vs), wantVersions)
	}
	if p, _ := w.srv.SecretPayload(vs[len(vs)-1].Name); string(p) != fresh[0] {
		w.t.Errorf("the secret's latest version does not hold the new key")
	}
	if _, ok := w.secret().Annotations["keyrotate.rotation"]; ok {
		w.t.Errorf("rotation record left behind")
	}
}

// lastRealError shortens an error for the matrix: from where the retry
// gave up, with the resource names cut.
func lastRealError(msg string) string {
	for _, marker := range []string{"gave up after", "still failing after", "no answer"} {
		if i := strings.Index(msg, marker); i >= 0 {
			msg = msg[i:]
			break
		}
	}
	msg = regexp.MustCompile(`(projects|operations)/[^ ']+`).ReplaceAllString(msg, "…")
	msg = regexp.MustCompile(`over [0-9.]+m?s`).ReplaceAllString(msg, "over ~4s")
	msg = regexp.MustCompile(`after [0-9]+ attempts`).ReplaceAllString(msg, "after N attempts")
	msg = regexp.MustCompile(`in [0-9.]+m?s,`).ReplaceAllString(msg, "in …,")
	return "`" + msg + "`"
}

func roleIn(h string) string {
	i := strings.Index(h, "roles/")
	if i < 0 {
		return "?"
	}
	j := strings.IndexAny(h[i:], " ,;)")
	if j < 0 {
		return h[i:]
	}
	return h[i : i+j]
}

// TestOrgPolicyBlocksBoundKeys: with the org-policy constraint on, creating
// the bound key fails; the error names the constraint, nothing changed.
func TestOrgPolicyBlocksBoundKeys(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.srv.BlockBoundKeyCreation(project, true)
	res, err := w.rotate(rotate.Options{})
	if classOf(err) != classPlain {
		t.Fatalf("Rotate = %+v, %v; want a plain error (nothing changed)", res, err)
	}
	if h := strings.Join(hints(err), " / "); !strings.Contains(h, "iam.managed.disableServiceAccountApiKeyCreation") {
		t.Errorf("hints = %q, want the constraint named", h)
	}
	if len(w.liveKeys()) != 1 || w.envValue() != w.oldKey {
		t.Errorf("a refused creation left changes behind")
	}
	if _, ok := w.secret().Annotations["keyrotate.rotation"]; ok {
		t.Errorf("rotation record left behind")
	}
}

// TestMissingResourcesNamed: a deleted key or a missing secret is named in
// the error.
func TestMissingResourcesNamed(t *testing.T) {
	t.Parallel()
	t.Run("secret", func(t *testing.T) {
		w := newWorld(t)
		w.slot.Secret = "projects/" + project + "/secrets/nope"
		_, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{Force: true})
		if !errors.Is(err, rotate.ErrSecretNotFound) || !strings.Contains(err.Error(), "secrets/nope") {
			t.Errorf("Rotate = %v, want ErrSecretNotFound naming the secret", err)
		}
	})
	t.Run("deleted key", func(t *testing.T) {
		w := newWorld(t)
		svc, err := w.srv.APIKeysService(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Projects.Locations.Keys.Delete(w.oldName).Do(); err != nil {
			t.Fatal(err)
		}
		_, err = w.rotate(rotate.Options{})
		if !errors.Is(err, rotate.ErrKeyNotFound) || !strings.Contains(err.Error(), "keys/gemini-2026") {
			t.Errorf("Rotate = %v, want ErrKeyNotFound naming the key", err)
		}
	})
}
