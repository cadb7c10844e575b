package main

// End-to-end tests of the fleet features through the real binary: shards
// (--shard, and the task index of Cloud Run Jobs and Kubernetes Indexed
// Jobs), shards run twice, the run record (--report), the webhook
// (--notify-webhook), JSON log labels and quota pacing. keyrotate runs as
// child processes (crash_test.go's harness) against an emulator in this
// process, seeded with the demo world and a fleet (seedFleet).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// fleetEnvCleared clears, for every child, the variables through which an
// engine names a task's shard, makes logs JSON by default or gives the
// webhook, so that a test does not depend on where it runs (a CI job in a
// Kubernetes pod has KUBERNETES_SERVICE_HOST). keyrotate takes an empty
// value for unset; the tests about them set them again (the last value
// wins).
var fleetEnvCleared = []string{
	cloudRunTaskIndexEnv + "=", cloudRunTaskCountEnv + "=", jobCompletionEnv + "=", notifyWebhookEnv + "=",
	"CLOUD_RUN_JOB=", "K_SERVICE=", "KUBERNETES_SERVICE_HOST=",
}

// fleetWorld is the demo world and a fleet on one emulator.
type fleetWorld struct {
	*crashWorld
	slots    []string // every slot of the config, in its order: gemini-prod, then the fleet's
	projects []string // demo-project, then the fleet's projects
}

// newFleetWorld starts an emulator with opts and seeds the demo world and
// projects × slotsPer fleet slots (fleet-pNN-sNNN in project fleet-pNN).
func newFleetWorld(t *testing.T, opts emulator.Options, projects, slotsPer int) *fleetWorld {
	t.Helper()
	var names []string
	cw := newCrashWorldWith(t, opts, func(srv *emulator.Server, w *seeded) (err error) {
		names, err = seedFleet(srv, w, projects, slotsPer)
		return err
	})
	cw.env = fleetEnvCleared
	fw := &fleetWorld{crashWorld: cw, slots: append([]string{"gemini-prod"}, names...), projects: []string{demoProject}}
	for p := range projects {
		fw.projects = append(fw.projects, fmt.Sprintf("fleet-p%02d", p))
	}
	return fw
}

// start starts keyrotate with args and, on top of the world's, the
// environment env (NAME=value), for test t (a world may serve subtests).
func (fw *fleetWorld) start(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	cw := *fw.crashWorld
	cw.t, cw.env = t, append(slices.Clip(fw.env), env...)
	return cw.start(args...)
}

// wait waits for c to end, checks its output for key strings and returns
// its exit code.
func (fw *fleetWorld) wait(t *testing.T, c *child) int {
	t.Helper()
	code := c.wait(t)
	if err := fw.leaks("the output of keyrotate "+strings.Join(c.cmd.Args[1:], " "), c.output()); err != nil {
		t.Error(err)
	}
	return code
}

// run runs keyrotate to its end; see start and wait.
func (fw *fleetWorld) run(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	c := fw.start(t, env, args...)
	fw.wait(t, c)
	return c
}

// leaks is the canary of cmdKR and crashWorld.noKeyIn over every project
// of the fleet, and stricter: it reports any key string the emulator ever
// issued (deleted keys too), or any 12-character piece of one, found in
// text (what names where the text came from).
func (fw *fleetWorld) leaks(what, text string) error {
	for _, p := range fw.projects {
		for _, k := range fw.srv.Keys(p, true) {
			ks := k.KeyString
			for i := 0; i+12 <= len(ks); i++ {
				if strings.Contains(text, ks[i:i+12]) {
					return fmt.Errorf("%s holds (a piece of) the key string of %s", what, k.Name)
				}
			}
		}
	}
	return nil
}

// config is the args that name the world's config, then args.
func (fw *fleetWorld) config(args ...string) []string {
	return append([]string{"--config", fw.w.config}, args...)
}

// slotProject and slotSecret are where seedDemo and seedFleet put a slot's
// key and secret.
func slotProject(slot string) string {
	if slot == "gemini-prod" {
		return demoProject
	}
	return slot[:len("fleet-p00")]
}

func slotSecret(slot string) string {
	if slot == "gemini-prod" {
		return "projects/" + demoProject + "/secrets/" + demoSecretID
	}
	return "projects/" + slotProject(slot) + "/secrets/" + slot
}

// slotState is what the emulator holds for one slot, stated so that one
// completed rotation reads the same for every slot (oneRotation).
type slotState struct {
	Created    int  // keys keyrotate made for the slot (annotated keyrotate.slot), deleted or not
	Live       int  // live keys of the slot, the seeded one included
	OldDeleted bool // the seeded key (ID SLOT-2026) is deleted
	Versions   int  // versions of the slot's secret
	LatestNew  bool // the secret's latest version holds a live key made for the slot
}

var oneRotation = slotState{Created: 1, Live: 1, OldDeleted: true, Versions: 2, LatestNew: true}

// untouchedSlot is a slot no run rotated.
var untouchedSlot = slotState{Live: 1, Versions: 1}

func (fw *fleetWorld) slotState(slot string) slotState {
	var st slotState
	vs := fw.srv.SecretVersions(slotSecret(slot))
	st.Versions = len(vs)
	var latest string
	if len(vs) > 0 {
		p, _ := fw.srv.SecretPayload(vs[len(vs)-1].GetName())
		latest = string(p)
	}
	for _, k := range fw.srv.Keys(slotProject(slot), true) {
		seeded := strings.HasSuffix(k.Name, "/keys/"+slot+"-2026")
		ours := k.Annotations["keyrotate.slot"] == slot
		if !seeded && !ours {
			continue
		}
		if k.DeleteTime == "" {
			st.Live++
		}
		if seeded {
			st.OldDeleted = k.DeleteTime != ""
			continue
		}
		st.Created++
		if k.DeleteTime == "" && k.KeyString == latest {
			st.LatestNew = true
		}
	}
	return st
}

// newKeyOf returns the live key keyrotate made for slot.
func (fw *fleetWorld) newKeyOf(slot string) (name, fingerprint string) {
	for _, k := range fw.srv.Keys(slotProject(slot), false) {
		if k.Annotations["keyrotate.slot"] == slot {
			return k.Name, secret.Fingerprint(k.KeyString)
		}
	}
	return "", ""
}

// oldKeyOf returns the key seeded for slot.
func (fw *fleetWorld) oldKeyOf(slot string) (name, fingerprint string) {
	for _, k := range fw.srv.Keys(slotProject(slot), true) {
		if strings.HasSuffix(k.Name, "/keys/"+slot+"-2026") {
			return k.Name, secret.Fingerprint(k.KeyString)
		}
	}
	return "", ""
}

