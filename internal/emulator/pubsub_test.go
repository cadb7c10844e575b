package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
)

const (
	psTopic = "projects/my-project/topics/secret-events"
	psSub   = "projects/my-project/subscriptions/keyrotate"
)

// startPubSub is startSecretManager with its manual clock, a topic and a
// subscription to it.
func startPubSub(t *testing.T) (*Server, *fake.ManualClock, *secretmanager.Client, context.Context) {
	t.Helper()
	clock := fake.NewManualClock(smStart)
	srv, err := Start(Options{Clock: clock, NoSecretWriteLimits: true})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	srv.AddProject(smProjectID, smProjectNumber)
	if err := srv.CreateTopic(psTopic); err != nil {
		t.Fatal(err)
	}
	if err := srv.CreateSubscription(psSub, psTopic, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, err := srv.SecretManagerClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return srv, clock, c, ctx
}

func rotation(next time.Time, period time.Duration) *secretmanagerpb.Rotation {
	r := &secretmanagerpb.Rotation{}
	if !next.IsZero() {
		r.NextRotationTime = timestamppb.New(next)
	}
	if period != 0 {
		r.RotationPeriod = durationpb.New(period)
	}
	return r
}

func topics(names ...string) []*secretmanagerpb.Topic {
	var ts []*secretmanagerpb.Topic
	for _, n := range names {
		ts = append(ts, &secretmanagerpb.Topic{Name: n})
	}
	return ts
}

// TestSecretRotationValidation: CreateSecret and UpdateSecret refuse the
// schedules and topics Google refuses.
func TestSecretRotationValidation(t *testing.T) {
	soon := smStart.Add(10 * time.Minute)
	eleven := make([]string, 11)
	for i := range eleven {
		eleven[i] = "projects/my-project/topics/t" + strings.Repeat("x", i+2)
	}
	for _, tc := range []struct {
		name   string
		secret *secretmanagerpb.Secret
		want   codes.Code
	}{
		{"ok", &secretmanagerpb.Secret{Topics: topics(psTopic), Rotation: rotation(soon, 24*time.Hour)}, codes.OK},
		{"one-time", &secretmanagerpb.Secret{Topics: topics(psTopic), Rotation: rotation(soon, 0)}, codes.OK},
		{"topics only", &secretmanagerpb.Secret{Topics: topics(psTopic)}, codes.OK},
		{"period under an hour", &secretmanagerpb.Secret{Topics: topics(psTopic), Rotation: rotation(soon, 59*time.Minute)}, codes.InvalidArgument},
		{"period over 100 years", &secretmanagerpb.Secret{Topics: topics(psTopic), Rotation: rotation(soon, 3153600001*time.Second)}, codes.InvalidArgument},
		{"period not whole seconds", &secretmanagerpb.Secret{Topics: topics(psTopic), Rotation: rotation(soon, time.Hour+time.Millisecond)}, codes.InvalidArgument},
		{"period without time", &secretmanagerpb.Secret{Topics: topics(psTopic), Rotation: rotation(time.Time{}, time.Hour)}, codes.InvalidArgument},
		{"time under 5 minutes", &secretmanagerpb.Secret{Topics: topics(psTopic), Rotation: rotation(smStart.Add(299*time.Second), time.Hour)}, codes.InvalidArgument},
		{"time in the past", &secretmanagerpb.Secret{Topics: topics(psTopic), Rotation: rotation(smStart.Add(-time.Hour), time.Hour)}, codes.InvalidArgument},
		{"rotation without topics", &secretmanagerpb.Secret{Rotation: rotation(soon, time.Hour)}, codes.InvalidArgument},
		{"bad topic name", &secretmanagerpb.Secret{Topics: topics("secret-events")}, codes.InvalidArgument},
		{"goog topic", &secretmanagerpb.Secret{Topics: topics("projects/my-project/topics/google-events")}, codes.InvalidArgument},
		{"duplicate topic", &secretmanagerpb.Secret{Topics: topics(psTopic, psTopic)}, codes.InvalidArgument},
		{"eleven topics", &secretmanagerpb.Secret{Topics: topics(eleven...)}, codes.InvalidArgument},
		{"missing topic", &secretmanagerpb.Secret{Topics: topics("projects/my-project/topics/nope")}, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _, c, ctx := startPubSub(t)
			tc.secret.Replication = automatic()
			_, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/" + smProjectID, SecretId: "s", Secret: tc.secret})
			wantCode(t, "CreateSecret", err, tc.want)
			if tc.want != codes.OK {
				if _, ok := srv.Secret("projects/my-project/secrets/s"); ok {
					t.Error("refused CreateSecret left a secret")
				}
				if n := len(srv.Notifications("")); n != 0 {
					t.Errorf("refused CreateSecret published %d messages", n)
				}
				// The same through UpdateSecret on an existing secret.
				name, err := srv.SeedSecret(smProjectID, "u", nil)
				if err != nil {
					t.Fatal(err)
				}
				tc.secret.Name = name
				tc.secret.Replication = nil
				_, err = c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: tc.secret,
					UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"topics", "rotation"}}})
				wantCode(t, "UpdateSecret", err, tc.want)
				if got, _ := srv.Secret(name); len(got.GetTopics()) != 0 || got.GetRotation() != nil {
					t.Errorf("refused UpdateSecret wrote topics %v rotation %v", got.GetTopics(), got.GetRotation())
				}
			}
		})
	}
}

