package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/verify"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "rotate a key end to end on the embedded emulator (nothing leaves this machine)",
		Description: "Starts the emulator in-process on a clock that runs --speed times faster than the wall clock,\n" +
			"writes a temporary keyrotate.yaml and .env, and starts a consumer no config names (a forgotten VM)\n" +
			"calling with the key. Runs plan, then rotate: the new key works and is in place, but the drain\n" +
			"gate keeps the old key, still in use, and names the caller. The VM moves to the new key, and\n" +
			"finalize deletes the old key once Cloud Monitoring shows it quiet.",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "propagation-delay", Usage: "how long the new key takes to work, in the demo's time", Value: 2 * time.Minute},
			&cli.IntFlag{Name: "speed", Usage: "how many times faster than the wall clock the demo's clock runs (1 to 10000)", Value: defaultDemoSpeed},
			&cli.BoolFlag{Name: "keep", Usage: "keep the temporary directory with the demo's keyrotate.yaml and .env (removed on exit otherwise)"},
		},
		Action: runDemo,
	}
}

// The demo's world runs on a fake.FastClock: a quiet period of ten
// minutes and Cloud Monitoring's delay of four take seconds.
const (
	defaultDemoSpeed = 240
	demoClockKey     = "demo-clock" // the clock in the App's Metadata
	// demoCallEvery is how often the forgotten VM calls, in demo time.
	demoCallEvery = time.Minute
	// demoDrainPoll is how often the demo's drain gate reads Monitoring:
	// every five minutes rather than every minute, for a shorter output.
	demoDrainPoll = 5 * time.Minute
)

// demoGate is the drain gate the demo's config sets: keyrotate's default
// quiet period, the emulator's Google-like Monitoring delay, a drain
// timeout that lets a caller that stops at once be seen quiet (quiet +
// delay), and a lease and propagation window in demo time.
var demoGate = seedGate{
	usageDelay: emulator.DefaultMonitoringDelay, quietPeriod: time.Duration(config.DefaultQuietPeriod),
	drainTimeout: 15 * time.Minute, leaseTTL: time.Hour, propagationTimeout: 30 * time.Minute,
}

// demoClockOf is the demo's clock, nil outside the demo.
func demoClockOf(c *cli.Context) *fake.FastClock {
	fc, _ := c.App.Metadata[demoClockKey].(*fake.FastClock)
	return fc
}

// onDemoClock makes r run on the demo's clock, if any: it reads the time
// from it and sleeps through it (its probe waits too, so its probe
// intervals are the defaults in the demo's time).
func onDemoClock(c *cli.Context, r *rotate.Rotator) {
	fc := demoClockOf(c)
	if fc == nil {
		return
	}
	r.Now, r.Sleep = fc.Now, fc.SleepUntil
	r.DrainPoll = demoDrainPoll
}

