package rotate_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// The drain gate against the emulator over loopback, on a manual clock
// that the emulator and the Rotator share: the gate's sleeps move it, and
// a simulated consumer records its calls with the old key at each minute
// the clock passes (emulator RecordRequest), so that every run is
// deterministic.

var gateStart = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

// gateWorld is a world whose Rotator sleeps on a manual clock.
type gateWorld struct {
	*world
	clock *fake.ManualClock

	mu sync.Mutex
	// calling is the keys a consumer calls with at each minute (one
	// successful GenerateContent a minute each), until stopAt when set.
	calling map[string]time.Time
	// lastCall is the time of the latest simulated call.
	lastCall time.Time
	// filters are the Monitoring requests the Rotator sent, as text.
	filters []string

	// live is how many gates may sleep (1, or a fleet's slots not yet
	// done); the clock moves only once all of them sleep, to the earliest
	// time one of them waits for, as real timers would fire.
	live     int
	sleeping []*gateSleeper
	woke     *sync.Cond

	// oldKeys are a fleet's old keys by slot (gateFleet), and atGate, if
	// set, is called as a slot of the fleet reaches its gate, before it
	// sleeps until its time to start the gate.
	oldKeys map[string]string
	atGate  func(slot string, arrive time.Time)
	// onEvent, if set, is told of every event of a fleet's slots, and
	// fleetCtx, if set, is the fleet's context.
	onEvent  func(rotate.Event)
	fleetCtx context.Context
}

// newGateWorld starts a world whose emulator reports calls monDelay late,
// with a slot set to retire: quiet.
func newGateWorld(t *testing.T, monDelay, usageDelay, quiet, drain time.Duration) *gateWorld {
	t.Helper()
	clock := fake.NewManualClock(gateStart)
	g := &gateWorld{world: newWorldOn(t, emulator.Options{Clock: clock, MonitoringDelay: monDelay}), clock: clock, calling: map[string]time.Time{}, live: 1}
	g.woke = sync.NewCond(&g.mu)
	g.r.Now = clock.Now
	g.r.UsageDelay = usageDelay
	g.r.Sleep = g.sleep
	g.slot.Retire, g.slot.QuietPeriod, g.slot.DrainTimeout = rotate.RetireQuiet, quiet, drain
	// A Monitoring client that records each request it sends.
	mc, err := monitoring.NewMetricClient(context.Background(),
		option.WithEndpoint(g.srv.MonitoringAddr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithGRPCDialOption(grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			g.mu.Lock()
			g.filters = append(g.filters, prototext.Format(req.(proto.Message)))
			g.mu.Unlock()
			return inv(ctx, method, req, reply, cc, opts...)
		})))
	if err != nil {
		t.Fatal(err)
	}
	mc.CallOptions = &monitoring.MetricCallOptions{}
	t.Cleanup(func() { mc.Close() })
	g.r.Monitoring = mc
	return g
}

// gateSleeper is one call of sleep: until when, and whose context.
type gateSleeper struct {
	until time.Time
	ctx   context.Context
}

// sleep waits until the clock reads until, or ctx ends (a key waiting for
// another of its project to work is woken so). Once every live gate
// sleeps, the clock moves to the earliest time one of them waits for, a
// minute at a time; at each minute the consumers call. A sleeper whose
// context has ended no longer counts as sleeping, even before it leaves.
func (g *gateWorld) sleep(ctx context.Context, until time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	me := &gateSleeper{until, ctx}
	g.sleeping = append(g.sleeping, me)
	defer func() {
		g.sleeping = slices.DeleteFunc(g.sleeping, func(s *gateSleeper) bool { return s == me })
		g.woke.Broadcast() // a gate waiting for this one to leave
	}()
	stop := context.AfterFunc(ctx, func() { g.mu.Lock(); g.woke.Broadcast(); g.mu.Unlock() })
	defer stop()
	for ctx.Err() == nil && g.clock.Now().Before(until) {
		var asleep []time.Time
		for _, s := range g.sleeping {
			if s.ctx.Err() == nil {
				asleep = append(asleep, s.until)
			}
		}
		if len(asleep) == 0 || len(asleep) < g.live || !slices.MinFunc(asleep, time.Time.Compare).After(g.clock.Now()) {
			// Not every gate sleeps yet, or one is due and has yet to
			// wake and leave: wait for them.
			g.woke.Wait()
			continue
		}
		next := slices.MinFunc(asleep, time.Time.Compare)
		for now := g.clock.Now(); now.Before(next); now = g.clock.Now() {
			g.clock.Advance(min(now.Truncate(time.Minute).Add(time.Minute).Sub(now), next.Sub(now)))
			g.callLocked()
		}
		g.woke.Broadcast()
	}
	return ctx.Err()
}

// done tells the clock that a gate of a fleet ended.
func (g *gateWorld) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live--
	g.woke.Broadcast()
}

// callLocked records a call by each consumer still calling, one second
// before the clock's time.
func (g *gateWorld) callLocked() {
	at := g.clock.Now().Add(-time.Second)
	for key, stop := range g.calling {
		if !stop.IsZero() && at.After(stop) {
			continue
		}
		if err := g.srv.RecordRequest(key, generate, 200, at); err != nil {
			g.t.Error(err)
		}
		g.lastCall = at
	}
}

