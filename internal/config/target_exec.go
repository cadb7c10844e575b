package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultExecTimeout is how long an exec target's command (and its verify
// command) may run when the target sets no timeout.
const DefaultExecTimeout = 30 * time.Second

// maxExecTimeout bounds an exec target's timeout: a command that runs longer
// holds the rotation (and its lease) for too long.
const maxExecTimeout = time.Hour

// execCommandExample is how a command is written, for hints.
const execCommandExample = `command: ["/usr/local/bin/reload", "--key-from-stdin"]`

// ExecTimeout returns how long an exec target's commands may run: its
// timeout, else DefaultExecTimeout.
func (t Target) ExecTimeout() time.Duration {
	if t.Timeout != nil {
		return time.Duration(*t.Timeout)
	}
	return DefaultExecTimeout
}

// execTarget checks an exec target: command (required) and verify
// (optional) are argv lists run without a shell, and timeout is a duration
// in (0, 1h]. A relative program path with a slash ("scripts/reload") is
// resolved against the config file's directory, as dotenv paths are; a bare
// name is looked up on PATH when the command runs.
func (p *parser) execTarget(f map[string]field, s *Slot, t *Target, where string) {
	if fc, ok := f["command"]; ok && !isNull(fc.val) {
		t.Command = p.argv(fc, execCommandExample)
	}
	if fv, ok := f["verify"]; ok && !isNull(fv.val) {
		t.ReadBack = p.argv(fv, `verify: ["/usr/local/bin/check-key", "--key-from-stdin"]`)
	}
	if x, ok := p.duration(f, "timeout"); ok {
		fd := f["timeout"]
		switch {
		case x <= 0:
			p.at(fd.val, "timeout is how long the command may run before it is killed, for example 30s (the default)",
				"timeout must be more than 0, not %s", quote(fd.val.Value))
		case time.Duration(x) > maxExecTimeout:
			p.at(fd.val, "a command that runs longer holds the rotation too long; use at most 1h (the default is 30s)",
				"timeout %s is longer than 1h", quote(fd.val.Value))
		default:
			t.Timeout = &x
		}
	}
	if fe, ok := f["env"]; ok && !isNull(fe.val) {
		if !p.envAssignments(fe) {
			t.Env, _ = p.names(fe, execEnvList)
		}
	}
	if fs, ok := f["show_output"]; ok {
		if fs.val.Kind != yaml.ScalarNode || fs.val.Tag != "!!bool" || fs.val.Decode(&t.ShowOutput) != nil {
			p.at(fs.val, "write show_output: true to see the commands' redacted output in errors and debug logs (or leave it out: it is not shown)",
				"show_output must be true or false, not %s", quote(fs.val.Value))
		}
	}
}

// envAssignments reports the elements of env written NAME=value, and
// whether there were any.
func (p *parser) envAssignments(fe field) bool {
	found := false
	for _, item := range deref(fe.val).Content {
		item = deref(item)
		name, _, ok := strings.Cut(item.Value, "=")
		if item.Kind == yaml.ScalarNode && ok && varRE.MatchString(name) && !looksLikeKey(item.Value) {
			p.at(item, fmt.Sprintf("write the name alone (%s): the command gets the value it has where keyrotate runs", name),
				"env names variables to pass on, it does not set them: %s", quote(name+"=…"))
			found = true
		}
	}
	return found
}

// execEnvList is what an exec target's env: holds: the names of variables
// of keyrotate's environment that its commands get.
var execEnvList = nameList{
	what:     "variable",
	listHint: `list the variables the command needs from keyrotate's environment, for example "env: [VAULT_ADDR, VAULT_TOKEN]"`,
	itemHint: "write each variable as a name, for example VAULT_ADDR",
	badHint:  "a variable name has letters, digits and underscores and does not start with a digit, for example VAULT_ADDR",
	valid:    varRE.MatchString,
}

// argv reads a list of strings: a program and its arguments. It reports a
// plain string (keyrotate uses no shell to split it), an empty list, an
// element that is not a string, and anything that looks like a key string.
// It returns nil after reporting a problem.
func (p *parser) argv(f field, example string) []string {
	name := f.key.Value
	n := deref(f.val)
	switch n.Kind {
	case yaml.ScalarNode:
		p.at(n, argvHint(name, n.Value, example), "%s must be a list (the program, then its arguments), not a string", name)
		return nil
	case yaml.SequenceNode:
	default:
		p.at(n, "write the program and its arguments as a list, for example "+example, "%s must be a list, not %s", name, kind(n))
		return nil
	}
	if len(n.Content) == 0 {
		p.at(n, "name the program to run and its arguments, for example "+example, "%s is an empty list", name)
		return nil
	}
	out := make([]string, 0, len(n.Content))
	bad := false
	for i, item := range n.Content {
		item = deref(item)
		if item == nil || item.Kind != yaml.ScalarNode || isNull(item) {
			p.at(item, "each element of "+name+" is one string: the program, then one argument each", "element %d of %s must be a string, not %s", i+1, name, kind(item))
			bad = true
			continue
		}
		v := item.Value
		if p.keyString(field{key: f.key, val: item}, v) {
			bad = true
			continue
		}
		if strings.ContainsRune(v, 0) {
			p.at(item, "remove the NUL character", "element %d of %s contains a NUL character", i+1, name)
			bad = true
			continue
		}
		if i == 0 {
			prog, ok := p.program(item, name, v, example)
			if !ok {
				bad = true
				continue
			}
			v = prog
		}
		out = append(out, v)
	}
	if bad {
		return nil
	}
	return out
}

// program checks argv[0] and resolves a relative path against the config
// file's directory.
func (p *parser) program(n *yaml.Node, name, v, example string) (string, bool) {
	switch {
	case v == "":
		p.at(n, "name the program first, for example "+example, "the program (first element) of %s is empty", name)
		return "", false
	case v == "~" || strings.HasPrefix(v, "~/"):
		p.at(n, "write an absolute path, or one relative to the directory of this config file", "%s: \"~\" is not expanded in %s", name, quote(v))
		return "", false
	case !strings.Contains(v, "/") && strings.ContainsAny(v, " \t"):
		p.at(n, argvHint(name, v, example),
			"the program (first element) of %s is %s, a whole command line: the program and each argument must be separate elements", name, quote(v))
		return "", false
	case strings.Contains(v, "/"):
		r := p.resolve(v)
		if !strings.Contains(r, "/") {
			r = "./" + r // keep it a path: a bare name is looked up on PATH
		}
		return r, true
	}
	return v, true
}

// argvHint suggests the list form of a command line written as one string.
func argvHint(name, line, example string) string {
	if strings.ContainsAny(line, "|&;<>()$`\\\"'*?[]#~=%") {
		return fmt.Sprintf("keyrotate runs the command without a shell and passes the key on stdin; "+
			"write it as a list, for example %s, or to use shell syntax: %s: [\"/bin/sh\", \"-c\", \"...\"]", example, name)
	}
	words := strings.Fields(line)
	if len(words) == 0 {
		return "write the program and its arguments as a list, for example " + example
	}
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = strconv.Quote(w)
	}
	return fmt.Sprintf("write the program and its arguments as a list: %s: [%s]", name, strings.Join(q, ", "))
}

// execHints say how to add an exec target's required fields.
var execHints = map[string]string{
	"command": `add "` + execCommandExample + `" (the program that takes the key on stdin, then its arguments, as a list)`,
}
