package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/rotate"
)

// Where flags may go. urfave/cli v2 reads global flags only before the
// command, and a command's flags only before its first argument (the flag
// package stops there). People write `keyrotate plan --config x.yaml`,
// `keyrotate status -o json` and `keyrotate rollback SLOT --to KEY`, as
// gcloud and kubectl take them. So before the app runs, arrange reorders
// argv into the order urfave/cli reads — global flags, the command, its
// flags, `--`, its arguments — knowing which flags take a value. It also
// catches what urfave/cli would report as "Incorrect Usage" with the whole
// help (an unknown command or flag, a missing required flag) and reports
// it as a usage error with a "did you mean".

// arranged is argv in the order urfave/cli reads it, and what arrange
// learnt on the way.
type arranged struct {
	args    []string
	command string // the command's name, "" for none (or help)
	json    bool   // --output json was asked for
}

// arrange reorders args (args[0] is the program) for app. An error is a
// usage error, with a hint.
func arrange(app *cli.App, args []string) (arranged, error) {
	if len(args) == 0 {
		return arranged{args: args}, nil
	}
	if app.EnableBashCompletion && args[len(args)-1] == "--generate-bash-completion" {
		// Shell completion of a line being typed: half a command is no
		// error, and urfave/cli reads the line its own way.
		return arranged{args: args}, nil
	}
	var p argvParts
	err := p.read(app, args[1:])
	a := arranged{}
	if p.cmd != nil {
		a.command = p.cmd.Name
	}
	if err != nil {
		return a, err
	}
	if p.cmd != nil {
		if err := checkRequired(p.cmd, p.own); err != nil {
			return a, err
		}
	}
	a.args = p.argv(args[0])
	a.json = outputFlag(p.globals) == "json"
	if hint, ok := textOnly[a.command]; ok && a.json {
		return a, rotate.WithHint(usagef("`keyrotate %s` prints text for people, not JSON", a.command), hint)
	}
	return a, nil
}

// argvParts is argv sorted into what urfave/cli reads in turn: the global
// flags, the command, its own flags and its arguments.
type argvParts struct {
	globals, own, positional []string
	cmd                      *cli.Command
	help                     bool // `keyrotate help ...`: left as it is
	dashdash                 bool
}

// read sorts rest, argv after the program, into p.
func (p *argvParts) read(app *cli.App, rest []string) error {
	globalFlags := app.Flags
	if !app.HideVersion {
		globalFlags = append(slices.Clone(app.Flags), cli.VersionFlag)
	}
	for i := 0; i < len(rest); i++ {
		arg := rest[i]
		switch {
		case p.help:
			p.positional = append(p.positional, arg)
		case arg == "--":
			p.positional = append(p.positional, rest[i+1:]...)
			p.dashdash = true
			return nil
		case !isFlagArg(arg):
			if err := p.word(app, arg); err != nil {
				return err
			}
		default:
			took, err := p.flag(app, globalFlags, rest[i:])
			if err != nil {
				return err
			}
			i += took
		}
	}
	return nil
}

// word takes an argument that is not a flag: the command, help, or an
// argument of the command.
func (p *argvParts) word(app *cli.App, arg string) error {
	if p.cmd != nil {
		p.positional = append(p.positional, arg)
		return nil
	}
	if arg == "help" || arg == "h" {
		p.help = true
		p.positional = append(p.positional, arg)
		return nil
	}
	if p.cmd = findCommand(app.Commands, arg); p.cmd == nil {
		return unknownCommand(app, arg)
	}
	return nil
}

// flag takes the flag rest[0], the command's own or a global one, with
// its value from rest[1] when it takes one and has no "=VALUE"; it returns
// how many arguments after rest[0] it took.
func (p *argvParts) flag(app *cli.App, globalFlags []cli.Flag, rest []string) (int, error) {
	arg := rest[0]
	name, _, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	var f cli.Flag
	dst := &p.globals
	if p.cmd != nil {
		if f = findFlag(p.cmd.Flags, name); f != nil {
			dst = &p.own
		}
	}
	if f == nil {
		f = findFlag(globalFlags, name)
	}
	if f == nil {
		return 0, unknownFlag(app, p.cmd, name)
	}
	*dst = append(*dst, arg)
	if !takesValue(f) || hasValue {
		return 0, nil
	}
	if len(rest) == 1 {
		flag := dashed(name)
		return 0, rotate.WithHint(usagef("%s needs a value", flag), fmt.Sprintf("write %s %s or %s=%s", flag, placeholder(f), flag, placeholder(f)))
	}
	*dst = append(*dst, rest[1])
	return 1, nil
}