// consume makes a consumer call with key at each minute until stop (zero:
// for ever).
func (g *gateWorld) consume(key string, stop time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calling[key] = stop
}

func (g *gateWorld) oldAPIKey() *apikeys.V2Key {
	k, ok := g.srv.Key(g.oldName)
	if !ok {
		g.t.Fatal("old key gone")
	}
	return k
}

// checkFilters asserts that the Monitoring requests name keys by nothing
// but their uid: no key string.
func (g *gateWorld) checkFilters() {
	g.t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.filters) == 0 {
		g.t.Error("no Monitoring request was made")
	}
	for _, k := range g.srv.Keys(project, true) {
		for _, f := range g.filters {
			if strings.Contains(f, k.KeyString) {
				g.t.Fatalf("key string of %s in a Monitoring request: %s", k.Name, f)
			}
		}
	}
}

// TestDrainKeepsKeyInUse (acceptance 1): a consumer nobody configured keeps
// calling with the old key: at the drain timeout the old key is kept for
// finalize, the result says why and who calls, and the new key is in place.
func TestDrainKeepsKeyInUse(t *testing.T) {
	t.Parallel()
	g := newGateWorld(t, 4*time.Minute, 5*time.Minute, 10*time.Minute, 30*time.Minute)
	g.consume(g.oldName, time.Time{})
	res, err := g.rotate(rotate.Options{})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if !res.Rotated || g.envValue() == g.oldKey || g.latest() == g.oldKey {
		t.Fatalf("the rotation did not put the new key in place: %+v", res)
	}
	if old := g.oldAPIKey(); old.DeleteTime != "" {
		t.Fatalf("old key deleted at %s while a consumer still called with it", old.DeleteTime)
	}
	if got := g.clock.Now().Sub(gateStart); got != 30*time.Minute {
		t.Errorf("the gate waited %s, want the drain timeout (30m)", got)
	}
	d := res.Drain
	if d == nil || d.Outcome != rotate.DrainInUse || !d.Attention {
		t.Fatalf("drain = %+v, want in-use needing attention", d)
	}
	if res.Retired != "kept" || !strings.Contains(res.KeptReason, "still in use at the drain timeout") {
		t.Errorf("retired %q, reason %q; want kept, still in use", res.Retired, res.KeptReason)
	}
	if len(d.Usage) != 1 || d.Usage[0].Service != gemini || d.Usage[0].Method != generate || d.Usage[0].LastHour.OK < 25 {
		t.Errorf("usage = %+v, want GenerateContent of %s, about a call a minute", d.Usage, gemini)
	}
	if d.Polls != 31 {
		t.Errorf("polls = %d, want 31 (one a minute over 30 minutes, and at the start)", d.Polls)
	}
	old := g.oldAPIKey()
	if old.Annotations["keyrotate.kept-in-use"] != rotate.DrainInUse || old.Annotations["keyrotate.delete-after"] == "" {
		t.Errorf("old key annotations = %v, want kept-in-use and delete-after", old.Annotations)
	}
	if !strings.Contains(g.secret().Annotations["keyrotate.pending"], g.oldName) {
		t.Errorf("pending index = %s, want the old key for finalize", g.secret().Annotations["keyrotate.pending"])
	}
	if !strings.Contains(g.events.String(), "waiting for old key") || !strings.Contains(g.events.String(), "GenerateContent: 25 ok in the last hour (1.0/min ok, 10:00Z to 10:25Z)") {
		t.Errorf("no drain event naming the calls:\n%s", g.events.String())
	}
	st, err := g.r.Status(context.Background(), g.slot)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.OldKeys) != 1 || st.OldKeys[0].Due || !strings.Contains(st.OldKeys[0].Reason, "because it was still in use") {
		t.Errorf("status of the kept key = %+v, want it waiting because it was in use", st.OldKeys)
	}
	g.invariant()
	g.checkFilters()
}

// TestDrainDeletesOnceQuiet (acceptance 1): the consumer stops; the old
// key is deleted once it has been quiet for the quiet period in settled
// data, and not before.
func TestDrainDeletesOnceQuiet(t *testing.T) {
	t.Parallel()
	const delay, quiet = 5 * time.Minute, 10 * time.Minute
	g := newGateWorld(t, 4*time.Minute, delay, quiet, time.Hour)
	g.consume(g.oldName, gateStart.Add(7*time.Minute+30*time.Second))
	res, err := g.rotate(rotate.Options{})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	old := g.oldAPIKey()
	if old.DeleteTime == "" || res.Retired != "deleted" || res.Drain.Outcome != rotate.DrainQuiet || res.Drain.Attention {
		t.Fatalf("old key not deleted once quiet: retired %q, drain %+v", res.Retired, res.Drain)
	}
	deleted, err := time.Parse(time.RFC3339Nano, old.DeleteTime)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("last call %s; deleted at %s (quiet %s + usage delay %s)", g.lastCall.Format("15:04:05"), deleted.Format("15:04:05"), quiet, delay)
	if earliest := g.lastCall.Add(quiet + delay); deleted.Before(earliest) {
		t.Errorf("deleted at %s, before the last call (%s) + quiet + delay = %s", deleted, g.lastCall, earliest)
	}
	if latest := g.lastCall.Add(quiet + delay + 2*time.Minute); deleted.After(latest) {
		t.Errorf("deleted at %s, more than two polls after it was quiet (%s)", deleted, latest)
	}
	g.invariant()
	g.checkFilters()
}

