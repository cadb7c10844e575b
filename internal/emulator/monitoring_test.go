package emulator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"github.com/google/go-cmp/cmp"
	"github.com/googleapis/gax-go/v2/apierror"
	apikeys "google.golang.org/api/apikeys/v2"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/secret"
)

func TestParseFilter(t *testing.T) {
	const mt = `metric.type = "serviceruntime.googleapis.com/api/request_count"`
	tests := []struct {
		name   string
		filter string
		want   []filterTerm // nil: refused
	}{
		{"metric type only", mt, []filterTerm{{"metric.type", opEquals, []string{requestCountMetric}}}},
		{"no spaces", `metric.type="serviceruntime.googleapis.com/api/request_count"`, []filterTerm{{"metric.type", opEquals, []string{requestCountMetric}}}},
		{"resource labels, both spellings", mt + ` AND resource.type = "consumed_api" AND resource.label.service = "generativelanguage.googleapis.com" AND resource.labels.credential_id = "apikey:u1"`, []filterTerm{
			{"metric.type", opEquals, []string{requestCountMetric}},
			{"resource.type", opEquals, []string{"consumed_api"}},
			{"resource.label.service", opEquals, []string{"generativelanguage.googleapis.com"}},
			{"resource.label.credential_id", opEquals, []string{"apikey:u1"}},
		}},
		{"metric label", mt + ` AND metric.labels.response_code_class = "2xx"`, []filterTerm{
			{"metric.type", opEquals, []string{requestCountMetric}},
			{"metric.label.response_code_class", opEquals, []string{"2xx"}},
		}},
		{"starts_with and one_of", mt + ` AND resource.label.credential_id = starts_with("apikey:") AND metric.label.response_code = one_of("200", "429")`, []filterTerm{
			{"metric.type", opEquals, []string{requestCountMetric}},
			{"resource.label.credential_id", opStartsWith, []string{"apikey:"}},
			{"metric.label.response_code", opOneOf, []string{"200", "429"}},
		}},
		{"escaped quote", mt + ` AND resource.label.method = "a\"b"`, []filterTerm{
			{"metric.type", opEquals, []string{requestCountMetric}},
			{"resource.label.method", opEquals, []string{`a"b`}},
		}},
		{"empty", ``, nil},
		{"no metric type", `resource.type = "consumed_api"`, nil},
		{"two metric types", mt + " AND " + mt, nil},
		{"OR", mt + ` OR resource.type = "consumed_api"`, nil},
		{"lower-case and", mt + ` and resource.type = "consumed_api"`, nil},
		{"not equal", mt + ` AND resource.type != "consumed_api"`, nil},
		{"NOT", `NOT ` + mt, nil},
		{"parentheses", `(` + mt + `)`, nil},
		{"unquoted value", `metric.type = serviceruntime.googleapis.com/api/request_count`, nil},
		{"has_substring", mt + ` AND resource.label.method = has_substring("Generate")`, nil},
		{"regex", mt + ` AND resource.label.method = monitoring.regex.full_match("G.*")`, nil},
		{"project selector", mt + ` AND project = "p"`, nil},
		{"metric type starts_with", `metric.type = starts_with("serviceruntime")`, nil},
		{"unterminated", mt + ` AND resource.type = "consumed_api`, nil},
		{"trailing AND", mt + ` AND `, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFilter(tt.filter)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("parseFilter(%q) = %+v, want INVALID_ARGUMENT", tt.filter, got.terms)
				}
				if c := status.Code(err); c != codes.InvalidArgument {
					t.Errorf("parseFilter(%q) code %v, want InvalidArgument", tt.filter, c)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFilter(%q): %v", tt.filter, err)
			}
			if diff := cmp.Diff(tt.want, got.terms, cmp.AllowUnexported(filterTerm{})); diff != "" {
				t.Errorf("parseFilter(%q) terms (-want +got):\n%s", tt.filter, diff)
			}
		})
	}
}

