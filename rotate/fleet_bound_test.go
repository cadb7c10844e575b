package rotate_test

import (
	"slices"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/emulator"
)

// The fleet benchmark's lower bound: no schedule of the fleet's calls that
// the emulator answers without a 429 can finish sooner (see fleetBound).

// chainCall is one call of a rotation's critical chain: the calls one
// rotation makes one after another, each taking at least the emulator's
// latency, which it waits before it meters the call (Server.enter).
type chainCall struct {
	service string // "apikeys" or "secretmanager"
	kind    string // "reads", "writes" or "access" (emulator.Quota's fields)
	// late: the call comes after the probe that sees the new key work,
	// so at least the propagation delay after CreateKey.
	late bool
}

// rotationChain is the chain of a rotation: before is the calls up to and
// including CreateKey, after the calls after the probe. The first run
// looks its key up (LookupKey); the next run of a new process knows the
// key's name from the secret's annotation and does not.
func rotationChain(lookup bool) (before, after []chainCall) {
	before = []chainCall{{"secretmanager", "reads", false}, {"secretmanager", "access", false}}
	if lookup {
		before = append(before, chainCall{"apikeys", "reads", false})
	}
	before = append(before,
		chainCall{"apikeys", "reads", false},        // GetKey
		chainCall{"secretmanager", "writes", false}, // UpdateSecret: lock
		chainCall{"apikeys", "writes", false},       // CreateKey
	)
	after = []chainCall{
		{"secretmanager", "writes", true}, // AddSecretVersion
		{"secretmanager", "access", true}, // AccessSecretVersion: read back
		{"secretmanager", "writes", true}, // UpdateSecret
		{"apikeys", "writes", true},       // DeleteKey
		{"apikeys", "reads", true},        // GetOperation
		{"secretmanager", "writes", true}, // DisableSecretVersion
		{"secretmanager", "writes", true}, // UpdateSecret: unlock
	}
	return before, after
}

// fleetBound is a lower bound on the wall time of rotating slots slots in
// each project, all starting at start, under quotas (by service, per
// window, the emulator's fixed windows aligned on start.Truncate(window)),
// with every call taking latency and new keys working propagation after
// CreateKey. It returns the bound and its two parts: the critical path of
// one rotation, and the quota windows.
//
// Derivation. Number a rotation's chain calls 1..b before the probe (b is
// the index of CreateKey) and 1..a after it (a = 7). A call is metered when
// its latency L has passed, so call j before the probe is metered no
// sooner than start+j·L; CreateKey at c ≥ start+b·L; the probe can see the
// key work no sooner than c+P; after-call j is metered no sooner than
// start+b·L+P+j·L. These are the calls' release times r; the calls of the
// chain after a call (its tail) take at least (calls after it)·L, plus P
// and the probe for a call before CreateKey. So:
//
//   - critical path: start+(b+a)·L+P — one rotation alone;
//   - windows: take one project and one quota (say API Keys writes, N=120
//     a window). Its calls of that kind (CreateKey and DeleteKey, 2 per
//     slot) must fall in the windows at most N to a window. Placing the
//     calls in order of release, each in the earliest window with room at
//     or after its release, puts the last one as early as any placement
//     can (a call released later never gains from an earlier call
//     waiting). The last call of that kind is metered no sooner than
//     there — at the start of its window, or its release if later — and
//     its run still makes its tail, which is at least the shortest tail
//     of the calls of that kind (DeleteKey: GetOperation,
//     DisableSecretVersion, UpdateSecret, 3·L).
//
// The bound is the largest of the critical path and every project's and
// quota's window figure. It ignores what no schedule can avoid but is
// hard to bound (CPU time, Secret Manager's per-secret write rate), so a
// real run is slower.
//
// Worked example: 4 projects × 150 slots at scale 10 (W = 6s, P = 6s,
// L = 10ms), starting 1.5s into a window. API Keys writes: 300 a project,
// 120 a window. The 150 CreateKeys are released at start+60ms: 120 go in
// window 0 (which ends at start+4.5s), 30 in window 1 (start+4.5s to
// +10.5s). The DeleteKeys are released at start+6ms·10+6s = start+6.1s:
// 90 fit in window 1, the last 60 go in window 2, which begins at
// start+10.5s. Bound: 10.5s + 3·10ms = 10.53s. The old bound, writes ÷
// rate = 300/120 × 6s = 15s, counted the windows as if the calls came at
// an even rate and missed the burst a window start admits (the pacer's
// runs took 12.6s: ratio 0.84). Started 5.5s into a window, the same
// fleet's windows are 0.5s, 6.5s and 12.5s after the start: 120 creates in
// the first, 30 creates and 90 deletes in the second, 60 deletes in the
// third, and the bound is 6.5s + 30ms: a client that knew where Google's windows
// begin could do that well; the pacer does not know (pace.go).
// (Secret Manager writes, 5 a slot and 600 a window, and API Keys reads
// are placed the same way; in this fleet they bind less.)
func fleetBound(start time.Time, projects, slots int, quotas map[string]emulator.Quota, window, propagation, latency time.Duration, lookup bool) (bound, critical, windows time.Duration) {
	before, after := rotationChain(lookup)
	b, a := len(before), len(after)
	critical = time.Duration(b+a)*latency + propagation
	type class struct {
		release, tail time.Duration
	}
	byQuota := map[[2]string][]class{}
	for j, c := range before {
		k := [2]string{c.service, c.kind}
		byQuota[k] = append(byQuota[k], class{time.Duration(j+1) * latency, time.Duration(b-j-1+a)*latency + propagation})
	}
	for j, c := range after {
		k := [2]string{c.service, c.kind}
		byQuota[k] = append(byQuota[k], class{time.Duration(b+j+1)*latency + propagation, time.Duration(a-j-1) * latency})
	}
	for k, classes := range byQuota {
		q := quotas[k[0]]
		limit := map[string]int{"reads": q.Reads, "writes": q.Writes, "access": q.Access}[k[1]]
		if limit <= 0 || projects == 0 || slots == 0 {
			continue
		}
		slices.SortFunc(classes, func(x, y class) int { return int(x.release - y.release) })
		// Greedy placement of one project's calls of this kind.
		var (
			win  time.Time // the window being filled
			used int
			last time.Time
			tail = classes[0].tail
		)
		for _, c := range classes {
			tail = min(tail, c.tail)
			for range slots {
				r := start.Add(c.release)
				if rw := r.Truncate(window); rw.After(win) {
					win, used = rw, 0
				}
				if used == limit {
					win, used = win.Add(window), 0
				}
				used++
				last = r
				if win.After(r) {
					last = win
				}
			}
		}
		windows = max(windows, last.Sub(start)+tail)
	}
	return max(critical, windows), critical, windows
}

