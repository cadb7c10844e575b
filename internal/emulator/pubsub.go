package emulator

// Pub/Sub, and Secret Manager's event notifications and rotation schedules
// published to it.
//
// Pub/Sub is Google's own in-process fake, cloud.google.com/go/pubsub/v2/pstest,
// served on its own loopback address (Server.PubSubAddr,
// PUBSUB_EMULATOR_HOST, the variable Google's Pub/Sub clients honour).
// Clients reach it over a real gRPC connection; Secret Manager publishes
// to it in-process, as the real service publishes from Google's side.
//
// What Secret Manager publishes follows "Set up notifications on a secret"
// (cloud.google.com/secret-manager/docs/event-notifications):
//   - to each of the secret's topics (at most 10), for every operation that
//     modifies the secret or one of its versions, never for Get, List or
//     Access: SECRET_CREATE, SECRET_UPDATE, SECRET_DELETE,
//     SECRET_VERSION_ADD, SECRET_VERSION_ENABLE, SECRET_VERSION_DISABLE,
//     SECRET_VERSION_DESTROY, and SECRET_ROTATE when a rotation is due;
//   - attributes eventType (one of those), dataFormat "JSON_API_V1",
//     secretId (the secret's full resource name) and timestamp (when the
//     event happened), the table of the page's "Notification format";
//     Google's own sample consume_event_notification.py
//     (GoogleCloudPlatform/python-docs-samples, secretmanager/snippets)
//     reads eventType and secretId;
//   - data: the Secret or SecretVersion resource as proto3 JSON, the form
//     the public API returns: never a payload (neither resource holds one);
//   - TOPIC_CONFIGURED, a test message with no data and no attribute but
//     eventType, to every topic of the secret after a write that set its
//     topics.
//
// Fidelity notes:
//   - secretId names the secret with its project number, as every name the
//     emulator returns does (the page's example, projects/p/secrets/my-secret,
//     does not settle id or number; the number is the stricter reading for a
//     subscriber that matches names).
//   - The rotation schedule (Rotation, "Create rotation schedules",
//     cloud.google.com/secret-manager/docs/secret-rotation, and the
//     Rotation message's reference): rotation_period whole seconds, at least
//     3600s and at most 3153600000s; next_rotation_time required with a
//     period, at least 300s in the future and at most 100 years when set;
//     topics required to configure rotation. At next_rotation_time the
//     emulator publishes SECRET_ROTATE to each topic and advances
//     next_rotation_time by the period; without a period (a one-time
//     schedule) the rotation is cleared once sent. Neither page says which;
//     clearing is the stricter reading (nothing fires twice). The advance
//     is a write: the secret gets a new etag, and the message carries the
//     secret as advanced. A clock that jumps several periods catches up one
//     SECRET_ROTATE per period, one per check (every rotationTick of real
//     time, or FireDueRotations).
//   - Topics are checked on the write that sets them: the name must be
//     projects/*/topics/* with a valid topic id (INVALID_ARGUMENT), no
//     duplicates, at most 10; the topic must exist on the emulator's Pub/Sub
//     and Secret Manager's service agent
//     (service-NUMBER@gcp-sa-secretmanager.iam.gserviceaccount.com) must be
//     allowed to publish to it (DenyServiceAgentPublish takes that away),
//     else FAILED_PRECONDITION. Google's pages say only that publication
//     needs the grant ("for publication to succeed", the Secret resource's
//     topics field as GoogleCloudPlatform/magic-modules documents it); whether
//     the write itself is refused is not published, and refusing it is the
//     strictest reading. A topic deleted or denied later makes its messages
//     drop silently (counted by DroppedNotifications), as the pages warn
//     delivery is not guaranteed on misconfiguration.
//   - pstest keeps the wall clock for its own delivery and ack deadlines, so
//     that subscribers redeliver in real time; the timestamp attribute is the
//     emulator's clock.

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Secret Manager event types (event-notifications page, "Event types").
const (
	EventSecretCreate         = "SECRET_CREATE"
	EventSecretUpdate         = "SECRET_UPDATE"
	EventSecretDelete         = "SECRET_DELETE"
	EventSecretVersionAdd     = "SECRET_VERSION_ADD"
	EventSecretVersionEnable  = "SECRET_VERSION_ENABLE"
	EventSecretVersionDisable = "SECRET_VERSION_DISABLE"
	EventSecretVersionDestroy = "SECRET_VERSION_DESTROY"
	EventSecretRotate         = "SECRET_ROTATE"
	EventTopicConfigured      = "TOPIC_CONFIGURED"
)

