package rotate

import (
	"sync"
	"time"
)

// propagation is what the rotations of one Rotator learn about how long
// new keys of each project take to start working. Keys of one project made
// at about the same time propagate together, so once one of a fleet's keys
// works, the others need not wait out their backoff: each probes again as
// soon as it is as old as that key was. With many keys probing at jittered
// times, the first to notice is early, and the rest follow at once, which
// takes the probe backoff's overshoot out of a fleet's wall time and
// spares probes that would fail.
type propagation struct {
	mu sync.Mutex
	by map[string]*learned
}

type learned struct {
	delay   time.Duration // the shortest seen
	changed chan struct{} // closed when delay shortens
}

// get returns the shortest delay seen in project (0: none yet) and a
// channel closed when a shorter one is seen.
func (p *propagation) get(project string) (time.Duration, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.learnedLocked(project)
	return l.delay, l.changed
}

// observe records that a key of project worked d after it was made.
func (p *propagation) observe(project string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.learnedLocked(project)
	if l.delay == 0 || d < l.delay {
		l.delay = d
		close(l.changed)
		l.changed = make(chan struct{})
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
