package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/rotate"
)

// Exit codes, a stable interface: README.md's "Exit codes" section lists
// them for users.
const (
	exitOK      = 0
	exitFailed  = 1 // failed; nothing changed, or cleanly undone
	exitUsage   = 2 // bad usage or config
	exitVerify  = 3 // the new key failed live verification and was removed
	exitPartWay = 4 // stopped part-way, safe: run again to resume, or abort
)

// defaultConfig is the config file read when neither --config nor
// KEYROTATE_CONFIG names one.
const defaultConfig = "keyrotate.yaml"

// usageError marks bad flags and arguments (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func newApp(stdout, stderr io.Writer) *cli.App {
	app := withVersionAndCompletion(&cli.App{
		Name:  "keyrotate",
		Usage: "rotate Google Cloud API keys (Gemini first of all) safely",
		Description: "keyrotate creates a new key with the old key's restrictions and binding, proves it works\n" +
			"against the live API, writes it to Secret Manager and every target, reads every target back,\n" +
			"and deletes the old key only after all of that succeeded.",
		Metadata:        map[string]any{},
		Writer:          stdout,
		ErrWriter:       stderr,
		ExitErrHandler:  func(*cli.Context, error) {}, // errors are returned; main picks the exit code
		OnUsageError:    onUsageError,                 // args.go
		CommandNotFound: nil,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "config `FILE`", Value: defaultConfig, EnvVars: []string{"KEYROTATE_CONFIG"}},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `FORMAT`: text or json", Value: "text"},
			&cli.StringFlag{Name: "log-format", Value: "auto",
				Usage: "log `FORMAT` on stderr: text, json (Cloud Logging fields), " +
					"or auto: json when stderr is not a terminal in a Cloud Run Job or Kubernetes pod, else text"},
			&cli.DurationFlag{Name: "timeout", Value: 90 * time.Minute,
				Usage: "end the process after `DURATION`, releasing leases and posting to the webhook included " +
					"(retries end with the last real error; a stopped rotation resumes on the next run)"},
			&cli.StringFlag{Name: "log-level", Usage: "log `LEVEL`: debug, info, warn or error", Value: "warn"},
			quotaProjectFlag(),
		},
		Before: func(c *cli.Context) error {
			if o := c.String("output"); o != "text" && o != "json" {
				return usagef("--output must be text or json, not %q", o)
			}
			if f := c.String("log-format"); f != "text" && f != "json" && f != "auto" {
				return usagef("--log-format must be text, json or auto, not %q", f)
			}
			if _, err := durationFlag(c, "timeout", false); err != nil {
				return err
			}
			if err := checkQuotaProject(c); err != nil {
				return err
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return usagef("--log-level must be debug, info, warn or error, not %q", c.String("log-level"))
			}
			// Targets that log on their own (exec) use the default logger.
			logger := newLogger(c)
			slog.SetDefault(logger)
			if jsonLogs(c) {
				// The run's errors go to Cloud Logging as ERROR entries.
				c.App.Metadata[jsonLoggerKey] = logger
				if p := processOf(c); p != nil {
					p.setLogger(logger)
				}
			}
			return nil
		},
		Commands: []*cli.Command{
			planCommand(),
			rotateCommand(),
			repairCommand(),
			statusCommand(),
			scheduleCommand(),
			verifyCommand(),
			doctorCommand(),
			finalizeCommand(),
			abortCommand(),
			rollbackCommand(),
			revokeCommand(),
			serveCommand(),
			listenCommand(),
			demoCommand(),
			emulatorCommand(),
			versionCommand(),
			completionCommand(),
		},
	})
	for _, cmd := range app.Commands {
		cmd.OnUsageError = onUsageError
		if action := cmd.Action; action != nil {
			name := cmd.Name
			cmd.Action = func(c *cli.Context) error { return inCommand(name, action(c)) }
		}
	}
	return app
}

