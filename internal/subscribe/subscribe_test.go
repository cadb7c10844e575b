package subscribe_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/subscribe"
	"github.com/keyrotate/keyrotate/internal/subscribe/tokentest"
	"github.com/keyrotate/keyrotate/rotate"
)

const (
	secretName = "projects/acme/secrets/gemini"
	audience   = "https://keyrotate-abc-uc.a.run.app/"
	pushSA     = "pubsub-push@acme.iam.gserviceaccount.com"
)

func rotateMsg(secret string) subscribe.Message {
	return subscribe.Message{ID: "1", PublishTime: time.Now(), Attributes: map[string]string{
		subscribe.AttrEventType: subscribe.EventRotate, subscribe.AttrSecretID: secret, subscribe.AttrDataFormat: "JSON_API_V1",
	}}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want subscribe.Decision
	}{
		{"done", nil, subscribe.Ack},
		{"stopped part-way", fmt.Errorf("slot x: %w: boom", rotate.ErrStoppedPartWay), subscribe.Nack},
		{"held", fmt.Errorf("lock: %w", rotate.ErrRotationInProgress), subscribe.Nack},
		{"canceled", fmt.Errorf("preflight: %w", context.Canceled), subscribe.Nack},
		{"unavailable", fmt.Errorf("get secret: %w", status.Error(codes.Unavailable, "down")), subscribe.Nack},
		{"bad config", fmt.Errorf("x: %w", rotate.ErrBadConfig), subscribe.Ack},
		{"invalid config", fmt.Errorf("x: %w", config.ErrInvalid), subscribe.Ack},
		{"verify failed", fmt.Errorf("x: %w", rotate.ErrVerifyFailed), subscribe.Ack},
		{"denied", fmt.Errorf("x: %w", status.Error(codes.PermissionDenied, "no")), subscribe.Ack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := subscribe.Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// recorder is a RotateFunc that counts its calls and can block.
type recorder struct {
	calls   atomic.Int32
	release chan struct{} // when set, each call waits for it
	started chan struct{}
	err     error
}

func (r *recorder) rotate(ctx context.Context, slot string, _ time.Time) (*rotate.Result, error) {
	r.calls.Add(1)
	if r.started != nil {
		r.started <- struct{}{}
	}
	if r.release != nil {
		select {
		case <-r.release:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", rotate.ErrStoppedPartWay, ctx.Err())
		}
	}
	return &rotate.Result{Slot: slot, Rotated: true}, r.err
}

func TestHandle(t *testing.T) {
	tests := []struct {
		name  string
		msg   subscribe.Message
		want  subscribe.Decision
		calls int32
	}{
		{"rotate", rotateMsg(secretName), subscribe.Ack, 1},
		{"other event", subscribe.Message{Attributes: map[string]string{subscribe.AttrEventType: "SECRET_VERSION_ADD", subscribe.AttrSecretID: secretName}}, subscribe.Ack, 0},
		{"test message", subscribe.Message{Attributes: map[string]string{subscribe.AttrEventType: "TOPIC_CONFIGURED"}}, subscribe.Ack, 0},
		{"unknown secret", rotateMsg("projects/acme/secrets/other"), subscribe.Ack, 0},
		{"no attributes", subscribe.Message{}, subscribe.Ack, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{}
			h := subscribe.NewHandler(map[string]string{secretName: "gemini-prod"}, 2, r.rotate, nil)
			if got := h.Handle(context.Background(), tt.msg); got.Decision != tt.want || r.calls.Load() != tt.calls {
				t.Errorf("Handle = %v with %d rotations, want %v with %d", got.Decision, r.calls.Load(), tt.want, tt.calls)
			}
		})
	}
}

// TestHandleNeedsAttention: a rotation that kept its old key because the
// drain gate found it in use is acknowledged (a new delivery would rotate
// nothing more), and logged as a warning that names the callers.
func TestHandleNeedsAttention(t *testing.T) {
	var logs strings.Builder
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	rot := func(ctx context.Context, slot string, _ time.Time) (*rotate.Result, error) {
		return &rotate.Result{Slot: slot, Rotated: true, Retired: "kept", KeptReason: "still in use at the drain timeout",
			Drain: &rotate.Drain{Outcome: rotate.DrainInUse, Attention: true, Usage: []rotate.MethodRate{{
				Service: "generativelanguage.googleapis.com", Method: "GenerateContent", LastHour: rotate.Requests{OK: 30},
			}}}}, nil
	}
	h := subscribe.NewHandler(map[string]string{secretName: "gemini-prod"}, 1, rot, log)
	if o := h.Handle(context.Background(), rotateMsg(secretName)); o.Decision != subscribe.Ack {
		t.Errorf("Handle = %v, want ack", o.Decision)
	}
	for _, want := range []string{`"level":"WARN"`, "needs attention", "still in use at the drain timeout", "GenerateContent"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestHandleLimits: a second message for a slot this process is rotating,
// and a message beyond the limit, are nacked at once; a stopping process
// nacks what it runs.
func TestHandleLimits(t *testing.T) {
	r := &recorder{release: make(chan struct{}), started: make(chan struct{}, 4)}
	slots := map[string]string{secretName: "a", "projects/acme/secrets/b": "b"}
	h := subscribe.NewHandler(slots, 1, r.rotate, nil)
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan subscribe.Outcome)
	go func() { first <- h.Handle(ctx, rotateMsg(secretName)) }()
	<-r.started
	if o := h.Handle(context.Background(), rotateMsg(secretName)); o.Decision != subscribe.Nack {
		t.Errorf("same slot while rotating = %v, want nack", o.Decision)
	}
	if o := h.Handle(context.Background(), rotateMsg("projects/acme/secrets/b")); o.Decision != subscribe.Nack || o.Why != "busy" {
		t.Errorf("beyond the limit = %v (%s), want nack (busy)", o.Decision, o.Why)
	}
	cancel() // SIGTERM
	if o := <-first; o.Decision != subscribe.Nack {
		t.Errorf("stopped rotation = %v, want nack", o.Decision)
	}
	if n := r.calls.Load(); n != 1 {
		t.Errorf("%d rotations, want 1", n)
	}
}

// pushWorld is a push endpoint whose handler counts rotations.
type pushWorld struct {
	srv *httptest.Server
	rec *recorder
	is  *tokentest.Issuer
}

// newAuth returns a token issuer and an authenticator that trusts it.
func newAuth(t *testing.T) (*tokentest.Issuer, *subscribe.Authenticator) {
	t.Helper()
	is, err := tokentest.New("test-key")
	if err != nil {
		t.Fatal(err)
	}
	v, err := is.Validator(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	auth, err := subscribe.NewAuthenticatorWith(v, audience, pushSA)
	if err != nil {
		t.Fatal(err)
	}
	return is, auth
}

func newPushWorld(t *testing.T) *pushWorld {
	t.Helper()
	is, auth := newAuth(t)
	rec := &recorder{}
	h := subscribe.NewHandler(map[string]string{secretName: "gemini-prod"}, 2, rec.rotate, nil)
	srv := httptest.NewServer(&subscribe.Push{Handler: h, Auth: auth})
	t.Cleanup(srv.Close)
	return &pushWorld{srv: srv, rec: rec, is: is}
}

const pushJSON = `{"message":{"attributes":{"eventType":"SECRET_ROTATE","secretId":"` + secretName + `","dataFormat":"JSON_API_V1"},` +
	`"data":"e30=","messageId":"42","publishTime":"2026-12-06T06:00:00Z"},"subscription":"projects/acme/subscriptions/keyrotate"}`

func (w *pushWorld) post(t *testing.T, authz string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, w.srv.URL+"/", strings.NewReader(pushJSON))
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPushAuth: only a valid token of the push service account for the
// audience gets a push handled; every other is refused, runs nothing, and
// the answer does not quote the token.
func TestPushAuth(t *testing.T) {
	w := newPushWorld(t)
	other, err := tokentest.New("test-key") // same key id, another key: a forgery
	if err != nil {
		t.Fatal(err)
	}
	good := tokentest.Good(audience, pushSA)
	with := func(f func(*tokentest.Claims)) tokentest.Claims { c := good; f(&c); return c }
	tests := []struct {
		name  string
		authz string
		want  int
	}{
		{"missing", "", http.StatusUnauthorized},
		{"not bearer", "Basic dXNlcjpwYXNz", http.StatusUnauthorized},
		{"garbage", "Bearer not-a-token", http.StatusUnauthorized},
		{"forged", "Bearer " + other.Sign(good), http.StatusUnauthorized},
		{"expired", "Bearer " + w.is.Sign(with(func(c *tokentest.Claims) { c.Expires = time.Now().Add(-time.Minute).Unix() })), http.StatusUnauthorized},
		{"wrong audience", "Bearer " + w.is.Sign(with(func(c *tokentest.Claims) { c.Audience = "https://elsewhere/" })), http.StatusUnauthorized},
		{"wrong issuer", "Bearer " + w.is.Sign(with(func(c *tokentest.Claims) { c.Issuer = "https://evil.example" })), http.StatusUnauthorized},
		{"wrong email", "Bearer " + w.is.Sign(with(func(c *tokentest.Claims) { c.Email = "someone@acme.iam.gserviceaccount.com" })), http.StatusForbidden},
		{"email not verified", "Bearer " + w.is.Sign(with(func(c *tokentest.Claims) { c.EmailVerified = false })), http.StatusForbidden},
		{"good, other issuer form", "Bearer " + w.is.Sign(with(func(c *tokentest.Claims) { c.Issuer = "accounts.google.com" })), http.StatusNoContent},
		{"good", "Bearer " + w.is.Sign(good), http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := w.rec.calls.Load()
			code, body := w.post(t, tt.authz)
			if code != tt.want {
				t.Errorf("POST with %s = %d %q, want %d", tt.name, code, body, tt.want)
			}
			ran := w.rec.calls.Load() - before
			if (tt.want == http.StatusNoContent) != (ran == 1) {
				t.Errorf("%d rotations after a %d answer", ran, code)
			}
			if tok := strings.TrimPrefix(tt.authz, "Bearer "); len(tok) > 20 && strings.Contains(body, tok[len(tok)-20:]) {
				t.Errorf("the answer quotes the token: %q", body)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	w := newPushWorld(t)
	resp, err := http.Get(w.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz = %d, want 200", resp.StatusCode)
	}
}

// TestPushRetryContract: a rotation that stops part-way is answered 503,
// so that Pub/Sub delivers it again.
func TestPushRetryContract(t *testing.T) {
	w := newPushWorld(t)
	w.rec.err = fmt.Errorf("%w: lost", rotate.ErrStoppedPartWay)
	if code, _ := w.post(t, "Bearer "+w.is.Sign(tokentest.Good(audience, pushSA))); code != http.StatusServiceUnavailable {
		t.Errorf("stopped part-way: %d, want 503", code)
	}
	w.rec.err = fmt.Errorf("%w: dead", rotate.ErrVerifyFailed)
	if code, _ := w.post(t, "Bearer "+w.is.Sign(tokentest.Good(audience, pushSA))); code != http.StatusNoContent {
		t.Errorf("verify failed: %d, want 204", code)
	}
}

// TestPushOutlivesTheRequest: a push whose caller stops waiting (Pub/Sub's
// ack deadline passed) still runs its rotation to the end; the process
// stopping ends it.
func TestPushOutlivesTheRequest(t *testing.T) {
	is, auth := newAuth(t)
	rec := &recorder{release: make(chan struct{}), started: make(chan struct{}, 1)}
	outcomes := make(chan error, 1)
	rotate := func(ctx context.Context, slot string, at time.Time) (*rotate.Result, error) {
		res, err := rec.rotate(ctx, slot, at)
		outcomes <- err
		return res, err
	}
	stop, stopNow := context.WithCancel(context.Background())
	defer stopNow()
	h := subscribe.NewHandler(map[string]string{secretName: "gemini-prod"}, 2, rotate, nil)
	srv := httptest.NewServer(&subscribe.Push{Handler: h, Auth: auth, Stop: stop})
	defer srv.Close()
	post := func(timeout time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/", strings.NewReader(pushJSON))
		req.Header.Set("Authorization", "Bearer "+is.Sign(tokentest.Good(audience, pushSA)))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	post(200 * time.Millisecond) // gives up while the rotation runs
	<-rec.started
	time.Sleep(300 * time.Millisecond)
	close(rec.release)
	if err := <-outcomes; err != nil {
		t.Errorf("rotation after the caller gave up = %v, want it finished", err)
	}
	// The process stopping ends a running rotation.
	rec.release = make(chan struct{})
	go post(10 * time.Second)
	<-rec.started
	stopNow()
	if err := <-outcomes; err == nil {
		t.Errorf("rotation after Stop ended finished; want it stopped")
	}
}
