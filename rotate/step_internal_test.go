package rotate

import (
	"log/slog"
	"testing"
)

// The step names are output (the CLI's step column, logs) and their
// values must not change; the rotation's steps run in this order.
func TestStepNames(t *testing.T) {
	for _, c := range []struct {
		step Step
		want string
	}{
		{StepPreflight, "preflight"},
		{StepLock, "lock"},
		{StepCreate, "create"},
		{StepVerify, "verify"},
		{StepDistribute, "distribute"},
		{StepReadback, "readback"},
		{StepRetire, "retire"},
		{StepDone, "done"},
		{StepStop, "stop"},
		{StepObtain, "obtain"},
		{StepFinalize, "finalize"},
		{StepLeaked, "leaked"},
		{StepRevoke, "revoke"},
	} {
		if string(c.step) != c.want {
			t.Errorf("step %q, want %q", c.step, c.want)
		}
	}
	var got []Step
	for _, s := range (&run{kind: KindRotate}).steps() {
		got = append(got, s.name)
	}
	want := []Step{StepCreate, StepVerify, StepDistribute, StepReadback, StepRetire}
	if len(got) != len(want) {
		t.Fatalf("a rotation's steps past the lock = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("a rotation's steps past the lock = %v, want %v", got, want)
			break
		}
	}
}

// Finalize's actions are JSON values (finalize --output json).
func TestFinalizeActions(t *testing.T) {
	for _, c := range []struct {
		action FinalizeAction
		want   string
	}{
		{FinalizeDeleted, "deleted"},
		{FinalizeWouldDelete, "would delete"},
		{FinalizeKept, "kept"},
		{FinalizeSkipped, "skipped"},
	} {
		if string(c.action) != c.want {
			t.Errorf("action %q, want %q", c.action, c.want)
		}
	}
}

// TestRotatorLogAllocs: a Rotator without a Log hands out the one discard
// logger; it made a new one, a heap object, each time a rotation asked
// (each step, each call's retry policy: about 3 a rotation).
func TestRotatorLogAllocs(t *testing.T) {
	r := &Rotator{}
	if got := testing.AllocsPerRun(100, func() { logSink = r.log() }); got != 0 {
		t.Errorf("Rotator.log allocated %.0f objects, want 0", got)
	}
}

// logSink keeps what TestRotatorLogAllocs gets, as a rotation keeps it.
var logSink *slog.Logger
