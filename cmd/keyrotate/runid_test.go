package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

// TestOneRunID follows one run across everything that names it: the lease
// holder and the rotation record on each slot's secret while the run holds
// it, the new keys' ids, the run record (--report), every JSON log entry's
// run label, the totals line, and status for a rotation that run left
// unfinished. One id, everywhere.
func TestOneRunID(t *testing.T) {
	t.Parallel()
	fw := newFleetWorld(t, emulator.Options{}, 1, 2)

	// While a slot's new key is created, its secret holds the run's lease.
	type held struct{ id, holder string }
	var (
		mu    sync.Mutex
		seen  []held
		names = map[string]string{} // secret name by slot
	)
	for _, s := range fw.slots {
		names[s] = slotSecret(s)
	}
	fw.srv.SetHook("apikeys.CreateKey", func(context.Context, int) error {
		mu.Lock()
		defer mu.Unlock()
		for _, name := range names {
			sec, ok := fw.srv.Secret(name)
			if !ok || sec.Annotations["keyrotate.rotation"] == "" {
				continue
			}
			var rec struct {
				ID     string `json:"id"`
				Holder struct {
					Run string `json:"run"`
				} `json:"holder"`
			}
			if err := json.Unmarshal([]byte(sec.Annotations["keyrotate.rotation"]), &rec); err != nil {
				t.Errorf("record on %s: %v", name, err)
			}
			seen = append(seen, held{rec.ID, rec.Holder.Run})
		}
		return nil
	})
	report := filepath.Join(t.TempDir(), "run.json")
	c := fw.run(t, nil, fw.config("--log-format", "json", "--log-level", "info", "rotate", "--now", "--parallel", "1", "--report", report)...)
	fw.srv.SetHook("apikeys.CreateKey", nil)
	if c.code != 0 {
		t.Fatalf("rotate exited %d:\n%s", c.code, c.output())
	}
	r, _ := fw.readRecord(t, report)
	run := r.Run
	if run == "" {
		t.Fatalf("the run record names no run")
	}
	mu.Lock()
	if len(seen) == 0 {
		t.Errorf("no rotation record seen while keys were created")
	}
	for _, h := range seen {
		if h.id != run || h.holder != run {
			t.Errorf("rotation record id %q held by run %q while the run record says run %q", h.id, h.holder, run)
		}
	}
	mu.Unlock()
	for _, s := range r.Slots {
		if s.RotationID != run {
			t.Errorf("slot %s: rotation id %q, want the run's %q", s.Slot, s.RotationID, run)
		}
		if s.NewKey == nil || !strings.HasSuffix(s.NewKey.Name, "-"+run) {
			t.Errorf("slot %s: new key %v, want a key id ending in the run id %s", s.Slot, s.NewKey, run)
		}
	}
	for _, e := range jsonLog(t, c.stderr.String()) {
		if e.Labels["run"] != run {
			t.Errorf("log entry %q has run label %q, want %q", e.Message, e.Labels["run"], run)
		}
	}
	if !strings.Contains(c.stdout.String(), "(run "+run+")") {
		t.Errorf("stdout does not end with the run id %s in its totals:\n%s", run, c.stdout.String())
	}

	// A run stopped part-way (its final record write refused): status names
	// the unfinished rotation by the id that run's record and logs carry.
	fw.srv.Fail("secretmanager.UpdateSecret", fw.srv.Calls("secretmanager.UpdateSecret")+2, fake.Fault{Code: codes.PermissionDenied})
	c = fw.run(t, nil, fw.config("--log-format", "json", "rotate", "--now", "--again", "--parallel", "1", "--slot", "gemini-prod", "--report", report)...)
	if c.code != exitPartWay {
		t.Fatalf("rotate with a refused record write exited %d, want %d:\n%s", c.code, exitPartWay, c.output())
	}
	r, _ = fw.readRecord(t, report)
	st := fw.run(t, nil, fw.config("status", "--slot", "gemini-prod")...)
	if !strings.Contains(st.stdout.String(), r.Run) {
		t.Errorf("status does not name the stopped run %s:\n%s", r.Run, st.stdout.String())
	}
}
