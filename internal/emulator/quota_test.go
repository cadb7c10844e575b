package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	apikeys "google.golang.org/api/apikeys/v2"
	"google.golang.org/api/iterator"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

const quotaHelpURL = "https://cloud.google.com/docs/quotas/help/request_increase"

// restQuotaError checks that err is the API Keys API's 429 for an exceeded
// rate quota and returns its ErrorInfo metadata and RetryInfo delay.
func restQuotaError(t *testing.T, what string, err error) (metadata map[string]string, delay time.Duration) {
	t.Helper()
	e := wantErr(t, what, err, 429, "RESOURCE_EXHAUSTED")
	var body struct {
		Error struct {
			Details []struct {
				Type       string            `json:"@type"`
				Reason     string            `json:"reason"`
				Domain     string            `json:"domain"`
				Metadata   map[string]string `json:"metadata"`
				Links      []helpLink        `json:"links"`
				RetryDelay string            `json:"retryDelay"`
			} `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(e.Body), &body); err != nil {
		t.Fatalf("%s: error body %q: %v", what, e.Body, err)
	}
	var types []string
	for _, d := range body.Error.Details {
		types = append(types, d.Type)
		switch d.Type {
		case typeErrorInfo:
			if d.Reason != "RATE_LIMIT_EXCEEDED" || d.Domain != "googleapis.com" {
				t.Errorf("%s: ErrorInfo %s/%s, want RATE_LIMIT_EXCEEDED/googleapis.com", what, d.Reason, d.Domain)
			}
			metadata = d.Metadata
		case typeHelp:
			if len(d.Links) != 1 || d.Links[0].URL != quotaHelpURL {
				t.Errorf("%s: Help links %+v, want one to %s", what, d.Links, quotaHelpURL)
			}
		case typeRetryInfo:
			if delay, err = time.ParseDuration(d.RetryDelay); err != nil {
				t.Errorf("%s: retryDelay %q: %v", what, d.RetryDelay, err)
			}
		}
	}
	if want := []string{typeErrorInfo, typeHelp, typeRetryInfo}; !cmp.Equal(types, want) {
		t.Errorf("%s: details %v, want %v", what, types, want)
	}
	return metadata, delay
}

// sleepToWindow sleeps until just after the next quota window starts on
// the wall clock.
func sleepToWindow(s *Server, window time.Duration) {
	now := s.Now()
	time.Sleep(now.Truncate(window).Add(window).Sub(now) + 2*time.Millisecond)
}

func TestQuotaAPIKeysWrites(t *testing.T) {
	const window = 300 * time.Millisecond
	s, svc, _ := startKeys(t, Options{
		Clock:       fake.Wall,
		Quotas:      map[string]Quota{"apikeys": {Writes: 3}},
		QuotaWindow: window,
	})
	seeded, _, err := s.SeedKey(testProject, "seeded", nil)
	if err != nil {
		t.Fatal(err)
	}
	parent := "projects/" + testProject + "/locations/global"
	create := func() error {
		_, err := svc.Projects.Locations.Keys.Create(parent, &apikeys.V2Key{}).Do()
		return err
	}

	// The four creates must fall in one window. Start them as one begins;
	// should a slow machine still cross into the next, try again.
	var (
		rejected        error
		before, windowE time.Time
	)
	for attempt := 1; ; attempt++ {
		sleepToWindow(s, window)
		s.ResetCalls()
		start := s.Now().Truncate(window)
		for i := 1; i <= 3; i++ {
			if err := create(); err != nil {
				t.Fatalf("create %d of 3 in a window: %v", i, err)
			}
		}
		before = s.Now()
		rejected = create()
		if s.Now().Truncate(window).Equal(start) {
			windowE = start.Add(window)
			break
		}
		if attempt == 5 {
			t.Fatalf("four creates did not fit in one %v window in %d tries", window, attempt)
		}
	}

	md, delay := restQuotaError(t, "create 4", rejected)
	want := map[string]string{
		"consumer":          "projects/123",
		"quota_limit":       "WriteRequestsPerMinutePerProject",
		"quota_limit_value": "3",
		"quota_location":    "global",
		"quota_metric":      "apikeys.googleapis.com/write_requests",
		"quota_unit":        "1/min/{project}",
		"service":           "apikeys.googleapis.com",
	}
	if diff := cmp.Diff(want, md); diff != "" {
		t.Errorf("ErrorInfo metadata (-want +got):\n%s", diff)
	}
	wantMsg := "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute' of service 'apikeys.googleapis.com' for consumer 'project_number:123'."
	if e := wantErr(t, "create 4", rejected, 429, "RESOURCE_EXHAUSTED"); e.Message != wantMsg {
		t.Errorf("message %q, want %q", e.Message, wantMsg)
	}
	left := (windowE.Sub(before) + time.Millisecond - 1).Truncate(time.Millisecond)
	if delay <= 0 || delay > left {
		t.Errorf("retry delay %v, want > 0 and <= %v (the time left in the window)", delay, left)
	}
	if got := s.Throttled(); got != 1 {
		t.Errorf("Throttled() = %d, want 1", got)
	}
	if got := s.Calls("apikeys.CreateKey"); got != 4 {
		t.Errorf("Calls(CreateKey) = %d, want 4 (a rejected call is a call)", got)
	}

	// Reads are another counter: they still pass, and count as reads.
	for i := 0; i < 2; i++ {
		if _, err := svc.Projects.Locations.Keys.Get(seeded).Do(); err != nil {
			t.Fatalf("GetKey with the write quota used up: %v", err)
		}
	}
	r, w, a := s.QuotaUsage("apikeys", testProject)
	if s.Now().Before(windowE) && (r != 2 || w != 3 || a != 0) { // else the counters started again
		t.Errorf("QuotaUsage = %d reads, %d writes, %d access; want 2, 3, 0", r, w, a)
	}

	// Waiting as told is enough.
	time.Sleep(delay)
	if err := create(); err != nil {
		t.Errorf("create after the retry delay: %v", err)
	}
	if got := s.Throttled(); got != 1 {
		t.Errorf("Throttled() after the wait = %d, want 1", got)
	}
	s.ResetCalls()
	if got := s.Throttled(); got != 0 {
		t.Errorf("Throttled() after ResetCalls = %d, want 0", got)
	}
}

func TestQuotaSecretManager(t *testing.T) {
	tests := []struct {
		name       string
		quota      Quota
		call       func(context.Context, *secretmanager.Client, string) error
		wantMetric string
		wantLimit  string
		wantWord   string
	}{
		{
			name: "access", quota: Quota{Access: 2},
			call: func(ctx context.Context, c *secretmanager.Client, secret string) error {
				_, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: secret + "/versions/latest"})
				return err
			},
			wantMetric: "secretmanager.googleapis.com/access_requests", wantLimit: "AccessRequestsPerMinutePerProject", wantWord: "Access requests",
		},
		{
			name: "read", quota: Quota{Reads: 2},
			call: func(ctx context.Context, c *secretmanager.Client, secret string) error {
				_, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: secret})
				return err
			},
			wantMetric: "secretmanager.googleapis.com/read_requests", wantLimit: "ReadRequestsPerMinutePerProject", wantWord: "Read requests",
		},
		{
			name: "write", quota: Quota{Writes: 2},
			call: func(ctx context.Context, c *secretmanager.Client, secret string) error {
				_, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{
					Parent: secret, Payload: &secretmanagerpb.SecretPayload{Data: []byte("v")}})
				return err
			},
			wantMetric: "secretmanager.googleapis.com/write_requests", wantLimit: "WriteRequestsPerMinutePerProject", wantWord: "Write requests",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := fake.NewManualClock(smStart.Add(20 * time.Second))
			s, c, ctx := startQuotaSM(t, Options{Clock: clock, Quotas: map[string]Quota{"secretmanager": tt.quota}})
			secret, err := s.SeedSecret(smProjectID, "slot", nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.SeedSecretVersion(secret, []byte("v0")); err != nil {
				t.Fatal(err)
			}

			for i := 1; i <= 2; i++ {
				if err := tt.call(ctx, c, secret); err != nil {
					t.Fatalf("call %d of 2: %v", i, err)
				}
			}
			err = tt.call(ctx, c, secret)
			// 20s into the (default, one-minute) window: 40s to go.
			grpcQuotaError(t, err, "secretmanager.googleapis.com", tt.wantWord, tt.wantWord+" per minute",
				tt.wantMetric, tt.wantLimit, "2", 123456789012, 40*time.Second)
			if got := s.Throttled(); got != 1 {
				t.Errorf("Throttled() = %d, want 1", got)
			}
			clock.Advance(40 * time.Second)
			if err := tt.call(ctx, c, secret); err != nil {
				t.Errorf("call in the next window: %v", err)
			}
		})
	}
}

// grpcQuotaError checks that err is Google's gRPC answer to a call over a
// per-minute rate quota of service, charged to project number.
func grpcQuotaError(t *testing.T, err error, service, metric, limit, metricID, limitID, value string, number int64, wantDelay time.Duration) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("call over quota: %v, want code ResourceExhausted", err)
	}
	wantMsg := fmt.Sprintf("Quota exceeded for quota metric '%s' and limit '%s' of service '%s' for consumer 'project_number:%d'.",
		metric, limit, service, number)
	if st.Message() != wantMsg {
		t.Errorf("message %q, want %q", st.Message(), wantMsg)
	}
	var (
		info  *errdetails.ErrorInfo
		retry *errdetails.RetryInfo
		help  *errdetails.Help
	)
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.RetryInfo:
			retry = d
		case *errdetails.Help:
			help = d
		}
	}
	if info == nil || retry == nil || help == nil {
		t.Fatalf("details %v, want ErrorInfo, RetryInfo and Help", st.Details())
	}
	if info.GetReason() != "RATE_LIMIT_EXCEEDED" || info.GetDomain() != "googleapis.com" {
		t.Errorf("ErrorInfo %s/%s, want RATE_LIMIT_EXCEEDED/googleapis.com", info.GetReason(), info.GetDomain())
	}
	want := map[string]string{
		"consumer":          fmt.Sprintf("projects/%d", number),
		"quota_limit":       limitID,
		"quota_limit_value": value,
		"quota_location":    "global",
		"quota_metric":      metricID,
		"quota_unit":        "1/min/{project}",
		"service":           service,
	}
	if diff := cmp.Diff(want, info.GetMetadata()); diff != "" {
		t.Errorf("ErrorInfo metadata (-want +got):\n%s", diff)
	}
	if links := help.GetLinks(); len(links) != 1 || links[0].GetUrl() != quotaHelpURL {
		t.Errorf("Help links %v, want one to %s", links, quotaHelpURL)
	}
	if got := retry.GetRetryDelay().AsDuration(); got != wantDelay {
		t.Errorf("retry delay %v, want %v", got, wantDelay)
	}
}

// TestQuotaMonitoring: Cloud Monitoring's time series queries are limited
// per project and minute (6,000 documented), refused with the names of
// Google's own answer (see quota.go), and charged to the project queried.
func TestQuotaMonitoring(t *testing.T) {
	if got := DocumentedQuotas["monitoring"]; got != (Quota{Reads: 6000}) {
		t.Errorf("DocumentedQuotas[monitoring] = %+v, want 6000 reads", got)
	}
	s, c, clock := startMonitoring(t, Options{Quotas: map[string]Quota{"monitoring": {Reads: 2}}})
	s.AddProject("proj-b", 456)
	clock.Advance(clock.Now().Truncate(time.Minute).Add(time.Minute + 20*time.Second).Sub(clock.Now())) // 20s into a window
	req := byCredentialQuery(clock.Now(), time.Hour)
	list := func(r *monitoringpb.ListTimeSeriesRequest) error {
		_, err := c.ListTimeSeries(context.Background(), r).Next()
		if errors.Is(err, iterator.Done) {
			return nil
		}
		return err
	}
	for i := 1; i <= 2; i++ {
		if err := list(req); err != nil {
			t.Fatalf("query %d of 2: %v", i, err)
		}
	}
	if r, _, _ := s.QuotaUsage("monitoring", testProject); r != 2 {
		t.Errorf("QuotaUsage reads = %d, want 2", r)
	}
	err := list(req)
	grpcQuotaError(t, err, "monitoring.googleapis.com", "Time series queries", "Time series queries per minute",
		"monitoring.googleapis.com/query_requests", "QueryRequestsPerMinutePerProject", "2", testNumber, 40*time.Second)
	if got := s.Throttled(); got != 1 {
		t.Errorf("Throttled() = %d, want 1", got)
	}
	other := byCredentialQuery(clock.Now(), time.Hour)
	other.Name = "projects/proj-b"
	if err := list(other); err != nil {
		t.Errorf("query of another project: %v, want its own quota", err)
	}
	clock.Advance(40 * time.Second)
	if err := list(req); err != nil {
		t.Errorf("query in the next window: %v", err)
	}
}

// startQuotaSM starts an emulator with opts and project my-project
// (123456789012) and returns it with a Secret Manager client.
func startQuotaSM(t *testing.T, opts Options) (*Server, *secretmanager.Client, context.Context) {
	t.Helper()
	opts.NoSecretWriteLimits = true // the project quotas are under test, not the per-secret rates
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	s.AddProject(smProjectID, smProjectNumber)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, err := s.SecretManagerClient(ctx)
	if err != nil {
		t.Fatalf("SecretManagerClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c, ctx
}

func TestQuotaProjectsAreIndependent(t *testing.T) {
	s, svc, _ := startKeys(t, Options{Quotas: map[string]Quota{"apikeys": {Writes: 1}}})
	s.AddProject("proj-b", 456)
	create := func(parent string) error {
		_, err := svc.Projects.Locations.Keys.Create(parent, &apikeys.V2Key{}).Do()
		return err
	}
	steps := []struct {
		parent       string
		wantConsumer string // "": the call passes
	}{
		{"projects/proj-a/locations/global", ""},
		{"projects/proj-a/locations/global", "projects/123"},
		{"projects/proj-b/locations/global", ""},          // its own quota
		{"projects/456/locations/global", "projects/456"}, // the same project by number
		{"projects/123/locations/global", "projects/123"},
	}
	for i, st := range steps {
		err := create(st.parent)
		if st.wantConsumer == "" {
			if err != nil {
				t.Fatalf("step %d: create in %s: %v", i+1, st.parent, err)
			}
			continue
		}
		md, _ := restQuotaError(t, st.parent, err)
		if md["consumer"] != st.wantConsumer {
			t.Errorf("step %d: consumer %q, want %q", i+1, md["consumer"], st.wantConsumer)
		}
	}
	for _, p := range []string{"proj-a", "123", "proj-b", "456"} {
		if _, w, _ := s.QuotaUsage("apikeys", p); w != 1 {
			t.Errorf("QuotaUsage(apikeys, %s) writes = %d, want 1", p, w)
		}
	}
	if got := s.Throttled(); got != 3 {
		t.Errorf("Throttled() = %d, want 3", got)
	}
}

func TestQuotaOffByDefault(t *testing.T) {
	s, svc, _ := startKeys(t, Options{})
	name, _, err := s.SeedKey(testProject, "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		if _, err := svc.Projects.Locations.Keys.Get(name).Do(); err != nil {
			t.Fatalf("GetKey %d: %v", i+1, err)
		}
	}
	if got := s.Throttled(); got != 0 {
		t.Errorf("Throttled() = %d, want 0", got)
	}
	if r, w, a := s.QuotaUsage("apikeys", testProject); r+w+a != 0 {
		t.Errorf("QuotaUsage = %d, %d, %d; want nothing metered", r, w, a)
	}
}

func TestQuotaWindowBoundary(t *testing.T) {
	// 15s into a minute, on the fake clock; QuotaWindow 0 is a minute.
	s, svc, clock := startKeys(t, Options{Quotas: map[string]Quota{"apikeys": {Writes: 2}}})
	clock.Advance(15 * time.Second)
	parent := "projects/" + testProject + "/locations/global"
	create := func() error {
		_, err := svc.Projects.Locations.Keys.Create(parent, &apikeys.V2Key{}).Do()
		return err
	}
	for i := 1; i <= 2; i++ {
		if err := create(); err != nil {
			t.Fatalf("create %d of 2: %v", i, err)
		}
	}
	steps := []struct {
		advance   time.Duration // before the call
		wantDelay time.Duration // 0: the call passes
	}{
		{0, 45 * time.Second}, // quota again at the next minute, not 60s after use
		{44*time.Second + 999*time.Millisecond, time.Millisecond},
		{999_500 * time.Nanosecond, time.Millisecond}, // 500ns left: at least 1ms
		{500 * time.Nanosecond, 0},                    // 12:01:00 exactly: the next window
		{0, 0},
		{0, 60 * time.Second},
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		err := create()
		if st.wantDelay == 0 {
			if err != nil {
				t.Fatalf("step %d at %s: %v, want success", i+1, s.Now().Format(time.RFC3339Nano), err)
			}
			continue
		}
		_, delay := restQuotaError(t, "step", err)
		if delay != st.wantDelay {
			t.Errorf("step %d at %s: retry delay %v, want %v", i+1, s.Now().Format(time.RFC3339Nano), delay, st.wantDelay)
		}
	}
	if got := s.Throttled(); got != 4 {
		t.Errorf("Throttled() = %d, want 4", got)
	}
}

func TestQuotaConsumer(t *testing.T) {
	s, svc, _ := startKeys(t, Options{Quotas: map[string]Quota{
		"apikeys":       {Reads: 100, Writes: 100},
		"secretmanager": {Reads: 100, Writes: 100, Access: 100},
	}})
	s.AddProject("proj-b", 456)
	_, keyStringB, err := s.SeedKey("proj-b", "kb", nil)
	if err != nil {
		t.Fatal(err)
	}
	op := mustDo(t, svc.Projects.Locations.Keys.Create("projects/proj-b/locations/global", &apikeys.V2Key{}).Do)
	c, err := s.SecretManagerClient(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	type usage struct{ Reads, Writes, Access int }
	// charged returns the usage of both projects in both services, by
	// "service project".
	charged := func() map[string]usage {
		m := map[string]usage{}
		for _, svc := range []string{"apikeys", "secretmanager"} {
			for _, p := range []string{testProject, "proj-b"} {
				var u usage
				u.Reads, u.Writes, u.Access = s.QuotaUsage(svc, p)
				m[svc+" "+p] = u
			}
		}
		return m
	}
	tests := []struct {
		name string
		call func() error
		want map[string]usage // what the call adds
	}{
		{
			name: "lookupKey charges the key's project",
			call: func() error { _, err := svc.Keys.LookupKey().KeyString(keyStringB).Do(); return err },
			want: map[string]usage{"apikeys proj-b": {Reads: 1}},
		},
		{
			name: "operations.get charges the project of the operation's key",
			call: func() error { _, err := svc.Operations.Get(op.Name).Do(); return err },
			want: map[string]usage{"apikeys proj-b": {Reads: 1}},
		},
		{
			name: "a key named by project number",
			call: func() error {
				_, err := svc.Projects.Locations.Keys.Get("projects/456/locations/global/keys/kb").Do()
				return err
			},
			want: map[string]usage{"apikeys proj-b": {Reads: 1}},
		},
		{
			name: "lookupKey of an unknown string is not charged",
			call: func() error {
				_, err := svc.Keys.LookupKey().KeyString("AIza" + strings.Repeat("x", 35)).Do()
				return err
			},
		},
		{
			name: "an unknown operation is not charged",
			call: func() error { _, err := svc.Operations.Get("operations/akmf.p7-456-none").Do(); return err },
		},
		{
			name: "an unknown project is not charged",
			call: func() error {
				_, err := svc.Projects.Locations.Keys.Get("projects/nope/locations/global/keys/k").Do()
				return err
			},
		},
		{
			name: "CreateSecret charges its parent",
			call: func() error {
				_, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
					Parent: "projects/proj-b", SecretId: "s",
					Secret: &secretmanagerpb.Secret{Replication: automatic()}})
				return err
			},
			want: map[string]usage{"secretmanager proj-b": {Writes: 1}},
		},
		{
			name: "AccessSecretVersion is an access request",
			call: func() error {
				_, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/456/secrets/s/versions/latest"})
				return err
			},
			want: map[string]usage{"secretmanager proj-b": {Access: 1}},
		},
		{
			name: "ListSecretVersions is a read request",
			call: func() error {
				_, err := c.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: "projects/proj-b/secrets/s"}).Next()
				return err
			},
			want: map[string]usage{"secretmanager proj-b": {Reads: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := charged()
			_ = tt.call() // the outcome does not matter, only who pays
			got := map[string]usage{}
			for k, a := range charged() {
				b := before[k]
				if d := (usage{a.Reads - b.Reads, a.Writes - b.Writes, a.Access - b.Access}); d != (usage{}) {
					got[k] = d
				}
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("usage charged (-want +got):\n%s", diff)
			}
		})
	}
}

func TestQuotaFaultsAndHooks(t *testing.T) {
	s, svc, _ := startKeys(t, Options{Quotas: map[string]Quota{"apikeys": {Writes: 1}}})
	parent := "projects/" + testProject + "/locations/global"
	create := func() error {
		_, err := svc.Projects.Locations.Keys.Create(parent, &apikeys.V2Key{}).Do()
		return err
	}
	var (
		mu     sync.Mutex
		hooked []int
	)
	s.SetHook("apikeys.CreateKey", func(_ context.Context, n int) error {
		mu.Lock()
		defer mu.Unlock()
		hooked = append(hooked, n)
		return nil
	})
	s.Fail("apikeys.CreateKey", 1, fake.Fault{Code: codes.Unavailable})
	s.Fail("apikeys.CreateKey", 2, fake.Fault{Code: codes.Internal})

	// Call 1 is admitted, then fails in the service: it used quota.
	wantErr(t, "create 1", create(), 503, "UNAVAILABLE")
	if _, w, _ := s.QuotaUsage("apikeys", testProject); w != 1 {
		t.Errorf("writes charged after an admitted call that failed = %d, want 1", w)
	}
	// Call 2 is over quota: the front end answers, the service (its hook,
	// its fault) never sees it.
	restQuotaError(t, "create 2", create())
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]int{1}, hooked); diff != "" {
		t.Errorf("hooked calls (-want +got):\n%s", diff)
	}
	if got := s.Calls("apikeys.CreateKey"); got != 2 {
		t.Errorf("Calls(CreateKey) = %d, want 2", got)
	}
}

func TestQuotaNotForGeminiOrRun(t *testing.T) {
	for _, m := range []string{"gemini.ListModels", "gemini.CountTokens", "gemini.GenerateContent", "run.GetService", "run.UpdateService", "run.GetOperation"} {
		if _, _, ok := quotaOf(m); ok {
			t.Errorf("quotaOf(%q) is metered, want not", m)
		}
	}
	all, _ := Methods()
	for _, m := range all {
		if !strings.HasPrefix(m, "apikeys.") && !strings.HasPrefix(m, "secretmanager.") && !strings.HasPrefix(m, "monitoring.") {
			continue
		}
		if _, _, ok := quotaOf(m); !ok {
			t.Errorf("quotaOf(%q) is not metered", m)
		}
	}
}

func TestQuotaOptionsChecked(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string // in the error; "": Start succeeds
	}{
		{"documented", Options{Quotas: DocumentedQuotas, QuotaWindow: time.Second}, ""},
		{"empty quota is none", Options{Quotas: map[string]Quota{"apikeys": {}}}, ""},
		{"unknown service", Options{Quotas: map[string]Quota{"gemini": {Reads: 1}}}, `"gemini": no such service`},
		{"negative limit", Options{Quotas: map[string]Quota{"secretmanager": {Writes: -1}}}, "want limits >= 0"},
		{"access for apikeys", Options{Quotas: map[string]Quota{"apikeys": {Access: 1}}}, "no access requests"},
		{"monitoring reads", Options{Quotas: map[string]Quota{"monitoring": {Reads: 10}}}, ""},
		{"writes for monitoring", Options{Quotas: map[string]Quota{"monitoring": {Writes: 1}}}, "only read"},
		{"negative window", Options{QuotaWindow: -time.Second}, "want a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Start(tt.opts)
			if err == nil {
				s.Close()
			}
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Start: %v, want success", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Start: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
