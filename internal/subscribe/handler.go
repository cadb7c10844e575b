// Package subscribe makes rotations of Secret Manager's rotation
// notifications: a secret with a rotation schedule and Pub/Sub topics gets
// a SECRET_ROTATE message when it is due, and Secret Manager leaves acting
// on it to a subscriber. Handler decides what one message asks for and
// whether Pub/Sub should deliver it again; Push serves it to a push
// subscription (HTTP, every request authenticated with the OIDC token
// Pub/Sub attaches) and Receive to a pull subscription.
//
// The message format is Google's: attributes eventType, secretId (the
// secret's resource name), dataFormat and timestamp, and as data the Secret
// as JSON (https://cloud.google.com/secret-manager/docs/event-notifications).
// The data is not read: the rotation reads the secret itself, under its
// lease.
//
// Retries. Pub/Sub redelivers a message that is not acknowledged (a push
// answered other than 102, 200, 201, 202 or 204; a pull nacked or whose
// deadline passed), with backoff. A message is acknowledged when its
// rotation finished or had nothing to do, and when it failed in a way that
// delivering it again cannot change (bad configuration, a new key that
// failed live verification); it is delivered again when a retry can help:
// the rotation stopped part-way (safe, and resumed by the next delivery),
// another run holds the slot, the APIs were unavailable, or the process is
// stopping. Deliveries are idempotent: a rotation asked for at the event's
// time does nothing once the current key was made after it
// (rotate.Options.RequestedAt), and the slot's lease lets one run at a time
// rotate it, so the same message twice, or to two processes at once, makes
// one new key.
package subscribe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/rotate"
)

// Attributes of Secret Manager's notifications, and the event this package
// acts on.
const (
	AttrEventType  = "eventType"
	AttrSecretID   = "secretId"
	AttrDataFormat = "dataFormat"
	AttrTimestamp  = "timestamp"

	EventRotate = "SECRET_ROTATE"
)

// Message is one Pub/Sub message, as push and pull deliver it.
type Message struct {
	ID          string
	Attributes  map[string]string
	PublishTime time.Time
	// DeliveryAttempt is Pub/Sub's count of deliveries, when the
	// subscription has a dead-letter policy; 0 when unknown.
	DeliveryAttempt int
}

// Decision is what Pub/Sub is told about a message.
type Decision int

const (
	// Ack: done with; Pub/Sub does not deliver it again.
	Ack Decision = iota + 1
	// Nack: deliver it again (with the subscription's backoff).
	Nack
)

