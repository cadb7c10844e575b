package rotate_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/cloudresourcemanager/v3"
	iamapi "google.golang.org/api/iam/v1"
	"google.golang.org/api/serviceusage/v1"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// withAccess gives the world's Rotator the read-only clients of plan's
// checks, pointed at the emulator.
func (w *world) withAccess() {
	w.t.Helper()
	ctx := context.Background()
	opts := w.srv.AccessClientOptions()
	crm, err := cloudresourcemanager.NewService(ctx, opts...)
	if err != nil {
		w.t.Fatal(err)
	}
	su, err := serviceusage.NewService(ctx, opts...)
	if err != nil {
		w.t.Fatal(err)
	}
	ia, err := iamapi.NewService(ctx, opts...)
	if err != nil {
		w.t.Fatal(err)
	}
	w.r.Access = &gcp.AccessClients{Projects: crm, Services: su, IAM: ia}
}

// planChecks runs Plan and returns its checks, from the plan or, when the
// preflight failed, from the AccessError.
func (w *world) planChecks() ([]rotate.AccessCheck, *rotate.Plan, error) {
	w.t.Helper()
	p, err := w.r.Plan(context.Background(), w.slot, rotate.Options{Force: true})
	if err == nil {
		return p.Checks, p, p.AccessErr()
	}
	var ae *rotate.AccessError
	if !errors.As(err, &ae) {
		w.t.Fatalf("Plan = %v, want a plan or an AccessError", err)
	}
	return ae.Plan.Checks, nil, err
}

