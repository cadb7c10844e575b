package rotate_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// The fleet benchmark's lower bound: no schedule of the fleet's calls that
// the emulator answers without a 429 can finish sooner (see fleetBound).

// fleetListKeys says how a fleet reads its slots' keys before creating
// the new ones: false, one GetKey a slot; true, one ListKeys per project a
// run, shared by its slots, a page per listKeysPage keys (rotate's
// keyLists, what the rotator does now). The benchmarks' bound follows it;
// it must say what the rotator does (TestRotationChainCountsCalls).
const fleetListKeys = true

// listKeysPage is the most keys one ListKeys page returns (the API's
// largest pageSize).
const listKeysPage = 300

// chainCall is one call of a rotation's critical chain: the calls one
// rotation makes one after another, each taking at least the emulator's
// latency, which it waits before it meters the call (Server.enter).
type chainCall struct {
	service string // "apikeys" or "secretmanager"
	kind    string // "reads", "writes" or "access" (emulator.Quota's fields)
	// poll: the call polls a long-running operation, so it is sent the
	// poll interval after the answer of the call before (gcp.Keys.wait;
	// the emulator, like the API, answers CreateKey and DeleteKey with an
	// operation not done, so at least one poll follows each).
	poll bool
	// page > 0: the call is its project's, not the slot's: one for every
	// page slots of a project (ceil(slots/page) a project), shared by
	// them. It waits for no call of a slot (it may go as the run starts),
	// and a slot's next call waits for its answer.
	page int
}

// chain is a rotation's critical chain: its calls in order, the index of
// CreateKey, and the index of the first call after the live probe, which
// waits both for the new key to work (CreateKey plus the propagation
// delay, whatever the create's operation says) and for the create's
// operation to be answered (the probe needs the key string from it).
type chain struct {
	calls         []chainCall
	create, probe int
}

// rotationChain is the chain of a rotation. The first run looks its key
// up (LookupKey); the next run of a new process knows the key's name from
// the secret's annotation and does not. listKeys: the keys are read with
// one ListKeys per project (fleetListKeys), not one GetKey a slot.
func rotationChain(lookup, listKeys bool) chain {
	c := chain{calls: []chainCall{{service: "secretmanager", kind: "reads"}, {service: "secretmanager", kind: "access"}}}
	if lookup {
		c.calls = append(c.calls, chainCall{service: "apikeys", kind: "reads"}) // LookupKey
	}
	read := chainCall{service: "apikeys", kind: "reads"} // GetKey
	if listKeys {
		read.page = listKeysPage // ListKeys
	}
	c.calls = append(c.calls, read,
		chainCall{service: "secretmanager", kind: "writes"}, // UpdateSecret: lock
		chainCall{service: "apikeys", kind: "writes"},       // CreateKey
	)
	c.create = len(c.calls) - 1
	c.calls = append(c.calls, chainCall{service: "apikeys", kind: "reads", poll: true}) // GetOperation of the create
	c.probe = len(c.calls)
	c.calls = append(c.calls,
		chainCall{service: "secretmanager", kind: "writes"},      // AddSecretVersion
		chainCall{service: "secretmanager", kind: "access"},      // AccessSecretVersion: read back
		chainCall{service: "secretmanager", kind: "writes"},      // UpdateSecret
		chainCall{service: "apikeys", kind: "writes"},            // DeleteKey
		chainCall{service: "apikeys", kind: "reads", poll: true}, // GetOperation of the delete
		chainCall{service: "secretmanager", kind: "writes"},      // DisableSecretVersion
		chainCall{service: "secretmanager", kind: "writes"},      // UpdateSecret: unlock
	)
	return c
}

// fleetTimes are the timings the bound depends on: the emulator's quota
// window, propagation delay and latency, and the rotator's first interval
// between polls of an operation (rotate.Rotator.PollInterval).
type fleetTimes struct {
	window, propagation, latency, poll time.Duration
}

