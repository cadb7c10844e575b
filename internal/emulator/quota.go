package emulator

// Per-project rate quotas (Options.Quotas).
//
// Google meters the API Keys and Secret Manager APIs per consumer project,
// per kind of call, in synchronized intervals: a project that reaches a
// per-minute limit at 10:00:15 gets quota again at 10:01:00, the start of
// the next interval, not at 10:01:15 (the Compute Engine rate-quota
// documentation describes this). The emulator models exactly that: fixed
// windows of Options.QuotaWindow aligned on its clock (now.Truncate(window)),
// with one counter per service, project and kind of call, all starting
// from zero when a new window begins. A benchmark scales time by setting a
// shorter window (one second: sixty times faster than real).
//
// Fidelity notes:
//   - The kinds are Google's: the API Keys API has read and write requests
//     (240 and 120 per minute per project); Secret Manager has access
//     requests (AccessSecretVersion, 90,000), read requests (any other call
//     that changes nothing, 600) and write requests (every mutating call,
//     600); Cloud Monitoring has time series queries (ListTimeSeries,
//     6,000). Google's Monitoring quotas page no longer lists that value
//     (it sends readers to the console's quota page), so the value and the
//     names of its refusal come from a published 429 of the live API:
//     "Quota exceeded for quota metric 'Time series queries' and limit
//     'Time series queries per minute' of service
//     'monitoring.googleapis.com'", quota_metric
//     monitoring.googleapis.com/query_requests, quota_limit
//     QueryRequestsPerMinutePerProject, quota_limit_value 6000 (Kyhle
//     Öhlinger, "Querying Vertex AI Model Usage through GCP Observability
//     Metrics", 2025-01-31, github.com/KyhleOhlinger/KyhleOhlinger.github.io).
//   - The consumer charged is the caller's quota project when the call
//     names one (x-goog-user-project, see quotaproject.go), else the
//     project of the call's resource (standing for a service account of
//     that project): the project in its name or parent (by id or number,
//     the same project), the project of the operation's key for
//     operations.get, and the project of the key found for
//     keys:lookupKey. A call whose project the emulator does not know is
//     not charged: an unknown project fails with PERMISSION_DENIED, and an
//     unknown operation or key string names no project to charge.
//   - The front end meters a call before the service sees it: a call
//     rejected for quota is not charged, runs no hook and does not reach
//     the service, so a fault injected for it (Fail, or
//     DenyPermission) is not seen; a call admitted is charged even if a
//     hook or a fault then fails it, as a real call that fails in the
//     service still used quota.
//   - The error is Google's RATE_LIMIT_EXCEEDED answer: 429 /
//     RESOURCE_EXHAUSTED, "Quota exceeded for quota metric ... for consumer
//     'project_number:N'.", with ErrorInfo (metadata consumer, service,
//     quota_metric, quota_limit, quota_limit_value, quota_location,
//     quota_unit) and Help ("Request a higher quota limit."). The display
//     names of the Secret Manager metrics and limits in the message ("Access
//     requests", "Access requests per minute") are chosen by analogy with
//     the API Keys ones, not confirmed. No LocalizedMessage is sent, unlike
//     the other ErrorInfo errors of the package (chosen: the published
//     examples of quota answers show none). RetryInfo is sent with the time
//     left in the window, rounded up to a whole millisecond (at least 1ms):
//     a client that waits that long finds the next window.
//   - Names keep "per minute" whatever Options.QuotaWindow is: the window
//     scales time, not the names.
//   - The soft per-secret limits of Secret Manager (AddSecretVersion and
//     UpdateSecret 2 per second per secret, version state changes 1 per
//     second per version) are not modelled; nor are the Gemini API's quotas
//     (inject them with a Fault) or any Cloud Run quota.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

// Quota is a per-project rate quota of one service: how many calls of each
// kind one project may make in one quota window (Options.QuotaWindow).
// Zero means unlimited; Start rejects negative limits.
type Quota struct {
	// Reads: calls that change nothing (Secret Manager: other than
	// AccessSecretVersion; Cloud Monitoring: time series queries).
	Reads int
	// Writes: calls that change state (see Methods).
	Writes int
	// Access: Secret Manager's AccessSecretVersion. The API Keys API and
	// Cloud Monitoring have no such kind.
	Access int
}

// DocumentedQuotas are Google's default per-minute per-project rate quotas
// for the services Options.Quotas names: "apikeys"
// (https://cloud.google.com/api-keys/docs/quotas), "secretmanager"
// (https://cloud.google.com/secret-manager/quotas) and "monitoring" (6,000
// time series queries; see the fidelity notes above for the source). Use
// them with the default one-minute Options.QuotaWindow, or with a shorter
// window to scale time.
var DocumentedQuotas = map[string]Quota{
	"apikeys":       {Reads: 240, Writes: 120},
	"secretmanager": {Reads: 600, Writes: 600, Access: 90000},
	"monitoring":    {Reads: 6000},
}