// Limits of the rotation schedule and topics (Rotation's reference; "up to
// 10 Pub/Sub topics").
const (
	maxTopics          = 10
	minRotationPeriod  = time.Hour
	maxRotationPeriod  = 3153600000 * time.Second // 100 years
	minRotationLead    = 5 * time.Minute          // next_rotation_time "at least 300s in the future"
	rotationDataFormat = "JSON_API_V1"
)

// rotationTick is how often, in real time, the emulator looks for due
// rotations on its clock.
const rotationTick = 20 * time.Millisecond

// topicRe is projects/{project}/topics/{topic}: a topic id starts with a
// letter, is 3-255 letters, digits and - _ . ~ + %, and does not start with
// "goog" (Pub/Sub's resource names page).
var topicRe = regexp.MustCompile(`^projects/([^/]+)/topics/([A-Za-z][A-Za-z0-9\-_.~+%]{2,254})$`)

// ValidTopicName reports whether name is a Pub/Sub topic's full name,
// projects/P/topics/T, as Secret Manager accepts it in Secret.topics.
func ValidTopicName(name string) bool {
	m := topicRe.FindStringSubmatch(name)
	return m != nil && !strings.HasPrefix(m[2], "goog")
}

// servePubSub starts pstest on addr and the rotation schedule's clock
// watcher.
func (s *Server) servePubSub(addr string) (a string, err error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	defer func() {
		// pstest panics when it cannot listen.
		if r := recover(); r != nil {
			err = fmt.Errorf("listen %s: %v", addr, r)
		}
	}()
	ps := pstest.NewServerWithAddress(addr)
	s.ps = ps
	s.closers = append(s.closers, func() { _ = ps.Close() })
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(rotationTick)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.FireDueRotations()
			}
		}
	}()
	s.closers = append(s.closers, func() { close(stop); <-done })
	return ps.Addr, nil
}

// PubSubClient returns Google's Pub/Sub client for project, connected to
// this emulator without credentials. The caller closes it.
func (s *Server) PubSubClient(ctx context.Context, projectID string) (*pubsub.Client, error) {
	return pubsub.NewClient(ctx, projectID,
		option.WithEndpoint(s.PubSubAddr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	)
}

// CreateTopic creates a Pub/Sub topic (projects/P/topics/T) without a call
// through a client.
func (s *Server) CreateTopic(name string) error {
	_, err := s.ps.GServer.CreateTopic(context.Background(), &pubsubpb.Topic{Name: name})
	return err
}

// CreateSubscription creates a pull subscription (projects/P/subscriptions/S)
// on topic, with an ack deadline of ackDeadline (zero: Pub/Sub's 10s).
func (s *Server) CreateSubscription(name, topic string, ackDeadline time.Duration) error {
	_, err := s.ps.GServer.CreateSubscription(context.Background(), &pubsubpb.Subscription{
		Name: name, Topic: topic, AckDeadlineSeconds: int32(ackDeadline / time.Second),
	})
	return err
}

// DenyServiceAgentPublish takes from Secret Manager's service agent the
// permission to publish to topic (true), or gives it back (false): a
// secret's write that sets the topic fails, and messages to it drop.
func (s *Server) DenyServiceAgentPublish(topic string, deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if deny {
		s.psDenied[topic] = true
	} else {
		delete(s.psDenied, topic)
	}
}

// Notification is a message Secret Manager published.
type Notification struct {
	Topic      string
	Attributes map[string]string
	Data       []byte
	ID         string
}

// Notifications returns the messages published to topic, oldest first
// (all topics: ""), whoever published them.
func (s *Server) Notifications(topic string) []Notification {
	var out []Notification
	for _, m := range s.ps.Messages() {
		if topic == "" || m.Topic == topic {
			out = append(out, Notification{Topic: m.Topic, Attributes: m.Attributes, Data: m.Data, ID: m.ID})
		}
	}
	return out
}

// DroppedNotifications returns how many of Secret Manager's messages could
// not be published (topic gone, or the service agent denied).
func (s *Server) DroppedNotifications() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.psDropped
}

