package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/doctor"
	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/inputfile"
	"github.com/keyrotate/keyrotate/verify"
)

// doctorLookupEnv reads the variables doctor diagnoses. Tests replace it so
// that key strings need not pass through the process environment.
var doctorLookupEnv = os.LookupEnv

// maxStdinLine bounds what --stdin reads: a key is far shorter.
const maxStdinLine = 64 << 10

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:      "doctor",
		Usage:     "find out why an API key does not work, and what to do",
		ArgsUsage: " ",
		Description: "Runs the checklist for \"API key not valid\", 401 and 403 errors: is the variable set (GEMINI_API_KEY,\n" +
			"then GOOGLE_API_KEY), does the value carry whitespace, quotes, a prefix, line breaks or invisible\n" +
			"characters, is it a standard (AIza…) or auth (AQ.…) key, which project and key it is, whether it was\n" +
			"deleted, whether its restrictions and binding allow the Gemini API, and what the Gemini API answers.\n" +
			"When both GEMINI_API_KEY and GOOGLE_API_KEY are set and differ, it says so: Google's Gen AI SDKs\n" +
			"(google-genai for Python, Go and JavaScript) use GOOGLE_API_KEY then.\n" +
			"Without Google credentials the key lookup is skipped; the other checks still run.\n" +
			"The key is read from a variable, a .env file or standard input, never from an argument, and never\n" +
			"printed: findings name characters by code point and position, keys by fingerprint.\n" +
			"Exit status: 0 healthy (the live probe ran and nothing failed), 1 a problem was found or the\n" +
			"checks are incomplete (the live probe could not run: the verdict says what was not checked),\n" +
			"2 bad usage.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "env", Usage: "read the key from environment variable `VAR` (default: GEMINI_API_KEY, else GOOGLE_API_KEY)"},
			&cli.StringFlag{Name: "dotenv", Usage: "read the key from the .env `FILE` (the variable as for --env) and compare it with the environment"},
			&cli.BoolFlag{Name: "stdin", Usage: "read the key from the first line of standard input"},
			&cli.StringFlag{Name: "project", Usage: "the `PROJECT` (id or number) the key should belong to"},
			&cli.StringFlag{Name: "probe", Value: config.DefaultProbe,
				Usage: "the live call: `CALL` countTokens (free), generateContent (billed, one token) or listModels (does not exercise generation)"},
			&cli.StringFlag{Name: "model", Usage: "the `MODEL` countTokens and generateContent name (default: " + verify.DefaultProbeModel + ")"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				// Never echo the argument: it is most likely a key.
				return errhint.With(usagef("doctor takes no arguments (%d given, not shown): "+
					"a key on the command line is visible to other users and stays in shell history", c.NArg()),
					"pass the key in a variable (--env VAR), a file (--dotenv FILE) or on standard input (--stdin < key.txt); "+
						"if that argument was a real key, remove it from your shell history")
			}
			if c.Bool("stdin") && (c.IsSet("env") || c.IsSet("dotenv")) {
				return usagef("--stdin cannot be combined with --env or --dotenv")
			}
			probe, err := probeFlags(c)
			if err != nil {
				return err
			}
			in := doctor.Input{Env: doctorLookupEnv, Var: c.String("env")}
			switch {
			case c.Bool("stdin"):
				v, err := readKeyLine(c.App.Reader)
				if err != nil {
					return err
				}
				in.Stdin, in.Value = true, v
			case c.IsSet("dotenv"):
				path := c.String("dotenv")
				b, _, err := inputfile.Read(path, inputfile.MaxSize)
				if err != nil {
					hint := "check the path given to --dotenv"
					if errors.Is(err, inputfile.ErrNotRegular) || errors.Is(err, inputfile.ErrTooLarge) {
						hint = "give --dotenv the .env file itself (a regular file, not a pipe or device), or pipe the key in with --stdin"
					}
					return errhint.With(usageError{fmt.Errorf("--dotenv: %w", err)}, hint)
				}
				in.DotEnv, in.DotEnvPath = b, path
			}
			return runDoctor(c, hostsFromEnv(), in, c.String("project"), probe)
		},
	}
}

// readKeyLine reads the first line of r without its line ending's LF; a CR
// before it stays, to be reported.
func readKeyLine(r io.Reader) (string, error) {
	if r == nil {
		r = os.Stdin
	}
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxStdinLine), 4096).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read standard input: %w", err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// probeFlags reads --probe and --model into the probe doctor makes.
func probeFlags(c *cli.Context) (*verify.Gemini, error) {
	probe, model := c.String("probe"), c.String("model")
	if msg, hint := config.CheckProbe(probe); msg != "" {
		return nil, errhint.With(usagef("--%s", msg), hint)
	}
	if model != "" {
		if msg, hint := config.CheckModel(model); msg != "" {
			return nil, errhint.With(usagef("--%s", msg), hint)
		}
		if probe == config.ProbeListModels {
			return nil, usagef("--model applies only to --probe countTokens or generateContent")
		}
	}
	return &verify.Gemini{BaseURL: verify.DefaultBaseURL, Method: verify.ProbeMethod(probe), Model: model}, nil
}

