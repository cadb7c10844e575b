package rotate_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/targets"
)

// TestManyTargetsStayUnderSecretWriteRate rotates a slot with many targets,
// two of them Secret Manager secrets (so the slot's own writes and the
// targets' versions interleave), against an emulator that refuses writes
// beyond Secret Manager's 2 a second on one secret: the rotation is never
// refused (the emulator answered no 429), so it kept the rate.
func TestManyTargetsStayUnderSecretWriteRate(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	for i := range 20 {
		p := filepath.Join(dir, fmt.Sprintf("app%02d.env", i))
		if err := os.WriteFile(p, []byte("GEMINI_API_KEY="+w.oldKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		w.slot.Targets = append(w.slot.Targets, targets.NewDotEnv(p, "GEMINI_API_KEY"))
	}
	for _, id := range []string{"mirror-a", "mirror-b"} {
		name, err := w.srv.SeedSecret(project, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.srv.SeedSecretVersion(name, []byte(w.oldKey)); err != nil {
			t.Fatal(err)
		}
		w.slot.Targets = append(w.slot.Targets, targets.NewSecretManager(w.r.Secrets, name))
	}
	w.srv.ResetCalls()
	start := time.Now()
	res, err := w.rotate(rotate.Options{})
	took := time.Since(start)
	if err != nil || !res.Rotated {
		t.Fatalf("Rotate = %+v, %v; want rotated", res, err)
	}
	if n := w.srv.Throttled(); n != 0 {
		t.Errorf("the emulator refused %d writes for the per-secret rate, want 0", n)
	}
	calls := w.srv.CallCounts()
	writes := calls["secretmanager.UpdateSecret"] + calls["secretmanager.AddSecretVersion"]
	t.Logf("%d targets: %d writes to secrets (%d UpdateSecret on the slot's secret), %d version state changes, rotation took %s",
		len(w.slot.Targets), writes, calls["secretmanager.UpdateSecret"], calls["secretmanager.DisableSecretVersion"], took.Round(time.Millisecond))
}