// serviceAgent is Secret Manager's service agent in project pr.
func serviceAgent(pr *project) string {
	return "service-" + strconv.FormatInt(pr.number, 10) + "@gcp-sa-secretmanager.iam.gserviceaccount.com"
}

// validateTopics checks a secret's topics; with check, also that each
// exists and the service agent may publish to it. Call with s.mu held.
func (s *Server) validateTopics(pr *project, topics []*secretmanagerpb.Topic, check bool) error {
	if len(topics) > maxTopics {
		return status.Errorf(codes.InvalidArgument, "Too many topics: %d; at most %d are allowed.", len(topics), maxTopics)
	}
	seen := map[string]bool{}
	for _, t := range topics {
		name := t.GetName()
		if !ValidTopicName(name) {
			return status.Errorf(codes.InvalidArgument,
				"Invalid topic name [%s]: it must be projects/*/topics/* with a topic id of 3-255 letters, digits and - _ . ~ + %%, starting with a letter and not with \"goog\".", name)
		}
		if seen[name] {
			return status.Errorf(codes.InvalidArgument, "Topic [%s] is listed more than once.", name)
		}
		seen[name] = true
		if !check {
			continue
		}
		if _, err := s.ps.GServer.GetTopic(context.Background(), &pubsubpb.GetTopicRequest{Topic: name}); err != nil || s.psDenied[name] {
			return status.Errorf(codes.FailedPrecondition,
				"Pub/Sub topic [%s] does not exist, or the Secret Manager service agent [%s] does not have permission to publish to it (pubsub.topics.publish).",
				name, serviceAgent(pr))
		}
	}
	return nil
}

// validateRotation checks a secret's rotation against its topics;
// timeSet: next_rotation_time was set by this request. It clears an empty
// rotation. Call with s.mu held.
func (s *Server) validateRotation(sec *secretmanagerpb.Secret, timeSet bool) error {
	r := sec.GetRotation()
	if r == nil {
		return nil
	}
	if r.NextRotationTime == nil && r.RotationPeriod == nil {
		sec.Rotation = nil
		return nil
	}
	if p := r.GetRotationPeriod(); p != nil {
		if err := p.CheckValid(); err != nil || p.GetNanos() != 0 {
			return status.Errorf(codes.InvalidArgument, "Invalid rotation_period [%s]: it must be a whole number of seconds.", p.AsDuration())
		}
		if d := p.AsDuration(); d < minRotationPeriod || d > maxRotationPeriod {
			return status.Errorf(codes.InvalidArgument,
				"Invalid rotation_period [%ds]: it must be at least 3600s (1h) and at most 3153600000s (100 years).", int64(d/time.Second))
		}
		if r.NextRotationTime == nil {
			return status.Error(codes.InvalidArgument, "Field [rotation.next_rotation_time] is required when rotation_period is set.")
		}
	}
	if t := r.GetNextRotationTime(); t != nil && timeSet {
		if err := t.CheckValid(); err != nil {
			return status.Errorf(codes.InvalidArgument, "Invalid next_rotation_time: %v.", err)
		}
		now := s.clock.Now()
		if at := t.AsTime(); at.Before(now.Add(minRotationLead)) || at.After(now.Add(maxRotationPeriod)) {
			return status.Errorf(codes.InvalidArgument,
				"Invalid next_rotation_time [%s]: it must be at least 300s (5 min) in the future and at most 100 years away.", formatTime(at))
		}
	}
	if len(sec.GetTopics()) == 0 {
		return status.Error(codes.InvalidArgument, "A rotation requires Pub/Sub topics: set [topics] to configure rotation.")
	}
	return nil
}

