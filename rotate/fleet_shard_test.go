package rotate_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// A sharded fleet run: the slots split over processes as a Cloud Run Job's
// tasks or a Kubernetes Indexed Job's pods split them (`keyrotate rotate
// --shard i/n`: rotate.Shard of the slot name, each process paced with its
// share of the quotas). Each shard is this test binary run again with
// fleetShardEnv set, as TestFleetShardChild.

const fleetShardEnv = "KEYROTATE_FLEET_SHARD" // names a file holding a fleetShardSpec (10,000 slots do not fit in an environment)

// fleetShardSpec is what a shard process is told.
type fleetShardSpec struct {
	Seeded       fleetSeeded
	Index, Count int
	Scale        float64
	// Next: the shard rotates its slots, then, a quota window later, runs
	// again as the next scheduled run (a new Rotator, as a new process)
	// and reports that run.
	Next bool
}

const fleetShardLine = "fleet-shard-result: "

// TestFleetShardChild is one shard of BenchmarkFleetShards; it does
// nothing in a normal test run.
func TestFleetShardChild(t *testing.T) {
	file := os.Getenv(fleetShardEnv)
	if file == "" {
		t.Skip("run by BenchmarkFleetShards")
	}
	js, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var spec fleetShardSpec
	if err := json.Unmarshal(js, &spec); err != nil {
		t.Fatal(err)
	}
	fe := &fleetEmulator{fleetSeeded: spec.Seeded, tb: t}
	// A shard reports no peak with garbage (PeakObjects): its watchHeap
	// does not read it every millisecond, unless asked to
	// (KEYROTATE_FLEET_OBJECTS_EVERY). Each read wakes the process, which
	// waits idle for most of a run: over a 75 s run in real time, 75,000
	// wake-ups a process, several seconds of CPU in 4 processes.
	var objects time.Duration
	if os.Getenv("KEYROTATE_FLEET_OBJECTS_EVERY") != "" {
		objects = objectsEvery()
	}
	s := scaled(spec.Scale)
	m := runFleetShard(t, fe, s, spec.Index, spec.Count, len(spec.Seeded.Slots), rotate.Options{Force: true}, objects)
	if spec.Next {
		time.Sleep(s.d(fleetQuotaWindow))
		m = runFleetShard(t, fe, s, spec.Index, spec.Count, len(spec.Seeded.Slots), rotate.Options{Force: true, Again: true}, objects)
	}
	out, _ := json.Marshal(m)
	fmt.Printf("\n%s%s\n", fleetShardLine, out)
}

// BenchmarkFleetShards is BenchmarkFleet's 100x100 case split over 4
// processes (KEYROTATE_FLEET_BIG_SCALE as there, first rotation only),
// each paced with a quarter of the quotas (gcp.Quota.Share), with the
// drain gate when KEYROTATE_FLEET_GATE=1 (in every shard: a shard that
// ran otherwise fails the benchmark): the wall time runs from the first
// shard's start to the last shard's end, against the same bound;
// peak-B/rot is the largest shard's peak live heap above its baseline
// over its rotations in flight; peak-sum-B/rot the shards' peaks summed
// over all the slots, for comparing with one process: the largest of n
// shards' figures runs above their mean (at 20x100/4, loaded, by 8-26%). Each shard's line has its own wall time
// and bound: that of its slots alone (the project with the most of them,
// from the shard's start), which the other shards' calls can only delay.
//
// KEYROTATE_FLEET_SHARDS=PxS runs P projects × S slots instead (PxS/N:
// in N processes; PxS/1 is the same fleet in one shard process, for
// comparison), at
// KEYROTATE_FLEET_SCALE (default 10), without KEYROTATE_FLEET_BIG: 4
// shards of 100x10 or 10x100 show what sharding costs per rotation (CPU,
// probes, heap) in a fraction of the time; the ratio and heap targets are
// the 100x100 case's only. KEYROTATE_FLEET_SHARDS_NEXT=1 reports the next
// scheduled run instead of the first rotation: each shard rotates its
// slots, waits a quota window and runs again with a new Rotator (the keys
// are then keyrotate's, and the secrets name them: no LookupKey), as
// BenchmarkFleet's "next run"; the shards' next runs start when each
// shard's first ends. KEYROTATE_FLEET_SHARD_CPUPROFILE=FILE writes
// each shard's CPU profile to FILE.shardI. Each shard runs with its share
// of the CPUs as GOMAXPROCS (shardProcs).
func BenchmarkFleetShards(b *testing.B) {
	if v := os.Getenv("KEYROTATE_FLEET_SHARDS"); v != "" {
		size, count, split := strings.Cut(v, "/")
		shards := 4
		var projects, slots int
		_, err := fmt.Sscanf(size, "%dx%d", &projects, &slots)
		if split && err == nil {
			shards, err = strconv.Atoi(count)
		}
		if err != nil || projects < 1 || slots < 1 || shards < 1 {
			b.Fatalf("KEYROTATE_FLEET_SHARDS=%q: want PxS or PxS/N, e.g. 100x10 or 100x10/1", v)
		}
		runFleetShards(b, projects, slots, shards, fleetScale(), false)
		return
	}
	skipUnlessBig(b)
	runFleetShards(b, 100, 100, 4, fleetBigScale(), true)
}

