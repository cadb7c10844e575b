package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/errhint"
)

func emulatorCommand() *cli.Command {
	return &cli.Command{
		Name:  "emulator",
		Usage: "run the API Keys, Secret Manager and Gemini emulator on loopback",
		Description: "Prints the *_EMULATOR_HOST exports to point keyrotate (or anything using Google's\n" +
			"clients) at it, then serves until interrupted. --seed DIR adds a demo project, key and\n" +
			"secret and writes DIR/keyrotate.yaml and DIR/app/.env to try keyrotate by hand; --consumer\n" +
			"INTERVAL adds a consumer nobody configured that keeps calling Gemini with the seeded key.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "apikeys-addr", Value: "127.0.0.1:0", Usage: "listen `ADDR` of the API Keys API (REST, and gRPC for LookupKey)"},
			&cli.StringFlag{Name: "secretmanager-addr", Value: "127.0.0.1:0", Usage: "listen `ADDR` of the Secret Manager gRPC API"},
			&cli.StringFlag{Name: "gemini-addr", Value: "127.0.0.1:0", Usage: "listen `ADDR` of the Gemini REST API"},
			&cli.StringFlag{Name: "run-addr", Value: "127.0.0.1:0", Usage: "listen `ADDR` of the Cloud Run Admin API v2 (gRPC)"},
			&cli.StringFlag{Name: "monitoring-addr", Value: "127.0.0.1:0", Usage: "listen `ADDR` of Cloud Monitoring (gRPC)"},
			&cli.DurationFlag{Name: "propagation-delay", Usage: "how long a new key takes to work at Gemini"},
			&cli.DurationFlag{Name: "monitoring-delay", Usage: "how long after a Gemini call Cloud Monitoring shows it " +
				"(0: at once; Google's is minutes); --seed writes it as the config's usage_delay"},
			&cli.DurationFlag{Name: "consumer", Usage: "with --seed, start a consumer nobody configured that calls Gemini with the seeded key " +
				"every `INTERVAL` (the key a rotation retires); the output says how to stop it", DefaultText: "none"},
			&cli.StringFlag{Name: "seed", Usage: "seed a demo project and write a config into `DIR` " +
				"(DIR/keyrotate.yaml and DIR/app/.env; existing files are refused without --force)"},
			&cli.BoolFlag{Name: "force", Usage: "with --seed, overwrite DIR/keyrotate.yaml and DIR/app/.env if they exist"},
			&cli.StringFlag{Name: "fleet", Usage: "with --seed, also seed `PROJECTSxSLOTS` more slots (e.g. 4x25) to try --parallel and --shard"},
			&cli.BoolFlag{Name: "quotas", Value: true, Usage: "enforce Google's documented per-project quotas " +
				"(API Keys: 120 writes, 240 reads; Secret Manager: 600 each, per window)"},
			&cli.DurationFlag{Name: "quota-window", Value: time.Minute, Usage: "the quotas' `INTERVAL` (shorter scales time: 1s makes them per second)"},
		},
		Action: runEmulator,
	}
}

func runEmulator(c *cli.Context) error {
	projects, slots, err := fleetFlag(c)
	if err != nil {
		return err
	}
	if c.IsSet("consumer") && c.String("seed") == "" {
		return usagef("--consumer calls with the seeded key: add --seed DIR")
	}
	if dir := c.String("seed"); dir != "" && !c.Bool("force") {
		if err := refuseOverwrite(seedFiles(dir)); err != nil {
			return err
		}
	}
	opts, err := emulatorOptions(c)
	if err != nil {
		return err
	}
	srv, err := emulator.Start(opts)
	if err != nil {
		return err
	}
	defer srv.Close()
	for _, e := range srv.Env() {
		fmt.Fprintf(c.App.Writer, "export %s\n", e)
	}
	if dir := c.String("seed"); dir != "" {
		if err := seedEmulator(c, srv, dir, projects, slots); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.App.ErrWriter, "keyrotate: emulator serving; interrupt to stop\n")
	<-c.Context.Done()
	time.Sleep(10 * time.Millisecond)
	return nil
}

// fleetFlag reads --fleet PROJECTSxSLOTS (0, 0 when unset).
func fleetFlag(c *cli.Context) (projects, slots int, err error) {
	f := c.String("fleet")
	if f == "" {
		return 0, 0, nil
	}
	if _, err := fmt.Sscanf(f, "%dx%d", &projects, &slots); err != nil || projects < 1 || slots < 1 || projects*slots > 10000 ||
		fmt.Sprintf("%dx%d", projects, slots) != f {
		return 0, 0, usagef("--fleet must be PROJECTSxSLOTS, e.g. 4x25 (at most 10000 slots), not %q", f)
	}
	if c.String("seed") == "" {
		return 0, 0, usagef("--fleet seeds slots into the config of --seed DIR: add --seed")
	}
	return projects, slots, nil
}

