package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// printer writes what people read: step lines and reports as text on
// stdout, or one JSON document at the end with --output json. While a new
// key propagates, a terminal shows a spinner on stderr (what it waits for,
// elapsed, deadline); anything else gets a line per probe.
type printer struct {
	stdout, stderr io.Writer
	json           bool
	tty            bool

	sink *jsonSink // nil: print at once

	// clock is the run's clock when not the wall clock's (the demo's):
	// what elapsed times and ages are measured against (now).
	clock func() time.Time

	mu      sync.Mutex
	spinner *progressbar.ProgressBar
	ended   map[string]bool // slots whose "done" step line was printed
}

func newPrinter(c *cli.Context) *printer {
	p := &printer{
		stdout: c.App.Writer,
		stderr: c.App.ErrWriter,
		json:   c.String("output") == "json",
		tty:    isTerminal(c.App.ErrWriter),
		ended:  map[string]bool{},
		sink:   sinkOf(c),
	}
	if fc := demoClockOf(c); fc != nil {
		p.clock = fc.Now
	}
	return p
}

func sinkOf(c *cli.Context) *jsonSink {
	s, _ := c.App.Metadata[jsonSinkKey].(*jsonSink)
	return s
}

// event prints a rotation step.
func (p *printer) event(ev rotate.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Wait != nil {
		p.wait(ev)
		return
	}
	if ev.Drain != nil && p.tty {
		// The drain gate's polls: one line, updated in place.
		p.spin()
		p.spinner.Describe(ev.Slot + ": " + ev.Message)
		_ = p.spinner.Add(1)
		return
	}
	if p.spinner != nil {
		_ = p.spinner.Finish()
		p.spinner = nil
	}
	if p.json {
		return
	}
	if ev.Step == rotate.StepDone {
		p.ended[ev.Slot] = true
	}
	msg := ev.Message
	switch ev.Then.Action {
	case rotate.NextFinalize:
		msg += "; `keyrotate finalize` deletes it then"
	case rotate.NextFinalizeWhenQuiet:
		msg += "; " + nextHint(ev.Then)
	}
	fmt.Fprintf(p.stdout, "%-12s %-10s %s\n", ev.Slot, ev.Step, msg)
}

// now is the time on the run's clock.
func (p *printer) now() time.Time {
	if p.clock != nil {
		return p.clock()
	}
	return time.Now()
}

// saidDone reports whether slot's "done" step line was printed (then a
// "nothing to do" result is not printed again).
func (p *printer) saidDone(slot string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ended[slot]
}

func (p *printer) wait(ev rotate.Event) {
	w := ev.Wait
	now := p.now()
	elapsed := now.Sub(w.Started).Round(time.Second)
	left := w.Deadline.Sub(now).Round(time.Second)
	desc := fmt.Sprintf("%s: waiting for %s to work (probe %d failed; deadline %s, in %s)",
		ev.Slot, shortName(w.Key), w.Attempt, w.Deadline.Local().Format("15:04:05"), left)
	if p.tty {
		p.spin()
		p.spinner.Describe(desc)
		_ = p.spinner.Add(1)
		return
	}
	if p.json {
		return
	}
	fmt.Fprintf(p.stdout, "%-12s %-10s waiting for the new key to work: probe %d failed (%s), %s elapsed, deadline %s\n",
		ev.Slot, ev.Step, w.Attempt, firstLine(w.Last), elapsed, w.Deadline.Format(time.RFC3339))
}

// spin starts the spinner on stderr if it is not running. p.mu is held.
func (p *printer) spin() {
	if p.spinner == nil {
		p.spinner = progressbar.NewOptions(-1,
			progressbar.OptionSetWriter(p.stderr),
			progressbar.OptionSpinnerType(14),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond),
		)
	}
}

// retrying shows, on a terminal, that a call is being retried: the
// spinner line says "retrying …" until the next step. Elsewhere the log
// has a line per retry (gcp.RetryPolicy).
func (p *printer) retrying(r gcp.Retrying) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spin()
	p.spinner.Describe(retryingLine(r))
	_ = p.spinner.Add(1)
}