// TestSecretTopicServiceAgentDenied: a topic Secret Manager's service
// agent may not publish to is refused.
func TestSecretTopicServiceAgentDenied(t *testing.T) {
	srv, _, c, ctx := startPubSub(t)
	srv.DenyServiceAgentPublish(psTopic, true)
	_, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/" + smProjectID, SecretId: "s",
		Secret: &secretmanagerpb.Secret{Replication: automatic(), Topics: topics(psTopic)}})
	wantCode(t, "CreateSecret", err, codes.FailedPrecondition)
	if !strings.Contains(err.Error(), "service-123456789012@gcp-sa-secretmanager.iam.gserviceaccount.com") {
		t.Errorf("error %q does not name the service agent", err)
	}
}

// TestSecretUpdateRotationFieldPaths: the field paths gcloud sends change
// one field of the schedule and keep the other.
func TestSecretUpdateRotationFieldPaths(t *testing.T) {
	_, _, c, ctx := startPubSub(t)
	next := smStart.Add(time.Hour)
	sec, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/" + smProjectID, SecretId: "s",
		Secret: &secretmanagerpb.Secret{Replication: automatic(), Topics: topics(psTopic), Rotation: rotation(next, time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
		Secret:     &secretmanagerpb.Secret{Name: sec.GetName(), Etag: sec.GetEtag(), Rotation: rotation(time.Time{}, 48*time.Hour)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"rotation.rotation_period"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !got.GetRotation().GetNextRotationTime().AsTime().Equal(next) || got.GetRotation().GetRotationPeriod().AsDuration() != 48*time.Hour {
		t.Errorf("rotation after updating its period = %v, want next %v period 48h", got.GetRotation(), next)
	}
	// An update of another field leaves the schedule, even once its time
	// is less than five minutes away.
	got, err = c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
		Secret:     &secretmanagerpb.Secret{Name: sec.GetName(), Labels: map[string]string{"a": "b"}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels"}}})
	if err != nil || got.GetRotation() == nil {
		t.Fatalf("UpdateSecret(labels) = %v, %v; want the schedule kept", got.GetRotation(), err)
	}
	// Clearing the topics under a schedule is refused.
	_, err = c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
		Secret: &secretmanagerpb.Secret{Name: sec.GetName()}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"topics"}}})
	wantCode(t, "UpdateSecret(clear topics under a schedule)", err, codes.InvalidArgument)
}

