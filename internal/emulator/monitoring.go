package emulator

// Cloud Monitoring v3 MetricService (gRPC), ListTimeSeries only, over the
// Gemini emulator's record of calls (usage.go): the metric
// serviceruntime.googleapis.com/api/request_count (DELTA, INT64) on the
// monitored resource consumed_api. MONITORING_EMULATOR_HOST.
//
// What it accepts, and refuses with INVALID_ARGUMENT (the strictest
// plausible reading wherever Google's reference leaves room; field
// comments quoted from cloud.google.com/go/monitoring v1.32.1's
// monitoringpb):
//   - name: projects/{id or number}; organizations/ and folders/ are
//     refused. An unknown project answers PERMISSION_DENIED, as Google's
//     APIs answer a project the caller cannot see.
//   - filter: the subset of monitoringfilter.go; one metric type. Another
//     metric type than request_count is refused as unknown (the real API
//     knows thousands; a client of this emulator asks for one).
//   - interval: end_time required; start_time defaults to end_time and
//     "must not be later than the end time".
//   - aggregation: per_series_aligner ALIGN_NONE, ALIGN_DELTA or ALIGN_SUM
//     (the same for a DELTA INT64 metric: the sum per period); an aligner
//     other than ALIGN_NONE needs alignment_period, "at least 60 seconds";
//     cross_series_reducer REDUCE_NONE or REDUCE_SUM, which needs an aligner
//     other than ALIGN_NONE; group_by_fields are resource.label(s).KEY,
//     metric.label(s).KEY, resource.type or metric.type (ignored without a
//     reducer, as documented). secondary_aggregation and order_by ("must be
//     left blank") are refused.
//   - view FULL (points; page_size counts points) or HEADERS (no points;
//     page_size counts series); page_size 0 means 100,000, negative is
//     refused.
//
// How points are placed (a simplification, not Google's storage): the raw
// series (no aligner) has one point per minute of calls, interval
// [minute, minute+60s). Aligned periods end at interval.end_time and step
// back by alignment_period, each covering (end-P, end], as long as a period
// ends after interval.start_time (at least one period); a period covers the
// calls whose time falls in it even before start_time, as an aligner
// reads whole periods. Periods without calls have no point. Points are in
// reverse time order, as the field comment of order_by says. A call is
// visible only once the emulator's clock has passed its time plus the
// ingestion delay (Options.MonitoringDelay); a page token pins the time of
// the first page so that later pages see the same data.
//
// Access: the method needs monitoring.timeSeries.list (DenyPermission
// makes it fail with PERMISSION_DENIED, reason IAM_PERMISSION_DENIED);
// SetServiceEnabled(project, "monitoring.googleapis.com", false) makes it
// fail with 403 SERVICE_DISABLED, the shape the other APIs use.

import (
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"google.golang.org/api/option"
	"google.golang.org/genproto/googleapis/api/metric"
	"google.golang.org/genproto/googleapis/api/monitoredres"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// maxTimeSeriesPage is ListTimeSeries' effective page size.
	maxTimeSeriesPage = 100000
	minAlignment      = 60 * time.Second
)

type monitoringServer struct {
	monitoringpb.UnimplementedMetricServiceServer
	s *Server
}

// serveMonitoring serves the MetricService on addr and returns the address
// it listens on.
func (s *Server) serveMonitoring(addr string) (string, error) {
	return s.serveGRPC(addr, monitoringResource, func(gs *grpc.Server) {
		monitoringpb.RegisterMetricServiceServer(gs, &monitoringServer{s: s})
	})
}

// monitoringResource puts the request's name in its context, for
// DenyPermission's message.
func monitoringResource(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if r, ok := req.(interface{ GetName() string }); ok && r.GetName() != "" {
		ctx = context.WithValue(ctx, resourceKey{}, r.GetName())
	}
	return h(ctx, req)
}