// argv is program and the parts in the order urfave/cli reads them.
func (p *argvParts) argv(program string) []string {
	out := append([]string{program}, p.globals...)
	switch {
	case p.help:
		out = append(out, p.positional...)
	case p.cmd != nil:
		out = append(out, p.cmd.Name)
		out = append(out, p.own...)
		if p.dashdash || slices.ContainsFunc(p.positional, isFlagArg) {
			out = append(out, "--")
		}
		out = append(out, p.positional...)
	}
	return out
}

// textOnly are the commands without a JSON document, and what to run for one.
var textOnly = map[string]string{
	"demo": "run it without --output json; for JSON, start `keyrotate emulator --seed DIR` " +
		"and run `keyrotate --config DIR/keyrotate.yaml -o json plan` against it",
	"emulator": "run it without --output json: it prints shell exports (`export NAME=ADDR`) for the commands that use it",
}

// outputFlag is the last value of --output (-o) among global flags.
func outputFlag(globals []string) string {
	v := ""
	for i := 0; i < len(globals); i++ {
		name, val, ok := strings.Cut(strings.TrimLeft(globals[i], "-"), "=")
		if name != "output" && name != "o" {
			continue
		}
		if !ok && i+1 < len(globals) {
			i++
			val = globals[i]
		}
		v = val
	}
	return v
}

