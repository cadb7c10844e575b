// Package githubfake is an in-process fake of the part of GitHub's REST API
// that writes GitHub Actions secrets: the public keys, the secrets'
// metadata and their create-or-update endpoints, for repositories,
// repository environments and organizations, with the paths, JSON shapes
// and status codes of https://docs.github.com/rest/actions/secrets
// (API version 2022-11-28).
//
// Unlike GitHub, it can show what a secret holds: every scope has a real
// curve25519 key pair, a PUT is opened with box.OpenAnonymous, and Value
// returns the plaintext, so that tests can check what landed. Timestamps
// come from Options.Clock and have GitHub's one-second precision.
//
// An organization secret with visibility selected lists its repositories
// at GET /orgs/{org}/actions/secrets/{name}/repositories (paginated with
// per_page, at most 100, and page). A PUT without selected_repository_ids
// clears that list, as GitHub does: the secret then reaches no repository
// (reported in external-secrets/external-secrets#6519; GitHub's docs call
// the field optional and do not say what omitting it does).
//
// Fidelity limits: tokens carry one of three grants (write, read-only,
// none) instead of GitHub's permission model; classic tokens are modelled
// only by the X-OAuth-Scopes header they produce; there is no listing of
// secrets, no deletion, no rate limit, and repositories are public.
package githubfake

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

// Grant is what a token may do.
type Grant int

const (
	// Write may read public keys and secrets' metadata and write secrets
	// (fine-grained "Secrets: write", classic "repo"/"admin:org").
	Write Grant = iota
	// ReadOnly may read public keys and metadata; a PUT answers 403.
	ReadOnly
	// None is a valid token without access to secrets: everything 403.
	None
)

// Token is a token the fake accepts.
type Token struct {
	Grant Grant
	// Scopes, when not nil, makes the token a classic one: responses carry
	// them in X-OAuth-Scopes, as GitHub does.
	Scopes []string
}

// Secret is a stored secret, with its plaintext.
type Secret struct {
	Name       string
	Value      string
	CreatedAt  time.Time
	UpdatedAt  time.Time
	Visibility string  // organization secrets: all, private or selected
	Selected   []int64 // organization secrets with visibility selected
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	// URL is the API base URL, http://127.0.0.1:PORT. The same API is
	// also served under URL+"/api/v3", as GitHub Enterprise Server does.
	URL string

	srv *httptest.Server

	// HTTPCalls gives Fail, ClearFaults, Calls and ResetCalls for the
	// methods GetRepo, GetPublicKey, GetSecret, PutSecret and
	// ListSelectedRepos; a fault answers GitHub's error body, its message
	// defaulting to the status text.
	fake.HTTPCalls

	mu       sync.Mutex
	clock    fake.Clock
	tokens   map[string]Token
	repos    map[string]int64  // lower-case owner/repo -> id
	repoName map[int64]string  // id -> owner/repo as added
	scopes   map[string]*scope // lower-case scope path -> scope
	frozen   bool              // PUT stores the value but leaves updated_at as it was
	nextID   int64
	nextKeys int
}

type scope struct {
	keyID   string
	pub     *[32]byte
	priv    *[32]byte
	secrets map[string]*Secret // upper-case name
}

// Method names for Calls and Fail.
const (
	GetRepo           = "GetRepo"
	GetPublicKey      = "GetPublicKey"
	GetSecret         = "GetSecret"
	PutSecret         = "PutSecret"
	ListSelectedRepos = "ListSelectedRepos"
)

// Options configure a Server.
type Options struct {
	// Addr is where the fake listens; "" is a loopback port chosen by the
	// system.
	Addr string
	// Clock, for Date headers and timestamps, defaults to the wall clock
	// (fake.Wall).
	Clock fake.Clock
}