// MonitoringClient returns Google's Cloud Monitoring MetricClient connected
// to this emulator without credentials, its retries off (as
// SecretManagerClient), with opts added (a test's interceptors). The
// caller closes it.
func (s *Server) MonitoringClient(ctx context.Context, opts ...option.ClientOption) (*monitoring.MetricClient, error) {
	c, err := monitoring.NewMetricClient(ctx, append([]option.ClientOption{
		option.WithEndpoint(s.MonitoringAddr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}, opts...)...)
	if err != nil {
		return nil, err
	}
	c.CallOptions = &monitoring.MetricCallOptions{}
	return c, nil
}

func (m *monitoringServer) ListTimeSeries(ctx context.Context, req *monitoringpb.ListTimeSeriesRequest) (*monitoringpb.ListTimeSeriesResponse, error) {
	s := m.s
	if err := s.enter(ctx, "monitoring.ListTimeSeries"); err != nil {
		return nil, err
	}
	q, err := parseTimeSeriesQuery(req)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	v, ok := splitName(req.GetName(), "projects/*")
	var p *project
	if ok {
		p = s.project(v[0])
	}
	if p == nil {
		s.mu.Unlock()
		if !ok {
			return nil, newError(codes.InvalidArgument, "Field name had an invalid value of %q: must be projects/[PROJECT_ID_OR_NUMBER].", req.GetName())
		}
		return nil, permissionDenied("monitoring.ListTimeSeries", "monitoring.timeSeries.list", req.GetName())
	}
	if p.disabled[monitoringService] {
		s.mu.Unlock()
		return nil, serviceDisabled(monitoringService, p)
	}
	now := s.Now()
	if q.pinned.IsZero() {
		q.pinned = now
	}
	visibleBefore := q.pinned.Add(-s.monitoringDelay)
	var calls []usageRecord
	for _, u := range s.usage {
		if u.projectID == p.id && !u.at.After(visibleBefore) {
			calls = append(calls, u)
		}
	}
	s.mu.Unlock()
	return q.page(buildTimeSeries(q, calls))
}

// tsQuery is a validated ListTimeSeries request.
type tsQuery struct {
	filter     *tsFilter
	start, end time.Time
	period     time.Duration // 0: raw
	reduce     bool
	groupBy    []string // normalized fields
	headers    bool
	pageSize   int
	offset     int
	pinned     time.Time // from the page token
}

func parseTimeSeriesQuery(req *monitoringpb.ListTimeSeriesRequest) (*tsQuery, error) {
	f, err := parseFilter(req.GetFilter())
	if err != nil {
		return nil, err
	}
	if f.metricType != requestCountMetric {
		return nil, filterError(req.GetFilter(), fmt.Sprintf("The metric type %q is unknown to this emulator (it serves only %s).", f.metricType, requestCountMetric))
	}
	q := &tsQuery{filter: f}
	iv := req.GetInterval()
	if iv.GetEndTime() == nil {
		return nil, newError(codes.InvalidArgument, "Field interval.endTime is required.")
	}
	if err := iv.GetEndTime().CheckValid(); err != nil {
		return nil, newError(codes.InvalidArgument, "Field interval.endTime had an invalid value: %v.", err)
	}
	q.end = iv.GetEndTime().AsTime()
	q.start = q.end
	if iv.GetStartTime() != nil {
		if err := iv.GetStartTime().CheckValid(); err != nil {
			return nil, newError(codes.InvalidArgument, "Field interval.startTime had an invalid value: %v.", err)
		}
		q.start = iv.GetStartTime().AsTime()
	}
	if q.start.After(q.end) {
		return nil, newError(codes.InvalidArgument, "Field interval.startTime had an invalid value of %q: "+
			"The start time must not be later than the end time %q.", formatTime(q.start), formatTime(q.end))
	}
	if err := q.parseAggregation(req.GetAggregation()); err != nil {
		return nil, err
	}
	if req.GetSecondaryAggregation() != nil {
		return nil, newError(codes.InvalidArgument, "Field secondaryAggregation is not supported by this emulator.")
	}
	if req.GetOrderBy() != "" {
		return nil, newError(codes.InvalidArgument, "Field orderBy had an invalid value of %q: Unsupported: must be left blank.", req.GetOrderBy())
	}
	switch req.GetView() {
	case monitoringpb.ListTimeSeriesRequest_FULL:
	case monitoringpb.ListTimeSeriesRequest_HEADERS:
		q.headers = true
	default:
		return nil, newError(codes.InvalidArgument, "Field view had an invalid value of %d.", req.GetView())
	}
	switch n := req.GetPageSize(); {
	case n < 0:
		return nil, newError(codes.InvalidArgument, "Field pageSize had an invalid value of %d: must be positive.", n)
	case n == 0 || n > maxTimeSeriesPage:
		q.pageSize = maxTimeSeriesPage
	default:
		q.pageSize = int(n)
	}
	if tok := req.GetPageToken(); tok != "" {
		if err := q.parseToken(tok); err != nil {
			return nil, err
		}
	}
	return q, nil
}

func (q *tsQuery) parseAggregation(a *monitoringpb.Aggregation) error {
	if a == nil {
		return nil
	}
	switch a.GetPerSeriesAligner() {
	case monitoringpb.Aggregation_ALIGN_NONE:
	case monitoringpb.Aggregation_ALIGN_DELTA, monitoringpb.Aggregation_ALIGN_SUM:
		if a.GetAlignmentPeriod() == nil {
			return newError(codes.InvalidArgument, "Field aggregation.alignmentPeriod is required when aggregation.perSeriesAligner is %s.", a.GetPerSeriesAligner())
		}
		d := a.GetAlignmentPeriod().AsDuration()
		if d < minAlignment || a.GetAlignmentPeriod().CheckValid() != nil {
			return newError(codes.InvalidArgument, "Field aggregation.alignmentPeriod had an invalid value of \"%s\": "+
				"The alignment period must be at least 60 seconds.", a.GetAlignmentPeriod().AsDuration())
		}
		q.period = d
	default:
		return newError(codes.InvalidArgument, "Field aggregation.perSeriesAligner had an invalid value of %s: "+
			"this emulator supports ALIGN_NONE, ALIGN_DELTA and ALIGN_SUM.", a.GetPerSeriesAligner())
	}
	switch a.GetCrossSeriesReducer() {
	case monitoringpb.Aggregation_REDUCE_NONE:
		return nil
	case monitoringpb.Aggregation_REDUCE_SUM:
		if q.period == 0 {
			return newError(codes.InvalidArgument, "Field aggregation.perSeriesAligner is required, and must not be ALIGN_NONE, "+
				"when aggregation.crossSeriesReducer is REDUCE_SUM.")
		}
	default:
		return newError(codes.InvalidArgument, "Field aggregation.crossSeriesReducer had an invalid value of %s: "+
			"this emulator supports REDUCE_NONE and REDUCE_SUM.", a.GetCrossSeriesReducer())
	}
	q.reduce = true
	for _, g := range a.GetGroupByFields() {
		field := g
		if g != "resource.type" && g != "metric.type" {
			var err error
			if field, err = normalizeSelector(g); err != nil {
				return newError(codes.InvalidArgument, "Field aggregation.groupByFields had an invalid value of %q: %v.", g, err)
			}
		}
		q.groupBy = append(q.groupBy, field)
	}
	return nil
}

// The page token is base64 of "PINNED_UNIX_NANOS:OFFSET".
func (q *tsQuery) parseToken(tok string) error {
	bad := newError(codes.InvalidArgument, "Field pageToken had an invalid value of %q.", tok)
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return bad
	}
	ts, off, ok := strings.Cut(string(b), ":")
	n, err1 := strconv.ParseInt(ts, 10, 64)
	o, err2 := strconv.Atoi(off)
	if !ok || err1 != nil || err2 != nil || o < 0 {
		return bad
	}
	q.pinned, q.offset = time.Unix(0, n).UTC(), o
	return nil
}

