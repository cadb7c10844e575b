package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/rotate"
)

// How a keyrotate process stops. Every step of a rotation is resumable, so
// the state is safe wherever the process ends; what stopping well adds is
// a released lease (the next run on another host need not wait for it to
// expire) and a report.
//
//   - The first SIGINT or SIGTERM ends the run's context: the running steps
//     stop, each slot releases its lease within the cleanup's share of the
//     time, and stderr says what the process waits for.
//   - A second signal ends the process at once, exit 4.
//   - --timeout bounds the whole process, from its start: the steps get what
//     is left after the shares of the cleanup and of the webhook post, and
//     at the deadline the process ends whatever it is doing, exit 4.

// process is the life of the keyrotate process: its signals and its
// deadline. main makes one; an app run in-process (tests) has none, and
// nothing then ends the process.
type process struct {
	started time.Time
	stderr  io.Writer
	exit    func(int)

	mu       sync.Mutex
	logger   *slog.Logger // set when logs are JSON
	signals  int
	ended    bool          // main is reporting the run, or the process is ending
	timeout  time.Duration // --timeout, once a run armed the deadline
	deadline *time.Timer
	// atEnd, when set, also reports an end (the JSON document of
	// --output json: args.go).
	atEnd func(why, hint string)
}

// processKey holds the process in the App's Metadata.
const processKey = "process"

func newProcess(stderr io.Writer, exit func(int)) *process {
	return &process{started: time.Now(), stderr: stderr, exit: exit}
}

func processOf(c *cli.Context) *process {
	p, _ := c.App.Metadata[processKey].(*process)
	return p
}

// listen returns a context that the first SIGINT or SIGTERM ends; the
// second ends the process.
func (p *process) listen(parent context.Context) context.Context {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		for sig := range ch {
			p.signal(sig, cancel)
		}
	}()
	return ctx
}

// stopAtOnce is what the process says after a first signal.
const stopAtOnce = "press Ctrl-C again to stop at once; the state is safe"

func (p *process) signal(sig os.Signal, cancel context.CancelCauseFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	p.signals++
	if p.signals == 1 {
		cancel(fmt.Errorf("interrupted by %s: %w", signalName(sig), context.Canceled))
		if p.timeout > 0 {
			p.say(slog.LevelWarn, fmt.Sprintf("stopping on %s: waiting for the running steps to stop and their leases to be released (%s)",
				signalName(sig), stopAtOnce), "")
		}
		return
	}
	p.end(fmt.Sprintf("stopped at once on a second signal (%s)", signalName(sig)))
}

func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok && s == syscall.SIGTERM {
		return "SIGTERM"
	}
	return "SIGINT"
}

// arm starts the process's deadline: timeout from its start. Only the
// first call counts.
func (p *process) arm(timeout time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.timeout > 0 || p.ended {
		return
	}
	p.timeout = timeout
	p.deadline = time.AfterFunc(time.Until(p.started.Add(timeout)), func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.ended {
			p.end(fmt.Sprintf("--timeout %s reached; stopped at once", p.timeout))
		}
	})
}

// end reports why the process ends before its run did, and ends it: exit
// 4, for every step is resumable. Call with p.mu held.
func (p *process) end(why string) {
	p.ended = true
	hint := ""
	if p.timeout > 0 { // a run was under way
		hint = "the state is safe: every target holds a working key. Run the same command again to resume " +
			"(a lease left behind is taken over at once on this host, elsewhere when it expires), or `keyrotate abort SLOT` to undo a rotation it started"
	}
	p.say(slog.LevelError, why, hint)
	if p.atEnd != nil {
		p.atEnd(why, hint)
	}
	p.exit(exitPartWay)
}

// finish marks the run over: main reports it, and neither a signal nor
// the deadline ends the process any more.
func (p *process) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended = true
	if p.deadline != nil {
		p.deadline.Stop()
	}
}

// events wraps a rotator's event sink: once the process was signalled, it
// says on stderr what each stopped slot's cleanup waits for.
func (p *process) events(next func(rotate.Event)) func(rotate.Event) {
	if p == nil {
		return next
	}
	return func(ev rotate.Event) {
		if ev.Step == rotate.StepStop {
			p.mu.Lock()
			if p.signals > 0 && !p.ended {
				p.say(slog.LevelWarn, fmt.Sprintf("stopping: %s of slot %s (%s)", ev.Message, ev.Slot, stopAtOnce), "")
			}
			p.mu.Unlock()
		}
		if next != nil {
			next(ev)
		}
	}
}

func (p *process) setLogger(l *slog.Logger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logger = l
}

// say writes a line for people, or a log entry when logs are JSON. Call
// with p.mu held.
func (p *process) say(level slog.Level, msg, hint string) {
	if p.logger != nil {
		args := []any{}
		if hint != "" {
			args = append(args, "hint", hint)
		}
		p.logger.Log(context.Background(), level, msg, args...)
		return
	}
	prefix := "keyrotate: "
	if level >= slog.LevelError {
		prefix += "error: "
	}
	fmt.Fprintf(p.stderr, "%s%s\n", prefix, msg)
	if hint != "" {
		fmt.Fprintf(p.stderr, "keyrotate: hint: %s\n", hint)
	}
}

// budget is how a run spends its --timeout, counted from the process's
// start: the steps until work; then the cleanup of a run that stopped
// (releasing leases), at most cleanup, and done by work + cleanup however
// late a step noticed work (the run's context has work as its deadline,
// and rotate ends a cleanup at the latest CleanupTimeout past it); then the
// webhook post, at most notify; then the report, in the margin before the
// deadline, where the process ends whatever it is doing.
type budget struct {
	deadline time.Time
	work     time.Time
	cleanup  time.Duration
	notify   time.Duration
}

// Shares of the budget: the cleanup and the webhook post each get a fifth
// of the timeout, the report a tenth, at most these.
const (
	maxCleanupShare = rotate.DefaultCleanupTimeout
	maxNotifyShare  = 10 * time.Second
	maxMargin       = time.Second
)

func newBudget(start time.Time, timeout time.Duration, webhook bool) budget {
	b := budget{deadline: start.Add(timeout), cleanup: min(maxCleanupShare, timeout/5)}
	if webhook {
		b.notify = min(maxNotifyShare, timeout/5)
	}
	b.work = b.deadline.Add(-min(maxMargin, timeout/10) - b.cleanup - b.notify)
	return b
}

// budgetOf is the budget of the command of c, and arms the process's
// deadline.
func budgetOf(c *cli.Context) budget {
	p := processOf(c)
	start := time.Now()
	if p != nil {
		start = p.started
		p.arm(c.Duration("timeout"))
	}
	return newBudget(start, c.Duration("timeout"), hasFlag(c, "notify-webhook") && c.String("notify-webhook") != "")
}

// notifyContext is the context of the webhook post: not ended by the
// run's end (a stopped run's report is the one most worth sending), but by
// its share of the time, within the deadline.
func (b budget) notifyContext(parent context.Context) (context.Context, context.CancelFunc) {
	end := time.Now().Add(b.notify)
	if last := b.deadline.Add(-min(maxMargin, b.deadline.Sub(b.work)/2)); end.After(last) {
		end = last
	}
	return context.WithDeadline(context.WithoutCancel(parent), end)
}