// newLogger builds the logger the global flags ask for. JSON logs use the
// field names Cloud Logging understands (severity, message) and carry
// labels (logging.googleapis.com/labels) to filter a run's or a slot's
// entries by: run, command, shard and slot.
func newLogger(c *cli.Context) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.String("log-level")))
	opts := &slog.HandlerOptions{Level: lvl}
	w := c.App.ErrWriter
	if !jsonLogs(c) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) > 0 {
			return a
		}
		switch a.Key {
		case slog.LevelKey:
			a.Key = "severity"
			if l, ok := a.Value.Any().(slog.Level); ok && l == slog.LevelWarn {
				a.Value = slog.StringValue("WARNING")
			}
		case slog.MessageKey:
			a.Key = "message"
		case slog.TimeKey:
			a.Key = "time"
		}
		return a
	}
	labels := map[string]string{"run": runID(c)}
	if name := commandName(c); name != "" {
		labels["command"] = name
	}
	if s, err := shardFrom(c, getenv); err == nil && !s.all() {
		labels["shard"] = s.String()
	}
	return slog.New(&labelHandler{Handler: slog.NewJSONHandler(w, opts), labels: labels})
}

// jsonLogs says whether logs are JSON: asked for, or auto in a job whose
// stderr is not a terminal (what Cloud Logging collects).
func jsonLogs(c *cli.Context) bool {
	switch c.String("log-format") {
	case "json":
		return true
	case "auto":
		return !isTerminal(c.App.ErrWriter) && inJob(getenv)
	}
	return false
}

// inJob reports whether the process runs in a Cloud Run Job or service or
// a Kubernetes pod, whose stderr goes to a log collector.
func inJob(getenv func(string) string) bool {
	for _, v := range []string{"CLOUD_RUN_JOB", "K_SERVICE", "KUBERNETES_SERVICE_HOST"} {
		if getenv(v) != "" {
			return true
		}
	}
	return false
}

// commandName is the command being run, also in the App's Before (whose
// context is the root command's).
func commandName(c *cli.Context) string {
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		return c.Command.Name
	}
	return c.Args().First()
}

// labelsKey is the field Cloud Logging reads an entry's labels from.
const labelsKey = "logging.googleapis.com/labels"

// labelHandler adds the run's labels, and the entry's slot, as Cloud
// Logging labels.
type labelHandler struct {
	slog.Handler
	labels map[string]string
	slot   string // from WithAttrs
}

func (h *labelHandler) Handle(ctx context.Context, r slog.Record) error {
	labels := make(map[string]string, len(h.labels)+1)
	for k, v := range h.labels {
		labels[k] = v
	}
	if h.slot != "" {
		labels["slot"] = h.slot
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "slot" {
			labels["slot"] = a.Value.String()
		}
		return true
	})
	r.AddAttrs(slog.Any(labelsKey, labels))
	return h.Handler.Handle(ctx, r)
}

func (h *labelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &labelHandler{Handler: h.Handler.WithAttrs(attrs), labels: h.labels, slot: h.slot}
	for _, a := range attrs {
		if a.Key == "slot" {
			n.slot = a.Value.String()
		}
	}
	return n
}

func (h *labelHandler) WithGroup(name string) slog.Handler {
	return &labelHandler{Handler: h.Handler.WithGroup(name), labels: h.labels, slot: h.slot}
}

// jsonLoggerKey holds, in the App's Metadata, the JSON logger when logs
// are JSON: errors are then logged as entries, not printed as text.
const jsonLoggerKey = "json-logger"

