package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// execSlot is slotYAML with one exec target, whose fields start at line 8.
func execSlot(fields string) string {
	return head + slotYAML + "    targets:\n      - type: exec\n" + fields
}

func TestExecTargetGood(t *testing.T) {
	for _, tc := range []struct {
		name, config, fields string
		want                 Target
	}{
		{"command only", "keyrotate.yaml", `        command: ["/usr/local/bin/reload", "--key-from-stdin"]` + "\n",
			Target{Type: TargetExec, Command: []string{"/usr/local/bin/reload", "--key-from-stdin"}, Line: 7}},
		{"block list, verify and timeout", "/srv/keyrotate.yaml",
			"        command:\n          - scripts/reload\n          - 3\n        verify: [check-key]\n        timeout: 2m\n",
			Target{Type: TargetExec, Command: []string{"/srv/scripts/reload", "3"}, ReadBack: []string{"check-key"}, Timeout: ptr(Duration(2 * time.Minute)), Line: 7}},
		{"relative path keeps a slash", "keyrotate.yaml", "        command: [./reload]\n",
			Target{Type: TargetExec, Command: []string{"./reload"}, Line: 7}},
		{"shell on purpose", "keyrotate.yaml", `        command: ["/bin/sh", "-c", "cat > /run/app/key && systemctl reload app"]` + "\n",
			Target{Type: TargetExec, Command: []string{"/bin/sh", "-c", "cat > /run/app/key && systemctl reload app"}, Line: 7}},
		{"empty argument", "keyrotate.yaml", `        command: [reload, ""]` + "\n",
			Target{Type: TargetExec, Command: []string{"reload", ""}, Line: 7}},
		{"longest timeout", "keyrotate.yaml", "        command: [reload]\n        timeout: 1h\n",
			Target{Type: TargetExec, Command: []string{"reload"}, Timeout: ptr(Duration(time.Hour)), Line: 7}},
		{"env and show_output", "keyrotate.yaml", "        command: [reload]\n        env: [VAULT_ADDR, VAULT_TOKEN, SSL_CERT_FILE]\n        show_output: true\n",
			Target{Type: TargetExec, Command: []string{"reload"}, Env: []string{"VAULT_ADDR", "VAULT_TOKEN", "SSL_CERT_FILE"}, ShowOutput: true, Line: 7}},
		{"empty env, output hidden", "keyrotate.yaml", "        command: [reload]\n        env: []\n        show_output: false\n",
			Target{Type: TargetExec, Command: []string{"reload"}, Line: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.config, []byte(execSlot(tc.fields)))
			if err != nil {
				t.Fatalf("Parse:\n%s\nerrors:\n%s", execSlot(tc.fields), dump(err))
			}
			if diff := cmp.Diff(tc.want, c.Slots[0].Targets[0]); diff != "" {
				t.Errorf("target mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestExecTimeout(t *testing.T) {
	if got := (Target{}).ExecTimeout(); got != DefaultExecTimeout {
		t.Errorf("ExecTimeout() without timeout = %s, want %s", got, DefaultExecTimeout)
	}
	d := Duration(5 * time.Second)
	if got := (Target{Timeout: &d}).ExecTimeout(); got != 5*time.Second {
		t.Errorf("ExecTimeout() = %s, want 5s", got)
	}
}

func TestExecTargetBad(t *testing.T) {
	const key = "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"
	for _, tc := range []struct {
		name, fields string // fields of an exec target; or a whole file when it starts with "version"
		line         int
		msg, hint    string
	}{
		{"no command", "        verify: [check]\n", 7, "exec target has no command", `command: ["/usr/local/bin/reload", "--key-from-stdin"]`},
		{"null command", "        command:\n", 7, "exec target has no command", "stdin"},
		{"string command", "        command: /usr/local/bin/reload --key-from-stdin\n", 8, "command must be a list", `command: ["/usr/local/bin/reload", "--key-from-stdin"]`},
		{"shell string", "        command: cat > /run/key\n", 8, "command must be a list", `["/bin/sh", "-c", "..."]`},
		{"mapping", "        command: {program: reload}\n", 8, "command must be a list, not a mapping", "list"},
		{"empty list", "        command: []\n", 8, "command is an empty list", "name the program"},
		{"nested list", "        command: [reload, [a]]\n", 8, "element 2 of command must be a string, not a list", "one string"},
		{"null element", "        command: [reload, ~]\n", 8, "element 2 of command must be a string, not null", "one string"},
		{"empty program", `        command: ["", x]` + "\n", 8, "program (first element) of command is empty", "name the program"},
		{"command line in one element", `        command: ["reload --key-from-stdin"]` + "\n", 8, "a whole command line", `command: ["reload", "--key-from-stdin"]`},
		{"tilde", "        command: [~/bin/reload]\n", 8, `"~" is not expanded`, "absolute path"},
		{"key in argument", "        command: [reload, " + key + "]\n", 8, "command holds what looks like an API key string", "remove the key string"},
		{"key in verify", "        command: [reload]\n        verify: [check, " + key + "]\n", 9, "verify holds what looks like an API key string", "remove the key string"},
		{"verify string", "        command: [reload]\n        verify: check-key\n", 9, "verify must be a list", `verify: ["check-key"]`},
		{"zero timeout", "        command: [reload]\n        timeout: 0s\n", 9, "timeout must be more than 0", "30s"},
		{"negative timeout", "        command: [reload]\n        timeout: -5s\n", 9, "timeout must be more than 0", "30s"},
		{"long timeout", "        command: [reload]\n        timeout: 2h\n", 9, "longer than 1h", "at most 1h"},
		{"bad timeout", "        command: [reload]\n        timeout: soon\n", 9, `timeout: invalid duration "soon"`, "10m"},
		{"dotenv field", "        command: [reload]\n        path: .env\n", 9, `field "path" does not apply to an exec target`, "command, verify, timeout, env and show_output"},
		{"env string", "        command: [reload]\n        env: VAULT_ADDR\n", 9, "env must be a list of variable names, not a scalar", `"env: [VAULT_ADDR]"`},
		{"env mapping", "        command: [reload]\n        env: {VAULT_ADDR: x}\n", 9, "env must be a list of variable names, not a mapping", "env: [VAULT_ADDR, VAULT_TOKEN]"},
		{"env assignment", "        command: [reload]\n        env: [VAULT_ADDR=https://vault]\n", 9, `env names variables to pass on, it does not set them: "VAULT_ADDR=…"`, "write the name alone (VAULT_ADDR)"},
		{"env invalid name", "        command: [reload]\n        env: [VAULT-ADDR]\n", 9, `invalid variable name "VAULT-ADDR"`, "letters, digits and underscores"},
		{"env twice", "        command: [reload]\n        env: [A, B, A]\n", 9, `variable "A" is listed twice (first at line 9)`, "list each variable once"},
		{"env key string", "        command: [reload]\n        env: [" + key + "]\n", 9, "env holds what looks like an API key string", "remove the key string"},
		{"env null element", "        command: [reload]\n        env: [A, ~]\n", 9, "a variable must be a name, not null", "VAULT_ADDR"},
		{"show_output not a bool", "        command: [reload]\n        show_output: yes please\n", 9, `show_output must be true or false, not "yes please"`, "show_output: true"},
		{"show_output on compose", head + slotYAML + "    targets:\n      - type: compose\n        path: c.yml\n        services: [api]\n        var: K\n        show_output: true\n",
			11, `field "show_output" does not apply to a compose target`, "path, services, var, reload, timeout and allow_world_readable"},
		{"env on dotenv", head + slotYAML + "    targets:\n      - type: dotenv\n        path: .env\n        var: K\n        env: [A]\n",
			10, `field "env" does not apply to a dotenv target`, "path, var and allow_world_readable"},
		{"timeout on dotenv", head + slotYAML + "    targets:\n      - type: dotenv\n        path: .env\n        var: K\n        timeout: 5s\n",
			10, `field "timeout" does not apply to a dotenv target`, "path, var and allow_world_readable"},
	} {
		in := execSlot(tc.fields)
		if strings.HasPrefix(tc.fields, "version") {
			in = tc.fields
		}
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("keyrotate.yaml", []byte(in))
			if err == nil {
				t.Fatalf("Parse:\n%s\n= nil error, want one at line %d", in, tc.line)
			}
			for _, e := range Errors(err) {
				if s := e.Error() + e.Hint(); strings.Contains(s, "AIzaSy") {
					t.Errorf("error repeats the key string: %s (hint %s)", e, e.Hint())
				}
			}
			for _, e := range Errors(err) {
				if e.Line == tc.line && strings.Contains(e.Msg, tc.msg) && strings.Contains(e.Hint(), tc.hint) {
					return
				}
			}
			t.Errorf("Parse:\n%s\nerrors:\n%s\nwant one at line %d with message containing %q and hint containing %q", in, dump(err), tc.line, tc.msg, tc.hint)
		})
	}
}
