package gcp

import (
	"context"
	"errors"
	"fmt"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"google.golang.org/api/iterator"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Monitoring names the Cloud Monitoring API for a Meter.
const Monitoring = "monitoring"

// Who calls with which key: Google counts every call to an API per
// credential in Cloud Monitoring, metric
// serviceruntime.googleapis.com/api/request_count on the monitored resource
// consumed_api, whose label credential_id is "apikey:<key uid>" for a call
// made with an API key (cloud.google.com/monitoring/api/resources,
// "Consumed API"; cloud.google.com/monitoring/api/metrics_gcp).

const (
	requestCountFilter = `metric.type = "serviceruntime.googleapis.com/api/request_count" AND resource.type = "consumed_api"`
	// timeSeriesListPerm is the permission ListTimeSeries needs.
	timeSeriesListPerm = "monitoring.timeSeries.list"
	monitoringAPI      = "monitoring.googleapis.com"
)

// RequestCount is the number of calls of one credential to one method with
// one response class within one aligned period.
type RequestCount struct {
	CredentialID string    // "apikey:<uid>"
	Service      string    // "generativelanguage.googleapis.com"
	Method       string    // the full RPC name
	CodeClass    string    // "2xx", "4xx", ...
	End          time.Time // the end of the period; it covers (End-period, End]
	Count        int64
}

// Usage reads request counts from Cloud Monitoring, each call retried under
// Retry.
type Usage struct {
	Client *monitoring.MetricClient
	Retry  RetryPolicy
}

// RequestCounts returns every credential's calls in project over
// (end-window, end], summed per period (a multiple of a minute, dividing
// window): one ListTimeSeries (one more per 100,000 points), aligned with
// ALIGN_DELTA and summed with REDUCE_SUM by credential, service, method and
// response class. Periods without calls have no RequestCount. Calls made
// within Monitoring's ingestion delay before end are not counted yet.
//
// Errors: a denied permission or a disabled API carries a hint naming the
// role or the API (errhint), and is a *UsageError.
func (u *Usage) RequestCounts(ctx context.Context, project string, end time.Time, window, period time.Duration) ([]RequestCount, error) {
	return u.requestCounts(ctx, project, requestCountFilter, end, window, period)
}

// KeyRequestCounts is RequestCounts for the one key whose uid is uid: the
// filter names its credential_id ("apikey:<uid>", never the key string),
// so that a fine period over a long window stays small.
func (u *Usage) KeyRequestCounts(ctx context.Context, project, uid string, end time.Time, window, period time.Duration) ([]RequestCount, error) {
	filter := fmt.Sprintf("%s AND resource.label.credential_id = %q", requestCountFilter, "apikey:"+uid)
	return u.requestCounts(ctx, project, filter, end, window, period)
}

func (u *Usage) requestCounts(ctx context.Context, project, filter string, end time.Time, window, period time.Duration) ([]RequestCount, error) {
	name := "projects/" + project
	req := &monitoringpb.ListTimeSeriesRequest{
		Name:     name,
		Filter:   filter,
		Interval: &monitoringpb.TimeInterval{StartTime: timestamppb.New(end.Add(-window)), EndTime: timestamppb.New(end)},
		Aggregation: &monitoringpb.Aggregation{
			AlignmentPeriod:    durationpb.New(period),
			PerSeriesAligner:   monitoringpb.Aggregation_ALIGN_DELTA,
			CrossSeriesReducer: monitoringpb.Aggregation_REDUCE_SUM,
			GroupByFields: []string{"resource.label.credential_id", "resource.label.service",
				"resource.label.method", "metric.label.response_code_class"},
		},
		View: monitoringpb.ListTimeSeriesRequest_FULL,
	}
	var out []RequestCount
	// A failed page restarts the listing: the points are read-only, and a
	// whole new listing cannot count a period twice.
	err := u.Retry.named("monitoring.timeSeries.list", name).Do(ctx, func(ctx context.Context, _ Attempt) error {
		out = out[:0]
		it := u.Client.ListTimeSeries(ctx, req)
		for {
			ts, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return nil
			}
			if err != nil {
				return err
			}
			rl, ml := ts.GetResource().GetLabels(), ts.GetMetric().GetLabels()
			for _, p := range ts.GetPoints() {
				n := p.GetValue().GetInt64Value()
				if n == 0 {
					continue
				}
				out = append(out, RequestCount{
					CredentialID: rl["credential_id"], Service: rl["service"], Method: rl["method"],
					CodeClass: ml["response_code_class"], End: p.GetInterval().GetEndTime().AsTime(), Count: n,
				})
			}
		}
	})
	if err != nil {
		return nil, &UsageError{Project: project, Reason: usageReason(err, project),
			Err: fmt.Errorf("list request counts of %s: %w", name, usageErr(err, project))}
	}
	return out, nil
}

// UsageError is a request count that Cloud Monitoring did not answer.
// Reason says why in a few words, naming the role or the API to enable
// when that is the cause.
type UsageError struct {
	Project string
	Reason  string
	Err     error
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// usageErr adds the hint of a denied call: the API to enable (in the
// charged project) or the role that grants monitoring.timeSeries.list.
func usageErr(err error, project string) error {
	if IsDenied(err) {
		return denied(err, timeSeriesListPerm, "projects/"+project)
	}
	return err
}

// usageReason words err in one short line: what keeps the counts unknown.
func usageReason(err error, project string) string {
	switch ce := ConsumerErrorOf(err, project); {
	case ce != nil && ce.Reason == ReasonServiceDisabled:
		return fmt.Sprintf("the Cloud Monitoring API (%s) is not enabled in project %s", monitoringAPI, ce.consumerProject())
	case ce != nil:
		return "the caller may not charge quota project " + ce.consumerProject()
	case IsDenied(err):
		return fmt.Sprintf("the caller lacks %s on project %s: grant %s", timeSeriesListPerm, project, permissionRoles[timeSeriesListPerm])
	}
	return firstLine(Summary(err))
}
