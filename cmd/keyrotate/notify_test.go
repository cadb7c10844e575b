package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestNotifyRedirects posts a run summary to a webhook that redirects: to
// another origin (another loopback server: another port; or another host
// name for the same server) nothing is re-posted and notify says why; on
// the same origin the redirect is followed. The webhook's URL, a secret,
// is in no error.
func TestNotifyRedirects(t *testing.T) {
	t.Parallel()
	other := newWebhook(t) // where a hostile redirect points
	rec := &runRecord{Run: "20260101t000000-00000000", Command: "rotate", Host: "h", ExitCode: exitFailed}
	for _, tc := range []struct {
		name     string
		status   int
		location func(self *httptest.Server) string
		wantErr  string // "" when the post must be delivered (to the same origin)
	}{
		{"307 to another port", http.StatusTemporaryRedirect, func(*httptest.Server) string { return other.url() }, "redirected to another origin"},
		{"308 to another port", http.StatusPermanentRedirect, func(*httptest.Server) string { return other.URL + "/x" }, "redirected to another origin"},
		{"302 to another port", http.StatusFound, func(*httptest.Server) string { return other.URL + "/x" }, "redirected to another origin"},
		{"307 to another host name, same port", http.StatusTemporaryRedirect, func(self *httptest.Server) string {
			return strings.Replace(self.URL, "127.0.0.1", "localhost", 1) + webhookPath
		}, "redirected to another origin"},
		{"307 on the same origin", http.StatusTemporaryRedirect, func(*httptest.Server) string { return "/moved" + webhookPath }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(other.posts())
			var self *httptest.Server
			var (
				mu        sync.Mutex
				delivered []string
			)
			self = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/moved/") {
					mu.Lock()
					delivered = append(delivered, r.Method)
					mu.Unlock()
					return
				}
				w.Header().Set("Location", tc.location(self))
				w.WriteHeader(tc.status)
			}))
			defer self.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			err := notify(ctx, self.URL+webhookPath, rec)
			mu.Lock()
			defer mu.Unlock()
			if n := len(other.posts()) - before; n != 0 {
				t.Errorf("the other origin got %d post(s), want none", n)
			}
			if tc.wantErr == "" {
				if err != nil || len(delivered) != 1 || delivered[0] != http.MethodPost {
					t.Errorf("notify = %v, delivered %v; want nil, one POST on the same origin", err, delivered)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("notify = %v, want an error saying %q", err, tc.wantErr)
			}
			if len(delivered) != 0 {
				t.Errorf("delivered %v, want nothing", delivered)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("notify took %s: a refused redirect is retried", d)
			}
			noWebhookURL(t, "the error", err.Error())
			t.Logf("notify: %v", err)
		})
	}
}

// TestNotifyRedirectWarning: through the binary, a webhook that redirects
// to another origin gets one post, the other origin none, and the run
// warns, without the webhook's URL, and keeps its exit code.
func TestNotifyRedirectWarning(t *testing.T) {
	t.Parallel()
	cw := newCrashWorld(t)
	cw.env = fleetEnvCleared
	other := newWebhook(t)
	var posts atomic.Int32
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		http.Redirect(w, r, other.url(), http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	cw.env = append(cw.env, notifyWebhookEnv+"="+redirector.URL+webhookPath)
	c := cw.run("--config", cw.w.config, "rotate", "--notify-on", "always")
	if c.code != exitOK {
		t.Fatalf("rotate exited %d, want 0 (nothing due):\n%s", c.code, c.output())
	}
	if posts.Load() != 1 || len(other.posts()) != 0 {
		t.Errorf("the webhook got %d post(s), the other origin %d; want 1 and 0", posts.Load(), len(other.posts()))
	}
	if !strings.Contains(c.stderr.String(), "keyrotate: warning: could not post to the webhook: it redirected to another origin") {
		t.Errorf("no warning about the redirect:\n%s", c.stderr.String())
	}
	noWebhookURL(t, "the output", c.output())
}
