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

	mu      sync.Mutex
	spinner *progressbar.ProgressBar
}

func newPrinter(c *cli.Context) *printer {
	return &printer{
		stdout: c.App.Writer,
		stderr: c.App.ErrWriter,
		json:   c.String("output") == "json",
		tty:    isTerminal(c.App.ErrWriter),
	}
}

// event prints a rotation step.
func (p *printer) event(ev rotate.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Wait != nil {
		p.wait(ev)
		return
	}
	if p.spinner != nil {
		_ = p.spinner.Finish()
		p.spinner = nil
	}
	if p.json {
		return
	}
	fmt.Fprintf(p.stdout, "%-12s %-10s %s\n", ev.Slot, ev.Step, ev.Message)
}

func (p *printer) wait(ev rotate.Event) {
	w := ev.Wait
	elapsed := time.Since(w.Started).Round(time.Second)
	left := time.Until(w.Deadline).Round(time.Second)
	desc := fmt.Sprintf("%s: waiting for %s to work (probe %d failed; deadline %s, in %s)", ev.Slot, shortName(w.Key), w.Attempt, w.Deadline.Local().Format("15:04:05"), left)
	if p.tty {
		if p.spinner == nil {
			p.spinner = progressbar.NewOptions(-1,
				progressbar.OptionSetWriter(p.stderr),
				progressbar.OptionSpinnerType(14),
				progressbar.OptionSetElapsedTime(true),
				progressbar.OptionClearOnFinish(),
				progressbar.OptionThrottle(100*time.Millisecond),
			)
		}
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

// note prints a remark for people (not in JSON output).
func (p *printer) note(format string, args ...any) {
	if p.json {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.stdout, format+"\n", args...)
}

// jsonDoc prints the one JSON document of a command.
func (p *printer) jsonDoc(v any) error {
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