// Start starts a fake with no token, repository or organization.
func Start(opts Options) (*Server, error) {
	if opts.Clock == nil {
		opts.Clock = fake.Wall
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("start GitHub fake: %w", err)
	}
	s := &Server{
		clock:     opts.Clock,
		tokens:    map[string]Token{},
		repos:     map[string]int64{},
		repoName:  map[int64]string{},
		scopes:    map[string]*scope{},
		HTTPCalls: fake.HTTPCalls{Name: "githubfake"},
		nextID:    1296269,
	}
	mux := http.NewServeMux()
	s.routes(mux)
	root := http.NewServeMux()
	root.Handle("/api/v3/", http.StripPrefix("/api/v3", mux))
	root.Handle("/", mux)
	s.srv = httptest.NewUnstartedServer(root)
	s.srv.Listener.Close()
	s.srv.Listener = ln
	s.srv.Start()
	s.URL = s.srv.URL
	return s, nil
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// AddToken makes token valid with the given grant.
func (s *Server) AddToken(token string, t Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = t
}

// AddRepo creates the repository owner/name.
func (s *Server) AddRepo(repo string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.repos[strings.ToLower(repo)]; !ok {
		s.nextID++
		s.repos[strings.ToLower(repo)] = s.nextID
		s.repoName[s.nextID] = repo
	}
	s.addScope(RepoScope(repo))
}

// RepoID returns the id of repository owner/name (0 when it does not exist).
func (s *Server) RepoID(repo string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repos[strings.ToLower(repo)]
}

// AddEnvironment creates environment env in repository repo (which must
// exist).
func (s *Server) AddEnvironment(repo, env string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addScope(EnvScope(repo, env))
}

// AddOrg creates the organization org.
func (s *Server) AddOrg(org string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addScope(OrgScope(org))
}

// RepoScope, EnvScope and OrgScope name the places secrets live in, for
// SeedSecret, Value and Secret.
func RepoScope(repo string) string { return "repos/" + repo }

// EnvScope names an environment of a repository.
func EnvScope(repo, env string) string { return "repos/" + repo + "/environments/" + env }

// OrgScope names an organization.
func OrgScope(org string) string { return "orgs/" + org }

func (s *Server) addScope(name string) {
	name = strings.ToLower(name)
	if s.scopes[name] != nil {
		return
	}
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	s.nextKeys++
	s.scopes[name] = &scope{keyID: fmt.Sprintf("5682471%011d", s.nextKeys), pub: pub, priv: priv, secrets: map[string]*Secret{}}
}

// RotatePublicKey gives the scope a new key pair, as GitHub may at any
// time: values sealed for the old key are then refused.
func (s *Server) RotatePublicKey(scopeName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scopes[strings.ToLower(scopeName)]
	if sc == nil {
		panic("githubfake: no scope " + scopeName)
	}
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	s.nextKeys++
	sc.keyID, sc.pub, sc.priv = fmt.Sprintf("5682471%011d", s.nextKeys), pub, priv
}

// SeedSecret stores a secret directly, created and updated now.
// visibility and selected apply to organization secrets.
func (s *Server) SeedSecret(scopeName, name, value, visibility string, selected ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scopes[strings.ToLower(scopeName)]
	if sc == nil {
		panic("githubfake: no scope " + scopeName)
	}
	t := s.clock.Now().UTC().Truncate(time.Second)
	sc.secrets[strings.ToUpper(name)] = &Secret{Name: strings.ToUpper(name), Value: value, CreatedAt: t, UpdatedAt: t,
		Visibility: visibility, Selected: selected}
}

// SetSelected replaces the repositories an organization secret reaches,
// as the organization's settings page (or another client) would, without
// touching its value or updated_at.
func (s *Server) SetSelected(scopeName, name string, selected ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scopes[strings.ToLower(scopeName)]
	if sc == nil || sc.secrets[strings.ToUpper(name)] == nil {
		panic("githubfake: no secret " + name + " in " + scopeName)
	}
	sc.secrets[strings.ToUpper(name)].Selected = append([]int64(nil), selected...)
}

// Secret returns a copy of a stored secret.
func (s *Server) Secret(scopeName, name string) (Secret, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scopes[strings.ToLower(scopeName)]
	if sc == nil {
		return Secret{}, false
	}
	sec, ok := sc.secrets[strings.ToUpper(name)]
	if !ok {
		return Secret{}, false
	}
	c := *sec
	c.Selected = append([]int64(nil), sec.Selected...)
	return c, true
}

// Value returns the plaintext a secret holds, or "" when it does not exist.
func (s *Server) Value(scopeName, name string) string {
	sec, _ := s.Secret(scopeName, name)
	return sec.Value
}

// Values returns the plaintext of every stored secret (for canaries).
func (s *Server) Values() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, sc := range s.scopes {
		for _, sec := range sc.secrets {
			out = append(out, sec.Value)
		}
	}
	return out
}

