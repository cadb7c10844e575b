package targets

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// DefaultGitHubURL is the REST API of github.com. GitHub Enterprise Server
// serves it at https://HOST/api/v3.
const DefaultGitHubURL = "https://api.github.com"

// githubSkew is how far a secret's updated_at may lie before the time of
// our write and still count as that write: GitHub's timestamps have
// one-second precision, and the local clock is used when the response has
// no Date header.
const githubSkew = 5 * time.Second

// GitHubConfig names a GitHub Actions secret and how to reach it.
type GitHubConfig struct {
	Repo        string // owner/name: a repository secret, or with Environment an environment secret
	Environment string // an environment of Repo
	Org         string // an organization secret (instead of Repo)
	Name        string // the secret's name
	TokenEnv    string // the environment variable holding the token
	BaseURL     string // "" for DefaultGitHubURL
	// Client makes the requests; nil for a client with a 30s timeout.
	Client *http.Client
}

// GitHub is a GitHub Actions secret of a repository, of an environment of
// a repository, or of an organization, written through GitHub's REST API:
// the key is sealed with the scope's public key (libsodium's sealed box)
// and PUT.
//
// Actions secrets are write-only: nobody can read a value back. Read
// therefore checks what it can (the token variable is set, the token is
// valid, the repository, environment or organization exists and the
// token may use its secrets; a classic token's scopes) and then returns
// rotate.ErrUnreadable. The rotation then always writes the secret and
// proves the write with Confirm, which checks that the secret's updated_at
// moved to the time of the write. A fine-grained token's write permission
// cannot be checked without writing: a PUT refused with 403 fails the
// write, with a hint naming the permission.
//
// The token is read from its variable at each call and never kept, and
// neither it nor the key appears in an error or a String.
type GitHub struct {
	cfg    GitHubConfig
	base   string
	client *http.Client
	getenv func(string) (string, bool)

	mu    sync.Mutex
	wrote struct {
		fp     string    // fingerprint of the key written last
		at     time.Time // when (the server's Date of the PUT when it sent one)
		access orgAccess // an organization secret's access as sent
	}
}

var (
	_ rotate.Target    = (*GitHub)(nil)
	_ rotate.Confirmer = (*GitHub)(nil)
)

// NewGitHub returns the target for the secret cfg names.
func NewGitHub(cfg GitHubConfig) *GitHub {
	g := &GitHub{cfg: cfg, base: strings.TrimRight(cfg.BaseURL, "/"), client: cfg.Client, getenv: os.LookupEnv}
	if g.base == "" {
		g.base = DefaultGitHubURL
	}
	if g.client == nil {
		g.client = &http.Client{Timeout: 30 * time.Second}
	}
	return g
}

// String returns github:OWNER/REPO#NAME, github:OWNER/REPO/ENV#NAME or
// github:org/ORG#NAME.
func (g *GitHub) String() string {
	switch {
	case g.cfg.Org != "":
		return "github:org/" + g.cfg.Org + "#" + g.cfg.Name
	case g.cfg.Environment != "":
		return "github:" + g.cfg.Repo + "/" + g.cfg.Environment + "#" + g.cfg.Name
	}
	return "github:" + g.cfg.Repo + "#" + g.cfg.Name
}

// scopePath is the API path of the secrets of the target's scope.
func (g *GitHub) scopePath() string {
	switch {
	case g.cfg.Org != "":
		return "/orgs/" + url.PathEscape(g.cfg.Org) + "/actions/secrets"
	case g.cfg.Environment != "":
		return g.repoPath() + "/environments/" + url.PathEscape(g.cfg.Environment) + "/secrets"
	}
	return g.repoPath() + "/actions/secrets"
}

func (g *GitHub) repoPath() string {
	owner, repo, _ := strings.Cut(g.cfg.Repo, "/")
	return "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(repo)
}

func (g *GitHub) secretPath() string { return g.scopePath() + "/" + url.PathEscape(g.cfg.Name) }

// what names the scope for messages: repository, environment or organization.
func (g *GitHub) what() string {
	switch {
	case g.cfg.Org != "":
		return fmt.Sprintf("organization %q", g.cfg.Org)
	case g.cfg.Environment != "":
		return fmt.Sprintf("environment %q of repository %q", g.cfg.Environment, g.cfg.Repo)
	}
	return fmt.Sprintf("repository %q", g.cfg.Repo)
}

// permission says which token permission writing the secret needs.
func (g *GitHub) permission() string {
	if g.cfg.Org != "" {
		return `a fine-grained token needs the organization permission "Secrets: read and write", a classic token the admin:org scope`
	}
	if g.cfg.Environment != "" {
		// GitHub's REST docs: environment secrets need "Environments"
		// (write), their public key "Environments" (read); not "Secrets".
		return `a fine-grained token needs the repository permission "Environments: read and write", a classic token the repo scope`
	}
	return `a fine-grained token needs the repository permission "Secrets: read and write", a classic token the repo scope`
}