// times returns the fleet benchmark's timings at time scale s.
func (s scaled) times() fleetTimes {
	return fleetTimes{window: s.d(fleetQuotaWindow), propagation: s.d(fleetPropagation), latency: s.d(fleetLatency), poll: s.d(fleetPollInterval)}
}

// earliest returns, for each call of c, the earliest time it can be
// metered, counted from the run's start (from < 0) or from call from's
// metering (from ≥ 0; then only what follows from that call is known:
// known[k] is false for a call that from does not constrain). A slot's
// call is metered a latency after the later of its previous call and the
// shared calls between them (plus the poll interval when it polls); the
// call after the probe waits also until CreateKey plus the propagation
// delay, when CreateKey's time is known.
func (c chain) earliest(from int, t fleetTimes) (m []time.Duration, known []bool) {
	m, known = make([]time.Duration, len(c.calls)), make([]bool, len(c.calls))
	var ready time.Duration // when the slot's next call may be sent: the run's start, or from's answer
	if from >= 0 {
		known[from] = true
	}
	for k := from + 1; k < len(c.calls); k++ {
		cc := c.calls[k]
		if cc.page > 0 {
			if from < 0 { // sent as the run starts
				m[k], known[k] = t.latency, true
				ready = max(ready, m[k])
			}
			continue
		}
		if k == c.probe && known[c.create] {
			ready = max(ready, m[c.create]+t.propagation)
		}
		m[k], known[k] = ready+t.latency, true
		if cc.poll {
			m[k] += t.poll
		}
		ready = m[k]
	}
	return m, known
}