// series is one time series being built: its labels and its values by
// point end time.
type series struct {
	metricLabels, resourceLabels map[string]string
	values                       map[time.Time]int64
	intervals                    map[time.Time]time.Time // end → start
}

func seriesKey(ml, rl map[string]string) string {
	var b strings.Builder
	for _, m := range []map[string]string{rl, ml} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%q,", k, m[k])
		}
		b.WriteByte('|')
	}
	return b.String()
}

// buildTimeSeries filters, aligns and reduces the visible calls.
func buildTimeSeries(q *tsQuery, calls []usageRecord) []*monitoringpb.TimeSeries {
	byKey := map[string]*series{}
	var order []string
	add := func(ml, rl map[string]string, start, end time.Time) {
		k := seriesKey(ml, rl)
		sr := byKey[k]
		if sr == nil {
			sr = &series{metricLabels: ml, resourceLabels: rl, values: map[time.Time]int64{}, intervals: map[time.Time]time.Time{}}
			byKey[k] = sr
			order = append(order, k)
		}
		sr.values[end]++
		sr.intervals[end] = start
	}
	for _, u := range calls {
		ml, rl := u.metricLabels(), u.resourceLabels()
		if !q.filter.matches(requestCountMetric, consumedAPI, ml, rl) {
			continue
		}
		start, end, ok := q.placement(u.at)
		if !ok {
			continue
		}
		if q.reduce {
			ml, rl = q.grouped(ml, rl)
		}
		add(ml, rl, start, end)
	}
	sort.Strings(order)
	out := make([]*monitoringpb.TimeSeries, 0, len(order))
	for _, k := range order {
		sr := byKey[k]
		ends := make([]time.Time, 0, len(sr.values))
		for e := range sr.values {
			ends = append(ends, e)
		}
		sort.Slice(ends, func(i, j int) bool { return ends[i].After(ends[j]) })
		ts := &monitoringpb.TimeSeries{
			Metric:     &metric.Metric{Type: requestCountMetric, Labels: sr.metricLabels},
			Resource:   &monitoredres.MonitoredResource{Type: consumedAPI, Labels: sr.resourceLabels},
			MetricKind: metric.MetricDescriptor_DELTA,
			ValueType:  metric.MetricDescriptor_INT64,
			Unit:       "1",
		}
		for _, e := range ends {
			ts.Points = append(ts.Points, &monitoringpb.Point{
				Interval: &monitoringpb.TimeInterval{StartTime: timestamppb.New(sr.intervals[e]), EndTime: timestamppb.New(e)},
				Value:    &monitoringpb.TypedValue{Value: &monitoringpb.TypedValue_Int64Value{Int64Value: sr.values[e]}},
			})
		}
		out = append(out, ts)
	}
	return out
}