// notifyLocked publishes event to the secret's topics, data being the
// resource (a Secret or SecretVersion) as proto3 JSON. Call with s.mu held.
func (s *Server) notifyLocked(sec *secretmanagerpb.Secret, event string, resource proto.Message) {
	if len(sec.GetTopics()) == 0 {
		return
	}
	data, err := protojson.Marshal(resource)
	if err != nil {
		panic(fmt.Sprintf("emulator: marshal %s: %v", event, err))
	}
	attrs := map[string]string{
		"eventType":  event,
		"dataFormat": rotationDataFormat,
		"secretId":   sec.GetName(),
		"timestamp":  s.clock.Now().Format(time.RFC3339Nano),
	}
	for _, t := range sec.GetTopics() {
		s.publishLocked(t.GetName(), data, attrs)
	}
}

// topicsConfiguredLocked sends TOPIC_CONFIGURED to every topic of sec.
func (s *Server) topicsConfiguredLocked(sec *secretmanagerpb.Secret) {
	for _, t := range sec.GetTopics() {
		s.publishLocked(t.GetName(), nil, map[string]string{"eventType": EventTopicConfigured})
	}
}

func (s *Server) publishLocked(topic string, data []byte, attrs map[string]string) {
	if s.psDenied[topic] {
		s.psDropped++
		return
	}
	a := make(map[string]string, len(attrs))
	for k, v := range attrs {
		a[k] = v
	}
	_, err := s.ps.GServer.Publish(context.Background(), &pubsubpb.PublishRequest{
		Topic: topic, Messages: []*pubsubpb.PubsubMessage{{Data: data, Attributes: a}},
	})
	if err != nil {
		s.psDropped++
	}
}

// FireDueRotations publishes SECRET_ROTATE for every secret whose
// next_rotation_time has come on the emulator's clock, advancing each
// schedule by one period (or clearing a one-time schedule), and returns how
// many fired. The emulator calls it every rotationTick; tests may call it
// to fire at once. It looks at the secrets only when the earliest
// next_rotation_time has come (secretState.nextRotation).
func (s *Server) FireDueRotations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if s.sm.nextRotation.IsZero() || s.sm.nextRotation.After(now) {
		return 0
	}
	n := 0
	var earliest time.Time
	for _, sec := range s.sm.secrets {
		s.sm.rotationVisits++
		r := sec.pb.GetRotation()
		if r.GetNextRotationTime() == nil {
			continue
		}
		if at := r.GetNextRotationTime().AsTime(); at.After(now) {
			earliest = earlierOf(earliest, at)
			continue
		}
		next := proto.Clone(sec.pb).(*secretmanagerpb.Secret)
		if p := r.GetRotationPeriod(); p != nil {
			at := r.GetNextRotationTime().AsTime().Add(p.AsDuration())
			next.Rotation.NextRotationTime = timestamppb.New(at)
			// Past already after a clock jump: it fires at the next look
			// (once per period and look, see the file comment).
			earliest = earlierOf(earliest, at)
		} else {
			next.Rotation = nil
		}
		next.Etag = s.newEtag()
		sec.pb = next
		s.notifyLocked(next, EventSecretRotate, next)
		n++
	}
	s.sm.nextRotation = earliest
	return n
}

// noteRotationLocked keeps secretState.nextRotation at or before sec's
// next_rotation_time: call it whenever a secret is stored. Call with s.mu
// held.
func (s *Server) noteRotationLocked(sec *secretmanagerpb.Secret) {
	if t := sec.GetRotation().GetNextRotationTime(); t != nil {
		s.sm.nextRotation = earlierOf(s.sm.nextRotation, t.AsTime())
	}
}

// earlierOf returns the earlier of a and b, where a zero a means none yet.
func earlierOf(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}