// quotaKind is the kind of call a quota counts.
type quotaKind int

const (
	quotaRead quotaKind = iota
	quotaWrite
	quotaAccess
	// quotaQuery is Cloud Monitoring's read: a time series query, limited
	// by Quota.Reads under its own names.
	quotaQuery
)

// quotaNames are the names Google gives a kind of call in its quota errors:
// the metric's display name and id suffix and the limit's display name and
// id.
var quotaNames = [...]struct{ metric, metricID, limit, limitID string }{
	quotaRead:   {"Read requests", "read_requests", "Read requests per minute", "ReadRequestsPerMinutePerProject"},
	quotaWrite:  {"Write requests", "write_requests", "Write requests per minute", "WriteRequestsPerMinutePerProject"},
	quotaAccess: {"Access requests", "access_requests", "Access requests per minute", "AccessRequestsPerMinutePerProject"},
	quotaQuery:  {"Time series queries", "query_requests", "Time series queries per minute", "QueryRequestsPerMinutePerProject"},
}

// quotaServices maps the short names of Options.Quotas to the services.
var quotaServices = map[string]string{
	"apikeys":       apiKeysService,
	"secretmanager": "secretmanager.googleapis.com",
	"monitoring":    "monitoring.googleapis.com",
}

// quotaOf says which service's quota a call of method counts against, and
// as what kind of call; ok is false for methods without quota (gemini.*,
// run.*).
func quotaOf(method string) (service string, kind quotaKind, ok bool) {
	service, _, _ = strings.Cut(method, ".")
	if _, metered := quotaServices[service]; !metered {
		return "", 0, false
	}
	switch {
	case method == "secretmanager.AccessSecretVersion":
		return service, quotaAccess, true
	case service == "monitoring":
		return service, quotaQuery, true
	case methods[method].mutating:
		return service, quotaWrite, true
	}
	return service, quotaRead, true
}

func (q Quota) limit(k quotaKind) int {
	switch k {
	case quotaWrite:
		return q.Writes
	case quotaAccess:
		return q.Access
	}
	return q.Reads
}

// usageKey names one counter: a kind of call of one service in one project
// (by number, so that an id and a number count as the same project).
type usageKey struct {
	service string
	project int64
	kind    quotaKind
}

// quotaState meters calls. Its own mutex guards the counters, so that
// metering holds Server.mu no longer than it takes to find the consumer.
// Lock order: Server.mu before quotaState.mu, never the reverse.
type quotaState struct {
	limits map[string]Quota // copied from Options.Quotas; read-only
	window time.Duration

	mu        sync.Mutex
	start     time.Time // of the window the counters are for
	used      map[usageKey]int
	throttled int // calls rejected since Start or ResetCalls
}

func newQuotaState(limits map[string]Quota, window time.Duration) (*quotaState, error) {
	if window < 0 {
		return nil, fmt.Errorf("quota window %v: want a positive duration, or 0 for a minute", window)
	}
	if window == 0 {
		window = time.Minute
	}
	q := &quotaState{limits: map[string]Quota{}, window: window, used: map[usageKey]int{}}
	for svc, l := range limits {
		if _, ok := quotaServices[svc]; !ok {
			return nil, fmt.Errorf("quota for %q: no such service; want \"apikeys\", \"secretmanager\" or \"monitoring\"", svc)
		}
		if l.Reads < 0 || l.Writes < 0 || l.Access < 0 {
			return nil, fmt.Errorf("quota for %q %+v: want limits >= 0 (0: unlimited)", svc, l)
		}
		if svc == "apikeys" && l.Access != 0 {
			return nil, fmt.Errorf("quota for %q: the API Keys API has no access requests (Access must be 0)", svc)
		}
		if svc == "monitoring" && (l.Access != 0 || l.Writes != 0) {
			return nil, fmt.Errorf("quota for %q: Cloud Monitoring is only read here (time series queries: Reads; Writes and Access must be 0)", svc)
		}
		if l != (Quota{}) {
			q.limits[svc] = l
		}
	}
	return q, nil
}

// metered reports whether calls of method are metered: a quota is set for
// its service. Every kind of call of such a service is counted (for
// QuotaUsage), the unlimited ones too.
func (q *quotaState) metered(method string) bool {
	svc, _, ok := quotaOf(method)
	return ok && q.limits[svc] != (Quota{})
}

// rollLocked starts the window now falls in, if it is not the current one.
// Call with q.mu held.
func (q *quotaState) rollLocked(now time.Time) time.Time {
	start := now.Truncate(q.window)
	if !start.Equal(q.start) {
		q.start = start
		clear(q.used)
	}
	return start
}

