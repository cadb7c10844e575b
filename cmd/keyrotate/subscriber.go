package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/subscribe"
	"github.com/keyrotate/keyrotate/rotate"
)

// What serve and listen share: the config's slots, loaded once, and one
// handler that rotates a slot when Secret Manager says it is due
// (internal/subscribe). Each rotation is rotate's: a forced run
// (SECRET_ROTATE means "rotate now") that the event's time makes
// idempotent (rotate.Options.RequestedAt), under the slot's lease.

// maxConcurrentFlag limits the rotations a server runs at once.
func maxConcurrentFlag() cli.Flag {
	return &cli.IntFlag{Name: "max-concurrent", Value: 4,
		Usage: "rotate at most `N` slots at once; further messages are delivered again later"}
}

// subscriber is a server's job: its slots, its rotator and the handler.
type subscriber struct {
	j       *job
	r       *rotate.Rotator
	slots   map[string]*rotate.Slot
	handler *subscribe.Handler
	log     *slog.Logger
	// budget is the longest a rotation is expected to take: what a pull
	// subscription extends a message's deadline to.
	budget time.Duration
}

// newSubscriber loads the config and builds the handler. The job has no
// deadline: the server runs until stopped, and each rotation ends with its
// message's context.
func newSubscriber(c *cli.Context) (*subscriber, error) {
	n := c.Int("max-concurrent")
	if n < 1 {
		return nil, usagef("--max-concurrent must be at least 1, not %d", n)
	}
	j, err := openJob(c, hostsFromEnv(), c.String("config"), nil, false)
	if err != nil {
		return nil, err
	}
	log := newLogger(c)
	r := j.rotator(c)
	r.RunID = ""          // a fresh rotation id per rotation: one id would make every rotation's key id the same
	r.Events = nil        // the rotator logs each step itself; a server has no terminal to show them on
	r.Retry.OnRetry = nil // no terminal to show retries on
	s := &subscriber{j: j, r: r, slots: map[string]*rotate.Slot{}, log: log}
	bySecret := map[string]string{}
	for _, sl := range j.slots {
		s.slots[sl.Name] = sl
		bySecret[sl.Secret] = sl.Name
		s.budget = max(s.budget, rotationBudget(sl))
	}
	s.aliases(bySecret)
	s.handler = subscribe.NewHandler(bySecret, n, s.rotate, log)
	return s, nil
}

// aliases adds to bySecret the name Secret Manager gives each slot's
// secret when it differs from the configured one: a notification's
// secretId is the name as Secret Manager writes it, which may carry the
// project number where the config has the project id. A secret that
// cannot be read now is left to its rotation's preflight to report.
func (s *subscriber) aliases(bySecret map[string]string) {
	for _, sl := range s.j.slots {
		sm := &gcp.Secrets{Client: s.j.clients.secretsFor(sl.Secret), Retry: s.r.Retry}
		sec, err := sm.Get(s.j.ctx, sl.Secret)
		if err != nil {
			s.log.Warn("could not read the slot's secret; its notifications match only the configured name",
				"slot", sl.Name, "secret", sl.Secret, "error", err.Error())
			continue
		}
		if sec.GetName() != "" && sec.GetName() != sl.Secret {
			bySecret[sec.GetName()] = sl.Name
		}
	}
}

// rotationBudget is how long a rotation of slot may take: the wait for its
// new key to work, the wait for the old key's traffic to drain, and a
// lease TTL for everything else.
func rotationBudget(slot *rotate.Slot) time.Duration {
	return slot.PropagationTimeout + slot.DrainTimeout + slot.LeaseTTL
}

// rotate is the handler's RotateFunc: the slot's rotation as `rotate --now`
// does it, asked for at requested.
func (s *subscriber) rotate(ctx context.Context, name string, requested time.Time) (*rotate.Result, error) {
	slot, ok := s.slots[name]
	if !ok {
		return nil, fmt.Errorf("no slot %s: %w", name, rotate.ErrBadConfig)
	}
	if err := s.j.cleanTemp(ctx); err != nil {
		return nil, err
	}
	res, err := s.r.Rotate(ctx, slot, rotate.Options{Force: true, RequestedAt: requested})
	if err != nil {
		err = rotateHeldHint(err, name)
	}
	return res, err
}

func (s *subscriber) close() { s.j.close() }
