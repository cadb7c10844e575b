package rotate

import "context"

// SetRetireLimit sets how many rotations of r may retire at once past
// their drain gate (retireLimit); call it before r's first rotation.
func SetRetireLimit(r *Rotator, n int) { r.retiring.max = n }

// RetireWaiting returns how many rotations of r wait for a turn to retire.
func RetireWaiting(r *Rotator) int { return int(r.retiring.waiting.Load()) }

// RetireTurnsTaken returns how many of r's turns to retire are taken.
func RetireTurnsTaken(r *Rotator) int { return len(r.retiring.sem) }

// HoldRetireTurns takes n of r's turns to retire, as n rotations retiring
// would, and returns the function that gives them back.
func HoldRetireTurns(r *Rotator, n int) (give func()) {
	for range n {
		if err := r.retiring.acquire(context.Background()); err != nil {
			panic(err)
		}
	}
	return func() {
		for range n {
			r.retiring.release()
		}
	}
}
