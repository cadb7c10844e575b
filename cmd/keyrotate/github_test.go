package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emulator/githubfake"
)

// The GitHub world of the github*.txtar scripts, next to the demo world:
// repository acme/chat-app with environment production, organization acme,
// each holding the secret GEMINI_API_KEY = the seeded key (the org's
// visible to two selected repositories).
const (
	ghScriptRepo  = "acme/chat-app"
	ghScriptEnv   = "production"
	ghScriptOrg   = "acme"
	ghScriptName  = "GEMINI_API_KEY"
	ghScriptToken = "ghp_krScriptCanaryToken0123456789abcdefAB"
	ghReadToken   = "ghp_krScriptReadOnlyToken0123456789abcdef"
)

var ghFakes sync.Map // *testscript.TestScript -> *githubfake.Server

func ghFake(ts *testscript.TestScript) *githubfake.Server {
	f, ok := ghFakes.Load(ts)
	if !ok {
		ts.Fatalf("gh: run \"gh start\" first")
	}
	return f.(*githubfake.Server)
}

func ghScope(ts *testscript.TestScript, kind string) string {
	switch kind {
	case "repo":
		return githubfake.RepoScope(ghScriptRepo)
	case "env":
		return githubfake.EnvScope(ghScriptRepo, ghScriptEnv)
	case "org":
		return githubfake.OrgScope(ghScriptOrg)
	}
	ts.Fatalf("gh: scope must be repo, env or org, not %q", kind)
	return ""
}

// cmdGitHub drives the GitHub API fake:
//
//	gh start                      start it; export GITHUB_FAKE_URL and KR_GITHUB_TOKEN (a token that may write)
//	gh config FILE repo|env|org [ENV]   write the demo config plus a github target of that scope
//	gh holds repo|env|org current|seeded   the secret holds the secret's latest key / the seeded key
//	gh visibility org VIS [ID...] the organization secret's visibility and selected repositories
//	gh calls METHOD|total N       calls of GetPublicKey, GetSecret, PutSecret, GetRepo, ListSelectedRepos
//	gh fail METHOD N STATUS       the Nth next call of METHOD answers STATUS
//	gh clean                      no token and no secret value in the last stdout and stderr
func cmdGitHub(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: gh VERB ...")
	}
	switch verb, rest := args[0], args[1:]; verb {
	case "start":
		f, err := githubfake.Start(githubfake.Options{})
		ts.Check(err)
		ghFakes.Store(ts, f)
		ts.Defer(func() { f.Close(); ghFakes.Delete(ts) })
		f.AddToken(ghScriptToken, githubfake.Token{Grant: githubfake.Write})
		f.AddToken(ghReadToken, githubfake.Token{Grant: githubfake.ReadOnly})
		f.AddRepo(ghScriptRepo)          // id 1296270
		f.AddRepo(ghScriptRepo + "-web") // id 1296271
		f.AddEnvironment(ghScriptRepo, ghScriptEnv)
		f.AddOrg(ghScriptOrg)
		seeded := world(ts).w.key.Reveal()
		f.SeedSecret(ghScope(ts, "repo"), ghScriptName, seeded, "")
		f.SeedSecret(ghScope(ts, "env"), ghScriptName, seeded, "")
		f.SeedSecret(ghScope(ts, "org"), ghScriptName, seeded, "selected", 1296270, 1296271)
		ts.Setenv("GITHUB_FAKE_URL", f.URL)
		ts.Setenv("KR_GITHUB_TOKEN", ghScriptToken)
		ts.Setenv("KR_GITHUB_WRITE_TOKEN", ghScriptToken) // to restore KR_GITHUB_TOKEN after a script changes it
		ts.Setenv("KR_GITHUB_READ_TOKEN", ghReadToken)
	case "config":
		f := ghFake(ts)
		base, err := os.ReadFile(world(ts).w.config)
		ts.Check(err)
		where := "        repo: " + ghScriptRepo + "\n"
		switch ghScope(ts, rest[1]); rest[1] {
		case "env":
			env := ghScriptEnv
			if len(rest) > 2 {
				env = rest[2]
			}
			where += "        environment: " + env + "\n"
		case "org":
			where = "        org: " + ghScriptOrg + "\n"
		}
		cfg := string(base) + "      - type: github\n" + where +
			"        name: " + ghScriptName + "\n        token_env: KR_GITHUB_TOKEN\n        base_url: " + f.URL + "\n"
		ts.Check(os.WriteFile(ts.MkAbs(rest[0]), []byte(cfg), 0o644))
	case "holds":
		sw := world(ts)
		want := latestPayload(sw)
		if rest[1] == "seeded" {
			want = sw.w.key.Reveal()
		}
		got := ghFake(ts).Value(ghScope(ts, rest[0]), ghScriptName)
		if (got == want) == neg {
			ts.Fatalf("GitHub %s secret holds %s key, want %s (%s)", rest[0], ghWhich(sw, got), rest[1], ghWhich(sw, want))
		}
	case "visibility": // gh visibility org VISIBILITY [REPO_ID...]: an organization secret's visibility and repositories
		sec, _ := ghFake(ts).Secret(ghScope(ts, rest[0]), ghScriptName)
		got := strings.TrimSpace(sec.Visibility + " " + strings.Trim(fmt.Sprint(sec.Selected), "[]"))
		if want := strings.Join(rest[1:], " "); (got == want) == neg {
			ts.Fatalf("visibility = %q, want %q", got, want)
		}
	case "calls":
		n, _ := strconv.Atoi(rest[1])
		m := rest[0]
		if m == "total" {
			m = ""
		}
		if got := ghFake(ts).Calls(m); (got == n) == neg {
			ts.Fatalf("GitHub calls %s = %d, want %d", rest[0], got, n)
		}
	case "fail":
		n, _ := strconv.Atoi(rest[1])
		status, _ := strconv.Atoi(rest[2])
		f := ghFake(ts)
		f.Fail(rest[0], f.Calls(rest[0])+n, fake.Fault{Status: status})
	case "clean":
		out := ts.ReadFile("stdout") + ts.ReadFile("stderr")
		for _, tok := range []string{ghScriptToken, ghReadToken} {
			if strings.Contains(out, tok) || strings.Contains(out, tok[4:20]) {
				ts.Fatalf("a GitHub token appears in the output")
			}
		}
		for _, v := range ghFake(ts).Values() {
			if v != "" && strings.Contains(out, v) {
				ts.Fatalf("a GitHub secret's value appears in the output")
			}
		}
	default:
		ts.Fatalf("gh: unknown verb %q", verb)
	}
}

// ghWhich names a key for a message without showing it.
func ghWhich(sw *scriptWorld, k string) string {
	switch k {
	case "":
		return "no"
	case sw.w.key.Reveal():
		return "the seeded"
	case latestPayload(sw):
		return "the secret's latest"
	}
	return fmt.Sprintf("another (%d characters)", len(k))
}