// TestDrainErrorsOnlyDoNotBlock: a key used only by failing calls is
// deleted at once (they break nobody), and the calls are reported.
func TestDrainErrorsOnlyDoNotBlock(t *testing.T) {
	t.Parallel()
	g := newGateWorld(t, 0, 0, 10*time.Minute, time.Hour)
	for _, ago := range []time.Duration{time.Minute, 5 * time.Minute} {
		if err := g.srv.RecordRequest(g.oldName, generate, 403, gateStart.Add(-ago)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := g.rotate(rotate.Options{})
	if err != nil || res.Retired != "deleted" || res.Drain.Polls != 1 {
		t.Fatalf("Rotate = %+v, %v; want deleted at the first poll", res, err)
	}
	if u := res.Drain.Usage; len(u) != 1 || u[0].LastHour.Error != 2 || u[0].LastHour.OK != 0 {
		t.Errorf("usage = %+v, want the 2 failed calls", u)
	}
	if !strings.Contains(g.events.String(), "failed calls with it in the last hour: "+gemini+" GenerateContent: 0 ok, 2 failed") {
		t.Errorf("the failing calls are not reported:\n%s", g.events.String())
	}
}

// TestDrainCatchesLateReport (acceptance 2): a request made just before the
// gate, which Monitoring reports minutes late, keeps the old key until the
// quiet period has passed after it. A gate that trusted what Monitoring
// shows at once would have deleted the key at its start.
func TestDrainCatchesLateReport(t *testing.T) {
	t.Parallel()
	const delay, quiet = 5 * time.Minute, 10 * time.Minute
	g := newGateWorld(t, 4*time.Minute, delay, quiet, time.Hour)
	call := gateStart.Add(-20 * time.Second)
	if err := g.srv.RecordRequest(g.oldName, generate, 200, call); err != nil {
		t.Fatal(err)
	}
	// What a naive gate would see at the start: nothing yet.
	u := &gcp.Usage{Client: g.r.Monitoring}
	now, err := u.RequestCounts(context.Background(), project, gateStart, time.Hour, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(now) != 0 {
		t.Fatalf("Monitoring shows the call at once (%+v): the test needs it reported late", now)
	}
	res, err := g.rotate(rotate.Options{})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	deleted, err := time.Parse(time.RFC3339Nano, g.oldAPIKey().DeleteTime)
	if err != nil || res.Drain.Outcome != rotate.DrainQuiet {
		t.Fatalf("old key not deleted (%v): %+v", err, res.Drain)
	}
	t.Logf("call at %s reported %s late; gate started %s; deleted at %s after %d poll(s)", call.Format("15:04:05"), 4*time.Minute,
		gateStart.Format("15:04:05"), deleted.Format("15:04:05"), res.Drain.Polls)
	if earliest := call.Add(quiet + delay); deleted.Before(earliest) {
		t.Errorf("deleted at %s, before the late-reported call (%s) + quiet + delay = %s", deleted, call, earliest)
	}
	if res.Drain.LastOK.IsZero() {
		t.Errorf("the gate never saw the late call: %+v", res.Drain)
	}
}

// TestDrainUsagePolicy (item 4): when Cloud Monitoring cannot answer, usage:
// required keeps the old key and names the role or the API; best-effort
// warns and falls back to the grace period.
func TestDrainUsagePolicy(t *testing.T) {
	t.Parallel()
	deny := func(g *gateWorld) { g.srv.DenyPermission("monitoring.timeSeries.list") }
	disable := func(g *gateWorld) { g.srv.SetServiceEnabled(project, "monitoring.googleapis.com", false) }
	none := func(g *gateWorld) { g.r.Monitoring = nil }
	day := 24 * time.Hour
	for _, tc := range []struct {
		name    string
		setup   func(*gateWorld)
		policy  rotate.UsagePolicy
		grace   time.Duration
		retired string
		names   string
	}{
		{"required, permission denied", deny, rotate.UsageRequired, 0, "kept", "roles/monitoring.viewer"},
		{"required, API disabled", disable, rotate.UsageRequired, 0, "kept", "monitoring.googleapis.com"},
		{"required, no client", none, rotate.UsageRequired, 0, "kept", "no Cloud Monitoring client"},
		{"best-effort, permission denied, no grace", deny, rotate.UsageBestEffort, 0, "deleted", "roles/monitoring.viewer"},
		{"best-effort, API disabled, grace", disable, "", day, "kept", "monitoring.googleapis.com"},
		{"best-effort, no client", none, rotate.UsageBestEffort, 0, "deleted", "no Cloud Monitoring client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateWorld(t, 0, 5*time.Minute, 10*time.Minute, time.Hour)
			g.slot.Usage, g.slot.Grace = tc.policy, tc.grace
			tc.setup(g)
			res, err := g.rotate(rotate.Options{})
			if err != nil {
				t.Fatalf("Rotate: %v", err)
			}
			d := res.Drain
			if d == nil || d.Outcome != rotate.DrainUnknown || !strings.Contains(d.Reason, tc.names) {
				t.Fatalf("drain = %+v, want usage unknown naming %q", d, tc.names)
			}
			if res.Retired != tc.retired {
				t.Errorf("retired = %q, want %q", res.Retired, tc.retired)
			}
			required := tc.policy == rotate.UsageRequired
			if d.Attention != required {
				t.Errorf("needs attention = %v, want %v", d.Attention, required)
			}
			switch {
			case required:
				if !strings.Contains(res.KeptReason, tc.names) || g.oldAPIKey().Annotations["keyrotate.kept-in-use"] != rotate.DrainUnknown {
					t.Errorf("kept reason %q, annotations %v: want the cause and the kept-in-use mark", res.KeptReason, g.oldAPIKey().Annotations)
				}
			case tc.grace > 0:
				if res.DeleteAfter == nil || !res.DeleteAfter.Equal(gateStart.Add(tc.grace)) || res.KeptReason != "" {
					t.Errorf("delete after %v, reason %q; want the grace period's end", res.DeleteAfter, res.KeptReason)
				}
			}
			if !required && !strings.Contains(g.events.String(), "warning: Cloud Monitoring cannot tell") {
				t.Errorf("best-effort did not warn:\n%s", g.events.String())
			}
			if g.clock.Now() != gateStart {
				t.Errorf("the gate waited %s with no answer to wait for", g.clock.Now().Sub(gateStart))
			}
		})
	}
}

// gateFleet rotates the world's slot and n-1 more of its project at once
// (their old keys called until calling, if not zero), slot i reaching the
// gate i×stagger after the clock's time: it sleeps on the manual clock
// once its places are read back. It returns each slot's drain and the time it
// should have reached the gate; nil drains if a slot failed.
func (g *gateWorld) gateFleet(n int, stagger time.Duration, calling time.Time) (drains map[string]*rotate.Drain, arrive map[string]time.Time) {
	t := g.t
	t.Helper()
	// n rotations at once, under the race detector and beside other
	// tests on 2 cores: a call can wait more than the world's 5 s for a
	// CPU (a clean-clone CI run: LookupKey of 2 of 100 preflights). Its
	// per-call timeout is not what these tests are about.
	g.r.Retry.CallTimeout, g.r.Retry.MaxElapsed = 30*time.Second, 30*time.Second
	g.slot.Targets = nil
	slots := []*rotate.Slot{g.slot}
	g.oldKeys = map[string]string{g.slot.Name: g.oldName}
	for i := range n - 1 {
		name := fmt.Sprintf("gemini-%d", i)
		spec := &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: gemini}}}}
		key, ks, err := g.srv.SeedKey(project, name+"-2026", spec)
		if err != nil {
			t.Fatal(err)
		}
		sec, err := g.srv.SeedSecret(project, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.srv.SeedSecretVersion(sec, []byte(ks)); err != nil {
			t.Fatal(err)
		}
		s := *g.slot
		s.Name, s.Secret = name, sec
		slots = append(slots, &s)
		g.oldKeys[name] = key
		if !calling.IsZero() {
			g.consume(key, calling)
		}
	}
	if !calling.IsZero() {
		g.consume(g.oldName, calling)
	}
	g.live = len(slots)
	arrive = map[string]time.Time{}
	first := g.clock.Now()
	for i, s := range slots {
		arrive[s.Name] = first.Add(time.Duration(i) * stagger)
	}
	// The world's event buffer is not for concurrent slots.
	g.r.Events = func(e rotate.Event) {
		if g.onEvent != nil {
			g.onEvent(e)
		}
		if e.Step == rotate.StepReadback {
			if g.atGate != nil {
				g.atGate(e.Slot, arrive[e.Slot])
			}
			if err := g.sleep(context.Background(), arrive[e.Slot]); err != nil {
				t.Error(err)
			}
		}
	}
	g.srv.ResetCalls()
	var (
		mu    sync.Mutex
		fails atomic.Int32
	)
	drains = map[string]*rotate.Drain{}
	f := &rotate.Fleet{Rotator: g.r, Parallel: len(slots), Done: func(o rotate.Outcome) {
		g.done()
		if o.Err != nil {
			t.Errorf("slot %s: %v", o.Slot.Name, o.Err)
			fails.Add(1)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		drains[o.Slot.Name] = o.Result.Drain
		if d := o.Result.Drain; d == nil || !d.Started.Equal(arrive[o.Slot.Name]) {
			t.Errorf("slot %s: drain %+v, want one started at %s", o.Slot.Name, d, arrive[o.Slot.Name].Format("15:04:05"))
			fails.Add(1)
		}
	}}
	ctx := context.Background()
	if g.fleetCtx != nil {
		ctx = g.fleetCtx
	}
	f.Run(ctx, slots, rotate.Options{Force: true})
	if fails.Load() > 0 {
		return nil, arrive
	}
	return drains, arrive
}

