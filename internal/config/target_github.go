package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

var (
	// GitHub's rules: an owner (user or organization) has 1–39 letters,
	// digits and dashes; a repository name up to 100 letters, digits,
	// dots, dashes and underscores.
	githubOwnerRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,38}$`)
	githubRepoRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	// A secret name: letters, digits and underscores, not starting with a
	// digit (nor with GITHUB_, checked apart).
	githubSecretRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// githubTokenRE matches what GitHub tokens look like, so that a token
	// pasted into token_env is never repeated.
	githubTokenRE = regexp.MustCompile(`^(gh[pousr]_|github_pat_)`)
)

// githubHints says how to add each required field of a github target.
var githubHints = map[string]string{
	"name":      `add "name: GEMINI_API_KEY" (the GitHub Actions secret to write)`,
	"token_env": `add "token_env: GITHUB_TOKEN" (the environment variable that holds a GitHub token allowed to write the secret)`,
}

// githubTarget checks a github target: where the secret lives, its name,
// the variable that holds the token and, for GitHub Enterprise, the API.
func (p *parser) githubTarget(f map[string]field, s *Slot, t *Target, where string) {
	if !p.githubScope(f, t) {
		return
	}
	p.githubSecretName(f, t)
	p.githubTokenEnv(f, t)
	p.githubBaseURL(f, t)
	p.claimGitHubSecret(f, t, where)
}

// githubScope reads where the secret lives: a repository (repo, and
// optionally its environment) or an organization (org), exactly one of
// them. It returns false when both are given, which leaves the rest of the
// target unchecked.
func (p *parser) githubScope(f map[string]field, t *Target) bool {
	fr, repo, hasRepo := p.text(f, "repo")
	fo, org, hasOrg := p.text(f, "org")
	_, hasRepoField := f["repo"]
	_, hasOrgField := f["org"]
	switch {
	case hasRepoField && hasOrgField:
		p.at(fo.key, `keep one: "repo: OWNER/NAME" for a repository (or environment) secret, "org: ORG" for an organization secret`,
			"a github target takes repo or org, not both")
		return false
	case !hasRepoField && !hasOrgField:
		n := f["name"].key
		if n == nil {
			n = f["type"].key
		}
		p.at(n, `add "repo: OWNER/NAME" for a repository (or environment) secret, or "org: ORG" for an organization secret`,
			"github target has no repo or org")
	}
	if hasRepo {
		p.githubRepo(fr, repo, t)
	}
	if hasOrg {
		if !githubOwnerRE.MatchString(org) {
			p.at(fo.val, "write the organization's login, 1–39 letters, digits and dashes, for example octo-org",
				"org %s is not an organization name", quote(org))
		} else {
			t.Org = org
		}
	}
	if fe, env, ok := p.text(f, "environment"); ok {
		switch {
		case hasOrgField:
			p.at(fe.key, `remove "environment": environments belong to repositories; write "repo: OWNER/NAME" instead of org`,
				"environment does not apply to an organization secret")
		case env == "" || len(env) > 255 || strings.ContainsAny(env, "\x00\r\n"):
			p.at(fe.val, "write the environment's name as the repository's Settings > Environments shows it (at most 255 characters)",
				"environment %s is not an environment name", quote(env))
		default:
			t.Environment = env
		}
	}
	return true
}

// githubRepo checks repo, OWNER/NAME as GitHub spells a repository.
func (p *parser) githubRepo(fr field, repo string, t *Target) {
	owner, name, ok := strings.Cut(repo, "/")
	switch {
	case strings.Contains(repo, "://") || strings.HasPrefix(repo, "github.com/"):
		p.at(fr.val, "write only OWNER/NAME, for example octo-org/chat-app (and base_url for GitHub Enterprise)",
			"repo %s is a URL, not OWNER/NAME", quote(repo))
	case !ok || !githubOwnerRE.MatchString(owner) || !githubRepoRE.MatchString(name) || name == "." || name == "..":
		p.at(fr.val, "write OWNER/NAME, for example octo-org/chat-app (an owner has letters, digits and dashes; a name letters, digits, '.', '-' and '_')",
			"repo %s is not OWNER/NAME", quote(repo))
	case strings.HasSuffix(name, ".git"):
		p.at(fr.val, fmt.Sprintf("write %q, without .git", owner+"/"+strings.TrimSuffix(name, ".git")), "repo %s ends in .git", quote(repo))
	default:
		t.Repo = repo
	}
}

// githubSecretName reads name, the GitHub Actions secret to write.
func (p *parser) githubSecretName(f map[string]field, t *Target) {
	fn, name, ok := p.text(f, "name")
	if !ok {
		return
	}
	switch {
	case !githubSecretRE.MatchString(name):
		p.at(fn.val, "a GitHub secret name has letters, digits and underscores and does not start with a digit, for example GEMINI_API_KEY",
			"invalid GitHub secret name %s", quote(name))
	case strings.HasPrefix(strings.ToUpper(name), "GITHUB_"):
		p.at(fn.val, "GitHub reserves names starting with GITHUB_; choose another, for example GEMINI_API_KEY",
			"GitHub secret name %s starts with GITHUB_", quote(name))
	default:
		t.Name = name
	}
}

// githubTokenEnv reads token_env, the variable that holds the token: its
// name, never a token.
func (p *parser) githubTokenEnv(f map[string]field, t *Target) {
	ft, v, ok := p.text(f, "token_env")
	if !ok {
		return
	}
	switch {
	case githubTokenRE.MatchString(v):
		p.at(ft.val, "remove the token from this file (and revoke it if the file was shared); write the name of the variable that holds it, for example GITHUB_TOKEN",
			"token_env holds what looks like a GitHub token, not a variable name")
	case !varRE.MatchString(v):
		p.at(ft.val, "write the name of the environment variable that holds the token, for example GITHUB_TOKEN",
			"token_env %s is not a variable name", quote(v))
	default:
		t.TokenEnv = v
	}
}

// githubBaseURL reads base_url, the API of a GitHub Enterprise Server.
func (p *parser) githubBaseURL(f map[string]field, t *Target) {
	fb, v, ok := p.text(f, "base_url")
	if !ok {
		return
	}
	u, err := url.Parse(v)
	switch {
	case err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https":
		p.at(fb.val, "write the API's URL: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server",
			"base_url %s is not an http(s) URL", quote(redactURL(v)))
	case u.User != nil:
		p.at(fb.val, "remove the credentials from the URL: the token comes from token_env", "base_url holds credentials")
	case u.RawQuery != "" || u.Fragment != "":
		p.at(fb.val, "remove the query and fragment: write https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server",
			"base_url %s has a query or fragment", quote(redactURL(v)))
	default:
		t.BaseURL = strings.TrimRight(v, "/")
	}
}

// claimGitHubSecret reports a second target that writes the same secret.
// Names, owners, repositories and environments are case-insensitive on
// GitHub.
func (p *parser) claimGitHubSecret(f map[string]field, t *Target, where string) {
	if t.Name == "" || t.Repo == "" && t.Org == "" {
		return
	}
	scope := "repos/" + t.Repo
	if t.Org != "" {
		scope = "orgs/" + t.Org
	} else if t.Environment != "" {
		scope += "/environments/" + t.Environment
	}
	host := t.BaseURL
	if host == "" {
		host = "https://api.github.com"
	}
	id := "github:" + strings.ToLower(host+"/"+scope) + "#" + strings.ToUpper(t.Name)
	p.claim(p.secrets, id, f["name"].val, where,
		"each GitHub secret receives one slot's key once; remove one of them",
		func(u use) string {
			return fmt.Sprintf("GitHub secret %s is already written by %s (line %d)", t.Name, u.what, u.line)
		})
}

// redactURL drops credentials from a URL for a message.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = url.User("xxxxx")
		return u.String()
	}
	if i := strings.Index(s, "@"); i >= 0 {
		return "…" + s[i:]
	}
	return s
}
