package rotate

import (
	"context"
	"math"
	"sort"
	"time"

	"github.com/keyrotate/keyrotate/internal/gcp"
)

// What breaks with a leaked key. A leaked key is deleted at once, whoever
// still calls with it; FindLeak reads who does first, so that the
// responder knows whom to call. It reads before the delete because
// afterwards the counts only grow by failing calls.
//
// The status view's hourly periods (usage.go) are too coarse for this: a
// rate needs minutes, and "last seen within this hour" does not tell a
// consumer that stopped an hour ago from one calling now. So a leak reads
// one key with a view of its own: one ListTimeSeries filtered to the key's
// credential_id (its uid, never its string), the last TrafficWindow in
// TrafficPeriod periods (at most 1,440 points per method and response
// class). Calls of the last few minutes are not counted yet (Monitoring's
// ingestion delay).
//
// The incident response never waits on Monitoring: the read is bounded by
// Rotator.LeakUsageTimeout, and a read that fails or runs out of time
// leaves Leak.UsageUnknown saying why, and the response goes on.

// Traffic view of a leaked key.
const (
	TrafficWindow = 24 * time.Hour
	TrafficPeriod = time.Minute
	// DefaultLeakUsageTimeout bounds FindLeak's read of the traffic.
	DefaultLeakUsageTimeout = 10 * time.Second
)

// TrafficCounts are calls of the last hour and day, with rates.
type TrafficCounts struct {
	LastHour Requests `json:"last_hour"`
	LastDay  Requests `json:"last_24h"`
	// PerMinute is the mean rate of the last hour, and PeakPerMinute its
	// busiest minute.
	PerMinute     float64 `json:"per_minute"`
	PeakPerMinute int64   `json:"peak_per_minute"`
	// LastSeen is the end of the minute of the latest call in the last
	// 24 hours; zero without one.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// MethodTraffic is a key's calls to one method of one service.
type MethodTraffic struct {
	Service string `json:"service"`
	Method  string `json:"method"`
	TrafficCounts
}

// Traffic is what Cloud Monitoring counted of one key's calls, as of AsOf:
// what breaks when the key is deleted.
type Traffic struct {
	AsOf time.Time `json:"as_of"`
	TrafficCounts
	// ByMethod splits the counts by service and method, the most called
	// in the last hour first.
	ByMethod []MethodTraffic `json:"by_method,omitempty"`
}

// leakTraffic reads the traffic of the key with uid in project, bounded by
// LeakUsageTimeout. Without a Monitoring client it returns nothing; when
// Monitoring does not answer in time, why in one line.
func (r *Rotator) leakTraffic(ctx context.Context, project, uid string) (*Traffic, string) {
	if r.Monitoring == nil || uid == "" || project == "" {
		return nil, ""
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(r.LeakUsageTimeout, DefaultLeakUsageTimeout))
	defer cancel()
	retry := r.Retry
	if retry.Log == nil {
		retry.Log = r.log()
	}
	u := &gcp.Usage{Client: r.Monitoring, Retry: retry}
	end := r.now().UTC()
	counts, err := u.KeyRequestCounts(gcp.WithProject(ctx, project), project, uid, end, TrafficWindow, TrafficPeriod)
	if err != nil {
		if outOfTime(ctx) {
			return nil, "Cloud Monitoring did not answer within " + human(orDefault(r.LeakUsageTimeout, DefaultLeakUsageTimeout)) + ": " + usageReason(err)
		}
		return nil, usageReason(err)
	}
	return trafficOf(counts, end), ""
}

// outOfTime reports whether ctx is done or its deadline has come. gRPC
// refuses a call whose deadline has passed before ctx's own timer has
// fired (grpc-go's http2 client checks time.Until(deadline) <= 0), so under
// load ctx.Err() can still be nil when the call has failed for want of time.
func outOfTime(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// trafficOf sums one key's per-minute counts up to end.
func trafficOf(counts []gcp.RequestCount, end time.Time) *Traffic {
	t := &Traffic{AsOf: end}
	total := map[time.Time]int64{}
	type acc struct {
		m       MethodTraffic
		minutes map[time.Time]int64
	}
	by := map[[2]string]*acc{}
	for _, rc := range counts {
		t.add(rc, end, total)
		k := [2]string{rc.Service, rc.Method}
		a := by[k]
		if a == nil {
			a = &acc{m: MethodTraffic{Service: rc.Service, Method: rc.Method}, minutes: map[time.Time]int64{}}
			by[k] = a
		}
		a.m.add(rc, end, a.minutes)
	}
	t.rate()
	for _, a := range by {
		a.m.rate()
		t.ByMethod = append(t.ByMethod, a.m)
	}
	sort.Slice(t.ByMethod, func(i, j int) bool {
		a, b := t.ByMethod[i], t.ByMethod[j]
		if a.LastHour.Total() != b.LastHour.Total() {
			return a.LastHour.Total() > b.LastHour.Total()
		}
		if a.LastDay.Total() != b.LastDay.Total() {
			return a.LastDay.Total() > b.LastDay.Total()
		}
		return a.Service+" "+a.Method < b.Service+" "+b.Method
	})
	return t
}

// add counts rc; minutes sums the calls of each minute of the last hour
// (for the peak).
func (c *TrafficCounts) add(rc gcp.RequestCount, end time.Time, minutes map[time.Time]int64) {
	if rc.End.After(end.Add(-time.Hour)) {
		c.LastHour.add(rc.CodeClass, rc.Count)
		minutes[rc.End] += rc.Count
		c.PeakPerMinute = max(c.PeakPerMinute, minutes[rc.End])
	}
	c.LastDay.add(rc.CodeClass, rc.Count)
	if rc.End.After(c.LastSeen) {
		c.LastSeen = rc.End
	}
}

// rate sets PerMinute from the last hour, to two decimals.
func (c *TrafficCounts) rate() {
	c.PerMinute = math.Round(float64(c.LastHour.Total())/60*100) / 100
}
