package subscribe

import (
	"context"

	"cloud.google.com/go/pubsub/v2"
)

// Receive handles the messages of a pull subscription until ctx ends: each
// is acknowledged or not as Handle decides. The subscriber's
// ReceiveSettings are the caller's: MaxOutstandingMessages at most the
// handler's limit (more would only be delivered again), MaxExtension at
// least the longest rotation, so that Pub/Sub does not deliver a message
// again while its rotation waits for a new key to work. When ctx ends,
// running rotations stop at a safe point and their messages are nacked.
func Receive(ctx context.Context, sub *pubsub.Subscriber, h *Handler) error {
	return sub.Receive(ctx, func(ctx context.Context, m *pubsub.Message) {
		msg := Message{ID: m.ID, Attributes: m.Attributes, PublishTime: m.PublishTime}
		if m.DeliveryAttempt != nil {
			msg.DeliveryAttempt = *m.DeliveryAttempt
		}
		if h.Handle(ctx, msg).Decision == Ack {
			m.Ack()
			return
		}
		m.Nack()
	})
}