// reportRun reports the error of a run of app and returns the exit code:
// as ERROR log entries when its logs are JSON (each with its hint and the
// exit code), else as text for people.
func reportRun(app *cli.App, w io.Writer, err error) int {
	code := exitCode(err)
	flushJSON(app, app.Writer, err, code)
	logger, ok := app.Metadata[jsonLoggerKey].(*slog.Logger)
	if !ok || err == nil {
		return report(w, err)
	}
	if errs := config.Errors(err); len(errs) > 0 {
		for _, e := range errs {
			logger.Error(e.Error(), "hint", e.Hint(), "exit_code", code)
		}
		return code
	}
	// One entry per failed slot of a multi-slot run.
	all, cmd := []error{err}, commandOf(err)
	var ce commandError
	if errors.As(err, &ce) {
		err = ce.err
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	}
	for _, e := range all {
		e = inCommand(cmd, e)
		if exitCode(e) == exitAttention {
			// Rotated, but an old key was kept in use: a warning, one per slot.
			logger.Warn(e.Error(), "hint", hintOf(e), "exit_code", exitAttention)
			continue
		}
		logger.Error(e.Error(), "hint", hintOf(e), "exit_code", exitCode(e))
	}
	return code
}

// report prints err for people and returns the exit code.
func report(w io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	if errs := config.Errors(err); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(w, "keyrotate: error: %s\n", e.Error())
			if h := e.Hint(); h != "" {
				fmt.Fprintf(w, "keyrotate: hint: %s\n", h)
			}
		}
		fmt.Fprintf(w, "keyrotate: hint: %s\n", configHint)
		return code
	}
	label := "error"
	if code == exitAttention {
		label = "attention" // rotated: not an error, but someone must act
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(w, "keyrotate: %s: %s\n", label, line)
	}
	if h := hintOf(err); h != "" {
		fmt.Fprintf(w, "keyrotate: hint: %s\n", h)
	}
	return code
}

// configHint follows the problems of a config file.
const configHint = "nothing was changed; fix the configuration and run again"

// hintOf is the hint printed for err: a refused emulator address first
// (whatever else the library advised, that is the cause to fix), then the
// error's own.
func hintOf(err error) string {
	h := errorHint(err)
	if eh := hostsFromEnv().emulatorDownHint(err); eh != "" && !strings.Contains(h, eh) {
		if h == "" || exitCode(err) == exitFailed {
			return eh
		}
		return eh + "; then " + h
	}
	return h
}

// errorHint is what to do about err. Only a command that can change keys
// or targets says that nothing was changed and the old key still works.
func errorHint(err error) string {
	cmd := commandOf(err)
	var ue usageError
	if errors.As(err, &ue) {
		h := commandHint(err)
		if h == "" {
			h = "run `keyrotate " + strings.TrimSpace(cmd+" --help") + "` for usage"
		}
		if cmd != "" && !readOnly[cmd] {
			h += "; nothing was changed"
		}
		return h
	}
	if h := commandHint(err); h != "" {
		return quotaProjectHint(err, h)
	}
	switch {
	case errors.Is(err, config.ErrInvalid):
		return "fix the configuration file and run again; nothing was changed"
	case errors.Is(err, rotate.ErrRotationInProgress):
		return "another run is rotating this slot; wait for it, or run again after its lease expires"
	}
	if exitCode(err) == exitFailed {
		if readOnly[cmd] {
			return "fix the cause above and run `keyrotate " + cmd + "` again"
		}
		return "nothing was changed; the old key still works everywhere. Fix the cause above and run again"
	}
	return ""
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, rotate.ErrStoppedPartWay), errors.Is(err, rotate.ErrRotationInProgress):
		return exitPartWay
	case errors.As(err, &ue), errors.Is(err, config.ErrInvalid),
		errors.Is(err, rotate.ErrInvalidTarget), errors.Is(err, rotate.ErrBadConfig),
		errors.Is(err, rotate.ErrNothingToRollBack), errors.Is(err, rotate.ErrKeyInUse):
		return exitUsage
	case errors.Is(err, rotate.ErrVerifyFailed):
		return exitVerify
	}
	var ae *attentionError
	if errors.As(err, &ae) {
		return exitAttention
	}
	if strings.HasPrefix(err.Error(), "flag provided but not defined") {
		return exitUsage
	}
	return exitFailed
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTTY(f)
}