func (d Decision) String() string {
	switch d {
	case Ack:
		return "ack"
	case Nack:
		return "nack"
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// Outcome is what handling a message came to.
type Outcome struct {
	Decision Decision
	// Slot is the slot the message asked to rotate, "" when none.
	Slot string
	// Result is the rotation's result when it ran without error.
	Result *rotate.Result
	// Err is the rotation's error (or why the message could not be
	// handled now); nil when it finished or had nothing to do.
	Err error
	// Why says in a few words why the message was acknowledged or not.
	Why string
}

// RotateFunc rotates the slot named slot as a forced rotation asked for at
// requested (rotate.Options{Force: true, RequestedAt: requested}), with
// everything a rotation does: lease, idempotence, targets, logs.
type RotateFunc func(ctx context.Context, slot string, requested time.Time) (*rotate.Result, error)

// Handler turns messages into rotations, at most a given number at once.
// Its methods are safe for concurrent use.
type Handler struct {
	slots  map[string]string // secret resource name -> slot
	rotate RotateFunc
	log    *slog.Logger
	sem    chan struct{}

	mu      sync.Mutex
	running map[string]bool // slots being rotated by this process
}

// NewHandler returns a handler for slots (secret resource name to slot
// name) that runs at most limit rotations at once (at least 1); log receives
// one entry per message.
func NewHandler(slots map[string]string, limit int, rotate RotateFunc, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := make(map[string]string, len(slots))
	for secret, slot := range slots {
		m[secret] = slot
	}
	return &Handler{slots: m, rotate: rotate, log: log, sem: make(chan struct{}, max(limit, 1)), running: map[string]bool{}}
}

// Handle decides what m asks for, runs it and says whether Pub/Sub should
// deliver m again. ctx ending (the process stopping) stops the rotation at
// a safe point, and m is then delivered again.
func (h *Handler) Handle(ctx context.Context, m Message) Outcome {
	event := m.Attributes[AttrEventType]
	secretID := m.Attributes[AttrSecretID]
	log := h.log.With("message_id", m.ID, "event_type", event, "secret", secretID)
	if m.DeliveryAttempt > 0 {
		log = log.With("delivery_attempt", m.DeliveryAttempt)
	}
	if event != EventRotate {
		log.Info("message acknowledged: not a rotation event")
		return Outcome{Decision: Ack, Why: "not a rotation event"}
	}
	slot, ok := h.slotOf(secretID)
	if !ok {
		log.Warn("message acknowledged: the secret is no configured slot's")
		return Outcome{Decision: Ack, Why: "the secret is no configured slot's"}
	}
	log = log.With("slot", slot)
	requested := requestTime(m)
	if ctx.Err() != nil {
		log.Warn("message not acknowledged: stopping; it will be delivered again")
		return Outcome{Decision: Nack, Slot: slot, Err: context.Cause(ctx), Why: "stopping"}
	}
	select {
	case h.sem <- struct{}{}:
		defer func() { <-h.sem }()
	default:
		log.Warn("message not acknowledged: the limit of rotations at once is reached; it will be delivered again")
		return Outcome{Decision: Nack, Slot: slot, Why: "busy"}
	}
	if !h.claim(slot) {
		// The lease would refuse it too; answering now spares the calls.
		log.Info("message not acknowledged: this process is rotating the slot; it will be delivered again")
		return Outcome{Decision: Nack, Slot: slot, Why: "slot being rotated"}
	}
	defer h.release(slot)
	res, err := h.rotate(ctx, slot, requested)
	d, why := Classify(err)
	o := Outcome{Decision: d, Slot: slot, Result: res, Err: err, Why: why}
	switch {
	case err == nil && res.NeedsAttention():
		// Rotated, but the drain gate kept the old key: a new delivery
		// would rotate nothing more, so it is acknowledged, and someone
		// must move the callers named here to the new key.
		log.Warn("slot rotated, but the old key is still in use and was kept: needs attention; message acknowledged",
			"rotation_id", res.RotationID, "new_key", res.NewKey.Name, "fingerprint", res.NewKey.Fingerprint,
			"old_key", res.OldKey.Name, "reason", res.KeptReason, "callers", callers(res.Drain.Usage))
	case err == nil && res != nil && res.Rotated:
		log.Info("slot rotated; message acknowledged", "rotation_id", res.RotationID, "new_key", res.NewKey.Name, "fingerprint", res.NewKey.Fingerprint)
	case err == nil && res != nil:
		log.Info("nothing to do; message acknowledged", "reason", res.Reason)
	case err == nil:
		log.Info("message acknowledged")
	case d == Nack:
		log.Warn("rotation did not finish; the message will be delivered again", "error", err.Error(), "why", why)
	default:
		log.Error("rotation failed in a way a new delivery cannot fix; message acknowledged", "error", err.Error(), "why", why)
	}
	return o
}

// callers names who still calls with a kept key, the busiest first:
// "service method: N ok, M failed in the last hour".
func callers(usage []rotate.MethodRate) []string {
	var out []string
	for _, m := range usage {
		out = append(out, fmt.Sprintf("%s %s: %d ok, %d failed in the last hour", m.Service, m.Method, m.LastHour.OK, m.LastHour.Error))
	}
	return out
}

// Classify is the retry contract: whether a message whose rotation ended
// with err should be delivered again, and why in a few words.
func Classify(err error) (Decision, string) {
	switch {
	case err == nil:
		return Ack, "done"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Nack, "stopped before the end"
	case errors.Is(err, rotate.ErrStoppedPartWay):
		return Nack, "stopped part-way, safe; the next delivery resumes it"
	case errors.Is(err, rotate.ErrRotationInProgress):
		return Nack, "another run holds the slot"
	case errors.Is(err, config.ErrInvalid), errors.Is(err, rotate.ErrBadConfig),
		errors.Is(err, rotate.ErrInvalidTarget), errors.Is(err, rotate.ErrKeyInUse):
		return Ack, "bad configuration"
	case errors.Is(err, rotate.ErrVerifyFailed):
		return Ack, "the new key failed live verification and was removed"
	case gcp.Transient(err):
		return Nack, "an API was unavailable"
	}
	return Ack, "failed; nothing was changed"
}

// slotOf finds the slot whose secret is secretID.
func (h *Handler) slotOf(secretID string) (string, bool) {
	if secretID == "" {
		return "", false
	}
	s, ok := h.slots[secretID]
	return s, ok
}

func (h *Handler) claim(slot string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.running[slot] {
		return false
	}
	h.running[slot] = true
	return true
}

func (h *Handler) release(slot string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.running, slot)
}

// requestTime is when the rotation was asked for: the event's timestamp
// attribute, else the message's publish time (Pub/Sub sets both; the
// event's is the earlier).
func requestTime(m Message) time.Time {
	if ts := strings.TrimSpace(m.Attributes[AttrTimestamp]); ts != "" {
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			return t
		}
	}
	return m.PublishTime
}