// classicScope is the classic token scope writing the secret needs.
func (g *GitHub) classicScope() string {
	if g.cfg.Org != "" {
		return "admin:org"
	}
	return "repo"
}

// token returns the token from its variable.
func (g *GitHub) token() (string, error) {
	t, ok := g.getenv(g.cfg.TokenEnv)
	t = strings.TrimSpace(t)
	if !ok || t == "" {
		return "", errhint.With(fmt.Errorf("%s: %w: the token variable %s is not set", g, rotate.ErrInvalidTarget, g.cfg.TokenEnv),
			fmt.Sprintf("export %s with a GitHub token that may write the secret (%s)", g.cfg.TokenEnv, g.permission()))
	}
	return t, nil
}

// publicKey is GitHub's answer to GET .../secrets/public-key.
type publicKey struct {
	KeyID string `json:"key_id"`
	Key   string `json:"key"`
	pub   [32]byte
}

// Read checks that the secret can be written, then reports that its value
// cannot be read back: the error wraps rotate.ErrUnreadable when every
// check passes, rotate.ErrInvalidTarget when one fails.
func (g *GitHub) Read(ctx context.Context) (secret.Key, error) {
	tok, err := g.token()
	if err != nil {
		return secret.Key{}, err
	}
	if _, err := g.publicKey(ctx, tok); err != nil {
		return secret.Key{}, err
	}
	return secret.Key{}, fmt.Errorf("%s: %w: GitHub Actions secrets are write-only; a write is confirmed by the secret's updated_at", g, rotate.ErrUnreadable)
}

// hasScope reports whether the X-OAuth-Scopes list holds want. Only the
// scope itself counts: GitHub documents repo and admin:org, not their
// narrower children (public_repo, write:org), for writing secrets.
func hasScope(list, want string) bool {
	for _, s := range strings.Split(list, ",") {
		if strings.TrimSpace(s) == want {
			return true
		}
	}
	return false
}

// publicKey fetches the scope's public key, and checks a classic token's
// scopes (X-OAuth-Scopes) on the way.
func (g *GitHub) publicKey(ctx context.Context, tok string) (*publicKey, error) {
	var pk publicKey
	r, err := g.do(ctx, tok, http.MethodGet, g.scopePath()+"/public-key", nil, &pk)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, g.statusError(ctx, tok, "get the public key of", r)
	}
	raw, err := base64.StdEncoding.DecodeString(pk.Key)
	if err != nil || len(raw) != 32 || pk.KeyID == "" {
		return nil, fmt.Errorf("%s: the public key of the %s is malformed (want a key_id and 32 bytes of base64)", g, g.what())
	}
	copy(pk.pub[:], raw)
	// A classic token names its scopes; a fine-grained one cannot be
	// checked without writing.
	if scopes, classic := r.header["X-Oauth-Scopes"]; classic && !hasScope(strings.Join(scopes, ","), g.classicScope()) {
		return nil, errhint.With(
			fmt.Errorf("%s: %w: the classic token in %s lacks the %s scope (it has %q)",
				g, rotate.ErrInvalidTarget, g.cfg.TokenEnv, g.classicScope(), strings.Join(scopes, ",")),
			fmt.Sprintf("give the token the %s scope, or use a fine-grained token: %s", g.classicScope(), g.permission()))
	}
	return &pk, nil
}

// Write seals key with the scope's current public key and PUTs it. An
// organization secret keeps its visibility (new ones are private) and, with
// visibility selected, its repositories: GitHub clears that list on a PUT
// without selected_repository_ids, so the current list is read and sent.
func (g *GitHub) Write(ctx context.Context, key secret.Key) error {
	tok, err := g.token()
	if err != nil {
		return err
	}
	pk, err := g.publicKey(ctx, tok)
	if err != nil {
		return err
	}
	body := map[string]any{"key_id": pk.KeyID}
	var acc orgAccess
	if g.cfg.Org != "" {
		if acc, err = g.access(ctx, tok); err != nil {
			return err
		}
		body["visibility"] = acc.visibility
		if acc.visibility == "selected" {
			body["selected_repository_ids"] = acc.repos
		}
	}
	sealed, err := box.SealAnonymous(nil, []byte(key.Reveal()), &pk.pub, rand.Reader)
	if err != nil {
		return fmt.Errorf("%s: seal the key: %w", g, err)
	}
	body["encrypted_value"] = base64.StdEncoding.EncodeToString(sealed)
	start := time.Now()
	r, err := g.do(ctx, tok, http.MethodPut, g.secretPath(), body, nil)
	if err != nil {
		return err
	}
	if r.status != http.StatusCreated && r.status != http.StatusNoContent {
		return g.statusError(ctx, tok, "write the secret of", r)
	}
	at := start
	if d, err := http.ParseTime(r.header.Get("Date")); err == nil {
		at = d
	}
	g.mu.Lock()
	g.wrote.fp, g.wrote.at, g.wrote.access = key.Fingerprint(), at, acc
	g.mu.Unlock()
	return nil
}