func TestBuildTimeSeries(t *testing.T) {
	end := t0.Add(time.Hour)
	rec := func(ago time.Duration, uid string, code int, method string) usageRecord {
		return usageRecord{at: end.Add(-ago), projectID: testProject, keyUID: uid, method: method, httpCode: code}
	}
	calls := []usageRecord{
		rec(0, "a", 200, geminiGenerateMethod),              // on the end: period 0
		rec(30*time.Second, "a", 200, geminiGenerateMethod), // period 0
		rec(time.Minute, "a", 403, geminiGenerateMethod),    // on a boundary: period 1
		rec(90*time.Second, "b", 200, geminiCountMethod),    // period 1
		rec(10*time.Minute, "b", 429, geminiCountMethod),    // period 10
		rec(-time.Second, "a", 200, geminiGenerateMethod),   // after the end: never
	}
	type point struct {
		end   time.Duration // before the query's end
		value int64
	}
	type want struct {
		labels string // credential_id/response_code_class as grouped
		points []point
	}
	tests := []struct {
		name    string
		filter  string
		start   time.Duration // before the end
		period  time.Duration
		groupBy []string
		want    []want
	}{
		{
			name: "by credential, one period", start: time.Hour, period: time.Hour,
			groupBy: []string{"resource.label.credential_id"},
			want:    []want{{"apikey:a/", []point{{0, 3}}}, {"apikey:b/", []point{{0, 2}}}},
		},
		{
			name: "by credential and class, minutes", start: 5 * time.Minute, period: time.Minute,
			groupBy: []string{"resource.labels.credential_id", "metric.label.response_code_class"},
			want: []want{
				{"apikey:a/2xx", []point{{0, 2}}},
				{"apikey:a/4xx", []point{{time.Minute, 1}}},
				{"apikey:b/2xx", []point{{time.Minute, 1}}},
			},
		},
		{
			name: "successes of one key", start: time.Hour, period: 10 * time.Minute,
			filter:  ` AND resource.label.credential_id = "apikey:b" AND metric.label.response_code_class = "2xx"`,
			groupBy: []string{"resource.label.credential_id"},
			want:    []want{{"apikey:b/", []point{{0, 1}}}},
		},
		{
			name: "start equals end: one period", start: 0, period: time.Minute,
			groupBy: []string{"resource.label.credential_id"},
			want:    []want{{"apikey:a/", []point{{0, 2}}}},
		},
		{
			name: "everything summed", start: time.Hour, period: 5 * time.Minute,
			want: []want{{"/", []point{{0, 4}, {10 * time.Minute, 1}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseFilter(`metric.type = "` + requestCountMetric + `"` + tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			q := &tsQuery{filter: f, start: end.Add(-tt.start), end: end, period: tt.period, reduce: true}
			for _, g := range tt.groupBy {
				n, err := normalizeSelector(g)
				if err != nil {
					t.Fatal(err)
				}
				q.groupBy = append(q.groupBy, n)
			}
			var got []want
			for _, ts := range buildTimeSeries(q, calls) {
				w := want{labels: ts.GetResource().GetLabels()["credential_id"] + "/" + ts.GetMetric().GetLabels()["response_code_class"]}
				for _, p := range ts.GetPoints() {
					pe := p.GetInterval().GetEndTime().AsTime()
					if d := pe.Sub(p.GetInterval().GetStartTime().AsTime()); d != tt.period {
						t.Errorf("%s: point interval %v, want the alignment period %v", w.labels, d, tt.period)
					}
					w.points = append(w.points, point{end.Sub(pe), p.GetValue().GetInt64Value()})
				}
				got = append(got, w)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(want{}, point{})); diff != "" {
				t.Errorf("series (-want +got):\n%s", diff)
			}
		})
	}
}

// startMonitoring starts an emulator with a fake clock, the test project
// and two keys, and returns a connected MetricClient.
func startMonitoring(t *testing.T, opts Options) (*Server, *monitoring.MetricClient, *fake.ManualClock) {
	t.Helper()
	s, _, clock := startKeys(t, opts)
	c, err := s.MonitoringClient(context.Background())
	if err != nil {
		t.Fatalf("MonitoringClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c, clock
}

func seedKey(t *testing.T, s *Server, id string, k *apikeys.V2Key) (name, keyString, uid string) {
	t.Helper()
	name, keyString, err := s.SeedKey(testProject, id, k)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.Key(name)
	return name, keyString, got.Uid
}

// byCredentialQuery is the query the drain gate makes: request_count of
// the Gemini API over the last window, summed per key and success class.
func byCredentialQuery(end time.Time, window time.Duration) *monitoringpb.ListTimeSeriesRequest {
	return &monitoringpb.ListTimeSeriesRequest{
		Name: "projects/" + testProject,
		Filter: `metric.type = "serviceruntime.googleapis.com/api/request_count" AND resource.type = "consumed_api"` +
			` AND resource.label.service = "generativelanguage.googleapis.com"`,
		Interval: &monitoringpb.TimeInterval{StartTime: timestamppb.New(end.Add(-window)), EndTime: timestamppb.New(end)},
		Aggregation: &monitoringpb.Aggregation{
			AlignmentPeriod:    durationpb.New(window),
			PerSeriesAligner:   monitoringpb.Aggregation_ALIGN_DELTA,
			CrossSeriesReducer: monitoringpb.Aggregation_REDUCE_SUM,
			GroupByFields:      []string{"resource.label.credential_id", "metric.label.response_code_class"},
		},
	}
}

// sums runs req and returns the values summed by credential_id and
// response_code_class ("apikey:UID/2xx").
func sums(t *testing.T, c *monitoring.MetricClient, req *monitoringpb.ListTimeSeriesRequest) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	it := c.ListTimeSeries(context.Background(), req)
	for {
		ts, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return got
		}
		if err != nil {
			t.Fatalf("ListTimeSeries: %v", err)
		}
		k := ts.GetResource().GetLabels()["credential_id"] + "/" + ts.GetMetric().GetLabels()["response_code_class"]
		for _, p := range ts.GetPoints() {
			got[k] += p.GetValue().GetInt64Value()
		}
	}
}

// TestMonitoringCountsGeminiCallsPerKey makes calls through the real
// Gemini endpoint with two keys and reads them back through Google's
// MetricClient, after the ingestion delay and not before.
func TestMonitoringCountsGeminiCallsPerKey(t *testing.T) {
	const delay = 3 * time.Minute
	s, c, clock := startMonitoring(t, Options{MonitoringDelay: delay})
	_, keyA, uidA := seedKey(t, s, "key-a", nil)
	// Key B may list models but not generate: its generateContent calls
	// are refused (403 API_KEY_SERVICE_BLOCKED), yet still its traffic.
	_, keyB, uidB := seedKey(t, s, "key-b", &apikeys.V2Key{Restrictions: &apikeys.V2Restrictions{
		ApiTargets: []*apikeys.V2ApiTarget{{Service: geminiService, Methods: []string{geminiListMethod, geminiCountMethod}}},
	}})
	const gen = "models/gemini-2.5-flash:generateContent"
	const body = `{"contents":[{"parts":[{"text":"hi"}]}]}`
	const nA, okB, failB = 5, 3, 2
	for range nA {
		if code, b := postGemini(t, s, keyA, gen, body); code != http.StatusOK {
			t.Fatalf("generateContent with key A: %d %s", code, b)
		}
	}
	for range okB {
		if r := probe(t, s, keyB, nil); r.code != http.StatusOK {
			t.Fatalf("listModels with key B: %d %s", r.code, r.body)
		}
	}
	for range failB {
		if code, b := postGemini(t, s, keyB, gen, body); code != http.StatusForbidden {
			t.Fatalf("generateContent with key B: %d %s, want 403", code, b)
		}
	}
	// Calls Monitoring cannot attribute to a key: none, and unknown.
	probe(t, s, "", nil)
	probe(t, s, "AIzaNotAKey", nil)
	// Another project's key: counted in that project, not in this one.
	s.AddProject("other", 42)
	_, keyOther, err := s.SeedKey("other", "key-o", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := probe(t, s, keyOther, nil); r.code != http.StatusOK {
		t.Fatalf("listModels with the other project's key: %d", r.code)
	}

	if got := sums(t, c, byCredentialQuery(clock.Now(), time.Hour)); len(got) != 0 {
		t.Errorf("before the delay: %v, want nothing", got)
	}
	clock.Advance(delay - time.Second)
	if got := sums(t, c, byCredentialQuery(clock.Now(), time.Hour)); len(got) != 0 {
		t.Errorf("a second before the delay ends: %v, want nothing", got)
	}
	clock.Advance(time.Second)
	want := map[string]int64{
		"apikey:" + uidA + "/2xx": nA,
		"apikey:" + uidB + "/2xx": okB,
		"apikey:" + uidB + "/4xx": failB,
	}
	if diff := cmp.Diff(want, sums(t, c, byCredentialQuery(clock.Now(), time.Hour))); diff != "" {
		t.Errorf("after the delay (-want +got):\n%s", diff)
	}

	// The raw series carry every label Google documents.
	req := byCredentialQuery(clock.Now(), time.Hour)
	req.Filter += ` AND resource.label.credential_id = "apikey:` + uidB + `" AND metric.label.response_code = "403"`
	req.Aggregation = nil
	it := c.ListTimeSeries(context.Background(), req)
	ts, err := it.Next()
	if err != nil {
		t.Fatalf("raw ListTimeSeries: %v", err)
	}
	wantRes := map[string]string{
		"project_id": testProject, "service": geminiService, "method": geminiGenerateMethod,
		"version": "v1beta", "location": "global", "credential_id": "apikey:" + uidB,
	}
	if diff := cmp.Diff(wantRes, ts.GetResource().GetLabels()); diff != "" {
		t.Errorf("resource labels (-want +got):\n%s", diff)
	}
	wantMetric := map[string]string{"protocol": "http", "response_code": "403", "response_code_class": "4xx", "grpc_status_code": "7"}
	if diff := cmp.Diff(wantMetric, ts.GetMetric().GetLabels()); diff != "" {
		t.Errorf("metric labels (-want +got):\n%s", diff)
	}
	if ts.GetResource().GetType() != consumedAPI || len(ts.GetPoints()) != 1 || ts.GetPoints()[0].GetValue().GetInt64Value() != failB {
		t.Errorf("raw series = %v, want one consumed_api point of %d", ts, failB)
	}
	if _, err := it.Next(); !errors.Is(err, iterator.Done) {
		t.Errorf("second raw series: %v, want Done", err)
	}
	other := byCredentialQuery(clock.Now(), time.Hour)
	other.Name = "projects/42" // by number
	if got := sums(t, c, other); len(got) != 1 {
		t.Errorf("the other project: %v, want its one key", got)
	}
	if n := s.Calls("monitoring.ListTimeSeries"); n != 5 {
		t.Errorf("ListTimeSeries calls = %d, want 5", n)
	}
}

// TestMonitoringLateCall: a call made just before a window ends but
// visible only after the delay is counted in that window once it shows.
func TestMonitoringLateCall(t *testing.T) {
	s, c, clock := startMonitoring(t, Options{})
	s.SetMonitoringDelay(2 * time.Minute)
	name, _, uid := seedKey(t, s, "old", nil)
	end := clock.Now()
	if err := s.RecordRequest(name, geminiGenerateMethod, 200, end.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	q := byCredentialQuery(end, 10*time.Minute)
	if got := sums(t, c, q); len(got) != 0 {
		t.Errorf("unsettled: %v, want nothing", got)
	}
	clock.Advance(2 * time.Minute)
	if got := sums(t, c, q); got["apikey:"+uid+"/2xx"] != 1 {
		t.Errorf("settled: %v, want 1 success of the old key", got)
	}
}

func TestMonitoringPaging(t *testing.T) {
	s, c, clock := startMonitoring(t, Options{})
	var names []string
	for i := range 3 {
		n, _, _ := seedKey(t, s, fmt.Sprintf("k%d", i), nil)
		names = append(names, n)
	}
	end := clock.Now()
	for _, n := range names {
		for m := range 4 { // four minutes, one point each
			if err := s.RecordRequest(n, geminiCountMethod, 200, end.Add(-time.Duration(m)*time.Minute-time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	req := byCredentialQuery(end, 10*time.Minute)
	req.Aggregation = nil
	for _, tt := range []struct {
		view           monitoringpb.ListTimeSeriesRequest_TimeSeriesView
		size           int32
		pages, points  int
		distinctSeries int
	}{
		{monitoringpb.ListTimeSeriesRequest_FULL, 5, 3, 12, 3},   // 12 points in pages of 5
		{monitoringpb.ListTimeSeriesRequest_FULL, 100, 1, 12, 3}, // all on one page
		{monitoringpb.ListTimeSeriesRequest_HEADERS, 2, 2, 0, 3}, // 3 series in pages of 2
	} {
		t.Run(fmt.Sprintf("%v/%d", tt.view, tt.size), func(t *testing.T) {
			r := &monitoringpb.ListTimeSeriesRequest{Name: req.Name, Filter: req.Filter, Interval: req.Interval, View: tt.view, PageSize: tt.size}
			pages, points := 0, 0
			seen := map[string]bool{}
			// Count the server's pages: the iterator fetches one per
			// Response.
			it := c.ListTimeSeries(context.Background(), r)
			var last any
			perKey := map[string]int{}
			for {
				ts, err := it.Next()
				if errors.Is(err, iterator.Done) {
					break
				}
				if err != nil {
					t.Fatalf("page %d: %v", pages+1, err)
				}
				if it.Response != last {
					pages, last = pages+1, it.Response
				}
				id := ts.GetResource().GetLabels()["credential_id"]
				seen[id] = true
				points += len(ts.GetPoints())
				perKey[id] += len(ts.GetPoints())
			}
			for id, n := range perKey {
				if tt.points > 0 && n != 4 {
					t.Errorf("%s: %d points across pages, want 4", id, n)
				}
			}
			if pages != tt.pages || points != tt.points || len(seen) != tt.distinctSeries {
				t.Errorf("pages, points, series = %d, %d, %d, want %d, %d, %d", pages, points, len(seen), tt.pages, tt.points, tt.distinctSeries)
			}
		})
	}
	bad := &monitoringpb.ListTimeSeriesRequest{Name: req.Name, Filter: req.Filter, Interval: req.Interval, PageToken: "not a token"}
	if _, err := c.ListTimeSeries(context.Background(), bad).Next(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad page token: %v, want InvalidArgument", err)
	}
}

func TestMonitoringRefusals(t *testing.T) {
	s, c, clock := startMonitoring(t, Options{})
	s.AddProject("other", 42)
	ok := func() *monitoringpb.ListTimeSeriesRequest { return byCredentialQuery(clock.Now(), time.Hour) }
	tests := []struct {
		name   string
		edit   func(*monitoringpb.ListTimeSeriesRequest)
		setup  func()
		code   codes.Code
		reason string // ErrorInfo reason, if any
		msg    string // in the message
	}{
		{name: "OR", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.Filter += ` OR resource.type = "api"` }, code: codes.InvalidArgument, msg: "Field filter had an invalid value"},
		{name: "not equal", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.Filter += ` AND resource.type != "api"` }, code: codes.InvalidArgument},
		{name: "no metric type", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.Filter = `resource.type = "consumed_api"` }, code: codes.InvalidArgument},
		{name: "other metric", edit: func(r *monitoringpb.ListTimeSeriesRequest) {
			r.Filter = `metric.type = "serviceruntime.googleapis.com/api/request_latencies"`
		}, code: codes.InvalidArgument},
		{name: "no interval", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.Interval = nil }, code: codes.InvalidArgument, msg: "interval"},
		{name: "no end time", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.Interval.EndTime = nil }, code: codes.InvalidArgument, msg: "interval.endTime"},
		{name: "start after end", edit: func(r *monitoringpb.ListTimeSeriesRequest) {
			r.Interval.StartTime = timestamppb.New(r.Interval.EndTime.AsTime().Add(time.Second))
		}, code: codes.InvalidArgument, msg: "start time must not be later than the end time"},
		{name: "short alignment", edit: func(r *monitoringpb.ListTimeSeriesRequest) {
			r.Aggregation.AlignmentPeriod = durationpb.New(30 * time.Second)
		}, code: codes.InvalidArgument, msg: "at least 60 seconds"},
		{name: "aligner without period", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.Aggregation.AlignmentPeriod = nil }, code: codes.InvalidArgument},
		{name: "ALIGN_RATE", edit: func(r *monitoringpb.ListTimeSeriesRequest) {
			r.Aggregation.PerSeriesAligner = monitoringpb.Aggregation_ALIGN_RATE
		}, code: codes.InvalidArgument},
		{name: "REDUCE_MEAN", edit: func(r *monitoringpb.ListTimeSeriesRequest) {
			r.Aggregation.CrossSeriesReducer = monitoringpb.Aggregation_REDUCE_MEAN
		}, code: codes.InvalidArgument},
		{name: "reducer without aligner", edit: func(r *monitoringpb.ListTimeSeriesRequest) {
			r.Aggregation.PerSeriesAligner = monitoringpb.Aggregation_ALIGN_NONE
		}, code: codes.InvalidArgument},
		{name: "bad group by", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.Aggregation.GroupByFields = []string{"credential_id"} }, code: codes.InvalidArgument},
		{name: "secondary aggregation", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.SecondaryAggregation = r.Aggregation }, code: codes.InvalidArgument},
		{name: "order by", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.OrderBy = "value" }, code: codes.InvalidArgument},
		{name: "negative page size", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.PageSize = -1 }, code: codes.InvalidArgument},
		{name: "organization", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.Name = "organizations/1" }, code: codes.InvalidArgument},
		{name: "unknown project", edit: func(r *monitoringpb.ListTimeSeriesRequest) { r.Name = "projects/nope" }, code: codes.PermissionDenied, reason: "IAM_PERMISSION_DENIED"},
		{name: "permission denied", setup: func() { s.DenyPermission("monitoring.timeSeries.list") }, code: codes.PermissionDenied, reason: "IAM_PERMISSION_DENIED", msg: "monitoring.timeSeries.list"},
		{name: "API disabled", setup: func() { s.SetServiceEnabled(testProject, "monitoring.googleapis.com", false) }, code: codes.PermissionDenied, reason: "SERVICE_DISABLED", msg: "Cloud Monitoring API has not been used in project"},
		{name: "injected outage", setup: func() { s.Fail("monitoring.ListTimeSeries", fake.Next, fake.Fault{Code: codes.Unavailable}) }, code: codes.Unavailable},
		{name: "API disabled elsewhere", setup: func() { s.SetServiceEnabled("other", "monitoring.googleapis.com", false) }, code: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
				t.Cleanup(func() {
					s.AllowPermission("monitoring.timeSeries.list")
					s.SetServiceEnabled(testProject, "monitoring.googleapis.com", true)
					s.SetServiceEnabled("other", "monitoring.googleapis.com", true)
				})
			}
			r := ok()
			if tt.edit != nil {
				tt.edit(r)
			}
			_, err := c.ListTimeSeries(context.Background(), r).Next()
			if errors.Is(err, iterator.Done) {
				err = nil
			}
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code %v (%v), want %v", got, err, tt.code)
			}
			if err == nil {
				return
			}
			if tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			if tt.reason != "" {
				var ae *apierror.APIError
				if !errors.As(err, &ae) || ae.Reason() != tt.reason {
					t.Errorf("error %v: reason %q, want %q", err, ae.Reason(), tt.reason)
				}
			}
		})
	}
}