// TestPlanProvesAccess: plan tests, with read-only calls, every permission
// the rotation uses on the project and on the secret, the APIs on the
// charged project and the bound service account; each thing missing is one
// failed check naming the permission (or API, or account), the predefined
// role and the command that grants it, and plan makes no write.
func TestPlanProvesAccess(t *testing.T) {
	t.Parallel()
	type want struct {
		name, role, fix string
	}
	tests := []struct {
		name  string
		setup func(w *world)
		want  *want // the one failed check; nil: none
	}{
		{"all present", func(*world) {}, nil},
		{"apikeys.keys.create", deny("apikeys.keys.create"), &want{"apikeys.keys.create", "roles/serviceusage.apiKeysAdmin", "gcloud projects add-iam-policy-binding acme-prod --member=MEMBER --role=roles/serviceusage.apiKeysAdmin"}},
		{"apikeys.keys.get (preflight fails too)", deny("apikeys.keys.get"), &want{"apikeys.keys.get", "roles/serviceusage.apiKeysAdmin", "gcloud projects add-iam-policy-binding acme-prod"}},
		{"apikeys.keys.list", deny("apikeys.keys.list"), &want{"apikeys.keys.list", "roles/serviceusage.apiKeysAdmin", "gcloud projects add-iam-policy-binding"}},
		{"apikeys.keys.update", deny("apikeys.keys.update"), &want{"apikeys.keys.update", "roles/serviceusage.apiKeysAdmin", "gcloud projects add-iam-policy-binding"}},
		{"apikeys.keys.delete", deny("apikeys.keys.delete"), &want{"apikeys.keys.delete", "roles/serviceusage.apiKeysAdmin", "gcloud projects add-iam-policy-binding"}},
		{"apikeys.keys.undelete", deny("apikeys.keys.undelete"), &want{"apikeys.keys.undelete", "roles/serviceusage.apiKeysAdmin", "gcloud projects add-iam-policy-binding"}},
		{"apikeys.keys.lookup (preflight fails too)", deny("apikeys.keys.lookup"), &want{"apikeys.keys.lookup", "roles/serviceusage.apiKeysAdmin", "gcloud projects add-iam-policy-binding"}},
		{"apikeys.keys.getKeyString", deny("apikeys.keys.getKeyString"), &want{"apikeys.keys.getKeyString", "roles/serviceusage.apiKeysAdmin", "gcloud projects add-iam-policy-binding"}},
		{"serviceusage.operations.get", deny("serviceusage.operations.get"), &want{"serviceusage.operations.get", "roles/serviceusage.apiKeysAdmin", "gcloud projects add-iam-policy-binding"}},
		{"secretmanager.secrets.get (preflight fails too)", deny("secretmanager.secrets.get"), &want{"secretmanager.secrets.get", "roles/secretmanager.admin", "gcloud secrets add-iam-policy-binding gemini-api-key --project=acme-prod --member=MEMBER --role=roles/secretmanager.admin"}},
		{"secretmanager.secrets.update", deny("secretmanager.secrets.update"), &want{"secretmanager.secrets.update", "roles/secretmanager.admin", "gcloud secrets add-iam-policy-binding gemini-api-key"}},
		{"secretmanager.versions.add", deny("secretmanager.versions.add"), &want{"secretmanager.versions.add", "roles/secretmanager.secretVersionManager", "gcloud secrets add-iam-policy-binding gemini-api-key"}},
		{"secretmanager.versions.access (preflight fails too)", deny("secretmanager.versions.access"), &want{"secretmanager.versions.access", "roles/secretmanager.secretAccessor", "gcloud secrets add-iam-policy-binding gemini-api-key"}},
		{"secretmanager.versions.disable", deny("secretmanager.versions.disable"), &want{"secretmanager.versions.disable", "roles/secretmanager.secretVersionManager", "gcloud secrets add-iam-policy-binding gemini-api-key"}},
		{"binding to the service account", deny("iam.serviceAccounts.actAs"), &want{"iam.serviceAccounts.actAs", "roles/iam.serviceAccountUser", "gcloud iam service-accounts add-iam-policy-binding " + sa + " --member=MEMBER --role=roles/iam.serviceAccountUser"}},
		{"API Keys API disabled", func(w *world) { w.srv.SetServiceEnabled(project, "apikeys.googleapis.com", false) },
			&want{"apikeys.googleapis.com", "", "gcloud services enable apikeys.googleapis.com --project=acme-prod"}},
		{"service account missing (migration)", func(w *world) { w.slot.ServiceAccount = "new-caller@acme-prod.iam.gserviceaccount.com" },
			&want{"new-caller@acme-prod.iam.gserviceaccount.com", "", "gcloud iam service-accounts create new-caller --project=acme-prod"}},
		{"bound account deleted", func(w *world) { w.srv.DeleteServiceAccount(sa) },
			&want{sa, "", "gcloud iam service-accounts create gemini --project=acme-prod"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			w.withAccess()
			tt.setup(w)
			checks, p, err := w.planChecks()
			var failed []rotate.AccessCheck
			for _, c := range checks {
				switch c.Status {
				case rotate.CheckFail:
					failed = append(failed, c)
				case rotate.CheckOK:
				default:
					t.Errorf("check %s: status %q, want ok or fail", c, c.Status)
				}
			}
			if n := w.srv.MutatingCalls(); n != 0 {
				t.Errorf("plan made %d mutating calls: %v", n, w.srv.CallCounts())
			}
			if tt.want == nil {
				if err != nil || len(failed) != 0 {
					t.Fatalf("Plan: err %v, failed checks %v; want none", err, failed)
				}
				// 9 on the project, 5 on the secret, 2 APIs, the
				// account and binding to it.
				if len(checks) != 18 {
					t.Errorf("Plan made %d checks, want 18: %v", len(checks), checks)
				}
				if !p.WillRotate {
					t.Errorf("Plan: WillRotate false (%s)", p.Blocked)
				}
				// One read call each.
				for _, m := range []string{"resourcemanager.TestIamPermissions", "secretmanager.TestIamPermissions",
					"serviceusage.BatchGetServices", "iam.GetServiceAccount", "iam.TestIamPermissions"} {
					if n := w.srv.Calls(m); n != 1 {
						t.Errorf("%s called %d times, want 1", m, n)
					}
				}
				return
			}
			if !errors.Is(err, rotate.ErrAccessMissing) {
				t.Errorf("Plan error = %v, want ErrAccessMissing", err)
			}
			if len(failed) != 1 {
				t.Fatalf("failed checks = %v, want one", failed)
			}
			c, line := failed[0], failed[0].String()
			if c.Name != tt.want.name || c.Role != tt.want.role || !strings.HasPrefix(c.Fix, tt.want.fix) {
				t.Errorf("failed check = %+v, want name %q, role %q, fix starting %q", c, tt.want.name, tt.want.role, tt.want.fix)
			}
			for _, s := range []string{c.What + " would fail", c.Name, c.Role, c.Fix} {
				if !strings.Contains(line, s) {
					t.Errorf("line %q lacks %q", line, s)
				}
			}
			if strings.Contains(line, "\n") {
				t.Errorf("line %q is more than one line", line)
			}
		})
	}
}

func deny(perm string) func(*world) {
	return func(w *world) { w.srv.DenyPermission(perm) }
}

