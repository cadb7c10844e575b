package main

import (
	"fmt"
	"regexp"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/subscribe"
)

// subscriptionName is a pull subscription's full resource name.
var subscriptionName = regexp.MustCompile(`^projects/([^/]+)/subscriptions/([^/]+)$`)

func listenCommand() *cli.Command {
	return &cli.Command{
		Name:  "listen",
		Usage: "rotate slots when Secret Manager says they are due (Pub/Sub pull subscription; GKE or a VM)",
		Description: "Pulls the subscription's messages: a SECRET_ROTATE message for a slot's secret rotates that slot,\n" +
			"as `rotate --now` does. A message is acknowledged when its rotation finished, had nothing to do or\n" +
			"cannot succeed on a retry (logged as an error), and nacked when a retry can help (stopped part-way,\n" +
			"slot held), so that Pub/Sub delivers it again. Its deadline is extended while the rotation runs\n" +
			"(up to propagation_timeout + drain_timeout + lease_ttl). PUBSUB_EMULATOR_HOST is honoured.\n" +
			"On SIGTERM running rotations stop at a safe point and their messages are nacked.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "subscription", Usage: "the pull subscription, `projects/P/subscriptions/S`"},
			maxConcurrentFlag(),
		},
		Action: runListen,
	}
}

func runListen(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("listen takes no arguments (got %q)", c.Args().First())
	}
	name := c.String("subscription")
	m := subscriptionName.FindStringSubmatch(name)
	if m == nil {
		return usagef("--subscription must be a full name, projects/P/subscriptions/S (got %q)", name)
	}
	s, err := newSubscriber(c)
	if err != nil {
		return err
	}
	defer s.close()
	// The client honours PUBSUB_EMULATOR_HOST (plain text, no credentials).
	client, err := pubsub.NewClient(c.Context, m[1])
	if err != nil {
		return credentialsError("Pub/Sub", err)
	}
	defer client.Close()
	sub := client.Subscriber(name)
	sub.ReceiveSettings.MaxOutstandingMessages = c.Int("max-concurrent")
	sub.ReceiveSettings.NumGoroutines = 1
	// Keep extending a message's deadline while its rotation may still
	// run: past that Pub/Sub would deliver it again beside the running one
	// (harmless — the lease refuses it — but noisy).
	sub.ReceiveSettings.MaxExtension = s.budget + time.Minute
	sub.ReceiveSettings.ShutdownOptions = &pubsub.ShutdownOptions{
		Behavior: pubsub.ShutdownBehaviorWaitForProcessing, Timeout: shutdownGrace,
	}
	s.log.Info("listening to Pub/Sub", "subscription", name, "slots", len(s.slots), "max_extension", sub.ReceiveSettings.MaxExtension.String())
	if err := subscribe.Receive(c.Context, sub, s.handler); err != nil && c.Context.Err() == nil {
		return errhint.With(fmt.Errorf("receive from %s: %w", name, err),
			"check that the subscription exists (`gcloud pubsub subscriptions describe "+name+"`) and that keyrotate's account has roles/pubsub.subscriber on it")
	}
	return nil
}
