//go:build fleetgate

package rotate_test

import (
	"fmt"
	"time"

	"github.com/keyrotate/keyrotate/rotate"
)

// The drain gate's parts of the fleet benchmark (fleetGate): they need
// the gate's branch merged. Once it is, fold them into
// fleet_bench_test.go and drop fleet_nogate_test.go and the tag.

const gateBuilt = true

func setDrainPoll(r *rotate.Rotator, d time.Duration) { r.DrainPoll = d }

// gatePassed fails a rotation whose old key was not deleted by a passing
// gate (the fleet's old keys are never called).
func gatePassed(o rotate.Outcome) error {
	if d := o.Result.Drain; d == nil || d.Outcome != rotate.DrainQuiet {
		return fmt.Errorf("%s: the drain gate did not pass (%+v)", o.Slot.Name, d)
	}
	return nil
}
