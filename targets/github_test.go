package targets

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emulator/githubfake"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

const (
	ghToken        = "ghp_canaryWriteToken0123456789abcdefABCD"
	ghReadToken    = "ghp_canaryReadToken0123456789abcdefABCDE"
	ghNoneToken    = "github_pat_canaryNoAccess0123456789abcdef"
	ghClassicNo    = "ghp_canaryClassicNoScope0123456789abcdef"
	ghClassicRepo  = "ghp_canaryClassicRepo0123456789abcdefABC"
	ghClassicOrg   = "ghp_canaryClassicOrg0123456789abcdefABCD"
	ghWrongToken   = "ghp_canaryWrongToken0123456789abcdefABCD"
	ghRepo, ghEnv  = "acme/chat-app", "production"
	ghOrg, ghName  = "acme", "GEMINI_API_KEY"
	ghOrgSelectedN = "SHARED_GEMINI_KEY"
)

var ghTokens = []string{ghToken, ghReadToken, ghNoneToken, ghClassicNo, ghClassicRepo, ghClassicOrg, ghWrongToken}

// recorder records every request the target sends.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Clone(context.Background()))
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

type ghWorld struct {
	fake  *githubfake.Server
	clock *fake.ManualClock
	rec   *recorder
	env   map[string]string
}

func newGHWorld(t *testing.T) *ghWorld {
	t.Helper()
	clock := fake.NewManualClock(time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC))
	f := emutest.StartGitHub(t, githubfake.Options{Clock: clock})
	f.AddToken(ghToken, githubfake.Token{Grant: githubfake.Write})
	f.AddToken(ghReadToken, githubfake.Token{Grant: githubfake.ReadOnly})
	f.AddToken(ghNoneToken, githubfake.Token{Grant: githubfake.None})
	f.AddToken(ghClassicNo, githubfake.Token{Grant: githubfake.Write, Scopes: []string{"read:org", "workflow"}})
	f.AddToken(ghClassicRepo, githubfake.Token{Grant: githubfake.Write, Scopes: []string{"repo", "workflow"}})
	f.AddToken(ghClassicOrg, githubfake.Token{Grant: githubfake.Write, Scopes: []string{"admin:org", "repo"}})
	f.AddRepo(ghRepo)
	f.AddEnvironment(ghRepo, ghEnv)
	f.AddOrg(ghOrg)
	return &ghWorld{fake: f, clock: clock, rec: &recorder{}, env: map[string]string{"GH_TOKEN_TEST": ghToken}}
}

func (w *ghWorld) target(cfg GitHubConfig) *GitHub {
	if cfg.Name == "" {
		cfg.Name = ghName
	}
	if cfg.TokenEnv == "" {
		cfg.TokenEnv = "GH_TOKEN_TEST"
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = w.fake.URL
	}
	cfg.Client = &http.Client{Transport: w.rec, Timeout: 10 * time.Second}
	g := NewGitHub(cfg)
	g.getenv = func(k string) (string, bool) { v, ok := w.env[k]; return v, ok }
	return g
}

// ghClean fails the test when s holds a key string or a token.
func ghClean(t *testing.T, what, s string) {
	t.Helper()
	noKeyIn(t, what, s)
	for _, tok := range ghTokens {
		if strings.Contains(s, tok) || strings.Contains(s, tok[4:20]) {
			t.Errorf("%s contains a token: %q", what, s)
		}
	}
}

// ghErr checks err wraps want and that neither it nor its hint leaks.
func ghErr(t *testing.T, err, want error, hint string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	ghClean(t, "error", err.Error())
	ghClean(t, "hint", rotate.Hint(err))
	if hint != "" && !strings.Contains(rotate.Hint(err), hint) {
		t.Errorf("hint = %q, want it to mention %q", rotate.Hint(err), hint)
	}
}

func TestGitHubEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    GitHubConfig
		scope  string
		str    string
		prefix string // path prefix of every request
	}{
		{"repo", GitHubConfig{Repo: ghRepo}, githubfake.RepoScope(ghRepo), "github:acme/chat-app#GEMINI_API_KEY", "/repos/acme/chat-app/actions/secrets"},
		{"environment", GitHubConfig{Repo: ghRepo, Environment: ghEnv}, githubfake.EnvScope(ghRepo, ghEnv), "github:acme/chat-app/production#GEMINI_API_KEY", "/repos/acme/chat-app/environments/production/secrets"},
		{"org", GitHubConfig{Org: ghOrg}, githubfake.OrgScope(ghOrg), "github:org/acme#GEMINI_API_KEY", "/orgs/acme/actions/secrets"},
		{"enterprise", GitHubConfig{Repo: ghRepo, BaseURL: "/api/v3/"}, githubfake.RepoScope(ghRepo), "github:acme/chat-app#GEMINI_API_KEY", "/api/v3/repos/acme/chat-app/actions/secrets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newGHWorld(t)
			if tc.cfg.BaseURL != "" {
				tc.cfg.BaseURL = w.fake.URL + tc.cfg.BaseURL
			}
			g := w.target(tc.cfg)
			ctx := context.Background()
			if got := g.String(); got != tc.str {
				t.Errorf("String() = %q, want %q", got, tc.str)
			}
			k, err := g.Read(ctx)
			ghErr(t, err, rotate.ErrUnreadable, "")
			if errors.Is(err, rotate.ErrInvalidTarget) || !k.IsZero() {
				t.Fatalf("Read = %v, %v; want an empty key and only ErrUnreadable", k, err)
			}
			if !strings.Contains(err.Error(), "updated_at") {
				t.Errorf("Read error %q does not say how writes are confirmed", err)
			}

			for i, key := range []string{oldKey, newKey} {
				w.clock.Advance(time.Minute)
				if i == 1 {
					w.fake.RotatePublicKey(tc.scope) // Write fetches the key anew
				}
				if err := g.Write(ctx, secret.New(key)); err != nil {
					t.Fatalf("Write #%d: %v", i+1, err)
				}
				if err := g.Confirm(ctx, secret.New(key)); err != nil {
					t.Fatalf("Confirm #%d: %v", i+1, err)
				}
				if got := w.fake.Value(tc.scope, ghName); got != key {
					t.Fatalf("after write #%d the fake holds %s, want %s", i+1, secret.New(got), secret.New(key))
				}
			}
			if err := g.Confirm(ctx, secret.New(oldKey)); err == nil {
				t.Errorf("Confirm of a key this run did not write last succeeded")
			}
			if tc.cfg.Org != "" {
				if s, _ := w.fake.Secret(tc.scope, ghName); s.Visibility != "private" {
					t.Errorf("new org secret visibility = %q, want private", s.Visibility)
				}
			}

			for _, r := range w.rec.reqs {
				if !strings.HasPrefix(r.URL.Path, tc.prefix) && r.URL.Path != strings.TrimSuffix(tc.prefix, "/actions/secrets") {
					t.Errorf("request %s %s, want a path under %s", r.Method, r.URL.Path, tc.prefix)
				}
				if r.Header.Get("Accept") != "application/vnd.github+json" || r.Header.Get("X-GitHub-Api-Version") != "2022-11-28" ||
					r.Header.Get("Authorization") != "Bearer "+ghToken {
					t.Errorf("request %s %s has headers %v", r.Method, r.URL.Path, r.Header)
				}
				ghClean(t, "URL", r.URL.String())
				noKeyIn(t, "header", fmt.Sprint(r.Header))
			}
		})
	}
}

func TestGitHubOrgKeepsVisibility(t *testing.T) {
	w := newGHWorld(t)
	sc := githubfake.OrgScope(ghOrg)
	w.fake.SeedSecret(sc, ghOrgSelectedN, oldKey, "selected", 101, 202)
	g := w.target(GitHubConfig{Org: ghOrg, Name: ghOrgSelectedN})
	w.clock.Advance(time.Hour)
	ctx := context.Background()
	if err := g.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if err := g.Confirm(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	s, _ := w.fake.Secret(sc, ghOrgSelectedN)
	if s.Value != newKey || s.Visibility != "selected" || fmt.Sprint(s.Selected) != "[101 202]" {
		t.Errorf("org secret = %s, visibility %q, repositories %v; want the new key, selected, [101 202]", secret.New(s.Value), s.Visibility, s.Selected)
	}
}

// GitHub clears an organization secret's selected repositories on a PUT
// without selected_repository_ids: Write reads the list (every page) and
// sends it; Confirm fails when the access changed with the write.
func TestGitHubOrgSelectedRepositories(t *testing.T) {
	for _, tc := range []struct {
		name     string
		vis      string
		selected []int64
	}{
		{"selected, two", "selected", []int64{202, 101}},
		{"selected, 150 (two pages)", "selected", seq(5000, 150)},
		{"selected, none", "selected", nil},
		{"all", "all", nil},
		{"private", "private", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, g, sc := ghOrgWrite(t, tc.vis, tc.selected...)
			ctx := context.Background()
			if err := g.Confirm(ctx, secret.New(newKey)); err != nil {
				t.Fatal(err)
			}
			s, _ := w.fake.Secret(sc, ghOrgSelectedN)
			if s.Value != newKey || s.Visibility != tc.vis || fmt.Sprint(sortedIDs(s.Selected)) != fmt.Sprint(sortedIDs(tc.selected)) {
				t.Errorf("org secret after Write: %s, visibility %q, %d repositories; want the new key, %q, %d repositories",
					secret.New(s.Value), s.Visibility, len(s.Selected), tc.vis, len(tc.selected))
			}
		})
	}

	t.Run("changed with the write", func(t *testing.T) {
		w, g, sc := ghOrgWrite(t, "selected", 101, 202)
		ctx := context.Background()
		w.fake.SetSelected(sc, ghOrgSelectedN) // as GitHub leaves it after a PUT without the list
		err := g.Confirm(ctx, secret.New(newKey))
		if err == nil || !strings.Contains(err.Error(), "repository access changed") || !strings.Contains(err.Error(), "[101 202]") ||
			!strings.Contains(rotate.Hint(err), "organization's settings") {
			t.Fatalf("Confirm after the repositories were cleared = %v (hint %q), want an error naming the lost access", err, rotate.Hint(err))
		}
		ghClean(t, "error", err.Error())
	})
}

