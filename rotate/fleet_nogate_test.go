//go:build !fleetgate

package rotate_test

import (
	"time"

	"github.com/keyrotate/keyrotate/rotate"
)

// Without the drain gate's branch (see fleet_gate_test.go):
// KEYROTATE_FLEET_GATE=1 fails the benchmark.

const gateBuilt = false

func setDrainPoll(*rotate.Rotator, time.Duration) {}

func gatePassed(rotate.Outcome) error { return nil }