// fleetBound is a lower bound on the wall time of rotating slots slots in
// each project, all starting at start, each making the calls of chain c,
// under quotas (by service, per window, the emulator's fixed windows
// aligned on start.Truncate(window)), with the timings t. It returns the
// bound and its two parts: the critical path of one rotation, and the
// quota windows.
//
// Derivation. A call is metered when its latency L has passed; a slot's
// call is sent when the call before it is answered, a poll of an
// operation the poll interval I after that (chain.earliest). The first
// call after the probe is sent no sooner than CreateKey's metering (c)
// plus the propagation delay P, and no sooner than the answer of the
// create's GetOperation (g), whose operation carries the key string the
// probe sends: it is metered at or after max(c+P, g)+L. So, numbering the
// b calls up to CreateKey and the a calls after the probe:
//
//   - release r of a call: the earliest it can be metered from the start.
//     Before the probe, call j: j·L, plus I for the create's GetOperation
//     (b·L+L+I). After-call j: b·L+max(P, L+I)+j·L, plus I from the
//     delete's GetOperation on. A shared call (ListKeys): L.
//   - tail of a call: the least time from its metering to the rotation's
//     end, given only that time. For a call up to CreateKey it includes
//     the propagation (CreateKey is then later still). For the create's
//     GetOperation it does not: from g alone, c may be long before it,
//     the key may have propagated already, so the tail is the a calls
//     after the probe, a·L+I — not "the calls after it" plus P, which
//     would overstate it; and if g comes before c+P, the rotation ends at
//     or after c+P+a·L+I anyway, which the critical path covers.
//   - critical path: the last call's release, b·L+max(P, L+I)+a·L+I.
//   - windows: take one project and one quota (say API Keys reads, N=240
//     a window), and any set S of its calls. They must fall in the
//     windows at most N to a window, each at or after its release.
//     Placing S in order of release, each in the earliest window with
//     room at or after its release, puts its last call as early as any
//     placement can (a call released later never gains from an earlier
//     one waiting). So some call of S is metered no sooner than there —
//     the start of its window, or its release if later — and its rotation
//     still makes that call's tail, at least the shortest tail in S. The
//     figure is the largest over the sets S made of whole classes (calls
//     of one chain position: same release, same tail; a subset of a class
//     only lowers the placement), which for a set of all the calls is the
//     figure with the shortest tail of all. A set of the early calls
//     alone tells more when their tails are long: 100 slots make 300
//     reads before the probe (LookupKey, GetKey, the create's
//     GetOperation) against 240 a window, so 60 of them wait for the next
//     window, and whichever 60 they are, their rotations then make at
//     least a GetOperation's tail.
//
// The bound is the largest of the critical path and every project's and
// quota's window figure. It ignores what no schedule can avoid but is
// hard to bound (CPU time, the probes, Secret Manager's per-secret write
// rate, the lease's renewals), so a real run is slower.
//
// Worked example: 4 projects × 150 slots at scale 10 (W = 6s, P = 6s,
// L = 10ms, I = 25ms), starting 1.5s into a window: windows begin at
// +4.5s and +10.5s. API Keys reads, 240 a window: the 150 LookupKeys and
// 150 GetKeys, released at +30ms and +40ms: 240 go in window 0, the last
// 60 at +4.5s; whichever they are, their rotations still lock, create,
// wait for the key to work and make 7 calls and a poll (P+9L+I): 10.615s.
// API Keys writes, 120 a window: the 150 CreateKeys (+60ms) alone put 30
// at +4.5s, whose keys work at +10.5s, then 7 calls and a poll: 10.595s;
// with the 150 DeleteKeys (+6.1s), the last 60 go at +10.5s, then 3 calls
// and a poll: 10.555s. Bound: 10.615s. The old bound, writes ÷ rate =
// 300/120 × 6s = 15s, counted the windows as if the calls came at an even
// rate and missed the burst a window start admits (the pacer's runs took
// 12.6s: ratio 0.84). Started 5.5s into a window, the windows begin at
// +0.5s and +6.5s: the last 60 reads go at +0.5s, and the bound is
// 6.615s: a client that knew where Google's windows begin could do that
// well; the pacer does not know (pace.go). (Secret Manager writes, 5 a
// slot and 600 a window, are placed the same way; in this fleet they bind
// less.)
func fleetBound(start time.Time, projects, slots int, quotas map[string]emulator.Quota, t fleetTimes, c chain) (bound, critical, windows time.Duration) {
	release, _ := c.earliest(-1, t)
	last := len(c.calls) - 1
	critical = release[last]
	type class struct {
		release, tail time.Duration
		count         int // calls a project
	}
	byQuota := map[[2]string][]class{}
	for j, cc := range c.calls {
		m, _ := c.earliest(j, t)
		n := slots
		if cc.page > 0 {
			n = (slots + cc.page - 1) / cc.page
		}
		k := [2]string{cc.service, cc.kind}
		byQuota[k] = append(byQuota[k], class{release: release[j], tail: m[last], count: n})
	}
	for k, classes := range byQuota {
		q := quotas[k[0]]
		limit := map[string]int{"reads": q.Reads, "writes": q.Writes, "access": q.Access}[k[1]]
		if limit <= 0 || projects == 0 || slots == 0 {
			continue
		}
		slices.SortFunc(classes, func(x, y class) int { return int(x.release - y.release) })
		for set := 1; set < 1<<len(classes); set++ {
			// Greedy placement of one project's calls of the classes in set.
			var (
				win  time.Time // the window being filled
				used int
				end  time.Time
				tail time.Duration = -1
			)
			for i, c := range classes {
				if set&(1<<i) == 0 {
					continue
				}
				if tail < 0 || c.tail < tail {
					tail = c.tail
				}
				r := start.Add(c.release)
				for range c.count {
					if rw := r.Truncate(t.window); rw.After(win) {
						win, used = rw, 0
					}
					if used == limit {
						win, used = win.Add(t.window), 0
					}
					used++
					end = r
					if win.After(r) {
						end = win
					}
				}
			}
			windows = max(windows, end.Sub(start)+tail)
		}
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
		i = 25 * time.Millisecond // the first poll of an operation
	)
	times := fleetTimes{window: w, propagation: p, latency: l, poll: i}
	if got := scaled(10).times(); got != times {
		t.Fatalf("the benchmark's timings at scale 10 are %+v, want %+v", got, times)
	}
	// 2026-01-01 00:00:00 UTC is a whole number of days after Go's zero
	// time, so a window of 6s starts there.
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	short := times
	short.propagation = time.Second
	for _, c := range []struct {
		name             string
		projects, slots  int
		offset           time.Duration // into the window
		lookup, listKeys bool
		times            fleetTimes
		quotas           map[string]emulator.Quota // nil: the documented ones
		want             time.Duration
	}{
		// API Keys reads: 150 LookupKeys and 150 GetKeys (released at
		// +30ms and +40ms) against 240 a window: the last 60 at +4.5s,
		// when window 0 ends; then lock, create, the propagation, 7
		// calls and a poll. (API Keys writes: the last 30 CreateKeys at
		// +4.5s, their keys work at +10.5s, then 7 calls and a poll,
		// 10.595s; the last 60 DeleteKeys, released at 6L+P+4L = +6.1s,
		// at +10.5s, then 3 calls and a poll, 10.555s.)
		{name: "4x150 1.5s in", projects: 4, slots: 150, offset: 1500 * time.Millisecond, lookup: true, want: 4500*time.Millisecond + p + 9*l + i},
		// Windows at +0.5s and +6.5s: the last 60 reads at +0.5s.
		// (The last 30 CreateKeys at +0.5s: 6.595s; the last 60
		// DeleteKeys at +6.5s: 6.555s.)
		{name: "4x150 5.5s in", projects: 4, slots: 150, offset: 5500 * time.Millisecond, lookup: true, want: 500*time.Millisecond + p + 9*l + i},
		// Windows at +0.1s, +6.1s, +12.1s: 120 CreateKeys in the first,
		// 30 at +0.1s (their keys work at +6.1s: 6.195s); the
		// DeleteKeys, released at +6.1s, fill window 2 (120) and the
		// last 30 go in window 3 at +12.1s, then 3 calls and a poll.
		{name: "4x150 5.9s in", projects: 4, slots: 150, offset: 5900 * time.Millisecond, lookup: true, want: 12100*time.Millisecond + 3*l + i},
		// One slot: the critical path, 13 calls, the propagation and the
		// delete's poll (the create's poll and GetOperation, 35ms, pass
		// within the propagation).
		{name: "1x1", projects: 1, slots: 1, lookup: true, want: p + 13*l + i},
		// The next run makes no LookupKey: 12 calls.
		{name: "1x1 next", projects: 1, slots: 1, want: p + 12*l + i},
		// A propagation shorter than the poll and the create's
		// GetOperation: the probe waits for the operation's answer, at
		// 6L+I+L; 7 calls and a poll after it.
		{name: "1x1 slow poll", projects: 1, slots: 1, lookup: true,
			times: fleetTimes{window: w, propagation: 5 * time.Millisecond, latency: l, poll: 100 * time.Millisecond}, want: 14*l + 200*time.Millisecond},
		// 100 slots: 200 API Keys writes, 400 reads, 500 Secret Manager
		// writes a project. Started at a window's start: 300 reads
		// before the probe (LookupKey, GetKey, the create's
		// GetOperation) against 240 a window: the last 60
		// GetOperations go at +6s, and their rotations still make 7
		// calls and a poll, 6.095s; but the keys work at 6.06s, and
		// the critical path binds.
		{name: "100x100", projects: 100, slots: 100, lookup: true, want: p + 13*l + i},
		// The same with keys that work after 1s: the 60 GetOperations
		// at +6s bind (the keys have long worked: the tail is the 7
		// calls after the probe and a poll, not the propagation). The
		// writes bind less: 100 CreateKeys at +60ms and 20 DeleteKeys
		// (released at +1.1s) in window 0, the last 80 DeleteKeys at
		// +6s, then 3 calls and a poll: 6.055s.
		{name: "100x100 propagating in 1s", projects: 100, slots: 100, lookup: true, times: short, want: w + 7*l + i},
		// One ListKeys per project instead of a GetKey a slot: it may go
		// with the run's first call, so the critical path is 12 calls;
		// 301 reads a project, of which 201 before the probe, fit.
		{name: "100x100 ListKeys", projects: 100, slots: 100, lookup: true, listKeys: true, want: p + 12*l + i},
		// Pages: 301 slots read with 2 ListKeys pages (released at +10ms)
		// and make 301 create GetOperations (released at 4L+L+I = 75ms)
		// under 302 reads a window: the last GetOperation at +6s, then
		// 7 calls and a poll. (One ListKeys a project would leave room
		// for it in window 0; then the last of the 301 delete
		// GetOperations, at +6s, makes 6.02s.)
		{name: "1x301 ListKeys pages", projects: 1, slots: 301, listKeys: true, times: short,
			quotas: map[string]emulator.Quota{"apikeys": {Reads: 302}}, want: w + 7*l + i},
	} {
		t.Run(c.name, func(t *testing.T) {
			tm, q := c.times, c.quotas
			if tm == (fleetTimes{}) {
				tm = times
			}
			if q == nil {
				q = emulator.DocumentedQuotas
			}
			got, _, _ := fleetBound(base.Add(c.offset), c.projects, c.slots, q, tm, rotationChain(c.lookup, c.listKeys))
			if got != c.want {
				t.Errorf("fleetBound = %v, want %v", got, c.want)
			}
		})
	}
}

