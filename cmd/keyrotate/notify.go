package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/keyrotate/keyrotate/rotate"
)

// checkWebhookURL refuses a webhook URL that cannot work, without
// repeating it: a webhook URL (a Slack one, say) is a secret.
func checkWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return usagef("--notify-webhook (or %s) must be an http(s) URL", notifyWebhookEnv)
	}
	return nil
}

// webhookMessage is what keyrotate posts: Slack's incoming-webhook fields
// (text, blocks), which other receivers can show as they are, and the run
// summary as data under "keyrotate" for receivers that parse it.
type webhookMessage struct {
	Text      string         `json:"text"`
	Blocks    []slackBlock   `json:"blocks,omitempty"`
	Keyrotate webhookSummary `json:"keyrotate"`
}

type slackBlock struct {
	Type string     `json:"type"`
	Text *slackText `json:"text,omitempty"`
}

type slackText struct {
	Type string `json:"type"` // mrkdwn
	Text string `json:"text"`
}

type webhookSummary struct {
	Run      string          `json:"run"`
	Command  string          `json:"command"`
	Host     string          `json:"host"`
	Shard    string          `json:"shard,omitempty"`
	ExitCode int             `json:"exit_code"`
	Seconds  float64         `json:"seconds"`
	Summary  runSummary      `json:"summary"`
	Error    string          `json:"error,omitempty"`
	Hint     string          `json:"hint,omitempty"`
	Failed   []webhookFailed `json:"failed,omitempty"`
	Rotated  []webhookKey    `json:"rotated,omitempty"`
	// Leak is the leaked key of rotate --leaked and its traffic.
	Leak *rotate.Leak `json:"leak,omitempty"`
}

type webhookFailed struct {
	Slot     string `json:"slot"`
	Error    string `json:"error"`
	Hint     string `json:"hint,omitempty"`
	ExitCode int    `json:"exit_code"`
}

type webhookKey struct {
	Slot   string        `json:"slot"`
	NewKey rotate.KeyRef `json:"new_key"`
}

// maxListed bounds the slots a message names, so that a fleet-wide failure
// makes a readable message.
const maxListed = 20

func newWebhookMessage(r *runRecord) webhookMessage {
	s := webhookSummary{Run: r.Run, Command: r.Command, Host: r.Host, Shard: r.Shard, ExitCode: r.ExitCode,
		Seconds: r.Seconds, Summary: r.Summary, Error: r.Error, Hint: r.Hint, Leak: r.Leak}
	for _, sl := range r.Slots {
		switch {
		case sl.Action == "failed" && len(s.Failed) < maxListed:
			s.Failed = append(s.Failed, webhookFailed{Slot: sl.Slot, Error: firstLine(sl.Error), Hint: sl.Hint, ExitCode: sl.ExitCode})
		case (sl.Action == "rotated" || sl.Action == "resumed") && sl.NewKey != nil && len(s.Rotated) < maxListed:
			s.Rotated = append(s.Rotated, webhookKey{Slot: sl.Slot, NewKey: *sl.NewKey})
		}
	}
	where := r.Host
	if r.Shard != "" {
		where += ", shard " + r.Shard
	}
	sum := r.Summary
	head := fmt.Sprintf("keyrotate %s %s (run %s on %s): %d slots, %d rotated, %d nothing to do, %d failed; exit %d",
		r.Command, outcomeWord(r.ExitCode), r.Run, where, sum.Slots, sum.Rotated, sum.NotDue, sum.Failed, r.ExitCode)
	var b strings.Builder
	b.WriteString(head)
	if l := r.Leak; l != nil {
		fmt.Fprintf(&b, "\nleaked key %s %s", l.Fingerprint, l.Key)
		if l.Slot != "" {
			fmt.Fprintf(&b, " (%s key of slot %s)", l.Role, l.Slot)
		}
		for _, line := range trafficLines(l) {
			fmt.Fprintf(&b, "\n%s", line)
		}
	}
	if len(s.Failed) == 0 && r.Error != "" {
		fmt.Fprintf(&b, "\n%s", firstLine(r.Error))
		if r.Hint != "" {
			fmt.Fprintf(&b, "\nhint: %s", r.Hint)
		}
	}
	for _, f := range s.Failed {
		fmt.Fprintf(&b, "\n• %s: %s", f.Slot, f.Error)
		if f.Hint != "" {
			fmt.Fprintf(&b, " (hint: %s)", f.Hint)
		}
	}
	if n := sum.Failed - len(s.Failed); n > 0 {
		fmt.Fprintf(&b, "\n… and %d more; see the run record", n)
	}
	return webhookMessage{
		Text:      b.String(),
		Blocks:    []slackBlock{{Type: "section", Text: &slackText{Type: "mrkdwn", Text: b.String()}}},
		Keyrotate: s,
	}
}

func outcomeWord(code int) string {
	switch code {
	case exitOK:
		return "succeeded"
	case exitPartWay:
		return "stopped part-way (safe; the next run resumes)"
	default:
		return "FAILED"
	}
}

// notify posts the run's summary to the webhook: up to 4 attempts over
// about 10 seconds for 429, 5xx and lost connections, within ctx (which
// must not be the run's, for the report of a run that was stopped is the
// one most worth sending). Errors never repeat the URL, which is a secret.
func notify(ctx context.Context, webhook string, r *runRecord) error {
	body, err := json.Marshal(newWebhookMessage(r))
	if err != nil {
		return err
	}
	post := func() (struct{}, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, webhook, bytes.NewReader(body))
		if err != nil {
			return struct{}{}, backoff.Permanent(errors.New("bad webhook URL"))
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Timeout: 10 * time.Second, CheckRedirect: sameOrigin}).Do(req)
		var cross crossOriginError
		if errors.As(err, &cross) {
			return struct{}{}, backoff.Permanent(cross)
		}
		if err != nil {
			return struct{}{}, hideURL(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		switch {
		case resp.StatusCode < 300:
			return struct{}{}, nil
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			return struct{}{}, fmt.Errorf("webhook answered %s", resp.Status)
		default:
			return struct{}{}, backoff.Permanent(fmt.Errorf("webhook answered %s", resp.Status))
		}
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 500 * time.Millisecond
	_, err = backoff.Retry(ctx, post, backoff.WithBackOff(b), backoff.WithMaxTries(4))
	return err
}

// crossOriginError: the webhook redirected to another origin. The summary
// is not re-posted there: a receiver that moved would not move to a host
// its owner did not name, and whoever answers the redirect would otherwise
// choose where the run's summary goes.
type crossOriginError struct{ to string }

func (e crossOriginError) Error() string {
	return fmt.Sprintf("it redirected to another origin (%s), which keyrotate does not follow: "+
		"the summary was not sent; if the receiver moved, give its new URL", e.to)
}

// sameOrigin is the webhook client's CheckRedirect: it follows redirects
// only within the first request's origin (scheme, host and port), at most
// 10 of them. It names the other origin, never a path (a webhook URL
// carries its credential in the path).
func sameOrigin(req *http.Request, via []*http.Request) error {
	if o, first := origin(req.URL), origin(via[0].URL); o != first {
		return crossOriginError{to: o}
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

// origin is u's scheme://host:port, the port made explicit.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// hideURL drops the URL from a transport error: net/http quotes it, and a
// webhook URL carries its credential in the path.
func hideURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s webhook: %w", strings.ToLower(ue.Op), ue.Err)
	}
	return err
}

func isInProgress(err error) bool { return errors.Is(err, rotate.ErrRotationInProgress) }