// TestPlanCannotCheck: a caller that may not read the APIs' state or the
// service account gets a warning that names what would let it check (a
// failed testIamPermissions, one warning for its permissions), and plan
// does not fail for it.
func TestPlanCannotCheck(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.withAccess()
	w.srv.DenyPermission("serviceusage.services.get")
	w.srv.DenyPermission("iam.serviceAccounts.get")
	w.srv.Fail("resourcemanager.TestIamPermissions", fake.Next, fake.Fault{Code: codes.PermissionDenied, Message: "The caller does not have permission", Times: fake.Always})
	p, err := w.r.Plan(context.Background(), w.slot, rotate.Options{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AccessErr(); err != nil {
		t.Errorf("AccessErr = %v, want nil: a check that cannot be made is no failure", err)
	}
	roles := map[string]string{}
	for _, c := range p.Checks {
		if c.Status == rotate.CheckWarn {
			roles[c.Name] = c.Role
		}
	}
	want := map[string]string{
		"apikeys.googleapis.com":       "roles/serviceusage.serviceUsageViewer",
		"secretmanager.googleapis.com": "roles/serviceusage.serviceUsageViewer",
		sa:                             "roles/iam.serviceAccountViewer",
		"API Keys":                     "",
	}
	for k, v := range want {
		if r, ok := roles[k]; !ok || r != v {
			t.Errorf("warning for %s names role %q, want %q (warnings: %v)", k, roles[k], v, roles)
		}
	}
}

// TestPlanWithoutAccessClients: a Rotator without them plans as before,
// with no checks and no further calls.
func TestPlanWithoutAccessClients(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	p, err := w.r.Plan(context.Background(), w.slot, rotate.Options{Force: true})
	if err != nil || len(p.Checks) != 0 || p.AccessErr() != nil {
		t.Fatalf("Plan = %v checks, err %v; want none", p, err)
	}
}

// TestPlanChecksDrainGateAccess: a slot whose old key waits for the drain
// gate (retire: quiet) needs to read Cloud Monitoring; plan checks, with the
// same read-only calls as the others, monitoring.timeSeries.list on the
// project and the Cloud Monitoring API on the charged project. Missing,
// usage: required fails the check (the retire step would stop), and
// best-effort warns that it falls back to the grace period, naming the role
// or the API. Only with retire: quiet; never a write.
func TestPlanChecksDrainGateAccess(t *testing.T) {
	t.Parallel()
	denyList := deny("monitoring.timeSeries.list")
	disable := func(w *world) { w.srv.SetServiceEnabled(project, "monitoring.googleapis.com", false) }
	for _, tc := range []struct {
		name   string
		retire rotate.RetireMode
		usage  rotate.UsagePolicy
		setup  func(*world)
		checks int    // how many checks
		status string // of the drain gate's failed check; "" for none
		want   []string
	}{
		{"quiet, all present", rotate.RetireQuiet, rotate.UsageRequired, func(*world) {}, 20, "", nil},
		{"quiet, best-effort, permission denied", rotate.RetireQuiet, rotate.UsageBestEffort, denyList, 20, rotate.CheckWarn,
			[]string{"would fall back to grace 0s (usage: best-effort): the caller lacks monitoring.timeSeries.list on projects/acme-prod",
				"role roles/monitoring.viewer", "fix: gcloud projects add-iam-policy-binding acme-prod --member=MEMBER --role=roles/monitoring.viewer"}},
		{"quiet, default policy, API disabled", rotate.RetireQuiet, "", disable, 20, rotate.CheckWarn,
			[]string{"would fall back to grace 0s (usage: best-effort): the API monitoring.googleapis.com is not enabled on projects/acme-prod",
				"fix: gcloud services enable monitoring.googleapis.com --project=acme-prod"}},
		{"quiet, required, permission denied", rotate.RetireQuiet, rotate.UsageRequired, denyList, 20, rotate.CheckFail,
			[]string{"(usage: required: the old key is kept and the run stops) would fail: the caller lacks monitoring.timeSeries.list", "role roles/monitoring.viewer"}},
		{"quiet, required, API disabled", rotate.RetireQuiet, rotate.UsageRequired, disable, 20, rotate.CheckFail,
			[]string{"would fail: the API monitoring.googleapis.com is not enabled", "gcloud services enable monitoring.googleapis.com"}},
		{"grace: not checked", rotate.RetireGrace, rotate.UsageRequired, denyList, 18, "", nil},
		{"now: not checked", rotate.RetireNow, rotate.UsageRequired, disable, 18, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.withAccess()
			w.slot.Retire, w.slot.Usage = tc.retire, tc.usage
			w.slot.QuietPeriod, w.slot.DrainTimeout = 10*time.Minute, time.Hour
			tc.setup(w)
			checks, _, err := w.planChecks()
			if n := w.srv.MutatingCalls(); n != 0 {
				t.Errorf("plan made %d mutating calls: %v", n, w.srv.CallCounts())
			}
			for _, m := range []string{"resourcemanager.TestIamPermissions", "serviceusage.BatchGetServices"} {
				if n := w.srv.Calls(m); n != 1 {
					t.Errorf("%s called %d times, want 1", m, n)
				}
			}
			if len(checks) != tc.checks {
				t.Errorf("Plan made %d checks, want %d: %v", len(checks), tc.checks, checks)
			}
			var bad []rotate.AccessCheck
			for _, c := range checks {
				if c.Status != rotate.CheckOK {
					bad = append(bad, c)
				}
			}
			if tc.status == "" {
				if len(bad) != 0 || err != nil {
					t.Fatalf("checks not ok: %v (err %v), want none", bad, err)
				}
				return
			}
			if len(bad) != 1 || bad[0].Status != tc.status {
				t.Fatalf("checks not ok = %v, want one %s", bad, tc.status)
			}
			line := bad[0].String()
			for _, s := range tc.want {
				if !strings.Contains(line, s) {
					t.Errorf("line %q lacks %q", line, s)
				}
			}
			if blocks := errors.Is(err, rotate.ErrAccessMissing); blocks != (tc.status == rotate.CheckFail) {
				t.Errorf("Plan error = %v; want ErrAccessMissing only when the policy is required", err)
			}
		})
	}
}

// TestPlanSaysRetirePolicy: plan says what the rotation does with the old
// key, in one line and as data.
func TestPlanSaysRetirePolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		retire rotate.RetireMode
		usage  rotate.UsagePolicy
		grace  time.Duration
		want   string
		action string
	}{
		{"quiet, best-effort", rotate.RetireQuiet, rotate.UsageBestEffort, 0,
			"quiet — delete the old key after 10m without successful calls (settled 30m), wait up to 1h (still used then: kept for finalize); " +
				"if Cloud Monitoring cannot answer: best-effort (fall back to grace 0s)",
			"wait until Cloud Monitoring's settled data show no successful call with the old key for 10m (at most 1h; still used then: keep it for finalize)"},
		{"quiet, required", rotate.RetireQuiet, rotate.UsageRequired, 0,
			"if Cloud Monitoring cannot answer: required (keep the old key and stop)", "wait until"},
		{"grace", rotate.RetireGrace, "", 24 * time.Hour, "grace — keep the old key for 1d, then finalize deletes it", "for 1d (annotated keyrotate.delete-after"},
		{"now", rotate.RetireNow, "", 24 * time.Hour, "now — delete the old key at once, without reading its usage", "delete the old key"},
		{"library default, no grace", "", "", 0, "now — delete the old key at once", "delete the old key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.r.UsageDelay = 30 * time.Minute
			w.slot.Retire, w.slot.Usage, w.slot.Grace = tc.retire, tc.usage, tc.grace
			w.slot.QuietPeriod, w.slot.DrainTimeout = 10*time.Minute, time.Hour
			p, err := w.r.Plan(context.Background(), w.slot, rotate.Options{Force: true})
			if err != nil {
				t.Fatal(err)
			}
			if p.Retire == nil || !strings.Contains(p.Retire.Summary, tc.want) {
				t.Fatalf("retire = %+v, want a summary with %q", p.Retire, tc.want)
			}
			if !strings.Contains(strings.Join(p.Actions, "\n"), tc.action) {
				t.Errorf("actions lack %q:\n%s", tc.action, strings.Join(p.Actions, "\n"))
			}
			b, _ := json.Marshal(p)
			if !strings.Contains(string(b), `"retire":{"mode":"`) {
				t.Errorf("JSON lacks the retire plan: %s", b)
			}
			if tc.retire == rotate.RetireQuiet && !strings.Contains(string(b), `"quiet_period_seconds":600,"drain_timeout_seconds":3600,"usage_delay_seconds":1800,"usage":"`+string(tc.usage)+`"`) {
				t.Errorf("JSON lacks the drain gate's settings: %s", b)
			}
		})
	}
}
