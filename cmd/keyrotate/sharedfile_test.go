package main

// Slots whose dotenv targets share one file: an app's .env holding several
// API keys. Every slot rotates its own variable; the writes of one run and
// of separate processes are serialised by the file's lock and each merges
// its variable into the file's latest content, so none writes back another
// slot's old key — which would then be deleted while the file holds it.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/targets"
)

const sharedProject = "shared-p"

// sharedWorld is the demo world plus n slots with one dotenv target each,
// all in the file shared.env, in the config shared.yaml.
type sharedWorld struct {
	*crashWorld
	slots  []string
	config string
	env    string
}

func newSharedWorld(t *testing.T, n int) *sharedWorld {
	t.Helper()
	sw := &sharedWorld{}
	cw := newCrashWorldWith(t, emulator.Options{}, func(srv *emulator.Server, w *seeded) error {
		srv.AddProject(sharedProject, 710000000000)
		sw.config = filepath.Join(w.dir, "shared.yaml")
		sw.env = filepath.Join(w.dir, "shared.env")
		cfg := "version: 1\ndefaults:\n  propagation_timeout: 2m\n  usage_delay: 0s # the emulator reports calls at once\nslots:\n"
		env := "# several Gemini keys of one app, rotated by keyrotate\nAPP_ENV=production\n"
		for i := range n {
			name := fmt.Sprintf("shared-s%02d", i)
			_, ks, err := seedSlot(srv, sharedProject, name+"-2026", name, "Gemini "+name, "gemini@"+sharedProject+".iam.gserviceaccount.com")
			if err != nil {
				return err
			}
			cfg += fmt.Sprintf("  - name: %s\n    project: %s\n    secret: projects/%s/secrets/%s\n    verify: gemini\n"+
				"    targets:\n      - type: dotenv\n        path: shared.env\n        var: %s\n",
				name, sharedProject, sharedProject, name, sharedVar(name))
			env += fmt.Sprintf("%s=%s   # %s\n", sharedVar(name), ks, name)
			sw.slots = append(sw.slots, name)
		}
		if err := os.WriteFile(sw.config, []byte(cfg), 0o600); err != nil {
			return err
		}
		return os.WriteFile(sw.env, []byte(env+"LOG_LEVEL=info\n"), 0o600)
	})
	cw.env = fleetEnvCleared
	sw.crashWorld = cw
	return sw
}

func sharedVar(slot string) string {
	return "KEY_" + strings.ToUpper(strings.ReplaceAll(slot, "-", "_"))
}

// check reports every variable of the shared file that does not hold its
// slot's live key as the slot's secret does, and every slot that kept more
// than one live key (a rotation that did not finish).
func (sw *sharedWorld) check() []string {
	var bad []string
	data, err := os.ReadFile(sw.env)
	if err != nil {
		return []string{err.Error()}
	}
	f := targets.ParseEnv(data)
	keys := map[string]bool{} // fingerprint -> deleted
	names := map[string]string{}
	for _, k := range sw.srv.Keys(sharedProject, true) {
		keys[secret.Fingerprint(k.KeyString)] = k.DeleteTime != ""
		names[secret.Fingerprint(k.KeyString)] = k.Name
	}
	for _, slot := range sw.slots {
		v, n := f.Lookup(sharedVar(slot))
		fp := secret.Fingerprint(v)
		deleted, known := keys[fp]
		switch {
		case n != 1:
			bad = append(bad, fmt.Sprintf("%s is defined %d times", sharedVar(slot), n))
		case !known:
			bad = append(bad, fmt.Sprintf("%s holds %s, no key of the emulator", sharedVar(slot), fp))
		case deleted:
			bad = append(bad, fmt.Sprintf("%s holds the DELETED key %s (%s)", sharedVar(slot), names[fp], fp))
		}
		vs := sw.srv.SecretVersions("projects/" + sharedProject + "/secrets/" + slot)
		if p, _ := sw.srv.SecretPayload(vs[len(vs)-1].GetName()); secret.Fingerprint(string(p)) != fp {
			bad = append(bad, fmt.Sprintf("%s holds %s but the secret of %s holds %s", sharedVar(slot), fp, slot, secret.Fingerprint(string(p))))
		}
		live := 0
		for _, k := range sw.srv.Keys(sharedProject, false) {
			if strings.Contains(k.Name, "/keys/"+slot+"-") {
				live++
			}
		}
		if live != 1 {
			bad = append(bad, fmt.Sprintf("slot %s has %d live keys, want 1", slot, live))
		}
	}
	for _, v := range []string{"APP_ENV", "LOG_LEVEL"} {
		if _, n := f.Lookup(v); n != 1 {
			bad = append(bad, fmt.Sprintf("%s is defined %d times, want 1", v, n))
		}
	}
	return bad
}

// TestSlotsShareOneDotEnv rotates many slots whose variables live in one
// .env file, with more workers than slots, three rounds: one process, then
// two processes at once (two shards), then one again. Every round must
// converge (exit 0) and leave every variable holding its slot's live key:
// never a deleted one. On the code before the file lock and the merge,
// writes based on stale reads refused (exit 4, no convergence) or put back
// old keys that were then deleted.
func TestSlotsShareOneDotEnv(t *testing.T) {
	t.Parallel()
	const n = 12
	sw := newSharedWorld(t, n)
	// Rounds 2 and 3 retire at once: the keys of the round before were
	// probed live moments ago, which the drain gate counts as traffic.
	rounds := [][][]string{
		{{"--config", sw.config, "rotate", "--now", "--parallel", "20"}},
		{
			{"--config", sw.config, "rotate", "--now", "--again", "--parallel", "20", "--shard", "0/2", "--retire", "now"},
			{"--config", sw.config, "rotate", "--now", "--again", "--parallel", "20", "--shard", "1/2", "--retire", "now"},
		},
		{{"--config", sw.config, "rotate", "--now", "--again", "--parallel", "8", "--retire", "now"}},
	}
	for r, procs := range rounds {
		var wg sync.WaitGroup
		children := make([]*child, len(procs))
		for i, args := range procs {
			children[i] = sw.start(args...)
		}
		for _, c := range children {
			wg.Add(1)
			go func() { defer wg.Done(); c.wait(t) }()
		}
		wg.Wait()
		for i, c := range children {
			for _, k := range sw.srv.Keys(sharedProject, true) {
				if strings.Contains(c.output(), k.KeyString[4:16]) {
					t.Errorf("round %d, process %d: the key string of %s appears in keyrotate's output", r+1, i, k.Name)
				}
			}
			if c.code != 0 {
				t.Errorf("round %d, process %d (%s) exited %d, want 0:\n%s", r+1, i, strings.Join(procs[i][2:], " "), c.code, c.stderr.String())
			}
		}
		for _, b := range sw.check() {
			t.Errorf("after round %d: %s", r+1, b)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	if got, want := sw.srv.Calls("apikeys.CreateKey"), 3*n; got != want {
		t.Errorf("CreateKey calls = %d, want %d (one per slot and round)", got, want)
	}
}
