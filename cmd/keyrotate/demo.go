package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/verify"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "rotate a key end to end on the embedded emulator (nothing leaves this machine)",
		Description: "Starts the emulator in-process, writes a temporary keyrotate.yaml and .env, runs plan, then\n" +
			"rotate with a visible propagation delay, and shows the before and after fingerprints.",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "propagation-delay", Usage: "how long the new key takes to work", Value: 4 * time.Second},
			&cli.BoolFlag{Name: "keep", Usage: "keep the temporary directory with the demo's keyrotate.yaml and .env (removed on exit otherwise)"},
		},
		Action: runDemo,
	}
}

func runDemo(c *cli.Context) error {
	delay, err := durationFlag(c, "propagation-delay", true)
	if err != nil {
		return err
	}
	srv, err := emulator.Start(emulator.Options{PropagationDelay: delay})
	if err != nil {
		return err
	}
	defer srv.Close()
	dir, err := os.MkdirTemp("", "keyrotate-demo-")
	if err != nil {
		return err
	}
	if !c.Bool("keep") {
		defer os.RemoveAll(dir)
	}
	w, err := seedDemo(srv, dir)
	if err != nil {
		return err
	}
	h := hosts{apiKeys: srv.APIKeysAddr, secretManager: srv.SecretManagerAddr, gemini: srv.GeminiAddr, monitoring: srv.MonitoringAddr}
	say := func(format string, args ...any) { fmt.Fprintf(c.App.Writer, format+"\n", args...) }
	before, err := os.ReadFile(w.dotenv)
	if err != nil {
		return err
	}
	say("keyrotate demo: the emulator serves the API Keys, Secret Manager and Gemini APIs on loopback.")
	say("  key      %s  %s (bound to %s)", w.key.Fingerprint(), w.keyName, demoSA)
	say("  secret   projects/%s/secrets/%s", demoProject, demoSecretID)
	say("  config   %s", w.config)
	say("  .env     %s", w.dotenv)
	if c.Bool("keep") {
		say("  (kept in %s after the demo: --keep)", dir)
	} else {
		say("  (%s is removed when the demo ends: `keyrotate demo --keep` keeps it)", dir)
	}
	say("")
	say("$ keyrotate plan")
	if err := runPlan(c, h, w.config, nil, rotate.Options{}); err != nil {
		return err
	}
	say("$ keyrotate rotate --now   (new keys take %s to work here; up to 10 minutes on Google)", delay)
	if err := runRotate(c, h, w.config, nil, rotate.Options{Force: true}, fleetOptions{parallel: 1}); err != nil {
		return err
	}
	after, err := os.ReadFile(w.dotenv)
	if err != nil {
		return err
	}
	say("")
	say("What changed in %s (values shown as fingerprints):", w.dotenv)
	for _, d := range lineDiff(before, after) {
		say("  %s", d)
	}
	probe := &verify.Gemini{BaseURL: "http://" + srv.GeminiAddr}
	oldErr := probe.Probe(c.Context, w.key)
	newKey := secret.New(envValue(after, "GEMINI_API_KEY"))
	newErr := probe.Probe(c.Context, newKey)
	say("")
	say("Live check on the Gemini emulator:")
	say("  old key %s: %s", w.key.Fingerprint(), verdict(oldErr))
	say("  new key %s: %s", newKey.Fingerprint(), verdict(newErr))
	if oldErr == nil || newErr != nil {
		return fmt.Errorf("demo: the rotation did not end as it should (old key works: %t, new key works: %t)", oldErr == nil, newErr == nil)
	}
	if c.Bool("keep") {
		say("\nThe demo files are kept in %s.", dir)
	}
	return nil
}

func verdict(err error) string {
	if err == nil {
		return "works"
	}
	return "rejected (" + err.Error() + ")"
}

// lineDiff lists the lines that differ, with every value of an assignment
// replaced by its fingerprint.
func lineDiff(before, after []byte) []string {
	a, b := strings.Split(string(before), "\n"), strings.Split(string(after), "\n")
	var out []string
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d: - %s", i+1, masked(x)), fmt.Sprintf("line %d: + %s", i+1, masked(y)))
		}
	}
	if len(out) == 0 {
		out = append(out, "(no change)")
	}
	return out
}

func masked(line string) string {
	i := strings.IndexByte(line, '=')
	if i < 0 {
		return line
	}
	v := strings.Trim(strings.TrimSpace(line[i+1:]), `"'`)
	return line[:i+1] + "<" + secret.Fingerprint(v) + ">"
}

func envValue(data []byte, name string) string {
	for _, line := range bytes.Split(data, []byte("\n")) {
		l := strings.TrimPrefix(strings.TrimSpace(string(line)), "export ")
		if v, ok := strings.CutPrefix(l, name+"="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}
