package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// readKey reads one key string from stdin: without echo on a terminal,
// else its first line. Keys never come from arguments, where ps and shell
// history would keep them.
func readKey(c *cli.Context) (secret.Key, error) {
	var raw string
	if f, ok := c.App.Reader.(*os.File); ok && isTTY(f) {
		fmt.Fprint(c.App.ErrWriter, "Paste the leaked key (it is not echoed): ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.App.ErrWriter)
		if err != nil {
			return secret.Key{}, fmt.Errorf("read the key from the terminal: %w", err)
		}
		raw = string(b)
	} else {
		line, err := bufio.NewReader(io.LimitReader(c.App.Reader, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return secret.Key{}, fmt.Errorf("read the key from stdin: %w", err)
		}
		raw = line
	}
	key := secret.New(strings.Trim(strings.TrimSpace(raw), `"'`))
	if key.IsZero() {
		return secret.Key{}, errhint.With(usagef("--leaked reads the key string from stdin, and stdin was empty"),
			"pipe it in: `keyrotate rotate --leaked < leaked.txt` (never as an argument)")
	}
	return key, nil
}

type leakOutput struct {
	Command  string               `json:"command"`
	Response *rotate.LeakResponse `json:"response,omitempty"`
	Errors   []errorJSON          `json:"errors,omitempty"`
}

// runLeaked is `rotate --leaked`: find the leaked key among the slots and
// take it out of service; --report and the webhook carry the response.
func runLeaked(c *cli.Context) error {
	fo, err := fleetOptionsFrom(c)
	if err != nil {
		return err
	}
	key, err := readKey(c)
	if err != nil {
		return err
	}
	rec := newRunRecord(c, "rotate --leaked", c.String("config"))
	b := budgetOf(c)
	err = respondToLeak(c, key, rec)
	rec.finish(err)
	deliver(c, b, rec, fo)
	return err
}

func respondToLeak(c *cli.Context, key secret.Key, rec *runRecord) error {
	j, err := newJob(c, hostsFromEnv(), c.String("config"), nil)
	if err != nil {
		return err
	}
	defer j.close()
	rec.start(j)
	rec.Summary.Slots = 0 // the leak's slot, once known
	if err := j.cleanTemp(c.Context); err != nil {
		return err
	}
	r := j.rotator(c)
	leak, err := r.FindLeak(j.ctx, key, j.slots)
	if err != nil {
		return err
	}
	rec.Leak = leak
	printLeak(j.out, leak)
	var slot *rotate.Slot
	for _, s := range j.slots {
		if s.Name == leak.Slot {
			slot = s
		}
	}
	started := time.Now()
	resp, err := r.RespondToLeak(j.ctx, leak, slot)
	if slot != nil {
		rec.Summary.Slots = 1
		if err != nil || resp.Rotation != nil {
			rec.add(rotate.Outcome{Slot: slot, Result: resp.Rotation, Err: err, Started: started, Finished: time.Now()})
		}
		if resp != nil && resp.Finalized != nil {
			rec.Summary.Finalized += len(resp.Finalized.Keys)
		}
	}
	if err == nil && slot == nil && !leak.Deleted {
		err = errhint.With(fmt.Errorf("leaked key %s (%s) belongs to no configured slot; nothing was changed", leak.Key, leak.Project),
			fmt.Sprintf("delete it with `keyrotate revoke --key %s` once nothing depends on it", leak.Key))
	}
	if j.out.json {
		out := leakOutput{Command: "rotate --leaked", Response: resp}
		if err != nil {
			out.Errors = append(out.Errors, toErrorJSON(leak.Slot, err))
		}
		return errors.Join(j.out.jsonDoc(out), err)
	}
	if resp != nil && resp.Rotation != nil {
		printResult(j.out, resp.Rotation)
	}
	if resp != nil && resp.Finalized != nil {
		for _, k := range resp.Finalized.Keys {
			j.out.note("%s", finalizedLine(resp.Finalized.Slot, k, ""))
		}
	}
	if err == nil && leak.Deleted && resp.Rotation == nil {
		j.out.note("the leaked key is already deleted and no configured place holds it: nothing to do")
	}
	return err
}

func printLeak(p *printer, l *rotate.Leak) {
	state := "live"
	if l.Deleted {
		state = "deleted"
	}
	p.note("leaked key %s  %s (%s, %s)", l.Fingerprint, l.Key, l.Project, state)
	switch l.Role {
	case "current":
		p.note("  the current key of slot %s: rotating it at once, without grace", l.Slot)
	case "old":
		extra := ""
		if l.DeleteAfter != nil {
			extra = ", kept for grace until " + l.DeleteAfter.Format(time.RFC3339)
		}
		p.note("  an old key of slot %s%s: deleting it at once", l.Slot, extra)
	default:
		p.note("  no configured slot uses it")
	}
	for _, h := range l.HeldBy {
		p.note("  held by  %s", h)
	}
	for _, line := range trafficLines(l) {
		p.note("  %s", line)
	}
}

// trafficMethods is how many methods the traffic of a leaked key names;
// --output json lists them all.
const trafficMethods = 10

// trafficLines says who still called with a leaked key before it was
// deleted (what breaks with it), one line per service and method; none
// without a Monitoring client.
func trafficLines(l *rotate.Leak) []string {
	t := l.Traffic
	switch {
	case l.UsageUnknown != "":
		return []string{"traffic  unknown, going on without it: " + l.UsageUnknown}
	case t == nil:
		return nil
	case t.LastDay.Total() == 0:
		return []string{fmt.Sprintf("traffic  none in the last 24 hours (Cloud Monitoring, as of %s; calls of the last few minutes are not counted yet)",
			t.AsOf.Format(time.RFC3339))}
	}
	what := "that breaks with it"
	if l.Deleted {
		what = "still calling it"
	}
	out := []string{fmt.Sprintf("traffic  %s: %s (Cloud Monitoring, as of %s; calls of the last few minutes are not counted yet)",
		what, trafficString(t.AsOf, t.TrafficCounts), t.AsOf.Format(time.RFC3339))}
	for i, m := range t.ByMethod {
		if i == trafficMethods {
			out = append(out, fmt.Sprintf("  and %d more methods (--output json lists them all)", len(t.ByMethod)-trafficMethods))
			break
		}
		out = append(out, fmt.Sprintf("  %s %s: %s", shortService(m.Service), shortMethod(m.Method), trafficString(t.AsOf, m.TrafficCounts)))
	}
	return out
}

// trafficString is e.g. "0.6/min over the last hour (peak 30/min), 30 ok +
// 6 failed; 24h: 34 ok + 6 failed; last seen 5m ago".
func trafficString(asOf time.Time, c rotate.TrafficCounts) string {
	var b strings.Builder
	if c.LastHour.Total() == 0 {
		b.WriteString("none in the last hour")
	} else {
		fmt.Fprintf(&b, "%s/min over the last hour (peak %d/min), %s", strconv.FormatFloat(c.PerMinute, 'f', -1, 64),
			c.PeakPerMinute, requestsString(c.LastHour))
	}
	fmt.Fprintf(&b, "; 24h: %s", requestsString(c.LastDay))
	if !c.LastSeen.IsZero() {
		ago := "under a minute"
		if d := asOf.Sub(c.LastSeen).Truncate(time.Minute); d > 0 {
			ago = strings.TrimSuffix(d.String(), "0s")
		}
		fmt.Fprintf(&b, "; last seen %s ago", ago)
	}
	return b.String()
}

func revokeCommand() *cli.Command {
	return &cli.Command{
		Name:  "revoke",
		Usage: "delete one API key (after confirmation)",
		Description: "Deletes the key named by --key (a soft delete: `gcloud services api-keys undelete` restores it\n" +
			"for 30 days). It refuses the current key of a configured slot: rotate that instead. It asks for\n" +
			"the key id on a terminal; scripts pass --yes.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "key", Usage: "the key to delete: projects/P/locations/global/keys/`KEY`", Required: true},
			&cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"},
		},
		Action: runRevoke,
	}
}

func runRevoke(c *cli.Context) error {
	name := c.String("key")
	if p := strings.Split(name, "/"); len(p) != 6 || p[0] != "projects" || p[2] != "locations" || p[4] != "keys" {
		return usagef("--key %q is not a key name: write projects/PROJECT/locations/global/keys/KEY", name)
	}
	slots, closer, r, err := revokeSetup(c)
	if err != nil {
		return err
	}
	defer closer()
	if !c.Bool("yes") {
		f, ok := c.App.Reader.(*os.File)
		if !ok || !isTTY(f) {
			return errhint.With(usagef("revoke asks for confirmation and stdin is not a terminal"), "pass --yes in scripts")
		}
		id := name[strings.LastIndex(name, "/")+1:]
		fmt.Fprintf(c.App.ErrWriter, "Delete key %s? Type its id (%s) to confirm: ", name, id)
		line, _ := bufio.NewReader(f).ReadString('\n')
		if strings.TrimSpace(line) != id {
			return fmt.Errorf("not confirmed: nothing was deleted")
		}
	}
	ctx := c.Context
	info, err := r.Revoke(ctx, name, slots)
	if err != nil {
		return err
	}
	p := newPrinter(c)
	if p.json {
		return p.jsonDoc(map[string]any{"command": "revoke", "key": info.KeyInfo, "already_deleted": info.AlreadyDeleted})
	}
	if info.AlreadyDeleted {
		p.note("key %s was already deleted at %s: nothing was changed", info.Name, orUnknownTime(info.DeletedAt))
		p.note("  restorable with `gcloud services api-keys undelete %s` until %s", info.Name, orUnknownTime(info.RestorableUntil))
		return nil
	}
	p.note("deleted key %s (soft delete: restorable for 30 days)", info.Name)
	return nil
}

// revokeSetup loads the config when there is one (to refuse a slot's
// current key) and builds the clients.
func revokeSetup(c *cli.Context) ([]*rotate.Slot, func(), *rotate.Rotator, error) {
	path := c.String("config")
	if _, err := os.Stat(path); err != nil && !c.IsSet("config") && os.Getenv("KEYROTATE_CONFIG") == "" {
		cl, err := newClients(c.Context, hostsFromEnv(), nil, quotaProjectOf(c, nil))
		if err != nil {
			return nil, nil, nil, err
		}
		r := &rotate.Rotator{Keys: cl.keys, Lookup: cl.lookup, Secrets: cl.secrets, QuotaProject: quotaProjectOf(c, nil),
			Log: newLogger(c), Events: newPrinter(c).event, RunID: runID(c)}
		return nil, cl.Close, r, nil
	} else if err != nil {
		return nil, nil, nil, usageError{fmt.Errorf("config %s: %w", path, err)}
	}
	j, err := newJob(c, hostsFromEnv(), path, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	return j.slots, j.close, j.rotator(c), nil
}

func orUnknownTime(t time.Time) string {
	if t.IsZero() {
		return "an unknown time"
	}
	return t.Format(time.RFC3339)
}
