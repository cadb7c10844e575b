package rotate_test

import (
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/rotate"
)

// timeline (KEYROTATE_FLEET_TIMELINE=1) records when each slot's steps
// were reported (a verify event with a wait as verify#attempt), and logs,
// for each step, when the rotations reported it first (first, 10th, 50th,
// 90th and 99th percentile, last), and every step of the 5 rotations that
// ended last: where a fleet's wall time goes.
type timeline struct {
	mu     sync.Mutex
	bySlot map[string][]stepAt
}

type stepAt struct {
	step string
	at   time.Time
}

// lateProfile writes, when KEYROTATE_FLEET_LATE_CPUPROFILE names a file,
// a CPU profile from KEYROTATE_FLEET_LATE_FROM (a duration after the call,
// e.g. 60.5s: the second burst of calls, once new keys work) until the
// returned function is called.
func lateProfile(tb testing.TB) func() {
	file := os.Getenv("KEYROTATE_FLEET_LATE_CPUPROFILE")
	if file == "" {
		return func() {}
	}
	from, err := time.ParseDuration(os.Getenv("KEYROTATE_FLEET_LATE_FROM"))
	if err != nil {
		tb.Fatalf("KEYROTATE_FLEET_LATE_FROM: %v", err)
	}
	f, err := os.Create(file)
	if err != nil {
		tb.Fatal(err)
	}
	started := make(chan bool, 1)
	stop := make(chan struct{})
	go func() {
		select {
		case <-time.After(from):
		case <-stop:
			started <- false
			return
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			tb.Error(err)
			started <- false
			return
		}
		started <- true
		<-stop
		pprof.StopCPUProfile()
		started <- true
	}()
	return func() {
		close(stop)
		if <-started {
			<-started
		}
		f.Close()
	}
}

func newTimeline() *timeline {
	if os.Getenv("KEYROTATE_FLEET_TIMELINE") != "1" {
		return nil
	}
	return &timeline{bySlot: map[string][]stepAt{}}
}

func (t *timeline) event(e rotate.Event) {
	now := time.Now()
	step := string(e.Step)
	if e.Wait != nil {
		step += fmt.Sprintf("#%d", e.Wait.Attempt)
	}
	t.mu.Lock()
	t.bySlot[e.Slot] = append(t.bySlot[e.Slot], stepAt{step, now})
	t.mu.Unlock()
}

func (t *timeline) report(tb testing.TB, start time.Time) {
	if t == nil {
		return
	}
	byStep := map[string][]time.Duration{}
	type slotEnd struct {
		slot string
		end  time.Time
	}
	var ends []slotEnd
	for slot, steps := range t.bySlot {
		seen := map[string]bool{}
		for _, s := range steps {
			if !seen[s.step] {
				seen[s.step] = true
				byStep[s.step] = append(byStep[s.step], s.at.Sub(start))
			}
		}
		ends = append(ends, slotEnd{slot, steps[len(steps)-1].at})
	}
	var names []string
	for k := range byStep {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := byStep[k]
		slices.Sort(v)
		q := func(f float64) time.Duration { return v[int(f*float64(len(v)-1))].Round(time.Millisecond) }
		tb.Logf("timeline %-14s n=%5d first %s p10 %s p50 %s p90 %s p99 %s last %s", k, len(v), q(0), q(0.1), q(0.5), q(0.9), q(0.99), q(1))
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].end.After(ends[j].end) })
	for _, e := range ends[:min(5, len(ends))] {
		var b strings.Builder
		for _, s := range t.bySlot[e.slot] {
			fmt.Fprintf(&b, " %s@%s", s.step, s.at.Sub(start).Round(time.Millisecond))
		}
		tb.Logf("timeline last %s:%s", e.slot, b.String())
	}
}