// TestConsumerIsCountedAndNeverPrintsItsKey runs an unconfigured consumer
// against the real HTTP endpoint, stops it, and finds its calls in
// Monitoring.
func TestConsumerIsCountedAndNeverPrintsItsKey(t *testing.T) {
	s, c, clock := startMonitoring(t, Options{})
	_, ks, uid := seedKey(t, s, "forgotten", nil)
	cons := s.StartConsumer(secret.New(ks), 5*time.Millisecond, ConsumeGenerate)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ok, _, _ := cons.Calls(); ok >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cons.Stop()
	cons.Stop() // twice is fine
	ok, failed, last := cons.Calls()
	if ok < 3 || failed != 0 || last != http.StatusOK {
		t.Fatalf("consumer calls ok=%d failed=%d last=%d, want ≥3 ok", ok, failed, last)
	}
	if after := s.Calls("gemini.GenerateContent"); after != ok {
		t.Errorf("emulator saw %d generateContent calls, consumer counted %d ok (stopped: no more)", after, ok)
	}
	got := sums(t, c, byCredentialQuery(clock.Now(), time.Hour))
	if got["apikey:"+uid+"/2xx"] != int64(ok) {
		t.Errorf("Monitoring counts %v, want %d successes of the forgotten key", got, ok)
	}
	for _, out := range []string{cons.String(), fmt.Sprintf("%v %+v %#v", cons, cons, cons)} {
		if strings.Contains(out, ks) {
			t.Errorf("consumer printed its key: %q", out)
		}
	}
}

