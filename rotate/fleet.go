package rotate

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/keyrotate/keyrotate/internal/gcp"
)

// Fleet rotates many slots at once: up to Parallel rotations run together,
// so that the slowest step — waiting for new keys to propagate — overlaps
// across slots, while the Rotator's clients pace their calls under each
// project's quota (see Meter and Pacer). Each slot is rotated by
// Rotator.Rotate, under its own lease, exactly as alone.
//
// Memory grows with Parallel, not with the number of slots: outcomes are
// handed to Done as they end and not kept.
type Fleet struct {
	Rotator *Rotator
	// Parallel is how many slots rotate at once (default 1).
	Parallel int
	// Start, when set, is called as a slot's rotation starts.
	Start func(*Slot)
	// Done, when set, is called with each slot's outcome as it ends. Both
	// are called from the worker goroutines, concurrently.
	Done func(Outcome)
}

// Outcome is how one slot's rotation in a fleet run ended.
type Outcome struct {
	Slot     *Slot
	Result   *Result // nil when Err is set
	Err      error
	Started  time.Time
	Finished time.Time
	// Calls is how many API calls were made for the slot and how many of
	// them were answered 429 (counted by the clients' Meter).
	Calls, Throttled int64
}

// Run rotates slots with opts, Parallel at a time, and returns when all
// have ended or ctx is done (slots not started by then end with ctx's
// error). Slots are taken in an order that interleaves projects, so that
// one project's quota does not hold up the others.
func (f *Fleet) Run(ctx context.Context, slots []*Slot, opts Options) {
	n := max(f.Parallel, 1)
	w := &fleetWork{f: f, ctx: f.Rotator.withSharedAPIs(ctx), opts: opts, slots: make(chan *Slot)}
	var wg sync.WaitGroup
	for range min(n, len(slots)) {
		wg.Go(w.loop)
	}
	for _, s := range Interleave(slots) {
		w.slots <- s
	}
	close(w.slots)
	wg.Wait()
}

// fleetWork is what a Run's workers share: each worker's goroutine starts
// from a method value of it (16 bytes), not a closure holding the Fleet,
// the context and the Options (112 bytes; a worker per rotation in flight:
// TestFleetHeapPerRotation).
type fleetWork struct {
	f     *Fleet
	ctx   context.Context
	opts  Options
	slots chan *Slot
}

func (w *fleetWork) loop() {
	for s := range w.slots {
		w.f.one(w.ctx, s, w.opts)
	}
}

// one rotates s and hands its outcome to Done. Its frame, as Rotate's,
// stays on the stack under the whole rotation: the outcome is built in
// done, after it (see Rotator.rotate).
func (f *Fleet) one(ctx context.Context, s *Slot, opts Options) {
	started := time.Now()
	if f.Start != nil {
		f.Start(s)
	}
	if ctx.Err() != nil {
		f.done(s, started, nil, notStarted(ctx, s), nil)
		return
	}
	calls := new(gcp.SlotCalls)
	res, err := f.Rotator.Rotate(gcp.WithSlotCalls(ctx, calls), s, opts)
	f.done(s, started, res, err, calls)
}

// notStarted is the error of a slot whose turn came after ctx ended.
func notStarted(ctx context.Context, s *Slot) error {
	return withNext(fmt.Errorf("slot %s: not started: %w", s.Name, context.Cause(ctx)),
		"the run ended (its time limit, or interrupted) before this slot's turn; nothing was changed: run again with more time, or more slots at once",
		Next{Action: NextMoreTime, Slot: s.Name})
}

// done hands Done the outcome of s (calls nil: none made).
//
//go:noinline
func (f *Fleet) done(s *Slot, started time.Time, res *Result, err error, calls *gcp.SlotCalls) {
	o := Outcome{Slot: s, Result: res, Err: err, Started: started, Finished: time.Now()}
	if calls != nil {
		o.Calls, o.Throttled = calls.Calls.Load(), calls.Throttled.Load()
	}
	if f.Done != nil {
		f.Done(o)
	}
}

// Interleave orders slots round-robin by project, keeping the order within
// each project: p1/a, p2/a, p1/b, p2/b, ...
func Interleave(slots []*Slot) []*Slot {
	var projects []string
	by := map[string][]*Slot{}
	for _, s := range slots {
		if _, ok := by[s.Project]; !ok {
			projects = append(projects, s.Project)
		}
		by[s.Project] = append(by[s.Project], s)
	}
	out := make([]*Slot, 0, len(slots))
	for i := 0; len(out) < len(slots); i++ {
		for _, p := range projects {
			if i < len(by[p]) {
				out = append(out, by[p][i])
			}
		}
	}
	return out
}

// Shard reports which of n shards (0-based) a slot belongs to: a stable
// hash (FNV-1a, 32 bits) of its name, so that every process of a sharded
// job, on any machine and any version, agrees without talking.
func Shard(slot string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(slot))
	return int(h.Sum32() % uint32(n))
}
