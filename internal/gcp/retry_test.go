package gcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/secret"
)

var fast = RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond, CallTimeout: 5 * time.Second, MaxElapsed: 5 * time.Second}

// annDeleteAfter is the annotation the rotate package marks a retired key
// with; any annotation would do here.
const annDeleteAfter = "keyrotate.delete-after"

func grpcErr(c codes.Code) error { return status.Error(c, "boom") }
func httpErr(code int) error     { return &googleapi.Error{Code: code, Message: "boom"} }

func TestRetryClassifies(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		tries int // attempts made when every attempt fails with err
	}{
		{"grpc unavailable", grpcErr(codes.Unavailable), 3},
		{"grpc deadline exceeded", grpcErr(codes.DeadlineExceeded), 3},
		{"grpc resource exhausted", grpcErr(codes.ResourceExhausted), 3},
		{"http 429", httpErr(http.StatusTooManyRequests), 3},
		{"http 500", httpErr(http.StatusInternalServerError), 3},
		{"http 502", httpErr(http.StatusBadGateway), 3},
		{"http 503", httpErr(http.StatusServiceUnavailable), 3},
		{"http 504", httpErr(http.StatusGatewayTimeout), 3},
		{"grpc invalid argument", grpcErr(codes.InvalidArgument), 1},
		{"grpc failed precondition", grpcErr(codes.FailedPrecondition), 1},
		{"grpc aborted", grpcErr(codes.Aborted), 1},
		{"grpc not found", grpcErr(codes.NotFound), 1},
		{"grpc already exists", grpcErr(codes.AlreadyExists), 1},
		{"grpc permission denied", grpcErr(codes.PermissionDenied), 1},
		{"grpc unauthenticated", grpcErr(codes.Unauthenticated), 1},
		{"grpc internal", grpcErr(codes.Internal), 1},
		{"http 400", httpErr(http.StatusBadRequest), 1},
		{"http 401", httpErr(http.StatusUnauthorized), 1},
		{"http 403", httpErr(http.StatusForbidden), 1},
		{"http 404", httpErr(http.StatusNotFound), 1},
		{"http 409", httpErr(http.StatusConflict), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fast
			p.MaxElapsed = time.Hour
			n := 0
			err := p.Do(context.Background(), func(context.Context, Attempt) error {
				n++
				if n == 3 {
					return nil
				}
				return tc.err
			})
			if n != tc.tries {
				t.Errorf("attempts = %d, want %d", n, tc.tries)
			}
			if tc.tries == 1 && !errors.Is(err, tc.err) {
				t.Errorf("error = %v, want %v returned as it is", err, tc.err)
			}
			if tc.tries > 1 && err != nil {
				t.Errorf("error = %v, want success on the third attempt", err)
			}
		})
	}
}