// placement returns the interval of the point a call at t counts in, and
// whether the query's interval takes it (see the file comment).
func (q *tsQuery) placement(t time.Time) (start, end time.Time, ok bool) {
	if q.period == 0 {
		m := t.Truncate(time.Minute)
		if m.After(q.end) || !m.Add(time.Minute).After(q.start) {
			return time.Time{}, time.Time{}, false
		}
		return m, m.Add(time.Minute), true
	}
	if t.After(q.end) {
		return time.Time{}, time.Time{}, false
	}
	// Period k covers (end-(k+1)P, end-kP]: k = floor((end-t)/P).
	k := q.end.Sub(t) / q.period
	end = q.end.Add(-k * q.period)
	if k > 0 && !end.After(q.start) {
		return time.Time{}, time.Time{}, false
	}
	return end.Add(-q.period), end, true
}

// grouped keeps only the labels of group_by_fields; the types are always
// kept.
func (q *tsQuery) grouped(ml, rl map[string]string) (map[string]string, map[string]string) {
	gm, gr := map[string]string{}, map[string]string{}
	for _, g := range q.groupBy {
		if k, ok := strings.CutPrefix(g, "metric.label."); ok {
			if v, ok := ml[k]; ok {
				gm[k] = v
			}
		} else if k, ok := strings.CutPrefix(g, "resource.label."); ok {
			if v, ok := rl[k]; ok {
				gr[k] = v
			}
		}
	}
	return gm, gr
}

// page cuts one page: page_size counts points in FULL, series in HEADERS.
// A series may continue on the next page with its remaining points.
func (q *tsQuery) page(all []*monitoringpb.TimeSeries) (*monitoringpb.ListTimeSeriesResponse, error) {
	resp := &monitoringpb.ListTimeSeriesResponse{}
	if q.headers {
		for _, ts := range all {
			ts.Points = nil
		}
		if q.offset > len(all) {
			return nil, newError(codes.InvalidArgument, "Field pageToken had an invalid value.")
		}
		end := min(q.offset+q.pageSize, len(all))
		resp.TimeSeries = all[q.offset:end]
		if end < len(all) {
			resp.NextPageToken = q.token(end)
		}
		return resp, nil
	}
	// Offsets count points across the series in order.
	pos, taken := 0, 0
	for _, ts := range all {
		n := len(ts.Points)
		if pos+n <= q.offset {
			pos += n
			continue
		}
		from := max(q.offset-pos, 0)
		room := q.pageSize - taken
		if room == 0 {
			resp.NextPageToken = q.token(q.offset + taken)
			return resp, nil
		}
		to := min(n, from+room)
		resp.TimeSeries = append(resp.TimeSeries, &monitoringpb.TimeSeries{
			Metric: ts.Metric, Resource: ts.Resource, MetricKind: ts.MetricKind,
			ValueType: ts.ValueType, Unit: ts.Unit, Points: ts.Points[from:to],
		})
		taken += to - from
		pos += n
		if to < n {
			resp.NextPageToken = q.token(q.offset + taken)
			return resp, nil
		}
	}
	if q.offset > pos {
		return nil, newError(codes.InvalidArgument, "Field pageToken had an invalid value.")
	}
	return resp, nil
}

func (q *tsQuery) token(offset int) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d:%d", q.pinned.UnixNano(), offset))
}
