package rotate

import (
	"testing"
	"time"
)

// TestProbeAtShards: when the leader of a project's waiting keys probes
// next, in one process and as one of 4 (Rotator.Shards), by the defaults
// (probeFloor 1s). A shard's leader probes every 4 × probeFloor, until its
// key is 4 × probeFloor short of the age at which a key of any project of
// the run was seen working (pw.fleet): from there, every probeFloor again,
// so that the project whose keys were made last — the one that ends the
// job — sees them work at most probeFloor late. One process is unchanged:
// every probeFloor, whatever other projects learned.
func TestProbeAtShards(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	const interval = 10 * time.Second // the steady backoff at its cap: ÷ 25 keys is under the floor
	for _, c := range []struct {
		name   string
		shards int
		fleet  time.Duration
		probed float64 // key made at t0
		next   float64 // its own backoff
		want   float64
	}{
		{"one process", 1, 0, 20, 30, 21},
		{"one process, fleet known", 1, 60 * time.Second, 20, 30, 21},
		{"one of 4, nothing learned", 4, 0, 20, 30, 24},
		{"one of 4, far from the fleet's age", 4, 60 * time.Second, 20, 30, 24},
		{"one of 4, reaching the window", 4, 60 * time.Second, 54, 64, 56},
		{"one of 4, inside the window", 4, 60 * time.Second, 56, 66, 57},
		{"one of 4, past the fleet's age", 4, 60 * time.Second, 70, 80, 71},
		{"one of 4, own backoff sooner", 4, 0, 20, 22.5, 22.5},
		{"2 of them", 2, 60 * time.Second, 50, 60, 52},
		{"2 of them, window", 2, 60 * time.Second, 57, 67, 58},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := &run{Rotator: &Rotator{Shards: c.shards, Now: func() time.Time { return sec(c.probed) }}}
			pw := projectWait{leads: true, waiting: 25, fleet: c.fleet}
			got := st.probeAt(pw, true, t0, sec(c.probed), sec(c.next), interval)
			if !got.Equal(sec(c.want)) {
				t.Errorf("probeAt(probed +%gs) = +%s, want +%gs", c.probed, got.Sub(t0), c.want)
			}
		})
	}
}