// shardSlots returns the slots of shard i of n, by rotate.Shard, in order.
func shardSlots(slots []string, i, n int) []string {
	var out []string
	for _, s := range slots {
		if rotate.Shard(s, n) == i {
			out = append(out, s)
		}
	}
	return out
}

// readRecord reads a run record, checks it for key strings and decodes it.
func (fw *fleetWorld) readRecord(t *testing.T, path string) (*runRecord, []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the run record: %v", err)
	}
	if err := fw.leaks("the run record "+filepath.Base(path), string(b)); err != nil {
		t.Error(err)
	}
	var r runRecord
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("the run record %s is not JSON: %v\n%s", path, err, b)
	}
	return &r, b
}

// slotNamesOf returns the slots of a run record, in its order.
func slotNamesOf(r *runRecord) []string {
	var out []string
	for _, s := range r.Slots {
		out = append(out, s.Slot)
	}
	return out
}

// TestShardsRotateEachSlotOnce runs the three shards of a fleet at once, as
// the three tasks of a Cloud Run Job would: together they rotate every slot
// of the config exactly once, each only the slots rotate.Shard gives it.
func TestShardsRotateEachSlotOnce(t *testing.T) {
	t.Parallel()
	start := time.Now()
	const n = 3
	fw := newFleetWorld(t, emulator.Options{}, 3, 8)
	if len(fw.slots) != 25 {
		t.Fatalf("the config has %d slots, want 25", len(fw.slots))
	}
	for i := range n {
		if len(shardSlots(fw.slots, i, n)) == 0 {
			t.Fatalf("shard %d/%d of the fleet is empty: the test would prove little", i, n)
		}
	}

	dir := t.TempDir()
	children := make([]*child, n)
	reports := make([]string, n)
	for i := range n {
		reports[i] = filepath.Join(dir, fmt.Sprintf("shard-%d.json", i))
		children[i] = fw.start(t, nil, fw.config("rotate", "--now", "--shard", fmt.Sprintf("%d/%d", i, n), "--parallel", "4", "--report", reports[i])...)
	}
	for i, c := range children {
		if code := fw.wait(t, c); code != 0 {
			t.Errorf("shard %d/%d exited %d, want 0:\n%s", i, n, code, c.output())
		}
	}

	if got := fw.srv.Calls("apikeys.CreateKey"); got != len(fw.slots) {
		t.Errorf("CreateKey calls = %d, want %d (one per slot)", got, len(fw.slots))
	}
	if got := fw.srv.Calls("apikeys.DeleteKey"); got != len(fw.slots) {
		t.Errorf("DeleteKey calls = %d, want %d (one per slot)", got, len(fw.slots))
	}
	perProject := map[string]int{}
	for _, s := range fw.slots {
		perProject[slotProject(s)]++
		if got := fw.slotState(s); got != oneRotation {
			t.Errorf("slot %s: %+v, want one rotation %+v", s, got, oneRotation)
		}
	}
	for p, want := range perProject {
		if got := len(fw.srv.Keys(p, false)); got != want {
			t.Errorf("project %s has %d live keys, want %d (one per slot)", p, got, want)
		}
	}

	seen := map[string]int{}
	sizes := make([]int, n)
	for i := range n {
		r, _ := fw.readRecord(t, reports[i])
		want := shardSlots(fw.slots, i, n)
		sizes[i] = len(want)
		if r.Shard != fmt.Sprintf("%d/%d", i, n) {
			t.Errorf("record of shard %d: shard %q, want %d/%d", i, r.Shard, i, n)
		}
		if diff := cmp.Diff(want, slotNamesOf(r)); diff != "" {
			t.Errorf("record of shard %d/%d: slots differ from rotate.Shard's (-want +got):\n%s", i, n, diff)
		}
		if diff := cmp.Diff(runSummary{Slots: len(want), Rotated: len(want)}, r.Summary); diff != "" {
			t.Errorf("record of shard %d/%d: summary (-want +got):\n%s", i, n, diff)
		}
		for _, s := range r.Slots {
			seen[s.Slot]++
			if s.Action != "rotated" {
				t.Errorf("record of shard %d/%d: slot %s %s, want rotated (%s)", i, n, s.Slot, s.Action, s.Error)
			}
			if name, _ := fw.newKeyOf(s.Slot); s.NewKey == nil || s.NewKey.Name != name {
				t.Errorf("record of shard %d/%d: slot %s new key %v, want %s", i, n, s.Slot, s.NewKey, name)
			}
		}
		if r.ExitCode != 0 || r.APICallsTotal == 0 || r.Throttled != 0 {
			t.Errorf("record of shard %d/%d: exit_code %d, api_calls_total %d, throttled %d; want 0, > 0, 0", i, n, r.ExitCode, r.APICallsTotal, r.Throttled)
		}
	}
	for _, s := range fw.slots {
		if seen[s] != 1 {
			t.Errorf("slot %s is in %d of the shards' records, want 1", s, seen[s])
		}
	}
	t.Logf("%d slots in 3 projects (and the demo's), 3 shards at once (sizes %v): every slot rotated once; %d API calls; %s",
		len(fw.slots), sizes, fw.srv.CallsTotal(), time.Since(start).Round(10*time.Millisecond))
}

