package gcp

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
)

// Secret Manager limits the rate of writes to one secret, apart from the
// per-project quotas the Pacer keeps: AddSecretVersion and UpdateSecret 2
// a second and 120 a minute on a global secret (80 and 4800 on a regional
// one), and version state changes (enable, disable, destroy) 1 a second and
// 60 a minute per version (50 and 3000 regional), per "Soft-enforced rate
// limits for modifying secrets and secret versions" in
// https://cloud.google.com/secret-manager/quotas. A rotation writes its
// slot's secret several times within a second when nothing waits between
// the steps (the lock, the version, the record, the aliases), so every
// write to a secret waits here until it fits.
//
// The record is kept per Secret Manager client, for the whole process: the
// limit is the secret's, whichever slot, target or Rotator writes it, and
// a process writes its secrets through one client (per location). Within
// a client a secret is known by its location and id, not its project, so
// that a secret named by project id and by number counts once (two
// projects' secrets of the same id share a budget: slower, never over).
// Each window is counted with a tenth more (100ms a second), and from the
// write's answer, not from when it was let go (see secretPacer).

type writeLimit struct {
	n   int
	per time.Duration
}

var (
	secretWriteLimits         = []writeLimit{{2, time.Second}, {120, time.Minute}}
	regionalSecretWriteLimits = []writeLimit{{80, time.Second}, {4800, time.Minute}}
	versionWriteLimits        = []writeLimit{{1, time.Second}, {60, time.Minute}}
	regionalVersionLimits     = []writeLimit{{50, time.Second}, {3000, time.Minute}}
)

// secretWrites is the process's record of writes to secrets.
var secretWrites = newSecretPacer()

// secretPacer counts a write from its answer, not from when it was let
// go: Secret Manager counts a write when it arrives, at some instant
// between the send and the answer, and a write let go at t may arrive
// much later than t (a loaded machine's scheduler, a slow network path)
// while the next ones arrive at once. Counted from when they were let
// go, a late first write and a prompt third one could then both fall in
// one of the server's windows (the fleet benchmark's 429s on
// UpdateSecret). Counted from the answer, a write let go at least per
// after the answer of the write n back arrives at least per after it,
// whatever either one's delay: a write in flight counts as in every
// window until its answer comes.
type secretPacer struct {
	mu   sync.Mutex
	logs map[string][]*secretWrite // by secretKey, in the order let go
	// changed, by secretKey, is closed when a write of that key is
	// answered, so that a write waiting for it looks again.
	changed map[string]chan struct{}
}

// secretWrite is one write let go: in flight until answered (end set).
type secretWrite struct {
	end      time.Time
	answered bool
}

func newSecretPacer() *secretPacer {
	return &secretPacer{logs: map[string][]*secretWrite{}, changed: map[string]chan struct{}{}}
}

// secretKey returns the key of the secret (or, with version set, of the
// secret version) name refers to, and whether it is regional. name is
// projects/P[/locations/L]/secrets/S[/versions/V].
func secretKey(name string, version bool) (string, bool) {
	segs := strings.Split(name, "/")
	regional := len(segs) > 2 && segs[2] == "locations"
	loc := "global"
	if regional && len(segs) > 3 {
		loc = segs[3]
	}
	key := loc
	for i := 0; i+1 < len(segs); i += 2 {
		if segs[i] == "secrets" || (version && segs[i] == "versions") {
			key += "/" + segs[i] + "/" + segs[i+1]
		}
	}
	return key, regional
}

// waitSecretWrite waits until a write through c to the secret name fits
// its rate (version: a state change of the version name), and returns the
// function to call with the write's answer (whatever it was).
func waitSecretWrite(ctx context.Context, c *secretmanager.Client, name string, version bool) (answered func(), err error) {
	key, regional := secretKey(name, version)
	key = fmt.Sprintf("%p:%s", c, key)
	limits := secretWriteLimits
	switch {
	case version && regional:
		limits = regionalVersionLimits
	case version:
		limits = versionWriteLimits
	case regional:
		limits = regionalSecretWriteLimits
	}
	for {
		w, at, changed := secretWrites.admit(key, limits, time.Now())
		if w != nil {
			return func() { secretWrites.answer(key, w, time.Now()) }, nil
		}
		var (
			t     *time.Timer
			timer <-chan time.Time
		)
		if !at.IsZero() {
			t = time.NewTimer(time.Until(at))
			timer = t.C
		}
		select {
		case <-timer:
		case <-changed:
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// admit lets a write of key go at now if it fits limits: fewer than n
// writes in flight or answered within per+per/10 before now, for each
// limit. It then records the write, in flight, and returns it. Else it
// returns nil, the time at which the earliest answered write counted
// leaves its window (zero if only writes in flight block), and a channel
// closed when a write of key is answered: look again at either.
func (p *secretPacer) admit(key string, limits []writeLimit, now time.Time) (w *secretWrite, at time.Time, changed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	log := p.logs[key]
	longest := time.Duration(0)
	for _, l := range limits {
		longest = max(longest, l.per+l.per/10)
	}
	kept := log[:0]
	for _, e := range log {
		if !e.answered || now.Sub(e.end) < longest {
			kept = append(kept, e)
		}
	}
	clear(log[len(kept):])
	log = kept
	for _, l := range limits {
		in := 0
		var leaves time.Time
		for _, e := range log {
			switch window := l.per + l.per/10; {
			case !e.answered:
				in++
			case now.Sub(e.end) < window:
				in++
				if t := e.end.Add(window); leaves.IsZero() || t.Before(leaves) {
					leaves = t
				}
			}
		}
		if in >= l.n {
			p.logs[key] = log
			ch := p.changed[key]
			if ch == nil {
				ch = make(chan struct{})
				p.changed[key] = ch
			}
			return nil, leaves, ch
		}
	}
	w = &secretWrite{}
	p.logs[key] = append(log, w)
	return w, time.Time{}, nil
}

// answer records that the write w of key was answered at end, and wakes
// the writes waiting for it.
func (p *secretPacer) answer(key string, w *secretWrite, end time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.end, w.answered = end, true
	if ch := p.changed[key]; ch != nil {
		close(ch)
		delete(p.changed, key)
	}
}