// TestRotationChainCountsCalls: the chain the bound counts is the calls a
// fleet's rotations make, by quota. A first rotation of one project's 3
// slots at once, then the next run of a new process, against the fleet's
// emulator: the calls they made, by service and kind of quota, are the
// chain's for 3 slots (a shared call once a page). A call the chain left
// out would let the bound count too few calls against a quota: before, it
// left out the create's GetOperation; and fleetListKeys must say how the
// fleet reads its keys.
func TestRotationChainCountsCalls(t *testing.T) {
	const slots = 3
	fe := startFleetEmulator(t, fleetSpec{Projects: 1, SlotsPerProject: slots, Propagation: 20 * time.Millisecond})
	_, isWrite := emulator.Methods()
	kindOf := func(method string) [2]string {
		service, name, _ := strings.Cut(method, ".")
		switch {
		case name == "AccessSecretVersion":
			return [2]string{service, "access"}
		case isWrite(method):
			return [2]string{service, "writes"}
		}
		return [2]string{service, "reads"}
	}
	for _, run := range []struct {
		name   string
		lookup bool
		opts   rotate.Options
	}{{"first rotation", true, rotate.Options{Force: true}}, {"next run", false, rotate.Options{Force: true, Again: true}}} {
		// A Rotator per run: the next run is a new process. Its client
		// does not know the first run's writes to the secrets: it starts
		// past Secret Manager's per-secret second (else a 429, retried,
		// adds an UpdateSecret).
		if !run.lookup {
			time.Sleep(1200 * time.Millisecond)
		}
		meter := &gcp.Meter{}
		r, g := fe.rotator(t, meter, 600)
		f := &rotate.Fleet{Rotator: r, Parallel: slots, Done: func(o rotate.Outcome) {
			if o.Err != nil || !o.Result.Rotated {
				t.Errorf("%s: %s: %v", run.name, o.Slot.Name, o.Err)
			}
		}}
		f.Run(context.Background(), fe.slots(g, 600), run.opts)
		got := map[[2]string]int{}
		for method, n := range meter.Calls() {
			if !strings.HasPrefix(method, "gemini.") { // the probes are not in the chain
				got[kindOf(method)] += int(n)
			}
		}
		want := map[[2]string]int{}
		for _, c := range rotationChain(run.lookup, fleetListKeys).calls {
			n := slots
			if c.page > 0 {
				n = (slots + c.page - 1) / c.page
			}
			want[[2]string{c.service, c.kind}] += n
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: calls by quota, chain (-) and made (+):\n%s\ncalls: %v", run.name, diff, meter.Calls())
		}
		if _, thr := meter.Total(); thr != 0 {
			t.Errorf("%s: %d calls answered 429", run.name, thr)
		}
	}
}