// shardProcs is the GOMAXPROCS of each of n shard processes: their share
// of this machine's CPUs, at least 1 (KEYROTATE_FLEET_SHARD_GOMAXPROCS
// when set). The shards of a job run on machines of their own, a Cloud Run
// task or a pod each, whose Go runtime sizes GOMAXPROCS to the task's CPU
// limit (Go 1.25 on); n processes on one machine, each with every CPU,
// spend CPU on the scheduler's idle Ps spinning and waking — on 2 cores, 4
// shards of 10x100 in real time: 3.2 ms of CPU a rotation at GOMAXPROCS 2,
// 2.5 ms at 1, 2.0-2.5 ms in one process — which would not happen apart.
// The emulator child keeps every CPU.
func shardProcs(n int) string {
	if v := os.Getenv("KEYROTATE_FLEET_SHARD_GOMAXPROCS"); v != "" {
		return v
	}
	return strconv.Itoa(max(1, runtime.NumCPU()/n))
}

// shardInFlight is the bound on calls in flight of each of n shard
// processes (gcp.Meter.InFlight): gcp.InFlightPerCPU for its share of this
// machine's CPUs, as a task of its own would have for its CPU limit
// (shardProcs). GOMAXPROCS is a whole number, so 4 shards on 2 cores run
// at 1 each, twice their share; the bound can be exact, and at twice the
// share (800 each here) a shard held 35.5 KB a rotation at its peak
// against 28.0-29.6 KB at its share.
func shardInFlight(n int) string {
	return strconv.Itoa(max(1, gcp.InFlightPerCPU*runtime.NumCPU()/n))
}

