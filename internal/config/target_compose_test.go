package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestComposeTarget(t *testing.T) {
	in := head + slotYAML + `    targets:
      - type: dotenv
        path: app/.env
        var: GEMINI_API_KEY
      - type: compose
        path: deploy/docker-compose.yml
        services: [api, worker.v2, Batch_1]
        var: GEMINI_API_KEY
      - type: compose
        path: /srv/compose.yaml
        services:
          - api
        var: GEMINI_API_KEY
`
	c, err := Parse(filepath.Join("conf", "keyrotate.yaml"), []byte(in))
	if err != nil {
		t.Fatalf("Parse:\n%s\nerror: %v", in, dump(err))
	}
	got := c.Slots[0].Targets[1:]
	want := []Target{
		{Type: TargetCompose, Path: filepath.Join("conf", "deploy", "docker-compose.yml"), Services: []string{"api", "worker.v2", "Batch_1"}, Var: "GEMINI_API_KEY", Line: 10},
		{Type: TargetCompose, Path: "/srv/compose.yaml", Services: []string{"api"}, Var: "GEMINI_API_KEY", Line: 14},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("compose targets mismatch (-want +got):\n%s", diff)
	}
}

func TestComposeTargetAllowed(t *testing.T) {
	for _, tc := range []struct{ name, yaml string }{
		{"other var, same service", head + slotYAML + "    targets:\n      - {type: compose, path: c.yml, services: [api], var: A}\n  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/b\n    targets:\n      - {type: compose, path: c.yml, services: [api], var: B}\n"},
		{"other service, same var, other slot", head + slotYAML + "    targets:\n      - {type: compose, path: c.yml, services: [api], var: K}\n  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/b\n    targets:\n      - {type: compose, path: c.yml, services: [worker], var: K}\n"},
		{"dotenv and compose with one var", head + slotYAML + "    targets:\n      - {type: dotenv, path: .env, var: K}\n      - {type: compose, path: compose.yaml, services: [api], var: K}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse("keyrotate.yaml", []byte(tc.yaml)); err != nil {
				t.Errorf("Parse:\n%s\nerror:\n%s", tc.yaml, dump(err))
			}
		})
	}
}

func TestComposeTargetInvalid(t *testing.T) {
	target := func(lines string) string { return head + slotYAML + "    targets:\n      - type: compose\n" + lines }
	for _, tc := range []struct {
		name, yaml string
		line       int
		msg, hint  string
	}{
		{"no path", target("        services: [api]\n        var: K\n"), 7, "compose target has no path", "docker-compose.yml"},
		{"no services", target("        path: c.yml\n        var: K\n"), 7, "compose target has no services", "services: [api]"},
		{"no var", target("        path: c.yml\n        services: [api]\n"), 7, "compose target has no var", "var: GEMINI_API_KEY"},
		{"null services", target("        path: c.yml\n        services:\n        var: K\n"), 7, "compose target has no services", "services: [api]"},
		{"services a string", target("        path: c.yml\n        services: api\n        var: K\n"), 9, "services must be a list of service names, not a scalar", `services: [api]`},
		{"services a mapping", target("        path: c.yml\n        services: {api: x}\n        var: K\n"), 9, "not a mapping", "for example"},
		{"services empty", target("        path: c.yml\n        services: []\n        var: K\n"), 9, "services is empty", "at least one"},
		{"bad service name", target("        path: c.yml\n        services: [api, -worker]\n        var: K\n"), 9, `invalid service name "-worker"`, "starting with a letter or digit"},
		{"service with a space", target("        path: c.yml\n        services:\n          - api\n          - my worker\n        var: K\n"), 11, `invalid service name "my worker"`, "letters, digits"},
		{"service a list", target("        path: c.yml\n        services: [[api]]\n        var: K\n"), 9, "a service must be a name, not a list", "as in the compose file"},
		{"service twice", target("        path: c.yml\n        services:\n          - api\n          - api\n        var: K\n"), 11, `service "api" is listed twice (first at line 10)`, "once"},
		{"service a key string", target("        path: c.yml\n        services: [AQ.Ab8RN6abcdef]\n        var: K\n"), 9, "looks like an API key string", "remove the key string"},
		{"bad var", target("        path: c.yml\n        services: [api]\n        var: GEMINI-KEY\n"), 10, `invalid variable name "GEMINI-KEY"`, "GEMINI_API_KEY"},
		{"tilde path", target("        path: ~/c.yml\n        services: [api]\n        var: K\n"), 8, "not expanded", "relative to the directory"},
		{"directory path", target("        path: deploy/\n        services: [api]\n        var: K\n"), 8, "names a directory", "deploy/docker-compose.yml"},
		{"dotenv field", target("        path: c.yml\n        services: [api]\n        var: K\n        secret: projects/p/secrets/s\n"), 11, `field "secret" does not apply to a compose target`, "path, services, var, reload, timeout and allow_world_readable"},
		{"allow_world_readable a number", target("        path: c.yml\n        services: [api]\n        var: K\n        allow_world_readable: 1\n"), 11, `allow_world_readable must be true or false, not "1"`, "allow_world_readable: true"},
		{"typo of the type", head + slotYAML + "    targets:\n      - type: compos\n", 7, `unknown target type "compos"`, `did you mean "compose"?`},
		{"same service twice", head + slotYAML + "    targets:\n      - {type: compose, path: c.yml, services: [api], var: K}\n  - name: b\n    project: my-project\n    secret: projects/my-project/secrets/b\n    targets:\n      - {type: compose, path: ./x/../c.yml, services: [worker, api], var: K}\n", 12, "c.yml service api K is already written by a compose target of slot \"gemini-prod\" (line 7)", "remove one"},
		{"one file, two targets of a slot", head + slotYAML + "    targets:\n      - {type: compose, path: c.yml, services: [api], var: K}\n      - {type: compose, path: c.yml, services: [worker], var: L}\n", 8, "already written by another compose target of the same slot (line 7)", "one compose target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("keyrotate.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse:\n%s\n= %+v, want error", tc.yaml, c)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
			}
			for _, e := range Errors(err) {
				if e.Line == tc.line && strings.Contains(e.Msg, tc.msg) && strings.Contains(e.Hint(), tc.hint) {
					if strings.Contains(e.Error()+e.Hint(), "AQ.Ab8RN6") {
						t.Errorf("error %q or hint %q repeats the key string", e.Error(), e.Hint())
					}
					return
				}
			}
			t.Errorf("Parse:\n%s\nerrors:\n%s\nwant one at line %d with message containing %q and hint containing %q", tc.yaml, dump(err), tc.line, tc.msg, tc.hint)
		})
	}
}
