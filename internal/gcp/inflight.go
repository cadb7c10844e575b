package gcp

import (
	"context"
	"sync"
)

// DefaultInFlight is how many calls a Meter lets go at once unless told
// otherwise (Meter.InFlight). A fleet's first burst is bound by CPU, not
// by the network: keyrotate spends about 170 µs of CPU a call, so 2 cores
// complete some 10,000 calls a second at most, and at Google's 100 to 300
// ms a call about 1,000 to 3,000 calls in flight keep them busy. More
// only queue at the cores, each holding its request, its HTTP/2 stream
// and a transport goroutine meanwhile.
const DefaultInFlight = 2000

// inFlight bounds the calls a Meter lets go at once, and chooses which
// waiting call goes next: a call that starts a rotation before one that
// continues it (see urgentMethods). A fleet run starts every rotation
// together; until its new key is made, a rotation's clock has not
// started (the key takes a minute or more to work), while the calls
// after it can wait for the others' starts at no cost to the run's end.
//
// Within a lane, calls go in the order they came (a bound that let later
// calls overtake could starve a rotation until its context ends).
type inFlight struct {
	mu    sync.Mutex
	free  int
	lanes [2]queue // urgent, then the rest
}

// queue is a FIFO of waiters, from head on.
type queue struct {
	w    []*waiter
	head int
}

// waiter is a call waiting for a place: ready is closed when it has one.
type waiter struct {
	ready chan struct{}
	gone  bool // its caller stopped waiting (under inFlight.mu)
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
	w := &waiter{ready: make(chan struct{})}
	lane := 1
	if urgent {
		lane = 0
	}
	l.lanes[lane].w = append(l.lanes[lane].w, w)
	l.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		select {
		case <-w.ready:
			// Handed a place as ctx ended: pass it on.
			l.mu.Unlock()
			l.release()
		default:
			w.gone = true
			l.mu.Unlock()
		}
		return ctx.Err()
	}
}

// release frees a place: to the first waiter of the first lane that has
// one, or to the pool.
func (l *inFlight) release() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.lanes {
		if w := l.lanes[i].pop(); w != nil {
			close(w.ready)
			return
		}
	}
	l.free++
}

// pop removes and returns the first waiter still waiting; nil if none.
func (q *queue) pop() *waiter {
	for q.head < len(q.w) {
		w := q.w[q.head]
		q.w[q.head] = nil
		q.head++
		if !w.gone {
			q.compact()
			return w
		}
	}
	q.compact()
	return nil
}

// compact drops the served part of the queue once it is most of it, so
// that the queue's memory follows the waiters, not the calls ever made.
func (q *queue) compact() {
	switch {
	case q.head == len(q.w):
		q.w, q.head = q.w[:0], 0
	case q.head > 1024 && q.head > len(q.w)/2:
		n := copy(q.w, q.w[q.head:])
		clear(q.w[n:])
		q.w, q.head = q.w[:n], 0
	}
}