// TestSecretNotifications: each write publishes its event with Google's
// attributes and the resource as JSON, never the payload.
func TestSecretNotifications(t *testing.T) {
	srv, _, c, ctx := startPubSub(t)
	sec, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/" + smProjectID, SecretId: "s",
		Secret: &secretmanagerpb.Secret{Replication: automatic(), Topics: topics(psTopic)}})
	if err != nil {
		t.Fatal(err)
	}
	canary := []byte("AIzaSyCANARY-never-published-0123456789")
	v, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: sec.GetName(),
		Payload: &secretmanagerpb.SecretPayload{Data: canary, DataCrc32C: crc(canary)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v.GetName()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: sec.GetName()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: sec.GetName() + "/versions/latest"}); err == nil {
		t.Fatal("access to a disabled version succeeded")
	}

	msgs := srv.Notifications(psTopic)
	var events []string
	for _, m := range msgs {
		events = append(events, m.Attributes["eventType"])
		if bytes.Contains(m.Data, canary) {
			t.Errorf("%s message carries the payload", m.Attributes["eventType"])
		}
		for k, a := range m.Attributes {
			if strings.Contains(a, string(canary)) {
				t.Errorf("attribute %s carries the payload", k)
			}
		}
		if m.Attributes["eventType"] == EventTopicConfigured {
			if len(m.Attributes) != 1 || len(m.Data) != 0 {
				t.Errorf("TOPIC_CONFIGURED = %v %q, want only its eventType", m.Attributes, m.Data)
			}
			continue
		}
		if m.Attributes["dataFormat"] != "JSON_API_V1" || m.Attributes["secretId"] != sec.GetName() {
			t.Errorf("%s attributes = %v, want dataFormat JSON_API_V1, secretId %s", m.Attributes["eventType"], m.Attributes, sec.GetName())
		}
		if ts, err := time.Parse(time.RFC3339Nano, m.Attributes["timestamp"]); err != nil || !ts.Equal(smStart) {
			t.Errorf("timestamp %q, want the emulator's time %v", m.Attributes["timestamp"], smStart)
		}
		var res map[string]any
		if err := json.Unmarshal(m.Data, &res); err != nil {
			t.Errorf("%s data is not JSON: %v", m.Attributes["eventType"], err)
		}
	}
	want := []string{EventSecretCreate, EventTopicConfigured, EventSecretVersionAdd, EventSecretVersionDisable}
	if strings.Join(events, " ") != strings.Join(want, " ") {
		t.Errorf("events = %v, want %v (Get and Access publish nothing)", events, want)
	}
	var data struct{ Name, State string }
	if err := json.Unmarshal(msgs[2].Data, &data); err != nil || data.Name != v.GetName() || data.State != "ENABLED" {
		t.Errorf("SECRET_VERSION_ADD data = %s, want the version %s in proto3 JSON", msgs[2].Data, v.GetName())
	}
}