// TestSameShardTwiceRotatesOnce runs one shard twice: by two processes at
// once (a task started twice, or two Jobs with the same shard), and again
// after it finished (a task retried by its engine after its process died
// before it reported). Every slot of the shard is rotated exactly once.
func TestSameShardTwiceRotatesOnce(t *testing.T) {
	t.Parallel()
	const i, n = 1, 3
	shardArgs := []string{"--shard", fmt.Sprintf("%d/%d", i, n)}

	t.Run("at once", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		fw := newFleetWorld(t, emulator.Options{}, 3, 8)
		want := shardSlots(fw.slots, i, n)
		k := len(want)
		if k < 2 {
			t.Fatalf("shard %d/%d has %d slots: the test would prove little", i, n, k)
		}
		// Hold every lock write until both processes have sent theirs for
		// every slot of the shard (each runs all of them at once:
		// --parallel k), so that every slot's lock is truly raced for
		// with a compare-and-swap, not won by whichever process started
		// first. A lock write is a slot's first UpdateSecret.
		var arrived atomic.Int32
		all := make(chan struct{})
		fw.srv.SetHook("secretmanager.UpdateSecret", func(ctx context.Context, call int) error {
			if call > 2*k {
				return nil
			}
			if arrived.Add(1) == int32(2*k) {
				close(all)
			}
			select {
			case <-all:
				return nil
			case <-ctx.Done(): // the caller gave up before the others arrived
				return ctx.Err()
			}
		})
		dir := t.TempDir()
		reports := []string{filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")}
		var children []*child
		for _, r := range reports {
			args := append(fw.config("rotate", "--now", "--parallel", fmt.Sprint(k), "--report", r), shardArgs...)
			children = append(children, fw.start(t, nil, args...))
		}
		select {
		case <-all:
		case <-time.After(crashTimeout):
			for _, c := range children {
				c.kill()
			}
			t.Fatalf("only %d of the %d lock writes arrived within %s", arrived.Load(), 2*k, crashTimeout)
		}
		var codes, won []int
		rotated := map[string]int{}
		for j, c := range children {
			code := fw.wait(t, c)
			codes = append(codes, code)
			// 4 is "stopped part-way, safe; run again": here, another run
			// holds the slot's lease. That is the right answer for the
			// process that lost the race for a slot: the slot is being
			// rotated by the winner, which the loser cannot see finish,
			// and a rerun (the engine's retry) finds nothing to do.
			if code != 0 && code != 4 {
				t.Errorf("process %d exited %d, want 0 or 4:\n%s", j, code, c.output())
			}
			r, _ := fw.readRecord(t, reports[j])
			if diff := cmp.Diff(want, slotNamesOf(r)); diff != "" {
				t.Errorf("record %d: slots differ from shard %d/%d's (-want +got):\n%s", j, i, n, diff)
			}
			for _, s := range r.Slots {
				switch {
				case s.Action == "rotated":
					rotated[s.Slot]++
				case s.Action == "failed" && s.ExitCode == 4:
				default:
					t.Errorf("record %d: slot %s %s (exit %d: %s), want rotated, or failed with 4 (held by the other run)", j, s.Slot, s.Action, s.ExitCode, s.Error)
				}
			}
			won = append(won, r.Summary.Rotated)
			if r.Summary.Failed != r.Summary.Pending {
				t.Errorf("record %d: %d slots failed, %d of them held by another run; want all", j, r.Summary.Failed, r.Summary.Pending)
			}
			if code == 4 && !strings.Contains(c.stderr.String(), "keyrotate: hint:") {
				t.Errorf("process %d exited 4 without a hint:\n%s", j, c.stderr.String())
			}
		}
		for _, s := range want {
			if rotated[s] != 1 {
				t.Errorf("slot %s rotated by %d of the two runs, want 1", s, rotated[s])
			}
		}
		if got := fw.srv.Calls("apikeys.CreateKey"); got != k {
			t.Errorf("CreateKey calls = %d, want %d (one per slot of the shard)", got, k)
		}
		fw.checkShardOnce(t, want)

		// The engine retries the task that exited 4: nothing to do.
		fw.checkRetry(t, want, shardArgs)
		t.Logf("shard %d/%d (%d slots) by two processes at once, every lock raced: exit codes %v, slots rotated %v; %s",
			i, n, k, codes, won, time.Since(start).Round(10*time.Millisecond))
	})

	t.Run("retried", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		fw := newFleetWorld(t, emulator.Options{}, 3, 8)
		want := shardSlots(fw.slots, i, n)
		report := filepath.Join(t.TempDir(), "first.json")
		if c := fw.run(t, nil, append(fw.config("rotate", "--now", "--report", report), shardArgs...)...); c.code != 0 {
			t.Fatalf("first run exited %d:\n%s", c.code, c.output())
		}
		r, _ := fw.readRecord(t, report)
		if diff := cmp.Diff(runSummary{Slots: len(want), Rotated: len(want)}, r.Summary); diff != "" {
			t.Errorf("first run: summary (-want +got):\n%s", diff)
		}
		fw.checkRetry(t, want, shardArgs)
		fw.checkShardOnce(t, want)
		t.Logf("shard %d/%d (%d slots) run, then run again: the rerun did nothing; %s", i, n, len(want), time.Since(start).Round(10*time.Millisecond))
	})
}

// checkShardOnce checks that every slot of want was rotated exactly once
// and no other slot was touched.
func (fw *fleetWorld) checkShardOnce(t *testing.T, want []string) {
	t.Helper()
	for _, s := range fw.slots {
		wantState := untouchedSlot
		if slices.Contains(want, s) {
			wantState = oneRotation
		}
		if got := fw.slotState(s); got != wantState {
			t.Errorf("slot %s: %+v, want %+v", s, got, wantState)
		}
	}
}

// checkRetry reruns `rotate --now` on a shard whose slots were all just
// rotated, as an engine retries a task: within lease_ttl of a completed
// rotation, a forced run is taken for a retry of it (rotate.Options.Again),
// so the rerun does nothing and exits 0.
func (fw *fleetWorld) checkRetry(t *testing.T, want, shardArgs []string) {
	t.Helper()
	creates := fw.srv.Calls("apikeys.CreateKey")
	report := filepath.Join(t.TempDir(), "retry.json")
	c := fw.run(t, nil, append(fw.config("rotate", "--now", "--report", report), shardArgs...)...)
	if c.code != 0 {
		t.Errorf("the rerun exited %d, want 0:\n%s", c.code, c.output())
	}
	if got := fw.srv.Calls("apikeys.CreateKey"); got != creates {
		t.Errorf("the rerun made %d more key(s), want none", got-creates)
	}
	r, _ := fw.readRecord(t, report)
	if diff := cmp.Diff(runSummary{Slots: len(want), NotDue: len(want)}, r.Summary); diff != "" {
		t.Errorf("the rerun: summary (-want +got):\n%s", diff)
	}
	for _, s := range r.Slots {
		if s.Action != "nothing-to-do" || !strings.Contains(s.Reason, "retry") {
			t.Errorf("the rerun: slot %s: %s (%s), want nothing-to-do as a retry", s.Slot, s.Action, s.Reason)
		}
	}
}

