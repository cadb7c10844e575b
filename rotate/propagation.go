package rotate

import (
	"context"
	"slices"
	"sync"
	"time"
)

// propagation is what the rotations of one Rotator (a fleet run) learn
// about how long new keys of each project take to start working. Keys of
// one project made at about the same time propagate together, so one key
// of the project — the leader, the one made first of those waiting — is
// probed, and the others wait: once a key works, each probes as soon as it is as
// old as that key was. That takes the backoff's overshoot out of a fleet's
// wall time and spares the Gemini API a probe every few seconds per key. A
// follower still probes now and then (see followerEvery), and takes the
// lead when the leader stops waiting.
//
// The leader is probed more often the more keys wait for it (see
// probeAt), since its success unblocks them all.
//
// A waiting key sleeps on a context of its own that propagation cancels
// when what the key's next probe depends on changes, and only then: the
// leader's when another key joins, the next key's when the leader leaves,
// every key's when a shorter delay is learned (once per project, as a
// rule). Thousands of keys waiting in a project are not all woken each
// time one of them is done.
//
// Across projects, only the shortest delay seen in any of them is kept
// (fleet): a sharded run's leaders probe sparsely until their key nears
// that age (see probeAt).
type propagation struct {
	mu    sync.Mutex
	by    map[string]*learned
	fleet time.Duration // the shortest delay seen in any project (0: none yet)
}

type learned struct {
	delay   time.Duration // the shortest seen
	waiting []*waiter     // keys being probed, in the order they were made
}

// waiter is one key waiting to work.
type waiter struct {
	made time.Time // when the key was made

	// wake, while the key sleeps, ends its sleep (nil otherwise).
	wake context.CancelFunc
}

func (w *waiter) notify() {
	if w.wake != nil {
		w.wake()
		w.wake = nil
	}
}

// join registers a key of project, made at made, that starts waiting.
// The key made first leads: with keys propagating together it works
// first, and a key made before the leader but slower to start waiting (a
// slow CreateKey operation) would otherwise be probed only once the later
// leader's key works. The leader is told: of its demotion, or that one
// more key waits for it (it probes more often).
func (p *propagation) join(project string, made time.Time) *waiter {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.learnedLocked(project)
	w := &waiter{made: made}
	// After every key made before or at the same time: keys made together
	// lead in the order they started waiting.
	i := len(l.waiting)
	for i > 0 && l.waiting[i-1].made.After(made) {
		i--
	}
	l.waiting = slices.Insert(l.waiting, i, w)
	if i == 0 && len(l.waiting) > 1 {
		l.waiting[1].notify()
	} else {
		l.waiting[0].notify()
	}
	return w
}

// leave unregisters w; when it led, the next key leads, and is told.
func (p *propagation) leave(project string, w *waiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.learnedLocked(project)
	for i, x := range l.waiting {
		if x == w {
			l.waiting = append(l.waiting[:i], l.waiting[i+1:]...)
			if i == 0 && len(l.waiting) > 0 {
				l.waiting[0].notify()
			}
			return
		}
	}
}

// projectWait is what the next probe of a waiting key depends on.
type projectWait struct {
	delay   time.Duration // the shortest delay seen in the project (0: none yet)
	fleet   time.Duration // the shortest delay seen in any project (0: none yet)
	leads   bool          // the key leads the project's probes
	waiting int           // how many keys of the project wait
}

// get returns what w's next probe depends on.
func (p *propagation) get(project string, w *waiter) projectWait {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.getLocked(project, w)
}

func (p *propagation) getLocked(project string, w *waiter) projectWait {
	l := p.learnedLocked(project)
	return projectWait{delay: l.delay, fleet: p.fleet, leads: len(l.waiting) > 0 && l.waiting[0] == w, waiting: len(l.waiting)}
}

// sleep returns what w's next probe depends on, and registers wake to be
// called as soon as that changes, until awake.
func (p *propagation) sleep(project string, w *waiter, wake context.CancelFunc) projectWait {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.wake = wake
	return p.getLocked(project, w)
}

// awake unregisters w's wake.
func (p *propagation) awake(w *waiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.wake = nil
}

// observe records that a key of project worked d after it was made; a
// shorter delay than known wakes the keys waiting. A shorter delay than
// any project's wakes the other projects' leaders too: their schedule
// depends on the fleet's delay (probeAt).
func (p *propagation) observe(project string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.learnedLocked(project)
	if l.delay == 0 || d < l.delay {
		l.delay = d
		for _, w := range l.waiting {
			w.notify()
		}
	}
	if p.fleet == 0 || d < p.fleet {
		p.fleet = d
		for name, o := range p.by {
			if name != project && len(o.waiting) > 0 {
				o.waiting[0].notify()
			}
		}
	}
}

func (p *propagation) learnedLocked(project string) *learned { return entry(&p.by, project) }

// entry returns (*m)[k], made (with *m) when missing: the per-project
// state the rotations of a Rotator share. Call with m's lock held.
func entry[V any](m *map[string]*V, k string) *V {
	if *m == nil {
		*m = map[string]*V{}
	}
	v := (*m)[k]
	if v == nil {
		v = new(V)
		(*m)[k] = v
	}
	return v
}