// TestSecretRotateFires: when the emulator's clock passes
// next_rotation_time, a subscriber receives one SECRET_ROTATE over a real
// Pub/Sub client, and the schedule advances by its period.
func TestSecretRotateFires(t *testing.T) {
	srv, clock, c, ctx := startPubSub(t)
	next := smStart.Add(time.Hour)
	sec, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/" + smProjectID, SecretId: "s",
		Secret: &secretmanagerpb.Secret{Replication: automatic(), Topics: topics(psTopic), Rotation: rotation(next, 24*time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(srv.Env(), " "), "PUBSUB_EMULATOR_HOST="+srv.PubSubAddr) {
		t.Errorf("Env() = %v, want PUBSUB_EMULATOR_HOST", srv.Env())
	}
	ps, err := srv.PubSubClient(ctx, smProjectID)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()

	var mu sync.Mutex
	var rotates []*pubsub.Message
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- ps.Subscriber(psSub).Receive(rctx, func(_ context.Context, m *pubsub.Message) {
			m.Ack()
			if m.Attributes["eventType"] == EventSecretRotate {
				mu.Lock()
				rotates = append(rotates, m)
				mu.Unlock()
			}
		})
	}()

	clock.Advance(59 * time.Minute)
	time.Sleep(5 * rotationTick)
	if n := srv.FireDueRotations(); n != 0 {
		t.Fatalf("%d rotations fired a minute early", n)
	}
	clock.Advance(time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(rotates)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(5 * rotationTick) // a second message would come now
	stop()
	<-done

	mu.Lock()
	defer mu.Unlock()
	if len(rotates) != 1 {
		t.Fatalf("received %d SECRET_ROTATE, want 1", len(rotates))
	}
	m := rotates[0]
	if m.Attributes["secretId"] != sec.GetName() || m.Attributes["dataFormat"] != "JSON_API_V1" {
		t.Errorf("SECRET_ROTATE attributes = %v", m.Attributes)
	}
	got, _ := srv.Secret(sec.GetName())
	if want := next.Add(24 * time.Hour); !got.GetRotation().GetNextRotationTime().AsTime().Equal(want) {
		t.Errorf("next_rotation_time = %v, want %v (advanced by the period)", got.GetRotation().GetNextRotationTime().AsTime(), want)
	}
	if got.GetEtag() == sec.GetEtag() {
		t.Error("the schedule advanced without a new etag")
	}
	var data struct {
		Name     string
		Rotation struct{ NextRotationTime, RotationPeriod string }
	}
	if err := json.Unmarshal(m.Data, &data); err != nil || data.Name != sec.GetName() || data.Rotation.RotationPeriod != "86400s" {
		t.Errorf("SECRET_ROTATE data = %s (%v), want the secret as proto3 JSON", m.Data, err)
	}
}

// TestFireDueRotationsLooksOnlyWhenDue: the rotation schedule's look for
// due secrets (every rotationTick) looks at no secret while none is due,
// and still fires each schedule when its time comes, also after an update
// moved it later.
func TestFireDueRotationsLooksOnlyWhenDue(t *testing.T) {
	srv, clock, c, ctx := startPubSub(t)
	create := func(id string, r *secretmanagerpb.Rotation) *secretmanagerpb.Secret {
		t.Helper()
		sec := &secretmanagerpb.Secret{Replication: automatic()}
		if r != nil {
			sec.Topics, sec.Rotation = topics(psTopic), r
		}
		got, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/" + smProjectID, SecretId: id, Secret: sec})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	var plain *secretmanagerpb.Secret
	for i := range 20 {
		plain = create(fmt.Sprintf("plain-%d", i), nil)
	}
	create("daily", rotation(smStart.Add(time.Hour), 24*time.Hour))
	once := create("once", rotation(smStart.Add(2*time.Hour), 0))
	visits := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.sm.rotationVisits
	}
	rotates := func() int {
		n := 0
		for _, m := range srv.Notifications(psTopic) {
			if m.Attributes["eventType"] == EventSecretRotate {
				n++
			}
		}
		return n
	}
	// idle checks that, the clock standing still, the looks of the next
	// few ticks look at no secret.
	idle := func(when string) {
		t.Helper()
		srv.FireDueRotations()
		v := visits()
		time.Sleep(5 * rotationTick)
		srv.FireDueRotations()
		if got := visits() - v; got != 0 {
			t.Errorf("%s: looks for due secrets looked at %d secrets, want 0", when, got)
		}
	}
	at := func(d time.Duration, wantRotates int) {
		t.Helper()
		clock.Advance(smStart.Add(d).Sub(clock.Now()))
		srv.FireDueRotations()
		if got := rotates(); got != wantRotates {
			t.Errorf("at start+%v: %d SECRET_ROTATE so far, want %d", d, got, wantRotates)
		}
	}
	idle("nothing due")
	at(time.Hour-time.Nanosecond, 0)
	at(time.Hour, 1)
	idle("after daily fired")
	// once moves from +2h to +3h.
	once.Rotation = rotation(smStart.Add(3*time.Hour), 0)
	if _, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: once,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"rotation.next_rotation_time"}}}); err != nil {
		t.Fatal(err)
	}
	// A secret without a schedule gets one, due before any other.
	plain.Topics, plain.Rotation = topics(psTopic), rotation(smStart.Add(90*time.Minute), 0)
	if _, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: plain,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"topics", "rotation"}}}); err != nil {
		t.Fatal(err)
	}
	at(90*time.Minute-time.Nanosecond, 1)
	at(90*time.Minute, 2)
	at(2*time.Hour, 2)
	idle("after once moved")
	at(3*time.Hour-time.Nanosecond, 2)
	at(3*time.Hour, 3)
	at(25*time.Hour-time.Nanosecond, 3)
	at(25*time.Hour, 4)
	idle("after daily fired again")
	if got, _ := srv.Secret(once.GetName()); got.GetRotation() != nil {
		t.Errorf("one-time schedule still %v after it fired, want none", got.GetRotation())
	}
}

// TestSecretRotateOneTime: a schedule without a period fires once and is
// cleared.
func TestSecretRotateOneTime(t *testing.T) {
	srv, clock, c, ctx := startPubSub(t)
	sec, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/" + smProjectID, SecretId: "s",
		Secret: &secretmanagerpb.Secret{Replication: automatic(), Topics: topics(psTopic), Rotation: rotation(smStart.Add(time.Hour), 0)}})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	srv.FireDueRotations()
	srv.FireDueRotations()
	n := 0
	for _, m := range srv.Notifications(psTopic) {
		if m.Attributes["eventType"] == EventSecretRotate {
			n++
		}
	}
	if got, _ := srv.Secret(sec.GetName()); n != 1 || got.GetRotation() != nil {
		t.Errorf("one-time schedule: %d SECRET_ROTATE, rotation now %v; want 1 and none", n, got.GetRotation())
	}
}