// TestFleetBound checks fleetBound against the worked example of its
// comment and against cases small enough to count by hand.
func TestFleetBound(t *testing.T) {
	const (
		w = 6 * time.Second // a minute at scale 10
		p = 6 * time.Second
		l = 10 * time.Millisecond
	)
	// 2026-01-01 00:00:00 UTC is a whole number of days after Go's zero
	// time, so a window of 6s starts there.
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	q := emulator.DocumentedQuotas
	for _, c := range []struct {
		name            string
		projects, slots int
		offset          time.Duration // into the window
		lookup          bool
		want            time.Duration
	}{
		// API Keys writes: 150 creates then 150 deletes over windows at
		// +4.5s and +10.5s; the last delete at +10.5s, then 3 calls.
		{"4x150 1.5s in", 4, 150, 1500 * time.Millisecond, true, 10500*time.Millisecond + 3*l},
		// Windows at +0.5s and +6.5s: the last 60 deletes at +6.5s.
		{"4x150 5.5s in", 4, 150, 5500 * time.Millisecond, true, 6500*time.Millisecond + 3*l},
		// Windows at +0.1s and +6.1s: 120 creates in the first, 30 in the
		// second; the deletes, released at +6.1s, fill window 2 (120)
		// and the last 30 go in window 3 at +12.1s.
		{"4x150 5.9s in", 4, 150, 5900 * time.Millisecond, true, 12100*time.Millisecond + 3*l},
		// One slot: the critical path, 13 calls and the propagation.
		{"1x1", 1, 1, 0, true, p + 13*l},
		// The next run makes no LookupKey: 12 calls.
		{"1x1 next", 1, 1, 0, false, p + 12*l},
		// 100 slots: 200 API Keys writes, 300 reads, 500 Secret Manager
		// writes a project; started at a window's start, the deletes
		// (released at +6.1s) fit in window 1 with room to spare, and the
		// 60 GetOperations over 240 reads too: the critical path binds.
		{"100x100", 100, 100, 0, true, p + 13*l},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, _, _ := fleetBound(base.Add(c.offset), c.projects, c.slots, q, w, p, l, c.lookup)
			if got != c.want {
				t.Errorf("fleetBound = %v, want %v", got, c.want)
			}
		})
	}
}