// TestShardFromEnvironment checks where a process's shard comes from:
// --shard, Cloud Run Jobs' CLOUD_RUN_TASK_INDEX and CLOUD_RUN_TASK_COUNT,
// or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX with --shard-count;
// and that a shard that cannot be right stops the run with exit 2 before
// any API call.
func TestShardFromEnvironment(t *testing.T) {
	t.Parallel()
	start := time.Now()
	fw := newFleetWorld(t, emulator.Options{}, 3, 8)

	planned := func(t *testing.T, env []string, args ...string) []string {
		t.Helper()
		c := fw.run(t, env, fw.config(append([]string{"--output", "json", "plan", "--now"}, args...)...)...)
		if c.code != 0 {
			t.Fatalf("plan %v with %v exited %d:\n%s", args, env, c.code, c.output())
		}
		var out struct {
			Plans []struct{ Slot string } `json:"plans"`
		}
		if err := json.Unmarshal(c.stdout.Bytes(), &out); err != nil {
			t.Fatalf("plan --output json: %v\n%s", err, c.stdout.String())
		}
		var slots []string
		for _, p := range out.Plans {
			slots = append(slots, p.Slot)
		}
		return slots
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		i, n int
	}{
		{"--shard", nil, []string{"--shard", "1/3"}, 1, 3},
		{"Cloud Run Jobs", []string{cloudRunTaskIndexEnv + "=1", cloudRunTaskCountEnv + "=3"}, nil, 1, 3},
		{"--shard 2/3", nil, []string{"--shard", "2/3"}, 2, 3},
		{"Kubernetes Indexed Job", []string{jobCompletionEnv + "=2"}, []string{"--shard-count", "3"}, 2, 3},
		// --shard wins over the engine's index: a task can be run by hand.
		{"--shard over the environment", []string{cloudRunTaskIndexEnv + "=0", cloudRunTaskCountEnv + "=3"}, []string{"--shard", "2/3"}, 2, 3},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			want := shardSlots(fw.slots, tc.i, tc.n)
			if diff := cmp.Diff(want, planned(t, tc.env, tc.args...)); diff != "" {
				t.Errorf("plan's slots differ from shard %d/%d's (-want +got):\n%s", tc.i, tc.n, diff)
			}
		})
	}
	if a, b := planned(t, nil, "--shard", "1/3"), planned(t, nil, "--shard", "2/3"); slices.Equal(a, b) {
		t.Errorf("shards 1/3 and 2/3 plan the same slots %v", a)
	}

	// rotate takes the same shard from the environment, and says so in its
	// run record.
	t.Run("rotate from Cloud Run Jobs' variables", func(t *testing.T) {
		report := filepath.Join(t.TempDir(), "run.json")
		c := fw.run(t, []string{cloudRunTaskIndexEnv + "=1", cloudRunTaskCountEnv + "=3"}, fw.config("rotate", "--now", "--report", report)...)
		if c.code != 0 {
			t.Fatalf("rotate exited %d:\n%s", c.code, c.output())
		}
		r, _ := fw.readRecord(t, report)
		if diff := cmp.Diff(shardSlots(fw.slots, 1, 3), slotNamesOf(r)); diff != "" {
			t.Errorf("the record's slots differ from shard 1/3's (-want +got):\n%s", diff)
		}
		if r.Shard != "1/3" {
			t.Errorf("the record's shard = %q, want 1/3", r.Shard)
		}
		if !strings.Contains(c.stdout.String(), "shard 1/3 (from "+cloudRunTaskIndexEnv+")") {
			t.Errorf("stdout does not say where the shard came from:\n%s", c.stdout.String())
		}
	})

	// Bad shards: exit 2, an error and a hint, and not one API call. They
	// run together; none may call, so the count is checked for all.
	bad := []struct {
		name string
		env  []string
		args []string
		want string // in stderr
	}{
		{"index = count", nil, []string{"rotate", "--now", "--shard", "3/3"}, "--shard must be i/n"},
		{"negative index", nil, []string{"rotate", "--now", "--shard", "-1/2"}, "--shard must be i/n"},
		{"zero count", nil, []string{"rotate", "--now", "--shard", "1/0"}, "--shard must be i/n"},
		{"not a shard", nil, []string{"rotate", "--now", "--shard", "abc"}, "--shard must be i/n"},
		{"no count", nil, []string{"rotate", "--now", "--shard", "1/"}, "--shard must be i/n"},
		{"two slashes", nil, []string{"rotate", "--now", "--shard", "1/3/5"}, "--shard must be i/n"},
		{"plan, index = count", nil, []string{"plan", "--shard", "3/3"}, "--shard must be i/n"},
		{"--shard and --shard-count disagree", nil, []string{"rotate", "--now", "--shard", "1/3", "--shard-count", "4"}, "disagree"},
		{"zero --shard-count", []string{jobCompletionEnv + "=0"}, []string{"rotate", "--now", "--shard-count", "0"}, "--shard-count must be at least 1"},
		{"--shard-count outside an Indexed Job", nil, []string{"rotate", "--now", "--shard-count", "3"}, jobCompletionEnv},
		{"Indexed Job without --shard-count", []string{jobCompletionEnv + "=1"}, []string{"rotate", "--now"}, "hint: pass --shard-count"},
		{"plan in an Indexed Job without --shard-count", []string{jobCompletionEnv + "=1"}, []string{"plan"}, "hint: pass --shard-count"},
		{"index beyond --shard-count", []string{jobCompletionEnv + "=3"}, []string{"rotate", "--now", "--shard-count", "3"}, "not an index below --shard-count 3"},
		{"Cloud Run index beyond count", []string{cloudRunTaskIndexEnv + "=3", cloudRunTaskCountEnv + "=3"}, []string{"rotate", "--now"}, "do not name a task"},
		{"Cloud Run index without count", []string{cloudRunTaskIndexEnv + "=1"}, []string{"rotate", "--now"}, "do not name a task"},
	}
	calls := fw.srv.CallsTotal()
	children := make([]*child, len(bad))
	for j, tc := range bad {
		children[j] = fw.start(t, tc.env, fw.config(tc.args...)...)
	}
	for j, tc := range bad {
		c := children[j]
		if code := fw.wait(t, c); code != 2 {
			t.Errorf("%s: exited %d, want 2:\n%s", tc.name, code, c.output())
			continue
		}
		stderr := c.stderr.String()
		if !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "keyrotate: error:") || !strings.Contains(stderr, "keyrotate: hint:") {
			t.Errorf("%s: stderr does not have the error (%q) and a hint:\n%s", tc.name, tc.want, stderr)
		}
	}
	if got := fw.srv.CallsTotal(); got != calls {
		t.Errorf("bad shards made %d API call(s), want none: %v", got-calls, fw.srv.CallCounts())
	}
	t.Logf("shard from --shard, Cloud Run and Kubernetes env; %d bad shards refused with exit 2 and no API call; %s",
		len(bad), time.Since(start).Round(10*time.Millisecond))
}

// webhookPath is where the test webhooks listen: a Slack-like path whose
// last part is the credential, which keyrotate must never print.
const (
	webhookToken = "SECRETTOKEN7f3a9c"
	webhookPath  = "/services/T000/B000/" + webhookToken
)