// FreezeUpdatedAt makes later PUTs store the value without moving
// updated_at, to test that a write is confirmed by its timestamp.
func (s *Server) FreezeUpdatedAt(frozen bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frozen = frozen
}

const docs = "https://docs.github.com/rest/actions/secrets"

func (s *Server) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /repos/{owner}/{repo}", s.handle(GetRepo, s.getRepo))
	for _, p := range []string{
		"/repos/{owner}/{repo}/actions/secrets",
		"/repos/{owner}/{repo}/environments/{env}/secrets",
		"/orgs/{org}/actions/secrets",
	} {
		mux.HandleFunc("GET "+p+"/public-key", s.handle(GetPublicKey, s.getPublicKey))
		mux.HandleFunc("GET "+p+"/{name}", s.handle(GetSecret, s.getSecret))
		mux.HandleFunc("PUT "+p+"/{name}", s.handle(PutSecret, s.putSecret))
	}
	mux.HandleFunc("GET /orgs/{org}/actions/secrets/{name}/repositories", s.handle(ListSelectedRepos, s.listSelectedRepos))
}

type handler func(w http.ResponseWriter, r *http.Request, tok Token) (int, any)

// handle authenticates, counts, injects faults and writes GitHub's error
// shape for any status >= 400.
func (s *Server) handle(method string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := s.Enter(method)
		w.Header().Set("Date", s.clock.Now().UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("X-GitHub-Api-Version-Selected", "2022-11-28")
		if v := r.Header.Get("X-GitHub-Api-Version"); v != "" && v != "2022-11-28" && v != "2026-03-10" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("API version '%s' is not supported.", v))
			return
		}
		tok, ok := s.auth(r)
		if !ok {
			msg := "Bad credentials"
			if r.Header.Get("Authorization") == "" {
				msg = "Requires authentication"
			}
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		if tok.Scopes != nil {
			w.Header().Set("X-OAuth-Scopes", strings.Join(tok.Scopes, ", "))
		}
		if f, ok := s.Take(method, n); ok {
			writeError(w, f.Status, f.Message)
			return
		}
		if tok.Scopes != nil && tok.Grant == Write {
			tok.Grant = classicGrant(tok.Scopes, r.PathValue("org") != "")
		}
		status, body := h(w, r, tok)
		if status >= 400 {
			msg, _ := body.(string)
			writeError(w, status, msg)
			return
		}
		w.WriteHeader(status)
		if body != nil && status != http.StatusNoContent {
			_ = json.NewEncoder(w).Encode(body)
		}
	}
}

func (s *Server) auth(r *http.Request) (Token, bool) {
	a := r.Header.Get("Authorization")
	for _, p := range []string{"Bearer ", "bearer ", "token "} {
		if rest, ok := strings.CutPrefix(a, p); ok {
			t, ok := s.tokens[rest]
			return t, ok
		}
	}
	return Token{}, false
}

// classicGrant is what a classic token's scopes allow: writing a
// repository's secrets needs repo (a public repository's public key needs
// none), an organization's admin:org.
func classicGrant(scopes []string, org bool) Grant {
	want, otherwise := "repo", ReadOnly
	if org {
		want, otherwise = "admin:org", None
	}
	for _, s := range scopes {
		if s == want {
			return Write
		}
	}
	return otherwise
}