// ghOrgWrite seeds the organization secret with visibility vis and the
// selected repositories, and writes newKey to it an hour later.
func ghOrgWrite(t *testing.T, vis string, selected ...int64) (*ghWorld, *GitHub, string) {
	t.Helper()
	w := newGHWorld(t)
	sc := githubfake.OrgScope(ghOrg)
	w.fake.SeedSecret(sc, ghOrgSelectedN, oldKey, vis, selected...)
	g := w.target(GitHubConfig{Org: ghOrg, Name: ghOrgSelectedN})
	w.clock.Advance(time.Hour)
	if err := g.Write(context.Background(), secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	return w, g, sc
}

func seq(from int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = from + int64(i)
	}
	return out
}

func sortedIDs(ids []int64) []int64 {
	out := append([]int64{}, ids...)
	slices.Sort(out)
	return out
}

func TestGitHubConfirmNeedsUpdatedAt(t *testing.T) {
	w := newGHWorld(t)
	sc := githubfake.RepoScope(ghRepo)
	w.fake.SeedSecret(sc, ghName, oldKey, "")
	w.clock.Advance(time.Hour)
	w.fake.FreezeUpdatedAt(true) // the PUT answers 204, updated_at stays
	g := w.target(GitHubConfig{Repo: ghRepo})
	ctx := context.Background()
	if err := g.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	err := g.Confirm(ctx, secret.New(newKey))
	if err == nil || !strings.Contains(err.Error(), "updated_at") {
		t.Fatalf("Confirm = %v, want an error about updated_at", err)
	}
	ghClean(t, "error", err.Error())

	// Within the clock skew allowance it counts.
	w.fake.FreezeUpdatedAt(false)
	w.fake.SeedSecret(sc, ghName, oldKey, "")
	w.clock.Advance(3 * time.Second)
	w.fake.FreezeUpdatedAt(true)
	if err := g.Write(ctx, secret.New(newKey)); err != nil {
		t.Fatal(err)
	}
	if err := g.Confirm(ctx, secret.New(newKey)); err != nil {
		t.Errorf("Confirm with updated_at 3s before the write: %v", err)
	}
}

func TestGitHubFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   GitHubConfig
		token string // "" leaves the variable unset
		write bool   // the failure shows at Write, not at Read
		want  error
		hint  string
	}{
		{name: "token unset", cfg: GitHubConfig{Repo: ghRepo}, want: rotate.ErrInvalidTarget, hint: "export GH_TOKEN_TEST"},
		{name: "wrong token", cfg: GitHubConfig{Repo: ghRepo}, token: ghWrongToken, want: rotate.ErrInvalidTarget, hint: "valid token in GH_TOKEN_TEST"},
		{name: "no access", cfg: GitHubConfig{Repo: ghRepo}, token: ghNoneToken, want: rotate.ErrInvalidTarget, hint: `"Secrets: read and write"`},
		{name: "read-only token", cfg: GitHubConfig{Repo: ghRepo}, token: ghReadToken, write: true, want: rotate.ErrInvalidTarget, hint: "the repo scope"},
		{name: "environment no access", cfg: GitHubConfig{Repo: ghRepo, Environment: ghEnv}, token: ghNoneToken, want: rotate.ErrInvalidTarget, hint: `"Environments: read and write"`},
		{name: "org no access", cfg: GitHubConfig{Org: ghOrg}, token: ghNoneToken, want: rotate.ErrInvalidTarget, hint: "admin:org"},
		{name: "classic without repo", cfg: GitHubConfig{Repo: ghRepo}, token: ghClassicNo, want: rotate.ErrInvalidTarget, hint: "repo scope"},
		{name: "classic repo for org", cfg: GitHubConfig{Org: ghOrg}, token: ghClassicRepo, want: rotate.ErrInvalidTarget, hint: "admin:org scope"},
		{name: "no repo", cfg: GitHubConfig{Repo: "acme/nope"}, token: ghToken, want: rotate.ErrInvalidTarget, hint: "check the target's repo"},
		{name: "no environment", cfg: GitHubConfig{Repo: ghRepo, Environment: "staging"}, token: ghToken, want: rotate.ErrInvalidTarget, hint: `create the environment "staging"`},
		{name: "no repo of environment", cfg: GitHubConfig{Repo: "acme/nope", Environment: ghEnv}, token: ghToken, want: rotate.ErrInvalidTarget, hint: "check the target's repo"},
		{name: "no org", cfg: GitHubConfig{Org: "nope"}, token: ghToken, want: rotate.ErrInvalidTarget, hint: "check the target's repo/org"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newGHWorld(t)
			delete(w.env, "GH_TOKEN_TEST")
			if tc.token != "" {
				w.env["GH_TOKEN_TEST"] = tc.token
			}
			g := w.target(tc.cfg)
			ctx := context.Background()
			_, err := g.Read(ctx)
			if tc.write {
				ghErr(t, err, rotate.ErrUnreadable, "")
				err = g.Write(ctx, secret.New(newKey))
			} else if werr := g.Write(ctx, secret.New(newKey)); !errors.Is(werr, tc.want) {
				t.Errorf("Write = %v, want %v", werr, tc.want)
			}
			ghErr(t, err, tc.want, tc.hint)
			if errors.Is(err, rotate.ErrUnreadable) {
				t.Errorf("a failed check also reports ErrUnreadable: %v", err)
			}
			if w.fake.Calls("PutSecret") != 0 && !tc.write {
				t.Errorf("a write reached GitHub despite a failed check")
			}
			for _, v := range w.fake.Values() {
				if v == newKey {
					t.Errorf("the fake holds the new key after a failure")
				}
			}
		})
	}
}

func TestGitHubClassicTokens(t *testing.T) {
	for _, tc := range []struct {
		token string
		cfg   GitHubConfig
	}{
		{ghClassicRepo, GitHubConfig{Repo: ghRepo}},
		{ghClassicRepo, GitHubConfig{Repo: ghRepo, Environment: ghEnv}},
		{ghClassicOrg, GitHubConfig{Org: ghOrg}},
	} {
		w := newGHWorld(t)
		w.env["GH_TOKEN_TEST"] = tc.token
		g := w.target(tc.cfg)
		if _, err := g.Read(context.Background()); !errors.Is(err, rotate.ErrUnreadable) || errors.Is(err, rotate.ErrInvalidTarget) {
			t.Errorf("%s with a classic token: Read = %v, want only ErrUnreadable", g, err)
		}
	}
}

func TestGitHubServerErrors(t *testing.T) {
	w := newGHWorld(t)
	g := w.target(GitHubConfig{Repo: ghRepo})
	ctx := context.Background()
	w.fake.Fail(githubfake.PutSecret, fake.Next, fake.Fault{Status: http.StatusBadGateway})
	err := g.Write(ctx, secret.New(newKey))
	if err == nil || errors.Is(err, rotate.ErrInvalidTarget) || !strings.Contains(err.Error(), "HTTP 502") {
		t.Fatalf("Write with a 502 = %v, want a plain error naming HTTP 502", err)
	}
	ghClean(t, "error", err.Error())
	if err := g.Confirm(ctx, secret.New(newKey)); err == nil {
		t.Errorf("Confirm after a failed write succeeded")
	}
	// Unreachable server.
	g = w.target(GitHubConfig{Repo: ghRepo, BaseURL: "http://127.0.0.1:1"})
	_, err = g.Read(ctx)
	if err == nil || errors.Is(err, rotate.ErrUnreadable) {
		t.Fatalf("Read of an unreachable server = %v", err)
	}
	ghClean(t, "error", err.Error())
}

// TestGitHubCanary: no key string or token in String, %v/%+v/%#v of the
// target, or any error of a full cycle.
func TestGitHubCanary(t *testing.T) {
	w := newGHWorld(t)
	g := w.target(GitHubConfig{Org: ghOrg})
	ctx := context.Background()
	_, rerr := g.Read(ctx)
	werr := g.Write(ctx, secret.New(newKey))
	cerr := g.Confirm(ctx, secret.New(oldKey))
	w.env["GH_TOKEN_TEST"] = ghWrongToken
	_, berr := g.Read(ctx)
	for _, s := range []string{g.String(), fmt.Sprintf("%v %+v %#v", g, g, g), fmt.Sprint(rerr, werr, cerr, berr), rotate.Hint(berr)} {
		ghClean(t, "output", s)
	}
}