// secretMeta is GitHub's answer to GET .../secrets/{name}: never a value.
type secretMeta struct {
	Name       string    `json:"name"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	Visibility string    `json:"visibility"`
}

// meta returns the secret's metadata, or nil when it does not exist.
func (g *GitHub) meta(ctx context.Context, tok string) (*secretMeta, error) {
	var m secretMeta
	r, err := g.do(ctx, tok, http.MethodGet, g.secretPath(), nil, &m)
	switch {
	case err != nil:
		return nil, err
	case r.status == http.StatusNotFound:
		return nil, nil
	case r.status != http.StatusOK:
		return nil, g.statusError(ctx, tok, "get the secret of", r)
	}
	return &m, nil
}

// orgAccess is which repositories an organization secret reaches.
type orgAccess struct {
	visibility string  // all, private or selected
	repos      []int64 // with visibility selected: the repository ids, sorted (never nil)
}

func (a orgAccess) String() string {
	if a.visibility != "selected" {
		return "visibility " + a.visibility
	}
	return fmt.Sprintf("visibility selected, repositories %v", a.repos)
}

func (a orgAccess) equal(b orgAccess) bool {
	return a.visibility == b.visibility && slices.Equal(a.repos, b.repos)
}

// access returns the organization secret's visibility and, with visibility
// selected, its repositories; a new secret is private.
func (g *GitHub) access(ctx context.Context, tok string) (orgAccess, error) {
	m, err := g.meta(ctx, tok)
	if err != nil || m == nil || m.Visibility == "" {
		return orgAccess{visibility: "private"}, err
	}
	acc := orgAccess{visibility: m.Visibility}
	if acc.visibility == "selected" {
		if acc.repos, err = g.selectedRepos(ctx, tok); err != nil {
			return orgAccess{}, err
		}
	}
	return acc, nil
}

// selectedRepos lists the ids of the repositories an organization secret
// with visibility selected reaches, every page of them.
func (g *GitHub) selectedRepos(ctx context.Context, tok string) ([]int64, error) {
	ids := []int64{}
	for page := 1; ; page++ {
		var resp struct {
			TotalCount   int `json:"total_count"`
			Repositories []struct {
				ID int64 `json:"id"`
			} `json:"repositories"`
		}
		r, err := g.do(ctx, tok, http.MethodGet, fmt.Sprintf("%s/repositories?per_page=100&page=%d", g.secretPath(), page), nil, &resp)
		if err != nil {
			return nil, err
		}
		if r.status != http.StatusOK {
			return nil, g.statusError(ctx, tok, "list the selected repositories of the secret of", r)
		}
		for _, repo := range resp.Repositories {
			ids = append(ids, repo.ID)
		}
		if len(resp.Repositories) == 0 || len(ids) >= resp.TotalCount {
			break
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// ConfirmedBy says, for plans, how a write is proved.
func (g *GitHub) ConfirmedBy() string { return "the secret's updated_at (values are write-only)" }

// Confirm proves that key, written by the last Write of this process, is
// in place: the secret exists and its updated_at is not before that write
// (the value itself cannot be read). An organization secret must still
// have the visibility and repositories it had before the write.
func (g *GitHub) Confirm(ctx context.Context, key secret.Key) error {
	g.mu.Lock()
	fp, at, sent := g.wrote.fp, g.wrote.at, g.wrote.access
	g.mu.Unlock()
	if fp == "" || fp != key.Fingerprint() {
		return fmt.Errorf("%s: no write of %s to confirm: this run did not write it", g, key.Fingerprint())
	}
	tok, err := g.token()
	if err != nil {
		return err
	}
	m, err := g.meta(ctx, tok)
	if err != nil {
		return err
	}
	if m == nil {
		return fmt.Errorf("%s: the secret does not exist after it was written", g)
	}
	if m.UpdatedAt.Before(at.Add(-githubSkew)) {
		return errhint.With(fmt.Errorf("%s: the secret's updated_at %s is before the write at %s: the write did not land",
			g, m.UpdatedAt.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339)),
			"run again: the secret is written again")
	}
	if g.cfg.Org != "" {
		now, err := g.access(ctx, tok)
		if err != nil {
			return err
		}
		if !now.equal(sent) {
			return errhint.With(fmt.Errorf("%s: the secret's repository access changed with the write: before, %s; now, %s", g, sent, now),
				"restore the secret's repository access in the organization's settings (Settings > Secrets and variables > Actions); "+
					"CI in the repositories it no longer reaches fails until then")
		}
	}
	return nil
}

// response is what do returns of an answer.
type response struct {
	status  int
	header  http.Header
	message string // GitHub's "message" of an error, without the token, shortened
}

// do sends one request and decodes a 2xx JSON body into out. Transport
// errors are wrapped with the target; statuses are for the caller to judge.
func (g *GitHub) do(ctx context.Context, tok, method, path string, in, out any) (*response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s: encode request: %w", g, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, body)
	if err != nil {
		return nil, errhint.With(fmt.Errorf("%s: %w: bad base URL %q", g, rotate.ErrInvalidTarget, g.base), "fix the target's base_url")
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("User-Agent", "keyrotate")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: %w", g, method, path, scrubErr(err, tok))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: read response: %w", g, method, path, scrubErr(err, tok))
	}
	r := &response{status: resp.StatusCode, header: resp.Header}
	switch {
	case resp.StatusCode/100 == 2 && out != nil && len(bytes.TrimSpace(data)) > 0:
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("%s: %s %s: decode response: %w", g, method, path, err)
		}
	case resp.StatusCode >= 400:
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(data, &e)
		msg := strings.Join(strings.Fields(strings.ReplaceAll(e.Message, tok, "<token>")), " ")
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		r.message = msg
	}
	return r, nil
}

// scrubErr drops the token from a transport error (url.Error quotes only
// the URL, which holds no token; this is a second belt).
func scrubErr(err error, tok string) error {
	if tok != "" && strings.Contains(err.Error(), tok) {
		return errors.New(strings.ReplaceAll(err.Error(), tok, "<token>"))
	}
	return err
}

// statusError translates a failed status into an error with a hint:
// 401 a bad token, 403 a missing permission (or a rate limit), 404 a
// missing repository, environment or organization (GitHub also answers
// 404 where the token may not see the repository).
func (g *GitHub) statusError(ctx context.Context, tok, step string, r *response) error {
	status, hdr := r.status, r.header
	said := ""
	if r.message != "" {
		said = fmt.Sprintf(" (GitHub said %q)", r.message)
	}
	base := fmt.Sprintf("%s: %s the %s: HTTP %d%s", g, step, g.what(), status, said)
	switch {
	case status == http.StatusUnauthorized:
		return errhint.With(fmt.Errorf("%s: %w: the token in %s is invalid, expired or revoked", base, rotate.ErrInvalidTarget, g.cfg.TokenEnv),
			fmt.Sprintf("put a valid token in %s (%s)", g.cfg.TokenEnv, g.permission()))
	case (status == http.StatusForbidden || status == http.StatusTooManyRequests) &&
		(hdr.Get("X-Ratelimit-Remaining") == "0" || hdr.Get("Retry-After") != ""):
		return errhint.With(fmt.Errorf("%s: rate limited", base), "wait for GitHub's rate limit to reset, then run again")
	case status == http.StatusForbidden:
		return errhint.With(fmt.Errorf("%s: %w: the token in %s may not write the secret", base, rotate.ErrInvalidTarget, g.cfg.TokenEnv),
			g.permission()+"; grant it, or use a token that has it")
	case status == http.StatusNotFound:
		what := g.what()
		if g.cfg.Environment != "" {
			// Tell a missing environment from a missing repository.
			if rr, err := g.do(ctx, tok, http.MethodGet, g.repoPath(), nil, nil); err == nil && rr.status == http.StatusOK {
				return errhint.With(fmt.Errorf("%s: %w: %s not found", base, rotate.ErrInvalidTarget, what),
					fmt.Sprintf("create the environment %q in the repository's settings (Settings > Environments), or fix the target's environment", g.cfg.Environment))
			}
			what = fmt.Sprintf("repository %q", g.cfg.Repo)
		}
		return errhint.With(fmt.Errorf("%s: %w: %s not found, or the token may not see it", base, rotate.ErrInvalidTarget, what),
			"check the target's repo/org and environment, and that the token's resource owner and repository access include it")
	case status == http.StatusUnprocessableEntity:
		return errhint.With(fmt.Errorf("%s: GitHub refused the sealed value", base), "run again: the public key is fetched anew (GitHub may have rotated it)")
	}
	return fmt.Errorf("%s", base)
}