// emulatorOptions are the emulator's options from the command's flags.
func emulatorOptions(c *cli.Context) (emulator.Options, error) {
	window, err := durationFlag(c, "quota-window", false)
	if err != nil {
		return emulator.Options{}, err
	}
	delay, err := durationFlag(c, "propagation-delay", true)
	if err != nil {
		return emulator.Options{}, err
	}
	monDelay, err := durationFlag(c, "monitoring-delay", true)
	if err != nil {
		return emulator.Options{}, err
	}
	opts := emulator.Options{
		PropagationDelay:  delay,
		MonitoringDelay:   monDelay,
		APIKeysAddr:       c.String("apikeys-addr"),
		SecretManagerAddr: c.String("secretmanager-addr"),
		GeminiAddr:        c.String("gemini-addr"),
		RunAddr:           c.String("run-addr"),
		MonitoringAddr:    c.String("monitoring-addr"),
	}
	if c.Bool("quotas") {
		opts.Quotas, opts.QuotaWindow = emulator.DocumentedQuotas, window
	}
	return opts, nil
}

// seedEmulator seeds the demo world (and with --fleet the fleet's slots)
// into srv and dir, and says what it wrote.
func seedEmulator(c *cli.Context, srv *emulator.Server, dir string, projects, slots int) error {
	gate := emulatorGate(srv)
	w, err := seedDemoWith(srv, dir, &gate)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "# seeded project %s (%d), key %s, secret projects/%s/secrets/%s\n",
		demoProject, demoProjectNumber, w.keyName, demoProject, demoSecretID)
	fmt.Fprintf(c.App.Writer, "# wrote %s and %s\n", w.config, w.dotenv)
	fmt.Fprintf(c.App.Writer, "# the config's drain gate: quiet_period %s, drain_timeout %s, usage_delay %s (this emulator's --monitoring-delay)\n",
		shortDur(gate.quietPeriod), shortDur(gate.drainTimeout), shortDur(gate.usageDelay))
	if c.IsSet("consumer") {
		if err := startSeededConsumer(c, srv, w); err != nil {
			return err
		}
	}
	if projects > 0 {
		if _, err := seedFleet(srv, w, projects, slots); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "# seeded %d fleet slots in %d projects (fleet-p00...); try: keyrotate --config %s rotate --now --parallel 20\n",
			projects*slots, projects, w.config)
	}
	fmt.Fprintf(c.App.Writer, "# try: keyrotate --config %s plan\n", w.config)
	return nil
}

// emulatorGate is the drain gate a config seeded for `keyrotate emulator`
// sets: Monitoring's delay as the emulator's, and a quiet period and
// drain timeout short enough that a rotation by hand ends in a few minutes
// (keyrotate's defaults are 10m and 1h).
func emulatorGate(srv *emulator.Server) seedGate {
	return seedGate{usageDelay: srv.MonitoringDelay(), quietPeriod: time.Minute, drainTimeout: 3 * time.Minute}
}

// startSeededConsumer starts --consumer: a consumer nobody configured,
// calling with the seeded key, and says how to stop it and start others
// (the emulator's admin endpoint, consumer.go). It names the key, never
// its string.
func startSeededConsumer(c *cli.Context, srv *emulator.Server, w *seeded) error {
	every, err := durationFlag(c, "consumer", false)
	if err != nil {
		return err
	}
	if every < emulator.MinConsumerEvery || every > emulator.MaxConsumerEvery {
		return usagef("--consumer must be from %s to %s, not %s", emulator.MinConsumerEvery, emulator.MaxConsumerEvery, every)
	}
	cons, err := srv.StartConsumerFor(w.keyName, every, emulator.ConsumeGenerate)
	if err != nil {
		return fmt.Errorf("start the consumer: %w", err)
	}
	admin := "http://" + srv.GeminiAddr + emulator.ConsumerAdminPath
	out := c.App.Writer
	fmt.Fprintf(out, "# consumer %s (configured nowhere) calls %s every %s with key %s (%s): the key a rotation retires\n",
		cons.ID, cons.Call, every, cons.Key, cons.Fingerprint)
	fmt.Fprintf(out, "#   stop it:    curl -X DELETE %s/%s\n", admin, cons.ID)
	fmt.Fprintf(out, "#   move it to the new key (its name from rotate or status):\n")
	fmt.Fprintf(out, "#               curl -d '{\"key\": \"KEY_NAME\", \"every\": \"%s\"}' %s\n", every, admin)
	fmt.Fprintf(out, "#   list them:  curl %s\n", admin)
	return nil
}

// refuseOverwrite refuses to write over files that exist: --seed writes a
// config and a .env, and a user's own must not be replaced without a word.
func refuseOverwrite(files []string) error {
	var exist []string
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			exist = append(exist, f)
		}
	}
	if len(exist) == 0 {
		return nil
	}
	return errhint.With(usagef("--seed would overwrite %s (it writes %s)", strings.Join(exist, " and "), strings.Join(files, " and ")),
		"nothing was written; pass an empty or new directory to --seed, or add --force to overwrite")
}