// runFleetShards runs projects × slots as shards processes at scale s and
// reports as BenchmarkFleetShards says; targets holds it to issue 14's
// targets (the 100x100 case).
func runFleetShards(b *testing.B, projects, slots, shards int, s scaled, targets bool) {
	n := projects * slots
	gated := fleetGate(b)
	next := os.Getenv("KEYROTATE_FLEET_SHARDS_NEXT") == "1"
	for range b.N {
		fe := startFleetEmulator(b, fleetSpec{Projects: projects, SlotsPerProject: slots,
			Propagation: s.d(fleetPropagation), Latency: s.d(fleetLatency), QuotaWindow: s.d(fleetQuotaWindow),
			MonitoringDelay: s.d(fleetMonitoringDelay)})
		// The slots of each project in each shard, for the shards' own bounds.
		perShard := make([]map[string]int, shards)
		for i := range perShard {
			perShard[i] = map[string]int{}
		}
		for _, sl := range fe.Slots {
			perShard[rotate.Shard(sl.Name, shards)][sl.Project]++
		}
		seeded, _ := json.Marshal(fleetShardSpec{Seeded: fe.fleetSeeded, Count: shards, Scale: float64(s), Next: next})
		var spec fleetShardSpec
		_ = json.Unmarshal(seeded, &spec)
		type child struct {
			cmd *exec.Cmd
			out bytes.Buffer
		}
		children := make([]*child, shards)
		b.Cleanup(func() { // the shards still running when the benchmark stops early
			for _, c := range children {
				if c != nil && c.cmd.Process != nil && c.cmd.ProcessState == nil {
					_ = c.cmd.Process.Kill()
					_ = c.cmd.Wait()
				}
			}
		})
		dir := b.TempDir()
		for i := range children {
			spec.Index = i
			js, _ := json.Marshal(spec)
			file := filepath.Join(dir, fmt.Sprintf("shard-%d.json", i))
			if err := os.WriteFile(file, js, 0o600); err != nil {
				b.Fatal(err)
			}
			c := &child{cmd: exec.Command(os.Args[0], "-test.run=^TestFleetShardChild$", "-test.v")}
			c.cmd.Env = append(os.Environ(), fleetShardEnv+"="+file)
			if f := os.Getenv("KEYROTATE_FLEET_HEAPPROFILE"); f != "" { // a file a shard
				c.cmd.Env = append(c.cmd.Env, fmt.Sprintf("KEYROTATE_FLEET_HEAPPROFILE=%s.shard%d", f, i))
			}
			c.cmd.Env = append(c.cmd.Env, "GOMAXPROCS="+shardProcs(shards))
			if os.Getenv("KEYROTATE_FLEET_INFLIGHT") == "" {
				c.cmd.Env = append(c.cmd.Env, "KEYROTATE_FLEET_INFLIGHT="+shardInFlight(shards))
			}
			if f := os.Getenv("KEYROTATE_FLEET_SHARD_CPUPROFILE"); f != "" {
				c.cmd.Args = append(c.cmd.Args, fmt.Sprintf("-test.cpuprofile=%s.shard%d", f, i))
			}
			c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
			if err := c.cmd.Start(); err != nil {
				b.Fatal(err)
			}
			children[i] = c
		}
		var (
			runs       []fleetRun
			first, end time.Time
			throttled  int64
			perRot     float64
			peakSum    uint64
			cpu        time.Duration
			probes     float64
		)
		for i, c := range children {
			err := c.cmd.Wait()
			var m fleetRun
			found := false
			sc := bufio.NewScanner(&c.out)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				if js, ok := strings.CutPrefix(sc.Text(), fleetShardLine); ok {
					found = json.Unmarshal([]byte(js), &m) == nil
				}
			}
			if err != nil || !found {
				b.Fatalf("shard %d/%d: %v\n%s", i, shards, err, c.out.String())
			}
			if m.Gated != gated {
				b.Fatalf("shard %d/%d ran with the drain gate %v, the benchmark with %v", i, shards, m.Gated, gated)
			}
			runs = append(runs, m)
			if first.IsZero() || m.Start.Before(first) {
				first = m.Start
			}
			if e := m.Start.Add(m.Wall); e.After(end) {
				end = e
			}
			throttled += m.Throttled
			perRot = max(perRot, m.PerRotation())
			peakSum += m.Peak - min(m.Peak, m.Base)
			cpu += m.CPU
			probes += m.ProbesPerRotation * float64(m.Slots)
		}
		st := fe.stop()
		if st.Throttled != 0 || throttled != 0 {
			b.Errorf("paced at shares of the default quotas, the shards got 429s: the emulator answered %d, the clients counted %d", st.Throttled, throttled)
		}
		// bound is the bound of projects × slots from start; with the
		// gate, each gate waits at least the usage delay on the critical
		// path (see BenchmarkFleet).
		bound := func(start time.Time, projects, slots int) (bound, critical, windows time.Duration) {
			bound, critical, windows = fleetBound(start, projects, slots, emulator.DocumentedQuotas, s.times(), rotationChain(!next, fleetListKeys))
			if gated {
				critical += s.d(fleetUsageDelay)
				bound = max(critical, windows)
			}
			return bound, critical, windows
		}
		all, critical, windows := bound(first, projects, slots)
		wall := end.Sub(first)
		ratio := wall.Seconds() / all.Seconds()
		what := ""
		if next {
			what = " (the next run)"
		}
		if gated {
			what += fmt.Sprintf(" with the gate (usage delay %s added to the bound)", s.d(fleetUsageDelay))
		}
		b.Logf("%d slots in %d processes%s: wall %s, bound %s (critical path %s, quota windows %s from %s into a window), ratio %.2f, %d 429s, peak live heap %.0f bytes a rotation in flight (largest shard), %.1f MB above the baselines in all (%.0f bytes a rotation: the shards' peaks summed), %.2f probes a rotation, rotator CPU %s in all (%.0f µs a rotation; GOMAXPROCS %s a shard)",
			n, shards, what, wall.Round(time.Millisecond), all.Round(time.Millisecond), critical.Round(time.Millisecond), windows.Round(time.Millisecond),
			first.Sub(first.Truncate(s.d(fleetQuotaWindow))).Round(time.Millisecond), ratio, throttled, perRot, float64(peakSum)/(1<<20), float64(peakSum)/float64(n),
			probes/float64(n), cpu.Round(time.Millisecond), float64(cpu.Microseconds())/float64(n), shardProcs(shards))
		for i, m := range runs {
			most := 0
			for _, k := range perShard[i] {
				most = max(most, k)
			}
			own, _, _ := bound(m.Start, len(perShard[i]), most)
			b.Logf("  shard %d/%d: %d slots (at most %d a project), started +%s, wall %s, bound %s, ratio %.2f, %.2f calls/rotation (%s), %d 429s, %d quota waits (%s; %s), live heap %.1f MB above %.1f MB at peak (+%s; %.0f bytes a rotation in flight, %.0f of them stacks), CPU %s, new keys seen working %s after their wait began (mean; at most %s)",
				i, shards, m.Slots, most, m.Start.Sub(first).Round(time.Millisecond), m.Wall.Round(time.Millisecond), own.Round(time.Millisecond), m.Wall.Seconds()/own.Seconds(),
				m.CallsPerRotation, m.PerMethod(), m.Throttled, m.Waits, m.Waited.Round(time.Millisecond), m.waitsByKind(),
				float64(m.Peak-min(m.Peak, m.Base))/(1<<20), float64(m.Base)/(1<<20), m.PeakAfter.Round(time.Millisecond), m.PerRotation(), m.StacksPerRotation, m.CPU.Round(time.Millisecond), m.SeenMean.Round(time.Millisecond), m.SeenMax.Round(time.Millisecond))
			if m.Wall < own {
				b.Errorf("shard %d/%d: wall %s beat its lower bound %s: the bound is wrong", i, shards, m.Wall, own)
			}
		}
		if ratio < 1 {
			b.Errorf("wall %s beat the lower bound %s: the bound is wrong", wall, all)
		}
		if targets && ratio > 1.10 {
			b.Errorf("wall %s is %.2f × the lower bound %s, want at most 1.10", wall, ratio, all)
		}
		if targets && perRot > 30<<10 {
			b.Errorf("peak heap %.0f bytes a rotation in flight, want at most 30 KB", perRot)
		}
		b.ReportMetric(wall.Seconds(), "wall-s")
		b.ReportMetric(all.Seconds(), "bound-s")
		b.ReportMetric(ratio, "ratio")
		b.ReportMetric(float64(throttled), "429s")
		b.ReportMetric(perRot, "peak-B/rot")
		b.ReportMetric(float64(peakSum)/float64(n), "peak-sum-B/rot")
		b.ReportMetric(probes/float64(n), "probes/rot")
		b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/rot")
	}
}
