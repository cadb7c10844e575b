package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/rotate"
)

func planCommand() *cli.Command {
	return &cli.Command{
		Name:  "plan",
		Usage: "show what rotate would do, without changing anything",
		Description: "Runs the read-only preflight: resolves each slot's current key, secret and targets,\n" +
			"reports drift and due dates, and lists the steps rotate would take. It writes nothing.\n" +
			"\n" +
			"It also proves, with read-only calls, that the caller holds what the rotation needs:\n" +
			"the IAM permissions on each slot's project and secret, the API Keys and Secret Manager\n" +
			"APIs enabled, and the service account new keys are bound to. Each thing missing is one\n" +
			"line with the role and the command that grants it, and plan exits 1.\n" +
			"\n" +
			"It says what rotate does with the old key (retire: quiet, grace or now, and the policy when\n" +
			"Cloud Monitoring cannot answer). With retire: quiet it checks that the drain gate may read\n" +
			"Cloud Monitoring (monitoring.timeSeries.list, the API enabled): missing, usage: required\n" +
			"fails like the checks above, and best-effort warns that it falls back to the grace period.",
		Flags: append([]cli.Flag{
			slotFlag("show the plan for only"),
			&cli.BoolFlag{Name: "now", Usage: "plan as if rotating even keys that are not due"},
			&cli.BoolFlag{Name: "again", Usage: "with --now, plan as rotate --again would do"},
			&cli.StringFlag{Name: "grace", Usage: "plan as if keeping the old key this `DURATION` instead of the config's grace"},
			&cli.StringFlag{Name: "retire", Usage: "plan as rotate --retire `MODE` would do: quiet, grace or now"},
		}, shardFlags()...),
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("plan takes no arguments (got %q); use --slot", c.Args().First())
			}
			opts, err := rotateOptions(c)
			if err != nil {
				return err
			}
			return runPlan(c, hostsFromEnv(), c.String("config"), c.StringSlice("slot"), opts)
		},
	}
}

type planOutput struct {
	Command string         `json:"command"`
	Plans   []*rotate.Plan `json:"plans"`
	Errors  []errorJSON    `json:"errors,omitempty"`
}

func runPlan(c *cli.Context, h hosts, cfgPath string, slots []string, opts rotate.Options) error {
	return runPerSlot(c, h, cfgPath, slots, "plan", func(j *job, r *rotate.Rotator, s *rotate.Slot) (*rotate.Plan, error) {
		return planSlot(j, r, s, opts)
	}, func(plans []*rotate.Plan, errs []errorJSON) any {
		return planOutput{Command: "plan", Plans: plans, Errors: errs}
	})
}

// planSlot plans one slot and prints the plan. A plan whose preflight
// failed for want of access still says which checks failed.
func planSlot(j *job, r *rotate.Rotator, s *rotate.Slot, opts rotate.Options) (*rotate.Plan, error) {
	p, err := r.Plan(j.ctx, s, opts)
	var ae *rotate.AccessError
	if errors.As(err, &ae) {
		// The preflight failed; the checks say what is missing.
		if !j.out.json {
			j.out.note("slot %s", s.Name)
			printChecks(j.out, ae.Plan)
			j.out.note("")
		}
		return ae.Plan, err
	}
	if err != nil {
		return nil, err
	}
	if !j.out.json {
		printPlan(j.out, p)
	}
	// A plan whose checks failed is a rotation that would fail.
	return p, p.AccessErr()
}

func printPlan(o *printer, p *rotate.Plan) {
	k := p.Current
	o.note("slot %s", p.Slot)
	o.note("  secret       %s (latest: %s)", p.Secret, orNone(p.Version))
	o.note("  current key  %s  %s", k.Fingerprint, k.Name)
	if k.DisplayName != "" {
		o.note("  display name %q", k.DisplayName)
	}
	bind := k.Type
	if k.ServiceAccount != "" {
		bind += ", bound to " + k.ServiceAccount
	}
	o.note("  type         %s", bind)
	if len(k.Restrictions) > 0 {
		o.note("  restrictions %s", strings.Join(k.Restrictions, "; "))
	} else {
		o.note("  restrictions none")
	}
	if !k.Created.IsZero() {
		due := "not due"
		if p.Due {
			due = "DUE"
		}
		o.note("  created      %s (age %s); %s, due at %s", k.Created.Format(time.RFC3339), age(o.now(), k.Created), due, p.DueAt.Format(time.RFC3339))
	}
	switch {
	case p.UsageUnknown != "":
		o.note("  usage        unknown: %s", p.UsageUnknown)
	case k.Usage != nil:
		o.note("  usage        %s", usageLine(k.Usage))
	}
	if p.Retire != nil {
		o.note("  retire       %s", p.Retire.Summary)
	}
	for _, t := range p.Targets {
		mark := "ok   "
		if t.Holds == "other key" {
			mark = "DRIFT"
		}
		o.note("  target %s %s  %s (holds the %s)", mark, t.Fingerprint, t.Target, t.Holds)
	}
	printChecks(o, p)
	switch {
	case p.Skip != "":
		o.note("  rotate would do nothing: %s; %s", p.Blocked, skipHint(p.Skip))
	case p.Blocked != "":
		o.note("  rotate would refuse: %s", p.Blocked)
	default:
		o.note("  rotate would:")
		for i, a := range p.Actions {
			o.note("    %d. %s", i+1, a)
		}
	}
	o.note("")
}

// printChecks prints what plan proved about the caller's access: one line
// per check that failed or could not be made, else that all passed.
func printChecks(o *printer, p *rotate.Plan) {
	if len(p.Checks) == 0 {
		return
	}
	bad := 0
	for _, c := range p.Checks {
		switch c.Status {
		case rotate.CheckFail:
			bad++
			o.note("  access FAIL  %s", c)
		case rotate.CheckWarn:
			bad++
			o.note("  access WARN  %s", c)
		}
	}
	if bad == 0 {
		o.note("  access       all %d checks pass (IAM permissions on the project and the secret, APIs enabled, bound service account)", len(p.Checks))
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func age(now, t time.Time) string {
	d := now.Sub(t)
	if d >= 48*time.Hour {
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	return d.Round(time.Second).String()
}
