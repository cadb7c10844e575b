package rotate_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/gcp"
)

// BenchmarkClientCalls measures what one call costs the rotator's side
// (the emulator is a child process): reads a rotation makes before its
// probe (GetSecret, AccessSecretVersion, LookupKey over gRPC) and an API
// Keys read over REST (GetKey), through the clients, Meter and retry
// policy of a fleet run, 64 in flight at once as in a fleet's burst. It
// reports the rotator's CPU a call (cpu-us/call, user and system; on a
// shared machine it varies with the load) beside allocs/op and B/op.
func BenchmarkClientCalls(b *testing.B) {
	fe := startFleetEmulator(b, fleetSpec{Projects: 4, SlotsPerProject: 16})
	meter := &gcp.Meter{Pacer: gcp.NewPacer(map[string]gcp.Quota{}, time.Minute)}
	r, _ := fe.rotator(b, meter, 1)
	sm := &gcp.Secrets{Client: r.Secrets, Retry: r.Retry}
	keys := &gcp.Keys{Service: r.Keys, LookupClient: r.Lookup, Retry: r.Retry}
	ctx := context.Background()
	// The keys, looked up once.
	names := make([]string, len(fe.Slots))
	for i, s := range fe.Slots {
		v, err := sm.Access(ctx, s.Secret+"/versions/latest")
		if err != nil {
			b.Fatal(err)
		}
		if names[i], err = keys.Lookup(ctx, v.Key); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		call func(ctx context.Context, i int) error
	}{
		{"GetSecret", func(ctx context.Context, i int) error {
			_, err := sm.Get(ctx, fe.Slots[i].Secret)
			return err
		}},
		{"AccessSecretVersion", func(ctx context.Context, i int) error {
			_, err := sm.Access(ctx, fe.Slots[i].Secret+"/versions/latest")
			return err
		}},
		{"LookupKey", func(ctx context.Context, i int) error {
			v, err := sm.Access(ctx, fe.Slots[i].Secret+"/versions/latest")
			if err == nil {
				_, err = keys.Lookup(ctx, v.Key)
			}
			return err
		}},
		{"GetKey", func(ctx context.Context, i int) error {
			_, err := keys.Get(ctx, names[i])
			return err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(32) // 64 in flight on 2 cores
			cpu0 := cpuTime()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1)) % len(fe.Slots)
					if err := c.call(ctx, i); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/call")
			runtime.GC()
		})
	}
}
