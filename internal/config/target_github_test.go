package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestGitHubTargetValid(t *testing.T) {
	in := head + slotYAML + `    targets:
      - type: github
        repo: octo-org/chat-app
        name: GEMINI_API_KEY
        token_env: GITHUB_TOKEN
      - type: github
        repo: octo-org/chat-app
        environment: production
        name: GEMINI_API_KEY
        token_env: GITHUB_TOKEN
      - type: github
        org: octo-org
        name: GEMINI_API_KEY
        token_env: GH_ORG_TOKEN
        base_url: https://ghe.example.com/api/v3/
`
	cfg, err := Parse("keyrotate.yaml", []byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []Target{
		{Type: TargetGitHub, Repo: "octo-org/chat-app", Name: "GEMINI_API_KEY", TokenEnv: "GITHUB_TOKEN"},
		{Type: TargetGitHub, Repo: "octo-org/chat-app", Environment: "production", Name: "GEMINI_API_KEY", TokenEnv: "GITHUB_TOKEN"},
		{Type: TargetGitHub, Org: "octo-org", Name: "GEMINI_API_KEY", TokenEnv: "GH_ORG_TOKEN", BaseURL: "https://ghe.example.com/api/v3"},
	}
	if diff := cmp.Diff(want, cfg.Slots[0].Targets, cmpopts.IgnoreFields(Target{}, "Line")); diff != "" {
		t.Errorf("targets mismatch (-want +got):\n%s", diff)
	}
}

func TestGitHubTargetInvalid(t *testing.T) {
	const token = "ghp_canaryTokenInConfig0123456789abcdef"
	target := func(fields string) string {
		return head + slotYAML + "    targets:\n      - type: github\n" + fields
	}
	for _, tc := range []struct {
		name, in, msg, hint string
	}{
		{"no repo or org", target("        name: A\n        token_env: T\n"), "no repo or org", `"repo: OWNER/NAME"`},
		{"repo and org", target("        repo: a/b\n        org: a\n        name: A\n        token_env: T\n"), "repo or org, not both", "keep one"},
		{"no name", target("        repo: a/b\n        token_env: T\n"), "github target has no name", `"name: GEMINI_API_KEY"`},
		{"no token_env", target("        repo: a/b\n        name: A\n"), "github target has no token_env", "token_env: GITHUB_TOKEN"},
		{"repo not owner/name", target("        repo: chat-app\n        name: A\n        token_env: T\n"), `repo "chat-app" is not OWNER/NAME`, "octo-org/chat-app"},
		{"repo URL", target("        repo: https://github.com/a/b\n        name: A\n        token_env: T\n"), "is a URL", "OWNER/NAME"},
		{"repo .git", target("        repo: a/b.git\n        name: A\n        token_env: T\n"), "ends in .git", `"a/b"`},
		{"bad org", target("        org: -acme\n        name: A\n        token_env: T\n"), "not an organization name", "login"},
		{"environment with org", target("        org: acme\n        environment: prod\n        name: A\n        token_env: T\n"), "environment does not apply to an organization secret", "repo: OWNER/NAME"},
		{"bad name", target("        repo: a/b\n        name: 1KEY\n        token_env: T\n"), "invalid GitHub secret name", "does not start with a digit"},
		{"GITHUB_ name", target("        repo: a/b\n        name: github_token\n        token_env: T\n"), "starts with GITHUB_", "reserves"},
		{"bad token_env", target("        repo: a/b\n        name: A\n        token_env: GH-TOKEN\n"), `token_env "GH-TOKEN" is not a variable name`, "GITHUB_TOKEN"},
		{"token in token_env", target("        repo: a/b\n        name: A\n        token_env: " + token + "\n"), "looks like a GitHub token", "revoke"},
		{"base_url not http", target("        repo: a/b\n        name: A\n        token_env: T\n        base_url: ftp://x\n"), "not an http(s) URL", "/api/v3"},
		{"base_url credentials", target("        repo: a/b\n        name: A\n        token_env: T\n        base_url: https://me:" + token + "@ghe.example.com/api/v3\n"), "base_url holds credentials", "token_env"},
		{"foreign field", target("        repo: a/b\n        name: A\n        token_env: T\n        path: x\n"), `field "path" does not apply to a github target`, "name, token_env, repo, org, environment and base_url"},
		{"same secret twice", target("        repo: a/b\n        name: key\n        token_env: T\n      - type: github\n        repo: A/B\n        name: KEY\n        token_env: U\n"), "GitHub secret KEY is already written by a github target", "remove one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("keyrotate.yaml", []byte(tc.in))
			if err == nil {
				t.Fatalf("Parse succeeded, want %q", tc.msg)
			}
			var msgs, hints []string
			for _, e := range Errors(err) {
				msgs, hints = append(msgs, e.Msg), append(hints, e.Fix)
			}
			all := strings.Join(msgs, "\n") + "\n" + strings.Join(hints, "\n")
			if !strings.Contains(strings.Join(msgs, "\n"), tc.msg) {
				t.Errorf("messages = %q, want one containing %q", msgs, tc.msg)
			}
			if !strings.Contains(strings.Join(hints, "\n"), tc.hint) {
				t.Errorf("hints = %q, want one containing %q", hints, tc.hint)
			}
			if strings.Contains(all+err.Error(), token[4:20]) {
				t.Errorf("a message repeats the token: %q", all)
			}
		})
	}
}

func TestGitHubTargetDistinctSecrets(t *testing.T) {
	// The same name in other scopes, or on another server, is another secret.
	in := head + slotYAML + `    targets:
      - {type: github, repo: a/b, name: KEY, token_env: T}
      - {type: github, repo: a/b, environment: prod, name: KEY, token_env: T}
      - {type: github, repo: a/c, name: KEY, token_env: T}
      - {type: github, org: a, name: KEY, token_env: T}
      - {type: github, repo: a/b, name: KEY, token_env: T, base_url: "https://ghe.example.com/api/v3"}
`
	if _, err := Parse("keyrotate.yaml", []byte(in)); err != nil {
		t.Fatalf("Parse: %v", err)
	}
}