// TestDrainFleetSharesOneQuery (item 5): slots of one project that wait
// together share one ListTimeSeries per poll, from the first: the slots
// reach the gate 15 seconds apart, within one poll interval, and the
// later ones take the project's read of that interval as their first
// (it cannot pass a gate that started after it; it shows the traffic).
func TestDrainFleetSharesOneQuery(t *testing.T) {
	t.Parallel()
	g := newGateWorld(t, 0, 2*time.Minute, 5*time.Minute, time.Hour)
	const stagger = 15 * time.Second
	drains, _ := g.gateFleet(4, stagger, gateStart.Add(3*time.Minute))
	if drains == nil {
		return
	}
	polls := 0
	for name, d := range drains {
		if d.Outcome != rotate.DrainQuiet {
			t.Errorf("slot %s: drain %+v, want quiet", name, d)
		}
		polls = max(polls, d.Polls)
	}
	calls := g.srv.Calls("monitoring.ListTimeSeries")
	t.Logf("%d slots of one project reached the gate %s apart and waited together: %d poll(s) each, %d ListTimeSeries call(s)", len(drains), stagger, polls, calls)
	if polls < 5 || calls != polls {
		t.Errorf("ListTimeSeries calls = %d for %d slots polling %d times, want one per poll, the first included", calls, len(drains), polls)
	}
	g.checkFilters()
}