// webhook is an endpoint that records what it is sent and answers with
// the given statuses in turn, then 200.
type webhook struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	got      []webhookPost
}

type webhookPost struct {
	Method, Path, ContentType string
	Body                      []byte
}

func newWebhook(t *testing.T, statuses ...int) *webhook {
	h := &webhook{statuses: statuses}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got = append(h.got, webhookPost{r.Method, r.URL.Path, r.Header.Get("Content-Type"), body})
		status := http.StatusOK
		if len(h.statuses) > 0 {
			status, h.statuses = h.statuses[0], h.statuses[1:]
		}
		h.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *webhook) url() string { return h.URL + webhookPath }

// env gives the webhook to keyrotate as a job should: in the environment,
// not in its arguments.
func (h *webhook) env() []string { return []string{notifyWebhookEnv + "=" + h.url()} }

func (h *webhook) posts() []webhookPost {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

// webhookBody is the wire format of a webhook message, written out here so
// that a renamed field fails the test.
type webhookBody struct {
	Text   string `json:"text"`
	Blocks []struct {
		Type string `json:"type"`
		Text struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"text"`
	} `json:"blocks"`
	Keyrotate struct {
		Run      string     `json:"run"`
		Command  string     `json:"command"`
		ExitCode int        `json:"exit_code"`
		Summary  runSummary `json:"summary"`
		Failed   []struct {
			Slot     string `json:"slot"`
			Error    string `json:"error"`
			Hint     string `json:"hint"`
			ExitCode int    `json:"exit_code"`
		} `json:"failed"`
		Rotated []struct {
			Slot   string        `json:"slot"`
			NewKey rotate.KeyRef `json:"new_key"`
		} `json:"rotated"`
	} `json:"keyrotate"`
}

// checkPost checks one post's request and returns its decoded body.
func (fw *fleetWorld) checkPost(t *testing.T, p webhookPost) webhookBody {
	t.Helper()
	if p.Method != http.MethodPost || p.Path != webhookPath || p.ContentType != "application/json" {
		t.Errorf("webhook request: %s %s (Content-Type %q), want POST %s (application/json)", p.Method, p.Path, p.ContentType, webhookPath)
	}
	if err := fw.leaks("the webhook's body", string(p.Body)); err != nil {
		t.Error(err)
	}
	if strings.Contains(string(p.Body), webhookToken) {
		t.Errorf("the webhook's body holds its URL's token:\n%s", p.Body)
	}
	var b webhookBody
	if err := json.Unmarshal(p.Body, &b); err != nil {
		t.Fatalf("the webhook's body is not JSON: %v\n%s", err, p.Body)
	}
	if len(b.Blocks) == 0 || b.Blocks[0].Type != "section" || b.Blocks[0].Text.Text != b.Text {
		t.Errorf("the webhook's blocks %+v, want a section with the text", b.Blocks)
	}
	return b
}

// noWebhookURL checks that neither the webhook's URL nor its token is in
// text.
func noWebhookURL(t *testing.T, what, text string) {
	t.Helper()
	if strings.Contains(text, webhookToken) || strings.Contains(text, webhookPath) {
		t.Errorf("%s holds the webhook's URL:\n%s", what, text)
	}
}

var (
	runIDPattern       = regexp.MustCompile(`^[0-9]{14}-[a-z2-7]{8}$`) // rotate.NewID: also the rotation ids the run starts
	fingerprintPattern = regexp.MustCompile(`^sha256:[0-9a-f]{12}$`)
)

// TestRunRecordAndWebhook runs a fleet in which one slot fails, with
// --report and a webhook from the environment: the record and the post say
// what happened to every slot, with key names and fingerprints but no key
// string, and the webhook's URL (a credential) is printed nowhere. Then
// --notify-on, a webhook that fails twice, and one that cannot be reached.
func TestRunRecordAndWebhook(t *testing.T) {
	t.Parallel()
	start := time.Now()
	fw := newFleetWorld(t, emulator.Options{}, 3, 1)
	const failing = "fleet-p01-s000"
	// The canary works: a piece of a key string is found.
	if ks := fw.w.key.Reveal(); fw.leaks("a test string", "x"+ks[10:22]+"y") == nil {
		t.Fatal("leaks does not see a piece of a key string")
	}
	// Every slot of one project fails its live probe with SERVICE_DISABLED:
	// that project has one slot.
	gemini := "generativelanguage.googleapis.com"
	fw.srv.SetServiceEnabled(slotProject(failing), gemini, false)
	oldKeys := map[string][2]string{}
	for _, s := range fw.slots {
		name, fp := fw.oldKeyOf(s)
		oldKeys[s] = [2]string{name, fp}
	}

	hook := newWebhook(t)
	dir := t.TempDir()
	report := filepath.Join(dir, "run.json")
	c := fw.run(t, hook.env(), fw.config("rotate", "--now", "--report", report)...)
	if c.code != 3 {
		t.Fatalf("rotate exited %d, want 3 (a new key failed live verification):\n%s", c.code, c.output())
	}
	noWebhookURL(t, "stdout and stderr", c.output())
	r, raw := fw.readRecord(t, report)
	noWebhookURL(t, "the run record", string(raw))

	// The record's format: the fields other tools read.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"version", "run", "command", "config", "host", "started", "finished", "seconds", "exit_code",
		"error", "summary", "api_calls", "api_calls_total", "throttled", "quota_waits", "quota_wait_seconds", "slots"} {
		if _, ok := fields[f]; !ok {
			t.Errorf("the run record has no %q", f)
		}
	}
	if r.Version != 1 || !runIDPattern.MatchString(r.Run) || r.Command != "rotate" || r.Config != fw.w.config || r.ExitCode != 3 {
		t.Errorf("record: version %d, run %q, command %q, config %q, exit_code %d; want 1, a run id, rotate, %s, 3",
			r.Version, r.Run, r.Command, r.Config, r.ExitCode, fw.w.config)
	}
	if diff := cmp.Diff(runSummary{Slots: 4, Rotated: 3, Failed: 1}, r.Summary); diff != "" {
		t.Errorf("record summary (-want +got):\n%s", diff)
	}
	if r.Error != "1 of 4 slots failed" {
		t.Errorf("record error %q, want %q", r.Error, "1 of 4 slots failed")
	}
	var sum int64
	for _, n := range r.APICalls {
		sum += n
	}
	if r.APICallsTotal == 0 || sum != r.APICallsTotal || r.Throttled != 0 {
		t.Errorf("record: api_calls_total %d (by method: %d), throttled %d; want > 0, the same, 0", r.APICallsTotal, sum, r.Throttled)
	}
	if diff := cmp.Diff(fw.slots, slotNamesOf(r)); diff != "" {
		t.Errorf("record slots, in config order (-want +got):\n%s", diff)
	}
	for _, s := range r.Slots {
		if s.Project != slotProject(s.Slot) || s.APICalls == 0 {
			t.Errorf("record: slot %s: project %q, api_calls %d", s.Slot, s.Project, s.APICalls)
		}
		if s.Slot == failing {
			if s.Action != "failed" || s.ExitCode != 3 || !strings.Contains(s.Error, "SERVICE_DISABLED") || !strings.Contains(s.Hint, "enable the Generative Language API") || s.NewKey != nil {
				t.Errorf("record: the failed slot: %+v\nwant failed, exit_code 3, the SERVICE_DISABLED error, a hint to enable the API, no new key", s)
			}
			// Its new key was made, failed the probe and was deleted; the
			// old key and the secret are as they were.
			if got, want := fw.slotState(s.Slot), (slotState{Created: 1, Live: 1, Versions: 1}); got != want {
				t.Errorf("the failed slot: %+v, want %+v", got, want)
			}
			continue
		}
		newName, newFP := fw.newKeyOf(s.Slot)
		want := slotRecord{Action: "rotated", OldKey: &rotate.KeyRef{Name: oldKeys[s.Slot][0], Fingerprint: oldKeys[s.Slot][1]},
			NewKey: &rotate.KeyRef{Name: newName, Fingerprint: newFP}, Retired: "deleted"}
		got := slotRecord{Action: s.Action, OldKey: s.OldKey, NewKey: s.NewKey, Retired: s.Retired}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("record: slot %s (-want +got):\n%s", s.Slot, diff)
		}
		if s.NewKey == nil || !fingerprintPattern.MatchString(s.NewKey.Fingerprint) || s.RotationID == "" || s.ExitCode != 0 || s.Error != "" {
			t.Errorf("record: slot %s: %+v", s.Slot, s)
		}
	}

	posts := hook.posts()
	if len(posts) != 1 {
		t.Fatalf("the webhook got %d posts, want 1", len(posts))
	}
	b := fw.checkPost(t, posts[0])
	if !strings.Contains(b.Text, "FAILED") || !strings.Contains(b.Text, failing) || !strings.Contains(b.Text, "SERVICE_DISABLED") || !strings.Contains(b.Text, r.Run) {
		t.Errorf("the webhook's text does not name the failure, the failed slot and the run:\n%s", b.Text)
	}
	if b.Keyrotate.Run != r.Run || b.Keyrotate.Command != "rotate" || b.Keyrotate.ExitCode != 3 || b.Keyrotate.Summary != r.Summary {
		t.Errorf("the webhook's summary %+v does not match the record's (run %s, exit 3, %+v)", b.Keyrotate, r.Run, r.Summary)
	}
	if len(b.Keyrotate.Failed) != 1 || b.Keyrotate.Failed[0].Slot != failing || b.Keyrotate.Failed[0].ExitCode != 3 || b.Keyrotate.Failed[0].Hint == "" {
		t.Errorf("the webhook's failed slots %+v, want %s with exit 3 and a hint", b.Keyrotate.Failed, failing)
	}
	if len(b.Keyrotate.Rotated) != 3 {
		t.Errorf("the webhook lists %d rotated slots, want 3", len(b.Keyrotate.Rotated))
	}
	for _, k := range b.Keyrotate.Rotated {
		if name, fp := fw.newKeyOf(k.Slot); k.NewKey.Name != name || k.NewKey.Fingerprint != fp {
			t.Errorf("the webhook: slot %s new key %v, want %s %s", k.Slot, k.NewKey, name, fp)
		}
	}
	t.Logf("the failed run's webhook text:\n%s", b.Text)

	// The service enabled again: the failed slot rotates, the others were
	// just rotated (nothing to do). A success posts only with --notify-on always.
	fw.srv.SetServiceEnabled(slotProject(failing), gemini, true)
	c = fw.run(t, hook.env(), fw.config("rotate", "--now", "--notify-on", "failure", "--report", report)...)
	if c.code != 0 {
		t.Fatalf("rotate --notify-on failure exited %d:\n%s", c.code, c.output())
	}
	if n := len(hook.posts()); n != 1 {
		t.Errorf("a successful run with --notify-on failure posted %d time(s), want 0", n-1)
	}
	if r, _ := fw.readRecord(t, report); r.Summary != (runSummary{Slots: 4, Rotated: 1, NotDue: 3}) {
		t.Errorf("second run: summary %+v, want 1 rotated, 3 nothing to do", r.Summary)
	}
	c = fw.run(t, hook.env(), fw.config("rotate", "--now", "--notify-on", "always")...)
	if c.code != 0 {
		t.Fatalf("rotate --notify-on always exited %d:\n%s", c.code, c.output())
	}
	noWebhookURL(t, "stdout and stderr", c.output())
	if posts := hook.posts(); len(posts) != 2 {
		t.Errorf("a successful run with --notify-on always: %d post(s), want 1", len(posts)-1)
	} else if b := fw.checkPost(t, posts[1]); !strings.Contains(b.Text, "succeeded") || b.Keyrotate.ExitCode != 0 {
		t.Errorf("the success post: exit %d, text:\n%s", b.Keyrotate.ExitCode, b.Text)
	}

	// A webhook that answers 500 twice gets the message on the third
	// attempt, without changing the exit code or warning.
	flaky := newWebhook(t, http.StatusInternalServerError, http.StatusInternalServerError)
	c = fw.run(t, flaky.env(), fw.config("rotate", "--now", "--notify-on", "always")...)
	if c.code != 0 || strings.Contains(c.stderr.String(), "warning") {
		t.Errorf("rotate with a webhook that fails twice exited %d, want 0 without a warning:\n%s", c.code, c.output())
	}
	if posts := flaky.posts(); len(posts) != 3 {
		t.Errorf("the flaky webhook got %d post(s), want 3 (2 answered 500, then delivered)", len(posts))
	} else {
		for _, p := range posts {
			fw.checkPost(t, p)
			if string(p.Body) != string(posts[0].Body) {
				t.Errorf("a retried post differs from the first")
			}
		}
	}

	// A webhook that cannot be reached: a warning without its URL, and the
	// run's own exit code (3: the failing slot, rotated again with --again).
	gone := newWebhook(t)
	gone.Close()
	fw.srv.SetServiceEnabled(slotProject(failing), gemini, false)
	report = filepath.Join(dir, "gone.json")
	// (--retire now: the others' keys were probed live moments ago, which
	// the drain gate would count as traffic.)
	c = fw.run(t, gone.env(), fw.config("rotate", "--now", "--again", "--report", report, "--retire", "now")...)
	if c.code != 3 {
		t.Errorf("rotate with an unreachable webhook exited %d, want 3 (the rotation's):\n%s", c.code, c.output())
	}
	if !strings.Contains(c.stderr.String(), "keyrotate: warning: could not post to the webhook") {
		t.Errorf("no warning that the webhook could not be reached:\n%s", c.stderr.String())
	}
	noWebhookURL(t, "the warning", c.output())
	for _, l := range strings.Split(c.stderr.String(), "\n") {
		if strings.Contains(l, "warning") {
			t.Logf("the unreachable webhook's warning: %s", l)
		}
	}
	if strings.Contains(c.output(), gone.URL) {
		t.Errorf("the output holds the webhook's URL %s:\n%s", gone.URL, c.output())
	}
	if r, raw := fw.readRecord(t, report); r.ExitCode != 3 || r.Summary.Failed != 1 {
		t.Errorf("record with an unreachable webhook: exit_code %d, %d failed; want 3, 1", r.ExitCode, r.Summary.Failed)
	} else {
		noWebhookURL(t, "the run record", string(raw))
	}
	t.Logf("record, webhook, --notify-on, retried and unreachable webhooks: %s", time.Since(start).Round(10*time.Millisecond))
}

// logLine is one JSON log entry as Cloud Logging reads it.
type logLine struct {
	Severity string            `json:"severity"`
	Message  string            `json:"message"`
	Slot     string            `json:"slot"`
	Step     string            `json:"step"`
	Labels   map[string]string `json:"logging.googleapis.com/labels"`
}

// jsonLog parses stderr as JSON log lines; it fails on any other line.
func jsonLog(t *testing.T, stderr string) []logLine {
	t.Helper()
	var out []logLine
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		var e logLine
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Errorf("a stderr line is not a JSON object (%v): %s", err, l)
			continue
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		t.Errorf("no log lines on stderr")
	}
	return out
}

// TestJSONLogLabels checks the JSON logs a job's collector reads: every
// stderr line a JSON object with Cloud Logging's severity and message, and
// labels to filter by run (the run record's), command, shard and slot; and
// that --log-format auto picks JSON in a pod and text elsewhere.
func TestJSONLogLabels(t *testing.T) {
	t.Parallel()
	start := time.Now()
	fw := newFleetWorld(t, emulator.Options{}, 2, 3)
	for i := range 2 {
		if len(shardSlots(fw.slots, i, 2)) == 0 {
			t.Fatalf("shard %d/2 is empty", i)
		}
	}
	report := filepath.Join(t.TempDir(), "run.json")
	c := fw.run(t, nil, fw.config("--log-format", "json", "--log-level", "info", "rotate", "--now", "--shard", "0/2", "--report", report)...)
	if c.code != 0 {
		t.Fatalf("rotate exited %d:\n%s", c.code, c.output())
	}
	r, _ := fw.readRecord(t, report)
	want := shardSlots(fw.slots, 0, 2)
	slotsLogged := map[string]bool{}
	for _, e := range jsonLog(t, c.stderr.String()) {
		if e.Severity == "" || e.Message == "" {
			t.Errorf("log entry without severity or message: %+v", e)
		}
		l := e.Labels
		if l["run"] != r.Run || l["command"] != "rotate" || l["shard"] != "0/2" {
			t.Errorf("log entry labels %v, want run %s (the record's), command rotate, shard 0/2", l, r.Run)
		}
		if e.Slot != "" || e.Step != "" {
			// A step of a slot's rotation.
			if l["slot"] == "" || l["slot"] != e.Slot {
				t.Errorf("log entry of slot %q (step %q) has the slot label %q", e.Slot, e.Step, l["slot"])
			}
			if !slices.Contains(want, l["slot"]) {
				t.Errorf("log entry of slot %q, not in shard 0/2 %v", l["slot"], want)
			}
			slotsLogged[l["slot"]] = true
		}
	}
	if len(slotsLogged) != len(want) {
		t.Errorf("log entries name slots %v, want every slot of the shard %v", slotsLogged, want)
	}

	// auto: JSON in a pod (stderr is a pipe here, not a terminal) ...
	c = fw.run(t, []string{"KUBERNETES_SERVICE_HOST=10.0.0.1"}, fw.config("--log-format", "auto", "--log-level", "info", "rotate", "--now", "--shard", "1/2")...)
	if c.code != 0 {
		t.Fatalf("rotate with --log-format auto in a pod exited %d:\n%s", c.code, c.output())
	}
	runs := map[string]bool{}
	for _, e := range jsonLog(t, c.stderr.String()) {
		runs[e.Labels["run"]] = true
		if e.Labels["shard"] != "1/2" || e.Labels["command"] != "rotate" {
			t.Errorf("--log-format auto in a pod: labels %v, want shard 1/2, command rotate", e.Labels)
		}
	}
	if len(runs) != 1 || runs[r.Run] {
		t.Errorf("--log-format auto in a pod: runs %v, want one, not the first run's %s", runs, r.Run)
	}

	// ... and text elsewhere.
	// (--retire now: the keys were probed live moments ago, which the drain
	// gate would count as traffic.)
	c = fw.run(t, nil, fw.config("--log-format", "auto", "--log-level", "info", "rotate", "--now", "--again", "--shard", "1/2", "--retire", "now")...)
	if c.code != 0 {
		t.Fatalf("rotate with --log-format auto exited %d:\n%s", c.code, c.output())
	}
	lines := strings.Split(strings.TrimSpace(c.stderr.String()), "\n")
	for _, l := range lines {
		if !strings.HasPrefix(l, "time=") || !strings.Contains(l, "level=INFO") {
			t.Errorf("--log-format auto outside a job: stderr line is not a text log entry: %s", l)
		}
	}
	if len(lines) < 2 {
		t.Errorf("--log-format auto outside a job: %d log line(s), want a rotation's", len(lines))
	}
	t.Logf("JSON log labels, auto in a pod and outside: %s", time.Since(start).Round(10*time.Millisecond))
}

// withQuotas adds defaults.quotas.apikeys.writes to the world's config.
func (fw *fleetWorld) withQuotas(t *testing.T, writes int) {
	t.Helper()
	b, err := os.ReadFile(fw.w.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "defaults:\n", fmt.Sprintf("defaults:\n  quotas:\n    apikeys:\n      writes: %d\n", writes), 1)
	if cfg == string(b) {
		t.Fatal("the config has no defaults")
	}
	if err := os.WriteFile(fw.w.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFleetQuotaNo429 checks that a fleet run keeps under the projects'
// API Keys write quota instead of being answered 429, at quotas small
// enough for a test: the emulator enforces W writes per minute per
// project, and the config tells keyrotate the project's quota
// (defaults.quotas).
//
// keyrotate's pacer counts in real minutes (the emulator can scale time,
// the CLI cannot), so a run that needs more than one minute's quota waits
// about a minute. The test does not wait that long: the runs that need to
// wait are cut short by --timeout (30s), which is enough to see what matters —
// that they waited for quota instead of calling (quota_waits, no 429),
// and that the config's number is what they paced at (the same run with a
// quota above the emulator's limit is answered 429). Each emulator runs
// on a clock frozen at the start of a minute, so that its quota window
// cannot roll over during a run and admit calls it should have refused,
// and a refused call's RetryInfo always asks for a minute (more than the
// run has left: it is not retried, and its retry does not wait for quota).
// The time limit is the time the rotations have to reach their third
// write: under -race on a loaded 2-core machine (CI) a run with 5s did
// not reach it (0 quota waits, exit 4 at the limit). A run that reaches it
// ends there: answered 429, or waiting for quota until the limit.
func TestFleetQuotaNo429(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// limit is the emulator's API Keys write quota, config the
		// config's; slots is the size of the fleet (one project; each
		// rotation writes twice: create, delete).
		limit, config, slots int
		timeout              string
		// wantWaits: keyrotate waited for quota; wantThrottled: the
		// emulator answered 429.
		wantCode                 int
		wantWaits, wantThrottled bool
	}{
		// 30 writes under a quota of 40: no wait, no 429, done.
		{name: "fits", limit: 40, config: 40, slots: 15, timeout: "1m", wantCode: 0},
		// 4 writes under a quota of 2 that the config states: the third
		// write waits for the next minute instead of being refused; the
		// run stops there, safely (exit 4: both keys work).
		{name: "paced at the config's quota", limit: 2, config: 2, slots: 2, timeout: "30s", wantCode: 4, wantWaits: true},
		// The same with a config that overstates the quota: the third
		// write is sent and refused.
		{name: "config above the project's quota", limit: 2, config: 4, slots: 2, timeout: "30s", wantCode: 4, wantThrottled: true},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			fw := newFleetWorld(t, emulator.Options{
				Clock:       fake.NewManualClock(time.Now().Truncate(time.Minute)),
				Quotas:      map[string]emulator.Quota{"apikeys": {Writes: tc.limit}},
				QuotaWindow: time.Minute,
			}, 1, tc.slots)
			fw.withQuotas(t, tc.config)
			report := filepath.Join(t.TempDir(), "run.json")
			c := fw.run(t, nil, fw.config("--timeout", tc.timeout, "rotate", "--now", "--parallel", fmt.Sprint(tc.slots+1), "--report", report)...)
			elapsed := time.Since(start)
			if c.code != tc.wantCode {
				t.Errorf("rotate exited %d, want %d:\n%s", c.code, tc.wantCode, c.output())
			}
			r, _ := fw.readRecord(t, report)
			_, writes, _ := fw.srv.QuotaUsage("apikeys", "fleet-p00")
			if writes > tc.limit {
				t.Errorf("the emulator admitted %d writes in fleet-p00 in one window, over its quota of %d", writes, tc.limit)
			}
			if got := fw.srv.Throttled() > 0; got != tc.wantThrottled {
				t.Errorf("the emulator answered 429 %d time(s); want some: %v", fw.srv.Throttled(), tc.wantThrottled)
			}
			if got := r.Throttled > 0; got != tc.wantThrottled || r.Throttled != int64(fw.srv.Throttled()) {
				t.Errorf("the record says %d call(s) were answered 429, the emulator %d", r.Throttled, fw.srv.Throttled())
			}
			if got := r.QuotaWaits > 0; got != tc.wantWaits {
				t.Errorf("the record says %d call(s) waited for quota (%.1fs); want some: %v", r.QuotaWaits, r.QuotaWaitSeconds, tc.wantWaits)
			}
			if r.QuotaWaitSeconds > float64(r.QuotaWaits)*r.Seconds {
				t.Errorf("the record says %d call(s) waited %.1fs for quota in all, in a run of %.1fs: more than each waiting the whole run",
					r.QuotaWaits, r.QuotaWaitSeconds, r.Seconds)
			}
			for _, s := range r.Slots {
				switch {
				case s.Action == "rotated":
					if got := fw.slotState(s.Slot); got != oneRotation {
						t.Errorf("slot %s: %+v, want %+v", s.Slot, got, oneRotation)
					}
				case tc.wantCode == 0:
					t.Errorf("slot %s: %s (%s), want rotated", s.Slot, s.Action, s.Error)
				case s.ExitCode != 4:
					t.Errorf("slot %s: %s with exit %d (%s), want rotated or stopped part-way (4)", s.Slot, s.Action, s.ExitCode, s.Error)
				default:
					// Stopped part-way, safe: both keys work.
					if err := fw.bothKeysWork(s.Slot); err != nil {
						t.Error(err)
					}
				}
			}
			t.Logf("emulator quota %d writes/min, config %d, %d slots (%d writes): exit %d, %d writes admitted, %d answered 429, %d quota waits (%.1fs waited); %s",
				tc.limit, tc.config, tc.slots, 2*tc.slots, c.code, writes, fw.srv.Throttled(), r.QuotaWaits, r.QuotaWaitSeconds, elapsed.Round(10*time.Millisecond))
		})
	}
}

// bothKeysWork checks a slot stopped part-way: its secret's latest
// version holds a key that works, and so does the key seeded for it.
func (fw *fleetWorld) bothKeysWork(slot string) error {
	vs := fw.srv.SecretVersions(slotSecret(slot))
	p, _ := fw.srv.SecretPayload(vs[len(vs)-1].GetName())
	if !fw.srv.KeyWorks(string(p)) {
		return fmt.Errorf("slot %s: the secret's latest version holds a key that does not work", slot)
	}
	for _, k := range fw.srv.Keys(slotProject(slot), true) {
		if strings.HasSuffix(k.Name, "/keys/"+slot+"-2026") && !fw.srv.KeyWorks(k.KeyString) {
			return fmt.Errorf("slot %s stopped part-way, but its old key no longer works", slot)
		}
	}
	return nil
}