// isFlagArg reports whether the flag package reads a as a flag (a lone
// "-" and negative numbers are values).
func isFlagArg(a string) bool {
	return len(a) > 1 && a[0] == '-' && a != "--" && !(a[1] >= '0' && a[1] <= '9')
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// findFlag finds a flag by any of its names, including the help flag that
// urfave/cli adds everywhere.
func findFlag(fs []cli.Flag, name string) cli.Flag {
	for _, f := range append(slices.Clone(fs), cli.HelpFlag) {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

func takesValue(f cli.Flag) bool {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.TakesValue()
	}
	return true
}

func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func unknownCommand(app *cli.App, name string) error {
	var names []string
	for _, c := range app.Commands {
		names = append(names, c.Names()...)
	}
	hint := "the commands are: " + commandList(app)
	if s := config.Suggest(name, names); s != "" {
		hint = fmt.Sprintf("did you mean `keyrotate %s`? The commands are: %s", s, commandList(app))
	}
	return rotate.WithHint(usagef("unknown command %q", name), hint)
}

func commandList(app *cli.App) string {
	var names []string
	for _, c := range app.Commands {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

func unknownFlag(app *cli.App, cmd *cli.Command, name string) error {
	var known []string
	where := "global flags"
	flags := slices.Clone(app.Flags)
	if cmd != nil {
		where = "flags of `keyrotate " + cmd.Name + "` and global flags"
		flags = append(slices.Clone(cmd.Flags), flags...)
	}
	for _, f := range flags {
		known = append(known, f.Names()...)
	}
	what := "unknown flag " + dashed(name)
	if cmd != nil {
		what += " for `keyrotate " + cmd.Name + "`"
	}
	var list []string
	for _, f := range flags {
		list = append(list, dashed(f.Names()[0]))
	}
	hint := where + ": " + strings.Join(list, ", ")
	if s := config.Suggest(name, known); s != "" {
		hint = fmt.Sprintf("did you mean %s? The %s", dashed(s), hint)
	} else if cmd == nil {
		// A command's flag given without its command.
		for _, c := range app.Commands {
			if findFlag(c.Flags, name) != nil {
				hint = fmt.Sprintf("%s is a flag of `keyrotate %s` (and maybe others): name the command", dashed(name), c.Name)
				break
			}
		}
	}
	return rotate.WithHint(usageError{fmt.Errorf("%s", what)}, hint)
}

// checkRequired reports a required flag of cmd that own (the command's
// flags, as given) lacks, as urfave/cli would but without its help dump.
func checkRequired(cmd *cli.Command, own []string) error {
	for _, f := range cmd.Flags {
		r, ok := f.(cli.RequiredFlag)
		if !ok || !r.IsRequired() {
			continue
		}
		if d, ok := f.(cli.DocGenerationFlag); ok && slices.ContainsFunc(d.GetEnvVars(), func(e string) bool { return getenv(e) != "" }) {
			continue
		}
		given := slices.ContainsFunc(own, func(a string) bool {
			if !isFlagArg(a) {
				return false
			}
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			return slices.Contains(f.Names(), name)
		})
		if given || slices.Contains(own, "--help") || slices.Contains(own, "-h") {
			continue
		}
		usage := dashed(f.Names()[0])
		if takesValue(f) {
			usage += " " + placeholder(f)
		}
		return rotate.WithHint(usagef("`keyrotate %s` needs %s", cmd.Name, usage),
			fmt.Sprintf("write `keyrotate %s %s%s`; `keyrotate %s --help` shows its flags", cmd.Name, usage, argsUsage(cmd), cmd.Name))
	}
	return nil
}

func argsUsage(cmd *cli.Command) string {
	if cmd.ArgsUsage == "" {
		return ""
	}
	return " " + cmd.ArgsUsage
}

// placeholder is the flag's value name from its usage (`KEY`), else VALUE.
func placeholder(f cli.Flag) string {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		u := d.GetUsage()
		if i := strings.IndexByte(u, '`'); i >= 0 {
			if j := strings.IndexByte(u[i+1:], '`'); j > 0 {
				return u[i+1 : i+1+j]
			}
		}
	}
	return "VALUE"
}

// runApp runs app on args as people write them (see arrange). With
// --output json anywhere in args, the command's JSON document is held until
// the run's end, when reportRun prints it with the outcome.
func runApp(ctx context.Context, app *cli.App, args []string) error {
	a, err := arrange(app, args)
	if wantsJSON(args) {
		app.Metadata[jsonSinkKey] = &jsonSink{command: a.command}
		if p, ok := app.Metadata[processKey].(*process); ok {
			// A process ended at once (second signal, --timeout) prints
			// its document too.
			p.atEnd = func(why, hint string) {
				flushJSON(app, app.Writer, rotate.WithHint(errors.New(why), hint), exitPartWay)
			}
		}
	}
	if err != nil {
		return inCommand(a.command, err)
	}
	return app.RunContext(ctx, a.args)
}

// wantsJSON reports whether args ask for --output json, wherever it
// stands; also when args do not parse, so that their error is JSON too.
func wantsJSON(args []string) bool {
	json := false
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		name, val, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !isFlagArg(a) || (name != "output" && name != "o") {
			continue
		}
		if !ok && i+1 < len(args) {
			i++
			val = args[i]
		}
		json = val == "json"
	}
	return json
}

// commandError is an error of a run of one command: its hint depends on
// whether the command can change anything.
type commandError struct {
	command string
	err     error
}

func (e commandError) Error() string { return e.err.Error() }
func (e commandError) Unwrap() error { return e.err }

// inCommand marks err as an error of command (when known and not marked yet).
func inCommand(command string, err error) error {
	var ce commandError
	if err == nil || command == "" || errors.As(err, &ce) {
		return err
	}
	return commandError{command: command, err: err}
}

// readOnly are the commands that change nothing anywhere: "nothing was
// changed" goes without saying for them.
var readOnly = map[string]bool{"plan": true, "status": true, "verify": true, "doctor": true, "emulator": true, "help": true}

// commandOf is the command err is marked with, or "".
func commandOf(err error) string {
	var ce commandError
	if errors.As(err, &ce) {
		return ce.command
	}
	return ""
}

// onUsageError turns urfave/cli's parse errors (a flag's value that does
// not parse, a flag without its value) into usage errors people can act
// on, instead of "Incorrect Usage" and the help on stdout.
func onUsageError(c *cli.Context, err error, _ bool) error {
	cmd := ""
	if c.Command != nil && c.Command.Name != c.App.Name {
		cmd = c.Command.Name
	}
	msg := err.Error()
	if m := invalidValueRe.FindStringSubmatch(msg); m != nil {
		flag := dashed(m[2])
		hint := fmt.Sprintf("give %s a valid value", flag)
		if f := lookupFlag(c, m[2]); f != nil {
			switch f.(type) {
			case *cli.DurationFlag:
				hint = fmt.Sprintf("%s takes a duration such as 90s, 45m or 1h30m", flag)
			case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
				hint = fmt.Sprintf("%s takes a whole number", flag)
			case *cli.BoolFlag:
				hint = fmt.Sprintf("%s takes no value (or %s=true, %s=false)", flag, flag, flag)
			}
		}
		return inCommand(cmd, rotate.WithHint(usagef("invalid value %q for %s", m[1], flag), hint))
	}
	if m := needsArgRe.FindStringSubmatch(msg); m != nil {
		flag := dashed(m[1])
		return inCommand(cmd, rotate.WithHint(usagef("%s needs a value", flag), fmt.Sprintf("write %s VALUE or %s=VALUE", flag, flag)))
	}
	return inCommand(cmd, usageError{err})
}

var (
	invalidValueRe = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-+(\S+?):`)
	needsArgRe     = regexp.MustCompile(`^flag needs an argument: -+(\S+)`)
)

func lookupFlag(c *cli.Context, name string) cli.Flag {
	if c.Command != nil {
		if f := findFlag(c.Command.Flags, name); f != nil {
			return f
		}
	}
	return findFlag(c.App.Flags, name)
}

// jsonSink holds the one JSON document of a run with --output json until
// the run ends, so that the outcome (error, hint, exit code) joins it, and
// a run that fails before it printed one still prints one.
type jsonSink struct {
	mu      sync.Mutex
	command string
	doc     []byte // compact JSON object
}

const jsonSinkKey = "json-sink"

func (s *jsonSink) set(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.doc = b
	return nil
}

// jsonOutcome is what every JSON document ends with.
type jsonOutcome struct {
	Error  string      `json:"error,omitempty"`
	Hint   string      `json:"hint,omitempty"`
	Exit   int         `json:"exit_code"`
	Errors []errorJSON `json:"errors,omitempty"` // config problems, one each
}

// flushJSON prints the run's JSON document on w, with the outcome of the
// run: one JSON object, also when the run failed before it made one. A run
// that succeeded without a document (help, the emulator) prints none.
func flushJSON(app *cli.App, w io.Writer, err error, code int) {
	s, ok := app.Metadata[jsonSinkKey].(*jsonSink)
	if !ok {
		return
	}
	s.mu.Lock()
	doc := s.doc
	s.mu.Unlock()
	if doc == nil && err == nil {
		return
	}
	if doc == nil {
		doc, _ = json.Marshal(struct {
			Command string `json:"command,omitempty"`
		}{commandOr(s.command, commandOf(err))})
	}
	out := jsonOutcome{Exit: code}
	if err != nil {
		out.Error, out.Hint = err.Error(), hintOf(err)
		if errs := config.Errors(err); len(errs) > 0 {
			out.Hint = configHint
			for _, e := range errs {
				out.Errors = append(out.Errors, errorJSON{Error: e.Error(), Hint: e.Hint(), Exit: code})
			}
		}
	}
	extra, _ := json.Marshal(out)
	doc = bytes.TrimSpace(doc)
	merged := append([]byte{}, doc[:len(doc)-1]...)
	if len(bytes.TrimSpace(merged)) > 1 {
		merged = append(merged, ',')
	}
	merged = append(merged, extra[1:]...)
	var b bytes.Buffer
	if json.Indent(&b, merged, "", "  ") != nil {
		return
	}
	b.WriteByte('\n')
	_, _ = w.Write(b.Bytes())
}

func commandOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
