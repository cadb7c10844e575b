package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/emulator"
)

func emulatorCommand() *cli.Command {
	return &cli.Command{
		Name:  "emulator",
		Usage: "run the API Keys, Secret Manager and Gemini emulator on loopback",
		Description: "Prints the *_EMULATOR_HOST exports to point keyrotate (or anything using Google's\n" +
			"clients) at it, then serves until interrupted. --seed DIR adds a demo project, key and\n" +
			"secret and writes DIR/keyrotate.yaml and DIR/app/.env to try keyrotate by hand.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "apikeys-addr", Value: "127.0.0.1:0", Usage: "listen `ADDR` of the API Keys REST API"},
			&cli.StringFlag{Name: "secretmanager-addr", Value: "127.0.0.1:0", Usage: "listen `ADDR` of the Secret Manager gRPC API"},
			&cli.StringFlag{Name: "gemini-addr", Value: "127.0.0.1:0", Usage: "listen `ADDR` of the Gemini REST API"},
			&cli.StringFlag{Name: "run-addr", Value: "127.0.0.1:0", Usage: "listen `ADDR` of the Cloud Run Admin API v2 (gRPC)"},
			&cli.DurationFlag{Name: "propagation-delay", Usage: "how long a new key takes to work at Gemini"},
			&cli.StringFlag{Name: "seed", Usage: "seed a demo project and write a config into `DIR`"},
		},
		Action: func(c *cli.Context) error {
			srv, err := emulator.StartOn(c.String("apikeys-addr"), c.String("secretmanager-addr"), c.String("gemini-addr"),
				emulator.Options{PropagationDelay: c.Duration("propagation-delay"), RunAddr: c.String("run-addr")})
			if err != nil {
				return err
			}
			defer srv.Close()
			for _, e := range srv.Env() {
				fmt.Fprintf(c.App.Writer, "export %s\n", e)
			}
			if dir := c.String("seed"); dir != "" {
				w, err := seedDemo(srv, dir)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "# seeded project %s (%d), key %s, secret projects/%s/secrets/%s\n",
					demoProject, demoProjectNumber, w.keyName, demoProject, demoSecretID)
				fmt.Fprintf(c.App.Writer, "# try: keyrotate --config %s plan\n", w.config)
			}
			fmt.Fprintf(c.App.ErrWriter, "keyrotate: emulator serving; interrupt to stop\n")
			<-c.Context.Done()
			time.Sleep(10 * time.Millisecond)
			return nil
		},
	}
}