func runDemo(c *cli.Context) error {
	delay, err := durationFlag(c, "propagation-delay", true)
	if err != nil {
		return err
	}
	speed := c.Int("speed")
	if speed < 1 || speed > 10000 {
		return usagef("--speed must be from 1 to 10000, not %d", speed)
	}
	clock := fake.NewFastClock(time.Now(), speed)
	c.App.Metadata[demoClockKey] = clock
	defer delete(c.App.Metadata, demoClockKey)
	srv, err := emulator.Start(emulator.Options{Clock: clock, PropagationDelay: delay, MonitoringDelay: demoGate.usageDelay})
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
	gate := demoGate
	w, err := seedDemoWith(srv, dir, &gate)
	if err != nil {
		return err
	}
	h := hosts{apiKeys: srv.APIKeysAddr, secretManager: srv.SecretManagerAddr, gemini: srv.GeminiAddr, monitoring: srv.MonitoringAddr}
	say := func(format string, args ...any) { fmt.Fprintf(c.App.Writer, format+"\n", args...) }
	wait := func(d time.Duration, why string) error {
		say("(%s: waiting %s of demo time, %s of real time)", why, shortDur(d), clock.Real(d).Round(10*time.Millisecond))
		return clock.Sleep(c.Context, d)
	}
	before, err := os.ReadFile(w.dotenv)
	if err != nil {
		return err
	}
	say("keyrotate demo: the emulator serves the API Keys, Secret Manager, Gemini and Cloud Monitoring APIs on loopback.")
	say("  clock    the demo's clock runs %d× faster than the wall clock: a minute passes in %s", speed, clock.Real(time.Minute))
	say("  key      %s  %s (bound to %s)", w.key.Fingerprint(), w.keyName, demoSA)
	say("  secret   projects/%s/secrets/%s", demoProject, demoSecretID)
	say("  config   %s", w.config)
	say("  .env     %s", w.dotenv)
	say("  gate     delete the old key once Cloud Monitoring shows it quiet for %s (quiet_period), waiting at most %s (drain_timeout);",
		shortDur(gate.quietPeriod), shortDur(gate.drainTimeout))
	say("           Monitoring reports calls %s late (usage_delay)", shortDur(gate.usageDelay))
	if c.Bool("keep") {
		say("  (kept in %s after the demo: --keep)", dir)
	} else {
		say("  (%s is removed when the demo ends: `keyrotate demo --keep` keeps it)", dir)
	}
	vm := srv.StartConsumer(w.key, clock.Real(demoCallEvery), emulator.ConsumeGenerate)
	say("")
	say("A forgotten VM that no config names calls %s with the key every %s (consumer %s, key %s).",
		vm.Call, shortDur(demoCallEvery), vm.ID, vm.Fingerprint)
	if err := wait(gate.usageDelay+2*time.Minute, "Cloud Monitoring reports its calls late"); err != nil {
		return err
	}
	say("")
	say("$ keyrotate plan")
	if err := runPlan(c, h, w.config, nil, rotate.Options{}); err != nil {
		return err
	}
	say("$ keyrotate rotate --now   (new keys take %s to work here; up to 10 minutes on Google)", shortDur(delay))
	// The rotation keeps the old key, in use: exit 5, "needs attention",
	// which a scheduler alerts on. The demo says so and goes on.
	if err := runRotate(c, h, w.config, nil, rotate.Options{Force: true}, fleetOptions{parallel: 1}); exitCode(err) != exitAttention {
		if err == nil {
			err = fmt.Errorf("demo: rotate deleted old key %s while the forgotten VM still called with it", w.keyName)
		}
		return err
	} else {
		say("")
		report(c.App.Writer, err)
		say("(keyrotate rotate exits %d: rotated, but an old key is kept in use and needs attention; a scheduler alerts on it)", exitAttention)
	}
	after, err := os.ReadFile(w.dotenv)
	if err != nil {
		return err
	}
	newKey := secret.New(envValue(after, "GEMINI_API_KEY"))
	say("")
	say("What changed in %s (values shown as fingerprints):", w.dotenv)
	for _, d := range lineDiff(before, after) {
		say("  %s", d)
	}
	say("")
	say("The old key is kept: deleting it would have broken the forgotten VM. Its owner moves it to the new key:")
	vm.Stop()
	ok, failed, _ := vm.Calls()
	vm2 := srv.StartConsumer(newKey, clock.Real(demoCallEvery), emulator.ConsumeGenerate)
	say("  consumer %s stopped after %d call(s) with the old key (%d failed); consumer %s calls with the new key %s every %s",
		vm.ID, ok, failed, vm2.ID, vm2.Fingerprint, shortDur(demoCallEvery))
	say("")
	say("$ keyrotate finalize   (at once: the old key's last calls are too recent)")
	if err := runFinalizeOn(c, h, w.config, nil, rotate.FinalizeOptions{}); err != nil {
		return err
	}
	if k, _ := srv.Key(w.keyName); k == nil || k.DeleteTime != "" {
		return fmt.Errorf("demo: finalize deleted old key %s before it was quiet", w.keyName)
	}
	say("")
	// Monitoring counts per minute: the old key's last point ends up to a
	// minute after its last call, and the gate wants it quiet_period
	// before the settled time (usage_delay ago); a minute more of margin.
	if err := wait(gate.quietPeriod+gate.usageDelay+2*time.Minute, "the old key must be quiet for the quiet period in data Monitoring has settled"); err != nil {
		return err
	}
	say("")
	say("$ keyrotate finalize")
	if err := runFinalizeOn(c, h, w.config, nil, rotate.FinalizeOptions{}); err != nil {
		return err
	}
	if err := demoEnd(c, srv, w.key, newKey); err != nil {
		return err
	}
	vm2.Stop()
	ok, failed, _ = vm2.Calls()
	say("  the VM, on the new key: %d call(s), %d failed", ok, failed)
	if c.Bool("keep") {
		say("\nThe demo files are kept in %s.", dir)
	}
	return nil
}

// demoEnd probes both keys live and says what it found: the old key must
// be refused, the new one work.
func demoEnd(c *cli.Context, srv *emulator.Server, oldKey, newKey secret.Key) error {
	probe := &verify.Gemini{BaseURL: "http://" + srv.GeminiAddr}
	oldErr := probe.Probe(c.Context, oldKey)
	newErr := probe.Probe(c.Context, newKey)
	say := func(format string, args ...any) { fmt.Fprintf(c.App.Writer, format+"\n", args...) }
	say("")
	say("Live check on the Gemini emulator:")
	say("  old key %s: %s", oldKey.Fingerprint(), verdict(oldErr))
	say("  new key %s: %s", newKey.Fingerprint(), verdict(newErr))
	if oldErr == nil || newErr != nil {
		return fmt.Errorf("demo: the rotation did not end as it should (old key works: %t, new key works: %t)", oldErr == nil, newErr == nil)
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
