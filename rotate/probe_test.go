package rotate_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/targets"
	"github.com/keyrotate/keyrotate/verify"
)

// The probe schedule, on a manual clock that the emulator (when a new key
// starts to work) and the Rotator (Now, Sleep) share. The clock moves only
// when every rotation still to be verified sleeps, to the earliest time
// one of them waits for, as real timers would fire: every run is
// deterministic, and a probe's time is exact.

var probeStart = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

// probeClock is the manual clock and the Rotator's Sleep on it.
type probeClock struct {
	clock *fake.ManualClock

	mu   sync.Mutex
	cond *sync.Cond
	// live is how many rotations may still sleep; sleeping, those that do.
	live     int
	sleeping map[*probeSleeper]bool
	done     map[string]bool // slots whose rotation no longer sleeps
}

type probeSleeper struct {
	ctx   context.Context
	until time.Time
}

func newProbeClock(live int) *probeClock {
	c := &probeClock{clock: fake.NewManualClock(probeStart), live: live, sleeping: map[*probeSleeper]bool{}, done: map[string]bool{}}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// sleep waits until the clock reads until, or ctx ends. A sleeper whose
// context has ended (a rotation woken by another's news) no longer counts
// as sleeping, even before it leaves: the clock waits for it to sleep again.
func (c *probeClock) sleep(ctx context.Context, until time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &probeSleeper{ctx, until}
	c.sleeping[s] = true
	defer func() { delete(c.sleeping, s); c.cond.Broadcast() }()
	stop := context.AfterFunc(ctx, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer stop()
	for {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		now := c.clock.Now()
		if !now.Before(until) {
			return nil
		}
		var n int
		var next time.Time
		for x := range c.sleeping {
			if x.ctx.Err() == nil && now.Before(x.until) {
				n++
				if next.IsZero() || x.until.Before(next) {
					next = x.until
				}
			}
		}
		if n >= c.live {
			c.clock.Advance(next.Sub(now))
			c.cond.Broadcast()
			continue
		}
		c.cond.Wait()
	}
}

// event counts a rotation out once it is past the verify step (its first
// event of a later step comes after its key was seen working and its
// project told).
func (c *probeClock) event(e rotate.Event) {
	switch e.Step {
	case rotate.StepDistribute, rotate.StepReadback, rotate.StepRetire, rotate.StepDone, rotate.StepStop:
	default:
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done[e.Slot] {
		c.done[e.Slot] = true
		c.live--
		c.cond.Broadcast()
	}
}

// probeLog records every probe: the key's fingerprint, the clock's time,
// and whether the key worked.
type probeLog struct {
	prober rotate.Prober
	clock  *fake.ManualClock
	mu     sync.Mutex
	probes map[string][]probeAt
}

type probeAt struct {
	at time.Time
	ok bool
}

func (l *probeLog) Probe(ctx context.Context, key secret.Key) error {
	err := l.prober.Probe(ctx, key)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.probes[key.Fingerprint()] = append(l.probes[key.Fingerprint()], probeAt{l.clock.Now(), err == nil})
	return err
}

// probeFleet is projects × slots slots on an emulator whose new keys work
// propagation after they are made, rotated at once on the manual clock
// with the default probe timings.
type probeFleet struct {
	srv   *emulator.Server
	clock *probeClock
	log   *probeLog
	r     *rotate.Rotator
	slots []*rotate.Slot
}

func newProbeFleet(t *testing.T, projects, slots int, propagation time.Duration) *probeFleet {
	t.Helper()
	c := newProbeClock(projects * slots)
	// The world's own slot is left alone: its emulator and clients serve.
	w := newWorldOn(t, emulator.Options{Clock: c.clock, PropagationDelay: propagation})
	srv := w.srv
	l := &probeLog{prober: &verify.Gemini{BaseURL: "http://" + srv.GeminiAddr}, clock: c.clock, probes: map[string][]probeAt{}}
	pf := &probeFleet{srv: srv, clock: c, log: l}
	dir := t.TempDir()
	for p := range projects {
		id := fmt.Sprintf("probe-p%d", p)
		srv.AddProject(id, int64(500000000000+p))
		for s := range slots {
			name := fmt.Sprintf("p%d-s%02d", p, s)
			_, key, err := srv.SeedKey(id, name+"-2026", &apikeys.V2Key{
				DisplayName: "Gemini " + name,
				Restrictions: &apikeys.V2Restrictions{
					ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}},
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			secretName, err := srv.SeedSecret(id, name, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := srv.SeedSecretVersion(secretName, []byte(key)); err != nil {
				t.Fatal(err)
			}
			env := filepath.Join(dir, name+".env")
			if err := os.WriteFile(env, []byte("GEMINI_API_KEY="+key+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			pf.slots = append(pf.slots, &rotate.Slot{
				Name: name, Project: id, Secret: secretName, Prober: l,
				Targets:            []rotate.Target{targets.NewDotEnv(env, "GEMINI_API_KEY")},
				PropagationTimeout: 10 * time.Minute, LeaseTTL: 15 * time.Minute, MaxAge: 90 * 24 * time.Hour,
			})
		}
	}
	pf.r = w.r
	pf.r.Now, pf.r.Sleep, pf.r.Events = c.clock.Now, c.sleep, c.event
	pf.r.ProbeInterval, pf.r.ProbeMaxInterval = 0, 0 // the defaults
	return pf
}

// probed is how one slot's new key was probed.
type probed struct {
	slot   string
	made   time.Time // the key's createTime
	probes []probeAt
}

// run rotates every slot at once and returns, per project, each slot's
// probes, in slot order.
func (pf *probeFleet) run(t *testing.T) map[string][]probed {
	t.Helper()
	return pf.runShards(t, 1)
}

// runShards is run split over n Rotators (Shards n) sharing the emulator
// and the clock, each rotating its shard of the slots (rotate.Shard), as n
// processes of `keyrotate rotate --shard i/n` do.
func (pf *probeFleet) runShards(t *testing.T, n int) map[string][]probed {
	t.Helper()
	// A bound in real time: a schedule that does not sleep through the
	// Rotator's clock never sees a key work, and the run fails here.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var (
		mu       sync.Mutex
		outcomes = map[string]rotate.Outcome{}
		wg       sync.WaitGroup
	)
	for i := range n {
		r := pf.r
		if n > 1 {
			r = &rotate.Rotator{Keys: pf.r.Keys, Lookup: pf.r.Lookup, Secrets: pf.r.Secrets,
				Now: pf.r.Now, Sleep: pf.r.Sleep, Events: pf.r.Events, PollInterval: pf.r.PollInterval, Retry: pf.r.Retry,
				Shards: n}
		}
		var slots []*rotate.Slot
		for _, s := range pf.slots {
			if rotate.Shard(s.Name, n) == i {
				slots = append(slots, s)
			}
		}
		f := &rotate.Fleet{Rotator: r, Parallel: len(slots),
			Done: func(o rotate.Outcome) { mu.Lock(); outcomes[o.Slot.Name] = o; mu.Unlock() }}
		wg.Go(func() { f.Run(ctx, slots, rotate.Options{Force: true}) })
	}
	wg.Wait()
	out := map[string][]probed{}
	for _, s := range pf.slots {
		o := outcomes[s.Name]
		if o.Err != nil || o.Result == nil || !o.Result.Rotated {
			t.Fatalf("%s: not rotated: %v", s.Name, o.Err)
		}
		k, err := pf.r.Keys.Projects.Locations.Keys.Get(o.Result.NewKey.Name).Do()
		if err != nil {
			t.Fatal(err)
		}
		made, err := time.Parse(time.RFC3339Nano, k.CreateTime)
		if err != nil {
			t.Fatal(err)
		}
		pf.log.mu.Lock()
		ps := pf.log.probes[o.Result.NewKey.Fingerprint]
		pf.log.mu.Unlock()
		if len(ps) != o.Result.Probes {
			t.Fatalf("%s: %d probes logged, result says %d", s.Name, len(ps), o.Result.Probes)
		}
		out[s.Project] = append(out[s.Project], probed{s.Name, made, ps})
	}
	return out
}

// seen is how long after it was made the key was seen working.
func (p probed) seen() time.Duration {
	last := p.probes[len(p.probes)-1]
	if !last.ok {
		return -1
	}
	return last.at.Sub(p.made)
}

// TestProbeFleetSeesKeysWorkAtOnce: 12 keys of each of 2 projects, made
// together, start to work 45.5s later. The first key of each project to
// wait (the leader) is probed once a second — probeFloor, half of
// ProbeInterval — with no randomization, since 11 keys wait for it, each
// project's leader out of step with the other's by its phase; once one
// leader sees its key working, the other probes when its key is as old;
// the others probe once, when they are as old as the leader's key was. So
// every key of the project is seen working at most probeFloor after it
// works (before: up to a backoff interval, 10s ± 50%, late), and the
// project makes at most keys + ⌈propagation / probeFloor⌉ + 1 probes
// (here 12 + 46 + 1 = 59).
func TestProbeFleetSeesKeysWorkAtOnce(t *testing.T) {
	const (
		projects, slots = 2, 12
		propagation     = 45500 * time.Millisecond
		floor           = rotate.DefaultProbeInterval / 2
	)
	pf := newProbeFleet(t, projects, slots, propagation)
	phases, seenBy := map[string]time.Duration{}, map[string]time.Duration{}
	for project, keys := range pf.run(t) {
		var total int
		leaders := 0
		for _, k := range keys {
			total += len(k.probes)
			if seen := k.seen(); seen < propagation || seen > propagation+floor {
				t.Errorf("%s %s: seen working %s after it was made (%d probes), want from %s to %s", project, k.slot, seen, len(k.probes), propagation, propagation+floor)
			}
			if len(k.probes) == 1 {
				continue
			}
			leaders++
			// The leader: probed at once, then after probeFloor plus the
			// project's phase (less than probeFloor), then every
			// probeFloor exactly, but for its last probe, which comes
			// sooner when a key of the other project was seen working
			// first: when this key is as old as that one was.
			var gaps []time.Duration
			for i := 1; i < len(k.probes); i++ {
				gaps = append(gaps, k.probes[i].at.Sub(k.probes[i-1].at))
			}
			phases[project] = gaps[0] - floor
			seenBy[project] = k.seen()
			for i, gap := range gaps {
				switch {
				case i == 0 && (gap < floor || gap >= 2*floor):
					t.Errorf("%s %s: probe 2 came %s after the first, want probeFloor plus a phase: from %s to %s", project, k.slot, gap, floor, 2*floor)
				case i > 0 && i < len(gaps)-1 && gap != floor:
					t.Errorf("%s %s: probe %d came %s after the one before, want %s", project, k.slot, i+2, gap, floor)
				case i > 0 && i == len(gaps)-1 && gap > floor:
					t.Errorf("%s %s: last probe came %s after the one before, want at most %s", project, k.slot, gap, floor)
				}
			}
			t.Logf("%s leader %s: seen working %s after it was made; gaps %v", project, k.slot, k.seen(), gaps)
		}
		if leaders != 1 {
			t.Errorf("%s: %d keys probed more than once, want 1 (the leader)", project, leaders)
		}
		if limit := slots + int((propagation+floor-1)/floor) + 1; total > limit {
			t.Errorf("%s: %d probes, want at most %d", project, total, limit)
		}
		t.Logf("%s: %d probes for %d keys", project, total, len(keys))
	}
	// Out of step: the leaders' phases differ. The leader that saw its key
	// working second probed it at the age the first had seen: the keys,
	// made together, work at the same age, so both projects saw them
	// working as late as the sooner of the two schedules, not each its
	// own.
	if phases["probe-p0"] == phases["probe-p1"] {
		t.Errorf("both leaders probe in step (phase %s)", phases["probe-p0"])
	}
	if seenBy["probe-p0"] != seenBy["probe-p1"] {
		t.Errorf("the leaders saw their keys working at %s and %s after they were made; want the same age", seenBy["probe-p0"], seenBy["probe-p1"])
	}
}

// TestProbeShardsShareTheFloor: the same fleet as
// TestProbeFleetSeesKeysWorkAtOnce (2 projects × 24 keys made together,
// working 45.5s later) split over 4 processes (Rotator.Shards = 4), each
// leading its own probes of each project. A project sees about one probe
// per probeFloor from all 4 together, as from one process: at most keys +
// ⌈propagation / probeFloor⌉ + 3 × 4 (the leaders' first probes follow
// the lone backoff, 2s ± 50% growing, until it passes 4 × probeFloor).
// Before, each shard's leader probed once per probeFloor (or per backoff
// interval ÷ its 6 waiting keys): 140 probes a project here, where one
// process makes about 70. Every key is still seen working at most 4 ×
// probeFloor after it works.
func TestProbeShardsShareTheFloor(t *testing.T) {
	const (
		projects, slots, shards = 2, 24, 4
		propagation             = 45500 * time.Millisecond
		floor                   = rotate.DefaultProbeInterval / 2
	)
	pf := newProbeFleet(t, projects, slots, propagation)
	per := map[[2]string]int{}
	for _, s := range pf.slots {
		per[[2]string{s.Project, fmt.Sprint(rotate.Shard(s.Name, shards))}]++
	}
	for k, n := range per {
		if n < 2 || len(per) != projects*shards {
			t.Fatalf("project %s has %d keys in shard %s (%d pairs): the test wants a leader and a follower in each", k[0], n, k[1], len(per))
		}
	}
	for project, keys := range pf.runShards(t, shards) {
		var total int
		for _, k := range keys {
			total += len(k.probes)
			if seen := k.seen(); seen < propagation || seen > propagation+shards*floor {
				t.Errorf("%s %s: seen working %s after it was made (%d probes), want from %s to %s", project, k.slot, seen, len(k.probes), propagation, propagation+shards*floor)
			}
		}
		if limit := slots + int((propagation+floor-1)/floor) + 3*shards; total > limit {
			t.Errorf("%s: %d probes from %d shards, want at most %d (about one per %s in all)", project, total, shards, limit, floor)
		}
		t.Logf("%s: %d probes for %d keys in %d shards", project, total, len(keys), shards)
	}
}

// TestProbeLoneKeySchedule: a key alone in its project waits for itself
// only, and is probed as any single rotation is, as before: at once, then
// on the randomized backoff, 2s growing by half to 10s, each interval
// within ±50% of that.
func TestProbeLoneKeySchedule(t *testing.T) {
	const propagation = 45500 * time.Millisecond
	pf := newProbeFleet(t, 1, 1, propagation)
	for _, keys := range pf.run(t) {
		k := keys[0]
		if seen := k.seen(); seen < propagation || seen > propagation+15*time.Second {
			t.Errorf("seen working %s after it was made, want from %s to %s", seen, propagation, propagation+15*time.Second)
		}
		base := rotate.DefaultProbeInterval
		var gaps []time.Duration
		for i := 1; i < len(k.probes); i++ {
			gap := k.probes[i].at.Sub(k.probes[i-1].at)
			gaps = append(gaps, gap)
			if gap < base/2 || gap > base*3/2 {
				t.Errorf("probe %d came %s after the one before, want %s ± 50%%", i+1, gap, base)
			}
			base = min(base*3/2, rotate.DefaultProbeMaxInterval)
		}
		// Intervals of 2, 3, 4.5 and 6.75s, then 10s, each ±50%, reach
		// 45.5s after 6 (all +50%) to 12 (all -50%): 7 to 13 probes.
		if n := len(k.probes); n < 7 || n > 13 {
			t.Errorf("%d probes, want 7 to 13", n)
		}
		if slices.ContainsFunc(k.probes[:len(k.probes)-1], func(p probeAt) bool { return p.ok }) {
			t.Error("a probe after the key worked")
		}
		t.Logf("%d probes, intervals %v", len(k.probes), gaps)
	}
}