func writeError(w http.ResponseWriter, status int, msg string) {
	if msg == "" {
		msg = http.StatusText(status)
	}
	if status == http.StatusForbidden {
		w.Header().Set("X-Accepted-GitHub-Permissions", "secrets=write")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg, "documentation_url": docs, "status": fmt.Sprint(status)})
}

// scopeOf finds the scope a request names: 404 when its repository,
// environment or organization does not exist.
func (s *Server) scopeOf(r *http.Request) (*scope, bool, string) {
	if org := r.PathValue("org"); org != "" {
		return s.scopes[strings.ToLower(OrgScope(org))], true, org
	}
	repo := r.PathValue("owner") + "/" + r.PathValue("repo")
	if env := r.PathValue("env"); env != "" {
		if s.scopes[strings.ToLower(RepoScope(repo))] == nil {
			return nil, false, ""
		}
		return s.scopes[strings.ToLower(EnvScope(repo, env))], false, ""
	}
	return s.scopes[strings.ToLower(RepoScope(repo))], false, ""
}

func (s *Server) getRepo(_ http.ResponseWriter, r *http.Request, _ Token) (int, any) {
	full := r.PathValue("owner") + "/" + r.PathValue("repo")
	id, ok := s.repos[strings.ToLower(full)]
	if !ok {
		return http.StatusNotFound, "Not Found"
	}
	return http.StatusOK, map[string]any{"id": id, "name": r.PathValue("repo"), "full_name": full, "private": false,
		"owner": map[string]any{"login": r.PathValue("owner")}}
}

func (s *Server) getPublicKey(_ http.ResponseWriter, r *http.Request, tok Token) (int, any) {
	sc, _, _ := s.scopeOf(r)
	if sc == nil {
		return http.StatusNotFound, "Not Found"
	}
	if tok.Grant == None {
		return http.StatusForbidden, "Resource not accessible by personal access token"
	}
	return http.StatusOK, map[string]string{"key_id": sc.keyID, "key": base64.StdEncoding.EncodeToString(sc.pub[:])}
}

// secretOf finds the secret a request names and checks that tok may read
// it; with no secret it returns the status and message to answer.
func (s *Server) secretOf(r *http.Request, tok Token) (sec *Secret, org bool, orgName string, status int, msg string) {
	sc, org, orgName := s.scopeOf(r)
	if sc == nil {
		return nil, false, "", http.StatusNotFound, "Not Found"
	}
	if tok.Grant == None {
		return nil, false, "", http.StatusForbidden, "Resource not accessible by personal access token"
	}
	sec, ok := sc.secrets[strings.ToUpper(r.PathValue("name"))]
	if !ok {
		return nil, false, "", http.StatusNotFound, "Not Found"
	}
	return sec, org, orgName, 0, ""
}

func (s *Server) getSecret(_ http.ResponseWriter, r *http.Request, tok Token) (int, any) {
	sec, org, orgName, status, msg := s.secretOf(r, tok)
	if sec == nil {
		return status, msg
	}
	body := map[string]any{
		"name":       sec.Name,
		"created_at": sec.CreatedAt.Format(time.RFC3339),
		"updated_at": sec.UpdatedAt.Format(time.RFC3339),
	}
	if org {
		body["visibility"] = sec.Visibility
		if sec.Visibility == "selected" {
			body["selected_repositories_url"] = fmt.Sprintf("%s/orgs/%s/actions/secrets/%s/repositories", s.URL, orgName, sec.Name)
		}
	}
	return http.StatusOK, body
}

