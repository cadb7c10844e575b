package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/api/idtoken"

	"github.com/keyrotate/keyrotate/internal/subscribe"
)

// Metadata keys of serve for tests, set in Go code only: no flag, variable
// or config field reaches them.
const (
	// pushValidatorKey holds an *idtoken.Validator that trusts the test's
	// own signing keys, in place of Google's.
	pushValidatorKey = "test-push-validator"
	// serveReadyKey holds a func(addr string) called once serve listens.
	serveReadyKey = "test-serve-ready"
)

// shutdownGrace bounds how long serve waits, after SIGTERM, for running
// rotations to reach a safe point and answer. Cloud Run sends SIGKILL 10s
// after SIGTERM.
const shutdownGrace = 8 * time.Second

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "rotate slots when Secret Manager says they are due (Pub/Sub push subscription; Cloud Run service)",
		Description: "Serves a Pub/Sub push subscription on the topic of the slots' secrets: a SECRET_ROTATE message\n" +
			"for a slot's secret rotates that slot, as `rotate --now` does. Every push must carry the OIDC token\n" +
			"of --push-service-account for --audience; anything else is refused (401/403). Answers 204 when the\n" +
			"rotation finished, had nothing to do or cannot succeed on a retry (logged as an error), 503 when a\n" +
			"retry can help (stopped part-way, slot held): Pub/Sub then delivers the message again.\n" +
			"GET /healthz answers 200. On SIGTERM running rotations stop at a safe point and are delivered again.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "port", EnvVars: []string{"PORT"}, Value: "8080", Usage: "listen on `PORT` (Cloud Run sets PORT)"},
			&cli.StringFlag{Name: "audience", EnvVars: []string{"KEYROTATE_PUSH_AUDIENCE"},
				Usage: "the `AUDIENCE` of the push subscription's OIDC token (required; usually the service's URL)"},
			&cli.StringFlag{Name: "push-service-account", EnvVars: []string{"KEYROTATE_PUSH_SERVICE_ACCOUNT"},
				Usage: "the service account `EMAIL` the push subscription signs its tokens as (required)"},
			maxConcurrentFlag(),
		},
		Action: runServe,
	}
}

func runServe(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("serve takes no arguments (got %q)", c.Args().First())
	}
	aud, sa := c.String("audience"), c.String("push-service-account")
	if aud == "" || sa == "" {
		return usagef("serve needs --audience and --push-service-account: every push is checked against them")
	}
	var (
		auth *subscribe.Authenticator
		err  error
	)
	if v, ok := c.App.Metadata[pushValidatorKey].(*idtoken.Validator); ok {
		auth, err = subscribe.NewAuthenticatorWith(v, aud, sa)
	} else {
		auth, err = subscribe.NewAuthenticator(c.Context, aud, sa)
	}
	if err != nil {
		return err
	}
	s, err := newSubscriber(c)
	if err != nil {
		return err
	}
	defer s.close()
	ln, err := net.Listen("tcp", net.JoinHostPort("", c.String("port")))
	if err != nil {
		return usagef("listen on port %s: %v", c.String("port"), err)
	}
	// A running rotation ends with the command's context (SIGTERM): it
	// stops at a safe point and its push is answered 503. It does not end
	// when Pub/Sub stops waiting for the answer.
	ctx := c.Context
	srv := &http.Server{
		Handler:           &subscribe.Push{Handler: s.handler, Auth: auth, Log: s.log, Stop: ctx},
		ReadHeaderTimeout: 10 * time.Second,
	}
	s.log.Info("serving Pub/Sub push", "addr", ln.Addr().String(), "slots", len(s.slots))
	if ready, ok := c.App.Metadata[serveReadyKey].(func(string)); ok {
		ready(ln.Addr().String())
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	s.log.Warn("stopping: no new pushes; running rotations stop at a safe point and are delivered again")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