// retryingLine is the progress line of a retried call.
func retryingLine(r gcp.Retrying) string {
	return fmt.Sprintf("retrying %s %s: attempt %d failed (%s); next in %s, retrying for %s",
		r.Call, r.Resource, r.Attempt, firstLine(r.Err.Error()), r.Wait.Round(100*time.Millisecond), r.Elapsed.Round(time.Second))
}

// note prints a remark for people (not in JSON output).
func (p *printer) note(format string, args ...any) {
	if p.json {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.stdout, format+"\n", args...)
}

// jsonDoc prints the one JSON document of a command; in a run of main,
// at the run's end with its outcome (flushJSON).
func (p *printer) jsonDoc(v any) error {
	if p.sink != nil {
		return p.sink.set(v)
	}
	enc := json.NewEncoder(p.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func shortName(name string) string {
	if i := strings.Index(name, "/keys/"); i >= 0 {
		return "key " + name[i+len("/keys/"):]
	}
	return name
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// errorJSON is how an error appears in JSON output.
type errorJSON struct {
	Slot  string `json:"slot,omitempty"`
	Error string `json:"error"`
	Hint  string `json:"hint,omitempty"`
	Exit  int    `json:"exit_code"`
}

func toErrorJSON(slot string, err error) errorJSON {
	return errorJSON{Slot: slot, Error: err.Error(), Hint: hintOf(err), Exit: exitCode(err)}
}

// progress is the display of a multi-slot run on a terminal: a bar on
// stderr with slots done of total, failures, and the slots in flight with
// their current step; each slot's result is printed above it as it ends. A
// nil *progress (not a terminal, JSON output, or one slot) shows nothing:
// those runs print a plain line per step instead.
type progress struct {
	p     *printer
	total int

	mu       sync.Mutex
	bar      *progressbar.ProgressBar
	ended    int
	failed   int
	inflight map[string]string // slot -> step
	order    []string          // in-flight slots, oldest first
}

func newProgress(p *printer, total int) *progress {
	if !p.tty || p.json || total < 2 {
		return nil
	}
	g := &progress{p: p, total: total, inflight: map[string]string{}}
	g.bar = progressbar.NewOptions(total,
		progressbar.OptionSetWriter(p.stderr),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetWidth(20),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond),
	)
	g.describe()
	return g
}

func (g *progress) start(slot string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight[slot] = string(rotate.StepPreflight)
	g.order = append(g.order, slot)
	g.describe()
}

// event notes a slot's step (it replaces the per-step lines).
func (g *progress) event(ev rotate.Event) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.inflight[ev.Slot]; !ok {
		return
	}
	step := string(ev.Step)
	if ev.Wait != nil {
		step = fmt.Sprintf("propagating %s", time.Since(ev.Wait.Started).Round(time.Second))
	}
	g.inflight[ev.Slot] = step
	g.describe()
}

// retrying shows a retried call on the bar until the next step.
func (g *progress) retrying(r gcp.Retrying) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.bar.Describe(retryingLine(r))
}

func (g *progress) done(o rotate.Outcome) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.inflight, o.Slot.Name)
	for i, s := range g.order {
		if s == o.Slot.Name {
			g.order = append(g.order[:i], g.order[i+1:]...)
			break
		}
	}
	g.ended++
	if o.Err != nil {
		g.failed++
		g.aboveLocked(func() {
			fmt.Fprintf(g.p.stdout, "%s: FAILED: %s\n", o.Slot.Name, firstLine(o.Err.Error()))
		})
	}
	g.describe()
	_ = g.bar.Set(g.ended)
}

// above prints with the bar out of the way. Without a bar it just prints.
func (g *progress) above(print func()) {
	if g == nil {
		print()
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.aboveLocked(print)
}

func (g *progress) aboveLocked(print func()) {
	_ = g.bar.Clear()
	print()
	_ = g.bar.RenderBlank()
}

func (g *progress) describe() {
	const shown = 3
	var b strings.Builder
	fmt.Fprintf(&b, "rotating: %d failed", g.failed)
	if len(g.order) > 0 {
		b.WriteString(" · ")
		for i, s := range g.order {
			if i == shown {
				fmt.Fprintf(&b, " +%d more", len(g.order)-shown)
				break
			}
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s (%s)", s, g.inflight[s])
		}
	}
	g.bar.Describe(b.String())
}

func (g *progress) finish() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	_ = g.bar.Finish()
}
