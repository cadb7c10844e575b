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
// Each window is counted with a tenth more (100ms a second), for jitter
// between the time a write is sent and the time it arrives.

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
var secretWrites = &secretPacer{logs: map[string][]time.Time{}}

type secretPacer struct {
	mu   sync.Mutex
	logs map[string][]time.Time // by secretKey: the times reserved, ascending
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
// its rate (version: a state change of the version name).
func waitSecretWrite(ctx context.Context, c *secretmanager.Client, name string, version bool) error {
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
	at := secretWrites.reserve(key, limits, time.Now())
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reserve returns the earliest time from now on at which a write fits all
// limits, and records it: at most n writes in any per+per/10.
func (p *secretPacer) reserve(key string, limits []writeLimit, now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	log := p.logs[key]
	longest := time.Duration(0)
	for _, l := range limits {
		longest = max(longest, l.per+l.per/10)
	}
	i := 0
	for i < len(log) && now.Sub(log[i]) >= longest {
		i++
	}
	log = log[i:]
	at := now
	if len(log) > 0 && log[len(log)-1].After(at) {
		at = log[len(log)-1] // keep the log in order
	}
	for _, l := range limits {
		if len(log) >= l.n {
			if t := log[len(log)-l.n].Add(l.per + l.per/10); t.After(at) {
				at = t
			}
		}
	}
	p.logs[key] = append(log, at)
	return at
}