// TestDrainFleetPassesWhenQuiet (item 5): a gate passes as soon as the
// settled-window rule can pass it, not at the next poll of a grid, and the
// gates of a project still share their reads. 100 slots of one project
// reach the gate over 7.4 seconds, 4 seconds past a minute; their old keys
// are quiet. Each passes between its own start + the usage delay and the
// last one's (the project's gates due within a poll interval share one
// read, at the latest of their due times), where polls on the minute
// grid passed them all at the first minute past that, 48.6 s later.
// The project reads Monitoring 4 times: at the first gate's start (every
// gate's first read: it shows the traffic at once), a poll later, at the
// first gate's start + usage delay (it passes) and at the last one's
// (the others pass).
func TestDrainFleetPassesWhenQuiet(t *testing.T) {
	t.Parallel()
	const delay, n, stagger = 2 * time.Minute, 100, 75 * time.Millisecond
	g := newGateWorld(t, 0, delay, 5*time.Minute, time.Hour)
	g.clock.Advance(4 * time.Second)
	drains, arrive := g.gateFleet(n, stagger, time.Time{})
	if drains == nil {
		return
	}
	last := slices.MaxFunc(slices.Collect(maps.Values(arrive)), time.Time.Compare)
	for name, d := range drains {
		if d.Outcome != rotate.DrainQuiet {
			t.Errorf("slot %s: drain %+v, want quiet", name, d)
			continue
		}
		if d.Ended.Before(arrive[name].Add(delay)) || d.Ended.After(last.Add(delay)) {
			t.Errorf("slot %s: started %s, passed at %s; want between its start + usage delay (%s) and the last start + usage delay (%s)",
				name, arrive[name].Format("15:04:05.000"), d.Ended.Format("15:04:05.000"),
				arrive[name].Add(delay).Format("15:04:05.000"), last.Add(delay).Format("15:04:05.000"))
		}
	}
	calls := g.srv.Calls("monitoring.ListTimeSeries")
	t.Logf("%d gates started %s to %s: passed by %s, %d ListTimeSeries call(s)", n, arrive[g.slot.Name].Format("15:04:05.000"),
		last.Format("15:04:05.000"), g.clock.Now().Format("15:04:05.000"), calls)
	if calls != 4 {
		t.Errorf("ListTimeSeries calls = %d, want 4 (at the first start, a poll later, at the first start + usage delay, at the last)", calls)
	}
	g.checkFilters()
}

// TestDrainFleetCatchesLateReport (acceptance 2, in a fleet): a gate that
// shares its project's reads, made at other gates' times, still waits for
// data settled for itself. Slot 1 reaches the gate 15 s after slot 0; its
// old key was called 5 s before that, and Monitoring shows the call only
// 4m55s later, after the project's read at slot 0's start + usage delay
// (which passes slot 0, and shows slot 1 nothing). Slot 1 is deleted only
// once the quiet period has passed after the call, in settled data.
func TestDrainFleetCatchesLateReport(t *testing.T) {
	t.Parallel()
	const delay, quiet, monDelay = 5 * time.Minute, 10 * time.Minute, 4*time.Minute + 55*time.Second
	g := newGateWorld(t, monDelay, delay, quiet, time.Hour)
	var call time.Time
	g.atGate = func(slot string, arrive time.Time) {
		if slot == "gemini-0" {
			call = arrive.Add(-5 * time.Second)
			if err := g.srv.RecordRequest(g.oldKeys[slot], generate, 200, call); err != nil {
				t.Error(err)
			}
		}
	}
	drains, arrive := g.gateFleet(2, 15*time.Second, time.Time{})
	if drains == nil {
		return
	}
	if d := drains[g.slot.Name]; d.Outcome != rotate.DrainQuiet || !d.Ended.Equal(arrive[g.slot.Name].Add(delay)) {
		t.Errorf("slot %s (quiet key): %s at %s, want quiet at its start + usage delay", g.slot.Name, d.Outcome, d.Ended.Format("15:04:05"))
	}
	d := drains["gemini-0"]
	t.Logf("call at %s shown %s late; gate started %s; passed at %s after %d poll(s)", call.Format("15:04:05"), monDelay,
		arrive["gemini-0"].Format("15:04:05"), d.Ended.Format("15:04:05"), d.Polls)
	if d.Outcome != rotate.DrainQuiet || d.LastOK.IsZero() {
		t.Fatalf("slot gemini-0: drain %+v, want quiet after seeing the late call", d)
	}
	if earliest := call.Add(quiet + delay); d.Ended.Before(earliest) {
		t.Errorf("slot gemini-0 passed at %s, before the late-reported call (%s) + quiet + delay = %s", d.Ended.Format("15:04:05"), call.Format("15:04:05"), earliest.Format("15:04:05"))
	}
}