// admit charges a call of method to project p, or returns the quota error
// if p has used up its quota for the window. A nil p (no consumer) is
// admitted free.
func (q *quotaState) admit(method string, p *project, clock fake.Clock) error {
	if p == nil {
		return nil
	}
	svc, kind, ok := quotaOf(method)
	if !ok {
		return nil
	}
	limit := q.limits[svc].limit(kind)
	key := usageKey{svc, p.number, kind}
	q.mu.Lock()
	// The clock is read under the lock so that calls see windows in order:
	// a late reader of an earlier time cannot reset a newer window.
	now := clock.Now()
	start := q.rollLocked(now)
	if limit <= 0 || q.used[key] < limit {
		q.used[key]++
		q.mu.Unlock()
		return nil
	}
	q.throttled++
	q.mu.Unlock()
	return quotaExceeded(quotaServices[svc], kind, limit, p.number, start.Add(q.window).Sub(now))
}

// quotaExceeded is Google's answer to a call over a rate quota; left is the
// time until the next window.
func quotaExceeded(service string, kind quotaKind, limit int, number int64, left time.Duration) *apiError {
	names := quotaNames[kind]
	// Round up: a client that waits the delay it was given must find the
	// new window.
	delay := (left + time.Millisecond - 1).Truncate(time.Millisecond)
	if delay < time.Millisecond {
		delay = time.Millisecond
	}
	e := newError(codes.ResourceExhausted,
		"Quota exceeded for quota metric '%s' and limit '%s' of service '%s' for consumer 'project_number:%d'.",
		names.metric, names.limit, service, number)
	e.details = append(e.details,
		errorInfo{Type: typeErrorInfo, Reason: "RATE_LIMIT_EXCEEDED", Domain: "googleapis.com", Metadata: map[string]string{
			"consumer":          fmt.Sprintf("projects/%d", number),
			"quota_limit":       names.limitID,
			"quota_limit_value": strconv.Itoa(limit),
			"quota_location":    "global",
			"quota_metric":      service + "/" + names.metricID,
			"quota_unit":        "1/min/{project}",
			"service":           service,
		}},
		help{Type: typeHelp, Links: []helpLink{{Description: "Request a higher quota limit.", URL: "https://cloud.google.com/docs/quotas/help/request_increase"}}},
		newRetryInfo(delay),
	)
	return e
}

// consumerLocked returns the project a call of method is charged to, or nil
// if there is none the emulator knows. Call with s.mu held.
func (s *Server) consumerLocked(ctx context.Context, method string) *project {
	switch method {
	case "apikeys.GetOperation":
		if op := s.keys.ops[resourceOf(ctx)]; op != nil {
			return op.project
		}
		return nil
	case "apikeys.LookupKey":
		ks, _ := ctx.Value(keyStringKey{}).(string)
		if k := s.keys.byString[ks]; k != nil {
			return k.project
		}
		// A purged key's string still names its project (lookupKey
		// answers with the parent).
		if n, ok := s.keys.purged[ks]; ok {
			return s.project(strconv.FormatInt(n, 10))
		}
		return nil
	}
	rest, ok := strings.CutPrefix(resourceOf(ctx), "projects/")
	if !ok {
		return nil
	}
	id, _, _ := strings.Cut(rest, "/")
	return s.project(id)
}

// keyStringKey carries the key string of a keys:lookupKey call in its
// context, so that the call can be charged to the key's project.
type keyStringKey struct{}

// Throttled returns how many calls were rejected for quota since Start or
// ResetCalls.
func (s *Server) Throttled() int {
	s.quota.mu.Lock()
	defer s.quota.mu.Unlock()
	return s.quota.throttled
}

// QuotaUsage returns the calls of a service ("apikeys", "secretmanager" or
// "monitoring", whose time series queries are its reads;
// "apikeys.googleapis.com" will do too) charged to a project (by id or
// number) in the current quota window, by kind. Rejected calls are not
// charged. Only a service with a quota in Options.Quotas is metered; all
// its kinds of call are counted, those without a limit too.
func (s *Server) QuotaUsage(service, project string) (reads, writes, access int) {
	service = strings.TrimSuffix(service, ".googleapis.com")
	s.mu.Lock()
	p := s.project(project)
	s.mu.Unlock()
	if p == nil {
		return 0, 0, 0
	}
	q := s.quota
	q.mu.Lock()
	defer q.mu.Unlock()
	q.rollLocked(s.clock.Now())
	return q.used[usageKey{service, p.number, quotaRead}] + q.used[usageKey{service, p.number, quotaQuery}],
		q.used[usageKey{service, p.number, quotaWrite}],
		q.used[usageKey{service, p.number, quotaAccess}]
}