func TestRetryHonoursRetryInfo(t *testing.T) {
	const delay = 150 * time.Millisecond
	st, _ := status.New(codes.ResourceExhausted, "quota").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)})
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"grpc", st.Err()},
		{"rest", &googleapi.Error{Code: 429, Message: "quota", Details: []any{
			map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
			map[string]any{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.15s"},
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d, ok := retryDelay(tc.err); !ok || d != delay {
				t.Fatalf("retryDelay = %v, %t; want %v, true", d, ok, delay)
			}
			start := time.Now()
			n := 0
			err := fast.Do(context.Background(), func(context.Context, Attempt) error {
				if n++; n == 1 {
					return tc.err
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := time.Since(start); got < delay {
				t.Errorf("retried after %v, want at least the RetryInfo delay %v", got, delay)
			}
		})
	}
	t.Run("past the deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := fast.Do(ctx, func(context.Context, Attempt) error { return st.Err() })
		if time.Since(start) > 40*time.Millisecond {
			t.Errorf("waited %v for a retry past the deadline, want to give up at once", time.Since(start))
		}
		if !errors.Is(err, context.DeadlineExceeded) || status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "quota") {
			t.Errorf("error = %v, want the quota error wrapped with context.DeadlineExceeded", err)
		}
	})
}

// TestRetryDeadlineNamesLastError: retries that end with the run's deadline
// report the API's error, not only "context deadline exceeded".
func TestRetryDeadlineNamesLastError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := fast.Do(ctx, func(ctx context.Context, a Attempt) error {
		if a.n == 1 {
			return status.Error(codes.Unavailable, "the backend is down")
		}
		<-ctx.Done() // later attempts hang until the deadline
		return status.FromContextError(ctx.Err()).Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(%v, context.DeadlineExceeded) = false", err)
	}
	if !strings.Contains(err.Error(), "the backend is down") || !strings.Contains(err.Error(), "gave up after 2 attempts") {
		t.Errorf("error = %q, want the last real error and the attempts", err)
	}
}

// TestRetryPerCallTimeout: a hung attempt fails at the per-call timeout and
// is retried.
func TestRetryPerCallTimeout(t *testing.T) {
	p := fast
	p.CallTimeout = 30 * time.Millisecond
	err := p.Do(context.Background(), func(ctx context.Context, a Attempt) error {
		if a.n == 1 {
			<-ctx.Done()
			return ctx.Err()
		}
		if !strings.Contains(a.last.Error(), "per-call timeout") {
			t.Errorf("last error = %v, want it to name the per-call timeout", a.last)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDeniedPermission(t *testing.T) {
	st, _ := status.New(codes.PermissionDenied, "denied").WithDetails(&errdetails.ErrorInfo{
		Reason: "IAM_PERMISSION_DENIED", Domain: "iam.googleapis.com", Metadata: map[string]string{"permission": "secretmanager.versions.add"}})
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"grpc ErrorInfo", st.Err(), "secretmanager.versions.add"},
		{"rest ErrorInfo", &googleapi.Error{Code: 403, Message: "denied", Details: []any{map[string]any{
			"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
			"metadata": map[string]any{"permission": "apikeys.keys.create"}}}}, "apikeys.keys.create"},
		{"message", status.Error(codes.PermissionDenied, "Permission 'secretmanager.versions.access' denied for resource 'projects/p/secrets/s/versions/latest' (or it may not exist)."), "secretmanager.versions.access"},
		{"older message", errors.New("PERMISSION_DENIED: Permission iam.serviceAccountKeys.create is required to perform this operation"), "iam.serviceAccountKeys.create"},
		{"none", status.Error(codes.PermissionDenied, "Permission denied on resource project x."), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := deniedPermission(tc.err); got != tc.want {
				t.Errorf("deniedPermission(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

// emulatorAPIs returns the API wrappers on a fresh emulator with one key.
func emulatorAPIs(t *testing.T) (*emulator.Server, *Keys, *Secrets, string) {
	t.Helper()
	srv := emutest.Start(t, emulator.Options{})
	srv.AddProject("p", 42)
	name, _, err := srv.SeedKey("p", "k", &apikeys.V2Key{DisplayName: "k"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	svc, err := srv.APIKeysService(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := srv.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sm.Close() })
	return srv, &Keys{Service: svc, Poll: time.Millisecond, Retry: fast}, &Secrets{Client: sm, Retry: fast}, name
}

// landThenLose makes the first call of method land (by making it again
// from inside the hook) and then lose its answer.
func landThenLose(srv *emulator.Server, method string, do func(context.Context) error) {
	srv.SetHook(method, func(ctx context.Context, n int) error {
		if n != 1 {
			return nil
		}
		if err := do(context.Background()); err != nil {
			return err
		}
		return status.Error(codes.Unavailable, "connection reset after the request landed")
	})
}

// TestRetryAfterLostAnswer: a retried call whose first attempt landed is
// recognised instead of failing or repeating its effect.
// TestRetryAfterLostAnswer: a call lands but its answer is lost; the retry
// meets a refusal that only the resource's state explains. Google documents
// no code for those refusals for API Keys, so each is tried under every
// code the emulator can be told to answer (SetStateCodes): the state, read
// after the refusal, must decide.
func TestRetryAfterLostAnswer(t *testing.T) {
	for _, code := range []codes.Code{codes.OK, codes.FailedPrecondition, codes.InvalidArgument, codes.Aborted, codes.NotFound, codes.AlreadyExists} {
		t.Run(code.String(), func(t *testing.T) { retryAfterLostAnswer(t, code) })
	}
}

func retryAfterLostAnswer(t *testing.T, code codes.Code) {
	t.Run("AddSecretVersion", func(t *testing.T) {
		srv, _, sa, _ := emulatorAPIs(t)
		sec, _ := srv.SeedSecret("p", "s", nil)
		key := secret.New("AIzaSyLANDEDlanded-0123456789abcdefghij")
		landThenLose(srv, "secretmanager.AddSecretVersion", func(context.Context) error {
			_, err := srv.SeedSecretVersion(sec, []byte(key.Reveal()))
			return err
		})
		v, err := sa.Add(context.Background(), sec, key)
		if err != nil {
			t.Fatal(err)
		}
		if vs := srv.SecretVersions(sec); len(vs) != 1 || vs[0].Name != v {
			t.Errorf("versions = %d, returned %s; want the one that landed, no duplicate", len(vs), v)
		}
	})
	t.Run("DeleteKey", func(t *testing.T) {
		srv, ka, _, name := emulatorAPIs(t)
		srv.SetStateCodes(code)
		k, _ := srv.Key(name)
		landThenLose(srv, "apikeys.DeleteKey", func(ctx context.Context) error {
			_, err := ka.Service.Projects.Locations.Keys.Delete(name).Context(ctx).Do()
			return err
		})
		if err := ka.Delete(context.Background(), name, k.Etag); err != nil {
			t.Fatalf("delete = %v, want success: the retry finds the key deleted", err)
		}
	})
	t.Run("UpdateKey", func(t *testing.T) {
		srv, ka, _, name := emulatorAPIs(t)
		srv.SetStateCodes(code)
		k, _ := srv.Key(name)
		want := &apikeys.V2Key{Name: name, Etag: k.Etag, Annotations: map[string]string{annDeleteAfter: "2030-01-01T00:00:00Z"}}
		landThenLose(srv, "apikeys.UpdateKey", func(ctx context.Context) error {
			_, err := ka.Service.Projects.Locations.Keys.Patch(name, want).UpdateMask("annotations").Context(ctx).Do()
			return err
		})
		got, err := ka.Patch(context.Background(), want, "annotations")
		if err != nil {
			t.Fatalf("patch = %v, want success: the retry finds the annotations set", err)
		}
		if got.Annotations[annDeleteAfter] == "" {
			t.Errorf("patched key annotations = %v", got.Annotations)
		}
	})
	t.Run("UndeleteKey", func(t *testing.T) {
		srv, ka, _, name := emulatorAPIs(t)
		srv.SetStateCodes(code)
		if err := ka.Delete(context.Background(), name, ""); err != nil {
			t.Fatal(err)
		}
		landThenLose(srv, "apikeys.UndeleteKey", func(ctx context.Context) error {
			_, err := ka.Service.Projects.Locations.Keys.Undelete(name, &apikeys.V2UndeleteKeyRequest{}).Context(ctx).Do()
			return err
		})
		k, err := ka.Undelete(context.Background(), name)
		if err != nil || k.DeleteTime != "" {
			t.Fatalf("undelete = %+v, %v; want the live key", k, err)
		}
	})
}

func TestListKeysAllPages(t *testing.T) {
	srv, ka, _, first := emulatorAPIs(t)
	for i := range 310 { // more than one page of 300
		if _, _, err := srv.SeedKey("p", fmt.Sprintf("k%03d", i), &apikeys.V2Key{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ka.Delete(context.Background(), first, ""); err != nil {
		t.Fatal(err)
	}
	srv.Fail("apikeys.ListKeys", 2, fake.Fault{Code: codes.Unavailable}) // the second page, once
	live, err := ka.List(context.Background(), "projects/p/locations/global", false)
	if err != nil || len(live) != 310 {
		t.Errorf("list = %d keys, %v; want 310 live keys", len(live), err)
	}
	all, err := ka.List(context.Background(), "projects/p/locations/global", true)
	if err != nil || len(all) != 311 {
		t.Errorf("list showDeleted = %d keys, %v; want 311", len(all), err)
	}
}

func TestEnableVersion(t *testing.T) {
	srv, _, sa, _ := emulatorAPIs(t)
	sec, _ := srv.SeedSecret("p", "s", nil)
	v, _ := srv.SeedSecretVersion(sec, []byte("x"))
	ctx := context.Background()
	if err := sa.Disable(ctx, v); err != nil {
		t.Fatal(err)
	}
	srv.Fail("secretmanager.EnableSecretVersion", fake.Next, fake.Fault{Code: codes.Unavailable})
	if err := sa.enable(ctx, v); err != nil {
		t.Fatal(err)
	}
	if st := srv.SecretVersions(sec)[0].State.String(); st != "ENABLED" {
		t.Errorf("state = %s, want ENABLED", st)
	}
}

// TestRetryIsVisible: every retry is logged with the call, its resource,
// the error, the attempt and the next wait — at info, at warn once the call
// has been retrying for WarnAfter — and OnRetry hears of it; Permanent ends
// the retries of an error that looks transient.
func TestRetryIsVisible(t *testing.T) {
	var logs strings.Builder
	var heard []Retrying
	p := fast
	p.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p.WarnAfter = 20 * time.Millisecond
	p.OnRetry = func(r Retrying) { heard = append(heard, r) }
	n := 0
	err := p.named("secretmanager.versions.access", "projects/p/secrets/s/versions/latest").Do(context.Background(), func(context.Context, Attempt) error {
		n++
		if n == 2 {
			time.Sleep(25 * time.Millisecond) // past WarnAfter
		}
		if n == 3 {
			return nil
		}
		return grpcErr(codes.Unavailable)
	})
	if err != nil {
		t.Fatalf("do = %v, want success on the third attempt", err)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log has %d lines, want one per retry (2):\n%s", len(lines), logs.String())
	}
	for i, want := range []string{"level=INFO", "level=WARN"} {
		l := lines[i]
		for _, s := range []string{want, `msg="retrying secretmanager.versions.access after a transient error"`,
			"call=secretmanager.versions.access", "resource=projects/p/secrets/s/versions/latest",
			fmt.Sprintf("attempt=%d", i+1), "code = Unavailable desc = boom", "next_in="} {
			if !strings.Contains(l, s) {
				t.Errorf("retry log line %d = %q, want %q in it", i+1, l, s)
			}
		}
	}
	if len(heard) != 2 || heard[0].Attempt != 1 || heard[1].Attempt != 2 || heard[0].Call != "secretmanager.versions.access" || heard[0].Wait <= 0 {
		t.Errorf("OnRetry heard %+v, want attempts 1 and 2 of the call with their waits", heard)
	}

	p.Permanent = func(error) bool { return true }
	n = 0
	if err := p.Do(context.Background(), func(context.Context, Attempt) error { n++; return grpcErr(codes.Unavailable) }); n != 1 || status.Code(err) != codes.Unavailable {
		t.Errorf("with Permanent: %d attempts, error %v; want 1 attempt and the error as it is", n, err)
	}
}

// TestDenialHint: PERMISSION_DENIED is also Google's answer for a secret,
// key or project that does not exist (a mistyped name): the hint says so
// with the gcloud commands that tell the two apart, then names the role.
func TestDenialHint(t *testing.T) {
	smDenied := status.Error(codes.PermissionDenied, "Permission 'secretmanager.secrets.get' denied for resource 'projects/typo-project/secrets/k' (or it may not exist).")
	for _, tc := range []struct {
		name           string
		err            error
		perm, resource string
		want           []string
	}{
		{"secret", smDenied, "secretmanager.secrets.get", "projects/typo-project/secrets/k", []string{
			"when the secret projects/typo-project/secrets/k or its project does not exist (a mistyped name or project)",
			"`gcloud secrets describe k --project typo-project` and `gcloud projects describe typo-project`",
			"; if both exist, the caller lacks secretmanager.secrets.get: grant it, on the secret or its project, roles/secretmanager.viewer"}},
		{"secret version", status.Error(codes.PermissionDenied, "denied"), "secretmanager.versions.access", "projects/p/secrets/k/versions/latest", []string{
			"`gcloud secrets describe k --project p` and `gcloud projects describe p`", "roles/secretmanager.secretAccessor"}},
		{"regional secret", status.Error(codes.PermissionDenied, "denied"), "secretmanager.secrets.get", "projects/p/locations/europe-west1/secrets/k", []string{
			"`gcloud secrets describe k --project p --location europe-west1`"}},
		{"key", &googleapi.Error{Code: 403, Message: "denied"}, "apikeys.keys.get", "projects/p/locations/global/keys/k1", []string{
			"when the key k1 or its project does not exist", "`gcloud services api-keys describe k1 --project p` and `gcloud projects describe p`", "roles/serviceusage.apiKeysViewer"}},
		{"list keys of a project", &googleapi.Error{Code: 403, Message: "denied"}, "apikeys.keys.list", "projects/p/locations/global", []string{
			"when project p does not exist", "check it with `gcloud projects describe p`; if it exists, the caller lacks apikeys.keys.list"}},
		{"unknown consumer project", &googleapi.Error{Code: 403, Message: "Permission denied on resource project typo-project."}, "apikeys.keys.list", "projects/typo-project/locations/global", []string{
			"project typo-project does not exist, or the caller cannot see it", "`gcloud projects describe typo-project`"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := denialHint(tc.err, tc.perm, tc.resource)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("denialHint = %q, want %q in it", got, w)
				}
			}
		})
	}
}
