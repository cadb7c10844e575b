package emulator

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
)

// Secret Manager's per-secret write rates, from "Soft-enforced rate limits
// for modifying secrets and secret versions" in
// https://cloud.google.com/secret-manager/quotas:
//
//	AddSecretVersion, UpdateSecret       global secret: 2/s and 120/min per secret
//	                                     regional:     80/s and 4800/min per secret per region
//	Enable/Disable/DestroySecretVersion  global secret: 1/s and 60/min per secret version
//	                                     regional:     50/s and 3000/min per version per region
//
// The page calls them soft-enforced ("we continue serving requests beyond
// their quota as long as our backend systems can handle the load"); the
// emulator takes the strictest reading and refuses every write beyond
// them, in sliding windows (no public source says how they are counted).
// The answer is the shape of Google's other rate-limit refusals (429
// RESOURCE_EXHAUSTED, ErrorInfo RATE_LIMIT_EXCEEDED, RetryInfo with the time
// until the write would fit); its metric and limit names are chosen, not
// confirmed. Rates are physical: they are counted on the wall clock even
// when Options.Clock is a fake.ManualClock, which models dates, not the spacing of
// requests. A refused write is not counted against the rate and runs no
// hook; it is counted as a call and in Throttled.

type rateLimit struct {
	n   int
	per time.Duration
}

var (
	globalSecretWrites   = []rateLimit{{2, time.Second}, {120, time.Minute}}
	regionalSecretWrites = []rateLimit{{80, time.Second}, {4800, time.Minute}}
	globalVersionWrites  = []rateLimit{{1, time.Second}, {60, time.Minute}}
	regionalVersionWrite = []rateLimit{{50, time.Second}, {3000, time.Minute}}
)

// secretRates holds the arrival times of admitted writes, by canonical
// secret or version name.
type secretRates struct {
	mu       sync.Mutex
	arrivals map[string][]time.Time
}

func newSecretRates() *secretRates {
	return &secretRates{arrivals: map[string][]time.Time{}}
}

// admitSecretWrite applies the per-secret rates to a call of method on
// resource (the secret, or the version, it writes).
func (s *Server) admitSecretWrite(method, resource string) error {
	if s.opts.NoSecretWriteLimits {
		return nil
	}
	var version bool
	switch method {
	case "secretmanager.AddSecretVersion", "secretmanager.UpdateSecret":
	case "secretmanager.EnableSecretVersion", "secretmanager.DisableSecretVersion", "secretmanager.DestroySecretVersion":
		version = true
	default:
		return nil
	}
	segs := strings.Split(resource, "/")
	if len(segs) < 4 || segs[0] != "projects" {
		return nil // malformed: the method refuses it
	}
	regional := segs[2] == "locations"
	s.mu.Lock()
	p := s.project(segs[1])
	s.mu.Unlock()
	if p == nil {
		return nil // unknown project: the method refuses it
	}
	segs[1] = strconv.FormatInt(p.number, 10)
	key := strings.Join(segs, "/")
	limits, unit := globalSecretWrites, "secret"
	switch {
	case version && regional:
		limits, unit = regionalVersionWrite, "secret version"
	case version:
		limits, unit = globalVersionWrites, "secret version"
	case regional:
		limits = regionalSecretWrites
	}
	r := s.rates
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	log := r.arrivals[key]
	// Forget what no window can see any more.
	i := 0
	for i < len(log) && now.Sub(log[i]) >= time.Minute {
		i++
	}
	log = log[i:]
	for _, l := range limits {
		in := 0
		var oldest time.Time
		for j := len(log) - 1; j >= 0 && now.Sub(log[j]) < l.per; j-- {
			in++
			oldest = log[j]
		}
		if in >= l.n {
			r.arrivals[key] = log
			s.quota.mu.Lock()
			s.quota.throttled++
			s.quota.mu.Unlock()
			return secretRateExceeded(p.number, unit, l, oldest.Add(l.per).Sub(now))
		}
	}
	r.arrivals[key] = append(log, now)
	return nil
}

func secretRateExceeded(number int64, unit string, l rateLimit, left time.Duration) *apiError {
	per, perID, unitID := "second", "Second", "s"
	if l.per == time.Minute {
		per, perID, unitID = "minute", "Minute", "min"
	}
	delay := (left + time.Millisecond - 1).Truncate(time.Millisecond)
	if delay < time.Millisecond {
		delay = time.Millisecond
	}
	id := "Secret"
	if unit != "secret" {
		id = "SecretVersion"
	}
	service := "secretmanager.googleapis.com"
	e := newError(codes.ResourceExhausted,
		"Quota exceeded for quota metric 'Write requests' and limit 'Write requests per %s per %s' of service '%s' for consumer 'project_number:%d'.",
		per, unit, service, number)
	e.details = append(e.details,
		errorInfo{Type: typeErrorInfo, Reason: "RATE_LIMIT_EXCEEDED", Domain: "googleapis.com", Metadata: map[string]string{
			"consumer":          fmt.Sprintf("projects/%d", number),
			"quota_limit":       "WriteRequestsPer" + perID + "Per" + id,
			"quota_limit_value": strconv.Itoa(l.n),
			"quota_location":    "global",
			"quota_metric":      service + "/write_requests",
			"quota_unit":        "1/" + unitID + "/{" + strings.ReplaceAll(unit, " ", "_") + "}",
			"service":           service,
		}},
		newRetryInfo(delay),
	)
	return e
}