// TestMonitoringRetention: calls older than six weeks are gone, as on
// Cloud Monitoring.
func TestMonitoringRetention(t *testing.T) {
	s, c, clock := startMonitoring(t, Options{})
	name, _, uid := seedKey(t, s, "old", nil)
	now := clock.Now()
	for _, ago := range []time.Duration{usageRetention + time.Hour, time.Hour} {
		if err := s.RecordRequest(name, geminiGenerateMethod, 200, now.Add(-ago)); err != nil {
			t.Fatal(err)
		}
	}
	if got := sums(t, c, byCredentialQuery(now, 2*usageRetention)); got["apikey:"+uid+"/2xx"] != 1 {
		t.Errorf("over twelve weeks: %v, want only the recent call", got)
	}
	if err := s.RecordRequest("projects/p/locations/global/keys/nope", geminiGenerateMethod, 200, now); err == nil {
		t.Error("RecordRequest with an unknown key: no error")
	}
}

// TestMonitoringDelayOnFastClock: on a fake.FastClock (the demo's), a call
// becomes visible after Monitoring's delay of the clock's time — four
// minutes at 120× is two seconds of wall time — not before.
func TestMonitoringDelayOnFastClock(t *testing.T) {
	const speed, delay = 120, 4 * time.Minute
	clock := fake.NewFastClock(t0, speed)
	s, c, _ := startMonitoring(t, Options{Clock: clock, MonitoringDelay: delay})
	_, ks, uid := seedKey(t, s, "fast", nil)
	called, wall := clock.Now(), time.Now()
	if code, b := postGemini(t, s, ks, "models/gemini-2.5-flash:generateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`); code != http.StatusOK {
		t.Fatalf("generateContent: %d %s", code, b)
	}
	if got := sums(t, c, byCredentialQuery(clock.Now(), time.Hour)); len(got) != 0 && clock.Now().Sub(called) < delay {
		t.Errorf("at once: %v, want nothing before the delay", got)
	}
	for {
		got := sums(t, c, byCredentialQuery(clock.Now(), time.Hour))
		// The clock read after the answer: the emulator decided at some
		// time before it, and a slow answer (a loaded machine: a second
		// of wall time is 2m of this clock) must not pass for an early
		// one.
		now := clock.Now()
		if got["apikey:"+uid+"/2xx"] == 1 {
			if now.Sub(called) < delay {
				t.Errorf("visible %s (clock) after the call, before the delay of %s", now.Sub(called), delay)
			}
			t.Logf("visible after %s of wall time, %s of the clock's", time.Since(wall).Round(time.Millisecond), now.Sub(called).Round(time.Second))
			return
		}
		if time.Since(wall) > 20*time.Second {
			t.Fatalf("not visible after 20s of wall time (%s of the clock's): %v", now.Sub(called), got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
