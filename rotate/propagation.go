package rotate

import (
	"sync"
	"time"
)

// propagation is what the rotations of one Rotator (a fleet run) learn
// about how long new keys of each project take to start working. Keys of
// one project made at about the same time propagate together, so one key
// of the project — the leader, the first that started waiting — is probed
// on the backoff schedule, and the others wait: once a key works, each
// probes as soon as it is as old as that key was. That takes the backoff's
// overshoot out of a fleet's wall time and spares the Gemini API a probe
// every few seconds per key. A follower still probes now and then (see
// followerEvery), and takes the lead when the leader stops waiting.
type propagation struct {
	mu sync.Mutex
	by map[string]*learned
}

type learned struct {
	delay   time.Duration // the shortest seen
	changed chan struct{} // closed when delay shortens or the leader changes
	waiting []*waiter     // keys being probed, in the order they started
}

// waiter is one key waiting to work.
type waiter struct{ _ byte }

// join registers a key of project that starts waiting.
func (p *propagation) join(project string) *waiter {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.learnedLocked(project)
	w := &waiter{}
	l.waiting = append(l.waiting, w)
	return w
}

// leave unregisters w; when it led, the next key leads.
func (p *propagation) leave(project string, w *waiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.learnedLocked(project)
	for i, x := range l.waiting {
		if x == w {
			l.waiting = append(l.waiting[:i], l.waiting[i+1:]...)
			if i == 0 {
				l.notify()
			}
			return
		}
	}
}

// leads reports whether w is the key of project probed on schedule.
func (p *propagation) leads(project string, w *waiter) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.learnedLocked(project)
	return len(l.waiting) > 0 && l.waiting[0] == w
}

func (l *learned) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// get returns the shortest delay seen in project (0: none yet), whether w
// leads, and a channel closed when either changes.
func (p *propagation) get(project string, w *waiter) (time.Duration, bool, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.learnedLocked(project)
	return l.delay, len(l.waiting) > 0 && l.waiting[0] == w, l.changed
}

// observe records that a key of project worked d after it was made.
func (p *propagation) observe(project string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.learnedLocked(project)
	if l.delay == 0 || d < l.delay {
		l.delay = d
		l.notify()
	}
}

func (p *propagation) learnedLocked(project string) *learned {
	if p.by == nil {
		p.by = map[string]*learned{}
	}
	l := p.by[project]
	if l == nil {
		l = &learned{changed: make(chan struct{})}
		p.by[project] = l
	}
	return l
}