func runDoctor(c *cli.Context, h hosts, in doctor.Input, project string, probe *verify.Gemini) error {
	ctx, cancel := context.WithDeadline(c.Context, budgetOf(c).work)
	defer cancel()
	d := &doctor.Doctor{Project: project, Probe: probe}
	if h.gemini != "" {
		d.Probe.BaseURL = "http://" + h.gemini
	}
	qp := quotaProjectOf(c, nil)
	if keys, err := apikeys.NewService(ctx, restOptions(h.apiKeys, qp)...); err != nil {
		d.KeysErr = fmt.Errorf("no Google credentials: %w", err)
	} else if lookup, err := newLookupClient(ctx, h.apiKeys, quotaOptions(qp, h.apiKeys != "")...); err != nil {
		d.KeysErr = fmt.Errorf("no Google credentials: %w", err)
	} else {
		defer lookup.Close()
		d.Keys, d.Lookup = keys, lookup
	}

	rep := d.Check(ctx, in)
	adviseDoctor(rep)
	// A check that could not run because an emulator address refused
	// the connection names the variable to fix.
	for _, f := range rep.Findings {
		if f.Status != doctor.StatusSkip {
			continue
		}
		if eh := h.emulatorDownHint(errors.New(f.Message)); eh != "" {
			rep.Advise(f.ID, eh)
		}
	}
	p := newPrinter(c)
	if p.json {
		if err := p.jsonDoc(struct {
			Command string `json:"command"`
			*doctor.Report
		}{"doctor", rep}); err != nil {
			return err
		}
	} else {
		printDoctor(p.stdout, rep)
	}
	if rep.Healthy {
		return nil
	}
	next := rep.Summary.Next
	if next == "" {
		next = "see the findings above"
	}
	if rep.Incomplete {
		return errhint.With(fmt.Errorf("doctor could not finish its checks: %s", rep.Summary.Message), next)
	}
	return errhint.With(fmt.Errorf("doctor found a problem (%s): %s", rep.Summary.Cause, rep.Summary.Message), next)
}

// The keyrotate commands that fix doctor's findings: the doctor states the
// facts (a finding's Remedy, the probe's cause), the CLI names its own
// commands.
const (
	// A key Google suspended or reported as leaked.
	suspendedNext = "rotate it now: `keyrotate rotate --leaked < key.txt` (reads the key on stdin, replaces it in every target and deletes it); " +
		"then find where it leaked"
	leakedNext = "replace it now: `keyrotate rotate --leaked < key.txt` (reads the key on stdin, replaces it in every target and deletes it); " +
		"then find where it leaked"
	// A standard key, from its shape (migrateNext) or its metadata
	// (migrateKeyNext).
	migrateNext    = "migrate to an auth key: set service_account on the slot in keyrotate.yaml and run `keyrotate rotate --slot SLOT`"
	migrateKeyNext = "migrate to an auth key: set service_account (a service account of the key's project) on the slot in keyrotate.yaml and run " +
		"`keyrotate rotate --slot SLOT`; the org policy iam.managed.disableServiceAccountApiKeyCreation must allow bound keys"
)

// adviseDoctor puts the keyrotate command that fixes a finding into its
// fix and into the summary's next step.
func adviseDoctor(rep *doctor.Report) {
	for _, f := range rep.Findings {
		if fix := remedyFix(f); fix != "" {
			rep.Advise(f.ID, fix)
		}
	}
	if pe := rep.ProbeError; pe != nil {
		switch pe.Cause {
		case verify.CauseSuspended:
			rep.Advise(doctor.FindProbe, suspendedNext)
		case verify.CauseLeaked:
			rep.Advise(doctor.FindProbe, leakedNext)
		}
	}
}

// remedyFix words the remedy of f with keyrotate's commands, "" when f has
// none.
func remedyFix(f doctor.Finding) string {
	switch f.Remedy.Kind {
	case doctor.RemedyRotate:
		return f.Fix + ", or rotate: `keyrotate rotate --slot SLOT`"
	case doctor.RemedyMigrate:
		if f.Remedy.KeyRead {
			return migrateKeyNext
		}
		return migrateNext
	case doctor.RemedyStdin:
		return f.Fix + ", for example `keyrotate doctor --stdin < key.txt`"
	case doctor.RemedyCheckVar:
		return f.Fix + ", or check the key the SDKs use: `keyrotate doctor --env " + f.Remedy.Var + "`"
	}
	return ""
}

var statusMarks = map[doctor.Status]string{
	doctor.StatusOK:   "ok  ",
	doctor.StatusWarn: "WARN",
	doctor.StatusFail: "FAIL",
	doctor.StatusSkip: "skip",
}

func printDoctor(w io.Writer, r *doctor.Report) {
	head := "doctor: " + r.Source.String()
	if r.Fingerprint != "" {
		head += ", " + r.Fingerprint
		if r.CleanFingerprint != "" {
			head += " (without the junk: " + r.CleanFingerprint + ")"
		}
	}
	fmt.Fprintln(w, head)
	for _, f := range r.Findings {
		fmt.Fprintf(w, "  %s  %-19s %s\n", statusMarks[f.Status], f.ID, f.Message)
		if f.Fix != "" && f.Status != doctor.StatusOK {
			fmt.Fprintf(w, "        %-19s fix: %s\n", "", f.Fix)
		}
	}
	if r.Healthy {
		fmt.Fprintf(w, "summary: healthy: %s\n", r.Summary.Message)
	} else if r.Incomplete {
		fmt.Fprintf(w, "summary: incomplete: %s\n", r.Summary.Message)
	} else {
		fmt.Fprintf(w, "summary: %s: %s\n", r.Summary.Cause, r.Summary.Message)
	}
	if r.Summary.Next != "" {
		fmt.Fprintf(w, "next:    %s\n", r.Summary.Next)
	}
}