// TestDrainFleetDeadlineJoinsRead (item 5): gates whose drain timeouts
// fall within one poll interval end on one shared read (at the latest of
// their deadlines, at most a poll interval after each), not each on a
// read of its own at its deadline. 4 slots 15 s apart whose old keys are
// called throughout: the project reads at the first start, once a minute
// to the first deadline (11 reads) and once more for the other three
// (12), where a read per deadline made 14.
func TestDrainFleetDeadlineJoinsRead(t *testing.T) {
	t.Parallel()
	const drain, poll = 10 * time.Minute, time.Minute
	g := newGateWorld(t, 0, 2*time.Minute, 5*time.Minute, drain)
	drains, arrive := g.gateFleet(4, 15*time.Second, gateStart.Add(time.Hour))
	if drains == nil {
		return
	}
	for name, d := range drains {
		deadline := arrive[name].Add(drain)
		if d.Outcome != rotate.DrainInUse || d.Ended.Before(deadline) || d.Ended.After(deadline.Add(poll)) {
			t.Errorf("slot %s: %s at %s, want in use at its drain timeout (%s) or within a poll interval after it",
				name, d.Outcome, d.Ended.Format("15:04:05"), deadline.Format("15:04:05"))
		}
	}
	if calls := g.srv.Calls("monitoring.ListTimeSeries"); calls != 12 {
		t.Errorf("ListTimeSeries calls = %d, want 12 (11 polls to the first deadline, one shared by the other three)", calls)
	}
}

// TestDrainFleetNoTimeoutChecksOnce: a gate with no drain timeout checks
// once, at its start, even when another gate of its project read
// Monitoring moments before (that read could not end it, so taking it
// first would only add a poll).
func TestDrainFleetNoTimeoutChecksOnce(t *testing.T) {
	t.Parallel()
	g := newGateWorld(t, 0, 2*time.Minute, 5*time.Minute, 0)
	drains, arrive := g.gateFleet(4, 15*time.Second, gateStart.Add(time.Hour))
	if drains == nil {
		return
	}
	for name, d := range drains {
		if d.Outcome != rotate.DrainInUse || d.Polls != 1 || !d.Ended.Equal(arrive[name]) {
			t.Errorf("slot %s: %s after %d poll(s) at %s, want in use after one, at its start %s", name, d.Outcome, d.Polls, d.Ended.Format("15:04:05"), arrive[name].Format("15:04:05"))
		}
	}
	if calls := g.srv.Calls("monitoring.ListTimeSeries"); calls != len(drains) {
		t.Errorf("ListTimeSeries calls = %d, want one at each gate's start (%d)", calls, len(drains))
	}
}

// TestDrainFleetNoUsageDelay: with no usage delay a gate's own read at its
// start can pass it, and a read from before its start cannot: each gate
// of a fleet reads at its start and passes there, rather than taking
// the project's earlier read and waiting for the next poll.
func TestDrainFleetNoUsageDelay(t *testing.T) {
	t.Parallel()
	g := newGateWorld(t, 0, 0, 5*time.Minute, time.Hour)
	drains, arrive := g.gateFleet(4, 15*time.Second, time.Time{})
	if drains == nil {
		return
	}
	for name, d := range drains {
		if d.Outcome != rotate.DrainQuiet || d.Polls != 1 || !d.Ended.Equal(arrive[name]) {
			t.Errorf("slot %s: %s after %d poll(s) at %s, want quiet at its first, at %s", name, d.Outcome, d.Polls, d.Ended.Format("15:04:05"), arrive[name].Format("15:04:05"))
		}
	}
	if calls := g.srv.Calls("monitoring.ListTimeSeries"); calls != len(drains) {
		t.Errorf("ListTimeSeries calls = %d, want one at each gate's start (%d)", calls, len(drains))
	}
}

// TestDrainFirstReadAtOnce: a gate that starts between two polls of the
// grid reads Monitoring at once, not at the next poll nor at start+usage
// delay (when a read could first pass it): a terminal sees the old key's
// traffic from the start.
func TestDrainFirstReadAtOnce(t *testing.T) {
	t.Parallel()
	g := newGateWorld(t, 0, 5*time.Minute, 10*time.Minute, time.Hour)
	start := gateStart.Add(30 * time.Second)
	g.clock.Advance(start.Sub(gateStart))
	if err := g.srv.RecordRequest(g.oldName, generate, 200, start.Add(-20*time.Second)); err != nil {
		t.Fatal(err)
	}
	var first []time.Time // the clock at each drain event
	show := g.r.Events
	g.r.Events = func(e rotate.Event) {
		if e.Drain != nil {
			first = append(first, g.clock.Now())
			if len(e.Drain.Usage) != 1 || e.Drain.Usage[0].LastHour.OK != 1 {
				t.Errorf("first poll shows %+v, want the call", e.Drain.Usage)
			}
		}
		show(e)
	}
	// Stop the run at the gate's first sleep.
	ctx, cancel := context.WithCancel(context.Background())
	g.r.Sleep = func(context.Context, time.Time) error { cancel(); return context.Canceled }
	g.srv.ResetCalls()
	if _, err := g.r.Rotate(ctx, g.slot, rotate.Options{Force: true}); !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("Rotate = %v, want ErrStoppedPartWay", err)
	}
	if len(first) != 1 || !first[0].Equal(start) {
		t.Errorf("drain events at %v, want one at the gate's start %s", first, start.Format("15:04:05"))
	}
	if n := g.srv.Calls("monitoring.ListTimeSeries"); n != 1 {
		t.Errorf("ListTimeSeries calls = %d, want 1", n)
	}
	g.invariant()
}

