package rotate

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keyrotate/keyrotate/internal/gcp"
)

// Who uses each key, from Cloud Monitoring's request counts
// (gcp.Usage.RequestCounts): status and plan show it for the current key,
// the keys kept for grace and the leftovers, so that whoever decides
// whether an old key may die sees what still calls with it.
//
// One view reads each project once: a single ListTimeSeries over the last
// UsageWindow (7 days) in periods of UsagePeriod (1 hour), grouped by
// credential, service, method and response class, from which the hour, the
// day, the week and the last period with a request are summed for every
// key of the project. So "last hour" is the last aligned period, and
// LastSeen is the end of the hour in which the key's latest request falls.
// Calls of the last few minutes are not counted yet (Monitoring's
// ingestion delay).

// Usage windows.
const (
	UsageWindow = 7 * 24 * time.Hour
	UsagePeriod = time.Hour
)

// Requests counts calls, split by their answer: OK is 2xx, Error anything
// else (a key used only by failing calls still has a caller).
type Requests struct {
	OK    int64 `json:"ok"`
	Error int64 `json:"error"`
}

// Total is OK + Error.
func (r Requests) Total() int64 { return r.OK + r.Error }

func (r *Requests) add(class string, n int64) {
	if class == "2xx" {
		r.OK += n
	} else {
		r.Error += n
	}
}

// UsageCounts are the calls of the last hour, 24 hours and 7 days.
type UsageCounts struct {
	LastHour Requests `json:"last_hour"`
	LastDay  Requests `json:"last_24h"`
	LastWeek Requests `json:"last_7d"`
	// LastSeen is the end of the hour in which the latest call falls; zero
	// without calls in 7 days.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

func (c *UsageCounts) add(rc gcp.RequestCount, end time.Time) {
	if rc.End.After(end.Add(-UsagePeriod)) {
		c.LastHour.add(rc.CodeClass, rc.Count)
	}
	if rc.End.After(end.Add(-24 * time.Hour)) {
		c.LastDay.add(rc.CodeClass, rc.Count)
	}
	c.LastWeek.add(rc.CodeClass, rc.Count)
	if rc.End.After(c.LastSeen) {
		c.LastSeen = rc.End
	}
}

// MethodUsage is a key's calls to one method of one service.
type MethodUsage struct {
	Service string `json:"service"`
	Method  string `json:"method"`
	UsageCounts
}

// KeyUsage is what Cloud Monitoring counted of one key's calls, as of AsOf.
type KeyUsage struct {
	AsOf time.Time `json:"as_of"`
	UsageCounts
	// ByMethod splits the counts by service and method, the most called
	// over 7 days first.
	ByMethod []MethodUsage `json:"by_method,omitempty"`
}

// projectUsage is one project's request counts, read once per Rotator.
type projectUsage struct {
	end    time.Time
	counts []gcp.RequestCount
	err    error
}

// usageFresh is how long a Rotator reuses a project's counts: one view
// (a status or plan of many slots) takes seconds; a long-lived Rotator
// reads again after it.
const usageFresh = time.Minute

// usageCache holds the request counts read by a Rotator, by project, so
// that the slots of one project share one query.
type usageCache struct {
	mu sync.Mutex
	by map[string]*projectUsage
}

// readUsage returns project's request counts, reading them on the first
// call only.
func (r *Rotator) readUsage(ctx context.Context, project string) *projectUsage {
	r.usage.mu.Lock()
	defer r.usage.mu.Unlock()
	if pu := r.usage.by[project]; pu != nil && r.now().Sub(pu.end) < usageFresh {
		return pu
	}
	retry := r.Retry
	if retry.Log == nil {
		retry.Log = r.log()
	}
	u := &gcp.Usage{Client: r.Monitoring, Retry: retry}
	pu := &projectUsage{end: r.now().UTC()}
	pu.counts, pu.err = u.RequestCounts(gcp.WithProject(ctx, project), project, pu.end, UsageWindow, UsagePeriod)
	if ctx.Err() != nil {
		return pu // not cached: the next view may get an answer
	}
	if r.usage.by == nil {
		r.usage.by = map[string]*projectUsage{}
	}
	r.usage.by[project] = pu
	return pu
}

// keyUsage sums a project's counts for the key with uid.
func (pu *projectUsage) keyUsage(uid string) *KeyUsage {
	ku := &KeyUsage{AsOf: pu.end}
	cred := "apikey:" + uid
	by := map[[2]string]*MethodUsage{}
	for _, rc := range pu.counts {
		if rc.CredentialID != cred {
			continue
		}
		ku.add(rc, pu.end)
		m := by[[2]string{rc.Service, rc.Method}]
		if m == nil {
			m = &MethodUsage{Service: rc.Service, Method: rc.Method}
			by[[2]string{rc.Service, rc.Method}] = m
		}
		m.add(rc, pu.end)
	}
	for _, m := range by {
		ku.ByMethod = append(ku.ByMethod, *m)
	}
	sort.Slice(ku.ByMethod, func(i, j int) bool {
		a, b := ku.ByMethod[i], ku.ByMethod[j]
		if a.LastWeek.Total() != b.LastWeek.Total() {
			return a.LastWeek.Total() > b.LastWeek.Total()
		}
		return a.Service+" "+a.Method < b.Service+" "+b.Method
	})
	return ku
}

// projectUsageOf returns the request counts of the project of the key
// keyName, or nil without a Monitoring client.
func (r *Rotator) projectUsageOf(ctx context.Context, keyName string) *projectUsage {
	if r.Monitoring == nil || keyName == "" {
		return nil
	}
	return r.readUsage(ctx, projectOf(keyName))
}

// addUsage fills in the usage of the slot's current key and old keys.
// Without a Monitoring client it does nothing; when Monitoring does not
// answer, UsageUnknown says why and the status is otherwise complete.
func (r *Rotator) addUsage(ctx context.Context, st *SlotStatus, keyName string) {
	pu := r.projectUsageOf(ctx, keyName)
	switch {
	case pu == nil:
		return
	case pu.err != nil:
		st.UsageUnknown, st.usageErr = usageReason(pu.err), pu.err
		return
	}
	if st.Current.UID != "" {
		st.Current.Usage = pu.keyUsage(st.Current.UID)
	}
	for i := range st.OldKeys {
		if o := &st.OldKeys[i]; o.uid != "" {
			o.Usage = pu.keyUsage(o.uid)
		}
	}
}

// addPlanUsage fills in the usage of the plan's current key (see
// addUsage).
func (r *Rotator) addPlanUsage(ctx context.Context, p *Plan, keyName string) {
	switch pu := r.projectUsageOf(ctx, keyName); {
	case pu == nil:
	case pu.err != nil:
		p.UsageUnknown = usageReason(pu.err)
	case p.Current.UID != "":
		p.Current.Usage = pu.keyUsage(p.Current.UID)
	}
}

// usageReason is the one line that says why usage is unknown.
func usageReason(err error) string {
	var ue *gcp.UsageError
	if errors.As(err, &ue) && ue.Reason != "" {
		return ue.Reason
	}
	return strings.SplitN(err.Error(), "\n", 2)[0]
}
