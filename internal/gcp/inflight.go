package gcp

import (
	"container/heap"
	"context"
	"sync"
)

// InFlightPerCPU is how many calls a Meter lets go at once for each CPU
// the process may use (GOMAXPROCS), unless told otherwise
// (Meter.InFlight). A fleet's first burst is bound by CPU, not by the
// network: keyrotate spends 100 to 200 µs of CPU a call (100 to 125 in
// the 100 × 100 fleet's bursts at the last measure, 150 to 200 in earlier
// ones), so a CPU completes some 5,000 to 10,000 calls a second at
// most, and at 50 to 150 ms a call (Secret Manager's and the API Keys
// API's usual answers) 250 to 1,500 calls in flight keep it busy. More
// only queue at the CPU, each holding its request, its HTTP/2 stream and
// a transport goroutine meanwhile. Measured with 100 × 100 on 2 CPUs (BenchmarkFleet,
// BenchmarkFleetShards), a bound of 2,000 to none left the run's wall
// time as it was (1.16-1.17 × the bound) and 1,000 to 800 made it longer
// (1.18-1.22): the emulator answers in 100 ms, so 800 calls in flight
// carry 8,000 calls a second, about what the 2 CPUs serve. Memory went
// the other way: 29.8 KB a rotation in flight at the peak with no bound,
// 27.0 KB at 2,000, 24.5 KB at 800; and in 4 shard processes of 2,500
// rotations, 39.1 KB with no bound, 35.5 KB at 1,000 a shard, 28.0-29.6
// KB at 400.
const InFlightPerCPU = 800

// inFlight bounds the calls a Meter lets go at once, and chooses which
// waiting call goes next when a place frees:
//
//   - first a call that starts a rotation (up to its CreateKey; see
//     urgentMethods) before one that continues it: until its new key is
//     made, a rotation's clock has not started (the key takes a minute or
//     more to work), while the calls after it can wait for the others'
//     starts at no cost to the run's end;
//   - then the call of the slot that has made the most calls: rotations
//     under way go on before others start, so that the new keys are made
//     one after another through the burst, not all at its end, and work
//     one after another a minute later;
//   - then the call that came first.
//
// No call waits for ever: a rotation's calls before its CreateKey are few,
// so the urgent lane empties, and a slot's count only grows while its
// calls go.
type inFlight struct {
	mu      sync.Mutex
	free    int
	seq     uint64
	waiting waiters
}

// waiter is a call waiting for a place: ready is closed when it has one.
type waiter struct {
	ready  chan struct{}
	urgent bool
	made   int64  // calls its slot had made
	seq    uint64 // arrival
	index  int    // in the heap; -1 once out of it
}

func newInFlight(n int) *inFlight {
	if n <= 0 {
		return nil
	}
	return &inFlight{free: n}
}

// acquire waits for a place, or ctx's end. A nil *inFlight bounds nothing.
func (l *inFlight) acquire(ctx context.Context, urgent bool) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	if l.free > 0 {
		// Places are free only while no one waits (release hands a
		// place to a waiter before it frees one).
		l.free--
		l.mu.Unlock()
		return nil
	}
	w := &waiter{ready: make(chan struct{}), urgent: urgent, seq: l.seq}
	l.seq++
	if c, ok := ctx.Value(slotCallsKey{}).(*SlotCalls); ok {
		w.made = c.Calls.Load()
	}
	heap.Push(&l.waiting, w)
	l.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		if w.index < 0 {
			// Handed a place as ctx ended: pass it on.
			l.mu.Unlock()
			l.release()
		} else {
			heap.Remove(&l.waiting, w.index)
			l.mu.Unlock()
		}
		return ctx.Err()
	}
}

// release frees a place: to the first waiter, or to the pool.
func (l *inFlight) release() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.waiting) == 0 {
		l.free++
		return
	}
	close(heap.Pop(&l.waiting).(*waiter).ready)
}

// waiters is a heap of waiting calls, the next to go first
// (container/heap).
type waiters []*waiter

func (h waiters) Len() int { return len(h) }

func (h waiters) Less(i, j int) bool {
	a, b := h[i], h[j]
	switch {
	case a.urgent != b.urgent:
		return a.urgent
	case a.made != b.made:
		return a.made > b.made
	}
	return a.seq < b.seq
}

func (h waiters) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *waiters) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}

func (h *waiters) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	w.index = -1
	*h = old[:len(old)-1]
	return w
}
