package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/config"
	"github.com/keyrotate/keyrotate/rotate"
)

// Exit codes, as DESIGN.md fixes them.
const (
	exitOK       = 0
	exitFailed   = 1 // failed; nothing changed, or cleanly undone
	exitUsage    = 2 // bad usage or config
	exitVerify   = 3 // the new key failed live verification and was removed
	exitPartWay  = 4 // stopped part-way, safe: run again to resume, or abort
	defaultConfg = "keyrotate.yaml"
)

// usageError marks bad flags and arguments (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:  "keyrotate",
		Usage: "rotate Google Cloud API keys (Gemini first of all) safely",
		Description: "keyrotate creates a new key with the old key's restrictions and binding, proves it works\n" +
			"against the live API, writes it to Secret Manager and every target, reads every target back,\n" +
			"and deletes the old key only after all of that succeeded.",
		Writer:          stdout,
		ErrWriter:       stderr,
		HideVersion:     true,
		ExitErrHandler:  func(*cli.Context, error) {}, // errors are returned; main picks the exit code
		OnUsageError:    func(_ *cli.Context, err error, _ bool) error { return usageError{err} },
		CommandNotFound: nil,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "config `FILE`", Value: defaultConfg, EnvVars: []string{"KEYROTATE_CONFIG"}},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `FORMAT`: text or json", Value: "text"},
			&cli.StringFlag{Name: "log-format", Usage: "log `FORMAT` on stderr: text or json (Cloud Logging fields)", Value: "text"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up a run after `DURATION` (retries end with the last real error; a stopped rotation resumes on the next run)", Value: 90 * time.Minute},
			&cli.StringFlag{Name: "log-level", Usage: "log `LEVEL`: debug, info, warn or error", Value: "warn"},
		},
		Before: func(c *cli.Context) error {
			if o := c.String("output"); o != "text" && o != "json" {
				return usagef("--output must be text or json, not %q", o)
			}
			if f := c.String("log-format"); f != "text" && f != "json" {
				return usagef("--log-format must be text or json, not %q", f)
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return usagef("--log-level must be debug, info, warn or error, not %q", c.String("log-level"))
			}
			// Targets that log on their own (exec) use the default logger.
			slog.SetDefault(newLogger(c))
			return nil
		},
		Commands: []*cli.Command{
			planCommand(),
			rotateCommand(),
			statusCommand(),
			verifyCommand(),
			doctorCommand(),
			finalizeCommand(),
			abortCommand(),
			rollbackCommand(),
			revokeCommand(),
			demoCommand(),
			emulatorCommand(),
		},
	}
}

// newLogger builds the logger the global flags ask for. JSON logs use the
// field names Cloud Logging understands (severity, message).
func newLogger(c *cli.Context) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.String("log-level")))
	opts := &slog.HandlerOptions{Level: lvl}
	w := c.App.ErrWriter
	if c.String("log-format") == "json" {
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
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
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
		fmt.Fprintf(w, "keyrotate: hint: nothing was changed; fix the configuration and run again\n")
		return code
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(w, "keyrotate: error: %s\n", line)
	}
	if h := hintOf(err); h != "" {
		fmt.Fprintf(w, "keyrotate: hint: %s\n", h)
	}
	return code
}

func hintOf(err error) string {
	if h := rotate.Hint(err); h != "" {
		return h
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		return "run `keyrotate --help` for usage"
	case errors.Is(err, config.ErrInvalid):
		return "fix the configuration file and run again; nothing was changed"
	case errors.Is(err, rotate.ErrRotationInProgress):
		return "another run is rotating this slot; wait for it, or run again after its lease expires"
	}
	if exitCode(err) == exitFailed {
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
		errors.Is(err, rotate.ErrInvalidTarget), errors.Is(err, rotate.ErrBadConfig):
		return exitUsage
	case errors.Is(err, rotate.ErrVerifyFailed):
		return exitVerify
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