func (s *Server) putSecret(_ http.ResponseWriter, r *http.Request, tok Token) (int, any) {
	sc, org, _ := s.scopeOf(r)
	if sc == nil {
		return http.StatusNotFound, "Not Found"
	}
	if tok.Grant != Write {
		return http.StatusForbidden, "Resource not accessible by personal access token"
	}
	name := r.PathValue("name")
	if !validName(name) {
		return http.StatusUnprocessableEntity, "Invalid request.\n\nSecret names can only contain alphanumeric characters " +
			"([a-z], [A-Z], [0-9]) or underscores (_), must not start with a number or GITHUB_."
	}
	var req struct {
		EncryptedValue *string  `json:"encrypted_value"`
		KeyID          *string  `json:"key_id"`
		Visibility     *string  `json:"visibility"`
		Selected       *[]int64 `json:"selected_repository_ids"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err := dec.Decode(&req); err != nil {
		return http.StatusBadRequest, "Problems parsing JSON"
	}
	if req.EncryptedValue == nil || req.KeyID == nil {
		return http.StatusUnprocessableEntity, "Invalid request.\n\n\"encrypted_value\" and \"key_id\" are required."
	}
	if *req.KeyID != sc.keyID {
		return http.StatusUnprocessableEntity, "Invalid request.\n\nkey_id does not match the current public key."
	}
	sealed, err := base64.StdEncoding.DecodeString(*req.EncryptedValue)
	if err != nil {
		return http.StatusUnprocessableEntity, "Invalid request.\n\nencrypted_value is not valid base64."
	}
	plain, ok := box.OpenAnonymous(nil, sealed, sc.pub, sc.priv)
	if !ok {
		return http.StatusUnprocessableEntity, "Invalid request.\n\nencrypted_value cannot be decrypted with the public key."
	}
	if org {
		if req.Visibility == nil {
			return http.StatusUnprocessableEntity, "Invalid request.\n\n\"visibility\" is required."
		}
		switch *req.Visibility {
		case "all", "private", "selected":
		default:
			return http.StatusUnprocessableEntity, "Invalid request.\n\nvisibility must be all, private or selected."
		}
		if req.Selected != nil && *req.Visibility != "selected" {
			return http.StatusUnprocessableEntity, "Invalid request.\n\nselected_repository_ids requires visibility selected."
		}
	}
	now := s.clock.Now().UTC().Truncate(time.Second)
	key := strings.ToUpper(name)
	sec, exists := sc.secrets[key]
	if !exists {
		sec = &Secret{Name: key, CreatedAt: now, UpdatedAt: now}
		sc.secrets[key] = sec
	}
	sec.Value = string(plain)
	if !s.frozen {
		sec.UpdatedAt = now
	}
	if org {
		sec.Visibility = *req.Visibility
		// Without selected_repository_ids the list is cleared, also for
		// visibility selected (see the package doc).
		sec.Selected = nil
		if req.Selected != nil {
			sec.Selected = append([]int64(nil), (*req.Selected)...)
		}
	}
	if exists {
		return http.StatusNoContent, nil
	}
	return http.StatusCreated, struct{}{}
}

// listSelectedRepos answers GET .../secrets/{name}/repositories: the
// repositories an organization secret with visibility selected reaches.
func (s *Server) listSelectedRepos(_ http.ResponseWriter, r *http.Request, tok Token) (int, any) {
	sec, _, org, status, msg := s.secretOf(r, tok)
	if sec == nil {
		return status, msg
	}
	if sec.Visibility != "selected" {
		return http.StatusConflict, "You cannot list selected repositories for a secret when the visibility is not set to 'selected'"
	}
	perPage, page := 30, 1
	if v, err := strconv.Atoi(r.URL.Query().Get("per_page")); err == nil && v > 0 {
		perPage = min(v, 100)
	}
	if v, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && v > 0 {
		page = v
	}
	repos := []map[string]any{}
	for i := (page - 1) * perPage; i < len(sec.Selected) && i < page*perPage; i++ {
		id := sec.Selected[i]
		full := s.repoName[id]
		if full == "" {
			full = fmt.Sprintf("%s/repo-%d", org, id)
		}
		owner, name, _ := strings.Cut(full, "/")
		repos = append(repos, map[string]any{"id": id, "name": name, "full_name": full, "private": false,
			"owner": map[string]any{"login": owner}})
	}
	return http.StatusOK, map[string]any{"total_count": len(sec.Selected), "repositories": repos}
}

func validName(name string) bool {
	if name == "" || strings.HasPrefix(strings.ToUpper(name), "GITHUB_") || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for _, c := range name {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