// TestDrainStopsWithContext: a run stopped while the gate waits stops
// part-way, safely, with both keys working.
func TestDrainStopsWithContext(t *testing.T) {
	t.Parallel()
	g := newGateWorld(t, 0, 5*time.Minute, 10*time.Minute, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	g.r.Sleep = func(context.Context, time.Time) error { cancel(); return context.Canceled }
	g.consume(g.oldName, time.Time{})
	_, err := g.r.Rotate(ctx, g.slot, rotate.Options{Force: true})
	if !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("Rotate = %v, want ErrStoppedPartWay", err)
	}
	if g.oldAPIKey().DeleteTime != "" {
		t.Error("old key deleted by a stopped run")
	}
	g.invariant()
}

// TestDrainFleetTakesTurnsToRetire (item 5): the gates of a project pass
// together on one shared read, and then no more than the Rotator's limit
// of them retire at once (from the gate's verdict through the delete, the
// version disable and the unlock); the others wait for a turn, and every
// old key is still deleted. 30 slots reach the gate at the same instant,
// with a limit of 3: all 30 retired at once before the limit.
func TestDrainFleetTakesTurnsToRetire(t *testing.T) {
	t.Parallel()
	const n, limit = 30, 3
	g := newGateWorld(t, 0, 2*time.Minute, 5*time.Minute, time.Hour)
	rotate.SetRetireLimit(g.r, limit)
	// A turn not given back would leave the last rotations waiting.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g.fleetCtx = ctx
	var (
		mu                     sync.Mutex
		retiring, most, waited int
	)
	g.onEvent = func(e rotate.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case e.Step == rotate.StepRetire && strings.Contains(e.Message, " is quiet: "):
			retiring++
			most = max(most, retiring)
			if rotate.RetireWaiting(g.r) > 0 {
				waited++
			}
		case e.Step == rotate.StepDone:
			retiring--
		}
	}
	drains, _ := g.gateFleet(n, 0, time.Time{})
	if drains == nil {
		return
	}
	for name, d := range drains {
		if d.Outcome != rotate.DrainQuiet {
			t.Errorf("slot %s: drain %+v, want quiet", name, d)
		}
	}
	for slot, key := range g.oldKeys {
		if k, ok := g.srv.Key(key); !ok || k.DeleteTime == "" {
			t.Errorf("slot %s: old key %s not deleted", slot, key)
		}
	}
	t.Logf("%d gates passed together; at most %d retired at once (limit %d); %d began while others waited", n, most, limit, waited)
	if most > limit {
		t.Errorf("%d rotations retired at once, want at most %d", most, limit)
	}
	if most < limit || waited == 0 {
		t.Errorf("at most %d retired at once and %d began while others waited: the gates did not pass together, the test shows nothing", most, waited)
	}
	if taken := rotate.RetireTurnsTaken(g.r); taken != 0 {
		t.Errorf("%d turns to retire still taken after the run", taken)
	}
}

// TestDrainTurnGivenBack: a rotation gives its turn to retire back
// however its retire ends, and one stopped while it waits for a turn
// stops part-way, safely. With a limit of 1: a rotation stopped while
// the only turn is held elsewhere (the old key not deleted, both keys
// work), one whose DeleteKey fails, and then the run that resumes the
// rotation and deletes the old key: a turn kept by either would make it
// wait for ever.
func TestDrainTurnGivenBack(t *testing.T) {
	t.Parallel()
	g := newGateWorld(t, 0, 0, 5*time.Minute, time.Hour)
	rotate.SetRetireLimit(g.r, 1)
	give := rotate.HoldRetireTurns(g.r, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for rotate.RetireWaiting(g.r) == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := g.r.Rotate(ctx, g.slot, rotate.Options{Force: true}); !errors.Is(err, rotate.ErrStoppedPartWay) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Rotate stopped while waiting for a turn = %v, want ErrStoppedPartWay and context.Canceled", err)
	}
	if g.oldAPIKey().DeleteTime != "" {
		t.Error("old key deleted by a run stopped before its turn")
	}
	g.invariant()
	give()
	if taken := rotate.RetireTurnsTaken(g.r); taken != 0 {
		t.Fatalf("%d turns taken after the stopped run, want 0", taken)
	}

	g.srv.Fail("apikeys.DeleteKey", fake.Next, fake.Fault{Code: codes.PermissionDenied, Message: "injected"})
	if _, err := g.r.Rotate(context.Background(), g.slot, rotate.Options{Force: true}); !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("Rotate with DeleteKey failing = %v, want ErrStoppedPartWay", err)
	}
	if taken := rotate.RetireTurnsTaken(g.r); taken != 0 {
		t.Fatalf("%d turns taken after the failed delete, want 0", taken)
	}
	g.invariant()

	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := g.r.Rotate(ctx, g.slot, rotate.Options{Force: true})
	if err != nil || res.Retired != "deleted" {
		t.Fatalf("resumed Rotate = %+v, %v; want the old key deleted", res, err)
	}
	if g.oldAPIKey().DeleteTime == "" {
		t.Error("old key not deleted by the resumed run")
	}
	g.invariant()
}

// TestFinalizeKeptInUse: finalize deletes a key the gate kept in use only
// once the settled-window rule holds from the time it was kept, without
// waiting; Force deletes it anyway (but never a key a place holds).
func TestFinalizeKeptInUse(t *testing.T) {
	t.Parallel()
	const delay, quiet = 5 * time.Minute, 10 * time.Minute
	g := newGateWorld(t, 4*time.Minute, delay, quiet, 0)
	g.consume(g.oldName, time.Time{})
	// The consumer called a minute before the rotation: with no drain
	// timeout the key is kept at once.
	g.mu.Lock()
	g.callLocked()
	g.mu.Unlock()
	res, err := g.rotate(rotate.Options{})
	if err != nil || res.Retired != "kept" || !res.Drain.Attention {
		t.Fatalf("Rotate = %+v, %v; want the old key kept", res, err)
	}
	finalize := func(opts rotate.FinalizeOptions) rotate.Finalized {
		t.Helper()
		fr, err := g.r.Finalize(context.Background(), g.slot, opts)
		if err != nil {
			t.Fatalf("Finalize: %v", err)
		}
		g.noLeaks(nil, nil)
		for _, f := range fr.Keys {
			if f.Key == g.oldName {
				return f
			}
		}
		t.Fatalf("finalize did not look at the old key: %+v", fr.Keys)
		return rotate.Finalized{}
	}
	kept := g.clock.Now()
	// Still called: skipped, with its traffic.
	g.sleep(context.Background(), kept.Add(20*time.Minute))
	if f := finalize(rotate.FinalizeOptions{}); f.Action != rotate.FinalizeSkipped || !strings.Contains(f.Reason, "GenerateContent") {
		t.Errorf("finalize while in use = %+v, want skipped naming the calls", f)
	}
	if g.oldAPIKey().DeleteTime != "" || !strings.Contains(g.secret().Annotations["keyrotate.pending"], g.oldName) {
		t.Fatal("a skipped key was deleted or dropped from the index")
	}
	// The consumer stops: not quiet until its last call + quiet + delay.
	g.consume(g.oldName, g.clock.Now().Add(-time.Minute))
	g.sleep(context.Background(), g.clock.Now().Add(quiet+delay-2*time.Minute))
	if f := finalize(rotate.FinalizeOptions{}); f.Action != rotate.FinalizeSkipped {
		t.Errorf("finalize before the quiet period passed in settled data = %+v, want skipped", f)
	}
	g.sleep(context.Background(), g.clock.Now().Add(3*time.Minute))
	if f := finalize(rotate.FinalizeOptions{DryRun: true}); f.Action != rotate.FinalizeWouldDelete || !strings.Contains(f.Reason, "quiet since") {
		t.Errorf("finalize once quiet = %+v, want would delete", f)
	}
	// Force: a consumer back at work does not keep it.
	g.consume(g.oldName, time.Time{})
	g.sleep(context.Background(), g.clock.Now().Add(5*time.Minute))
	if f := finalize(rotate.FinalizeOptions{DryRun: true}); f.Action != rotate.FinalizeSkipped {
		t.Errorf("finalize with the consumer back = %+v, want skipped", f)
	}
	if f := finalize(rotate.FinalizeOptions{Force: true}); f.Action != rotate.FinalizeDeleted || !strings.Contains(f.Reason, "with force") {
		t.Errorf("finalize --force = %+v, want deleted", f)
	}
	if g.oldAPIKey().DeleteTime == "" {
		t.Error("old key not deleted with force")
	}
	g.checkFilters()
}

// TestFinalizeForceKeepsHeldKey: Force never deletes a key a place holds.
func TestFinalizeForceKeepsHeldKey(t *testing.T) {
	t.Parallel()
	g := newGateWorld(t, 0, 5*time.Minute, 10*time.Minute, 0)
	g.consume(g.oldName, time.Time{})
	g.mu.Lock()
	g.callLocked()
	g.mu.Unlock()
	if res, err := g.rotate(rotate.Options{}); err != nil || res.Retired != "kept" {
		t.Fatalf("Rotate = %+v, %v; want the old key kept", res, err)
	}
	// Something puts the old key back into the .env.
	if err := os.WriteFile(g.envPath, []byte(strings.ReplaceAll(g.envText, "\r", "")), 0o640); err != nil {
		t.Fatal(err)
	}
	fr, err := g.r.Finalize(context.Background(), g.slot, rotate.FinalizeOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(fr.Keys) != 1 || fr.Keys[0].Action != rotate.FinalizeSkipped || !strings.Contains(fr.Keys[0].Reason, "still held") {
		t.Errorf("finalize --force of a held key = %+v, want skipped", fr.Keys)
	}
	if g.oldAPIKey().DeleteTime != "" {
		t.Error("force deleted a key a target holds")
	}
}
