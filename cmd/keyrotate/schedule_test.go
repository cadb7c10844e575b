package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emutest"
)

const (
	scheduleTopic = demoTopic
	auditTopic    = "projects/" + demoProject + "/topics/audit"
)

// scheduleWorld is the demo world with the topics schedule uses, the
// secret already notifying auditTopic, and the config naming topic.
func scheduleWorld(t *testing.T, opts emulator.Options, topic string) *crashWorld {
	t.Helper()
	cw := newCrashWorldWith(t, opts, func(srv *emulator.Server, w *seeded) error {
		// The seeded world has scheduleTopic (demoTopic) already.
		if err := srv.CreateTopic(auditTopic); err != nil {
			return err
		}
		c, err := srv.SecretManagerClient(context.Background())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.UpdateSecret(context.Background(), &secretmanagerpb.UpdateSecretRequest{
			Secret:     &secretmanagerpb.Secret{Name: "projects/" + demoProject + "/secrets/" + demoSecretID, Topics: []*secretmanagerpb.Topic{{Name: auditTopic}}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"topics"}},
		})
		return err
	})
	cw.setScheduleTopic(topic)
	cw.srv.ResetCalls()
	return cw
}

// setScheduleTopic writes schedule_topic into the config's defaults ("":
// none).
func (cw *crashWorld) setScheduleTopic(topic string) {
	cw.t.Helper()
	b, err := os.ReadFile(cw.w.config)
	if err != nil {
		cw.t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	lines = slices.DeleteFunc(lines, func(l string) bool { return strings.HasPrefix(l, "  schedule_topic:") })
	cfg := strings.Join(lines, "\n")
	if topic != "" {
		cfg = strings.Replace(cfg, "  lease_ttl: 15m\n", "  lease_ttl: 15m\n  schedule_topic: "+topic+"\n", 1)
	}
	if err := os.WriteFile(cw.w.config, []byte(cfg), 0o644); err != nil {
		cw.t.Fatal(err)
	}
}

// scheduled is the schedule world on a manual clock with a subscription
// sub to the schedule topic, after `keyrotate schedule`: the secret's next
// rotation time and period.
func scheduled(t *testing.T, sub string) (cw *crashWorld, clock *fake.ManualClock, next time.Time, period time.Duration) {
	t.Helper()
	clock = fake.NewManualClock(time.Now())
	cw = scheduleWorld(t, emulator.Options{Clock: clock}, scheduleTopic)
	if sub != demoSubscription { // the seeded world has that one
		if err := cw.srv.CreateSubscription(sub, scheduleTopic, 0); err != nil {
			t.Fatal(err)
		}
	}
	if c := cw.run("--config", cw.w.config, "schedule"); c.code != 0 {
		t.Fatalf("schedule: exit %d\n%s", c.code, c.output())
	}
	sec, _ := cw.srv.Secret(cw.secretName())
	return cw, clock, sec.GetRotation().GetNextRotationTime().AsTime(), sec.GetRotation().GetRotationPeriod().AsDuration()
}

// TestSchedule: a dry run writes nothing; schedule sets the period and the
// next time from the key's age, adds the topic and keeps the secret's other
// topic and annotations; run again it changes nothing; status shows it.
func TestSchedule(t *testing.T) {
	t.Parallel()
	cw := scheduleWorld(t, emulator.Options{}, scheduleTopic)
	secret := cw.secretName()
	before, _ := cw.srv.Secret(secret)
	key, _ := cw.srv.Key(cw.w.keyName)
	created, err := time.Parse(time.RFC3339Nano, key.CreateTime)
	if err != nil {
		t.Fatal(err)
	}
	wantNext := created.Add(90 * 24 * time.Hour).Truncate(time.Second)

	c := cw.run("--config", cw.w.config, "schedule", "--dry-run")
	if c.code != 0 {
		t.Fatalf("schedule --dry-run: exit %d\n%s", c.code, c.output())
	}
	for _, want := range []string{"topics", auditTopic + " -> " + auditTopic + ", " + scheduleTopic, "none -> " + wantNext.Format(time.RFC3339), "none -> 90d", "dry run"} {
		if !strings.Contains(c.stdout.String(), want) {
			t.Errorf("schedule --dry-run output lacks %q:\n%s", want, c.stdout.String())
		}
	}
	t.Logf("schedule --dry-run:\n%s", c.stdout.String())
	if n := cw.srv.MutatingCalls(); n != 0 {
		t.Fatalf("schedule --dry-run made %d mutating calls", n)
	}
	if got, _ := cw.srv.Secret(secret); got.GetEtag() != before.GetEtag() {
		t.Fatal("schedule --dry-run changed the secret")
	}
	dryCalls := cw.srv.CallsTotal()

	cw.srv.ResetCalls()
	c = cw.run("--config", cw.w.config, "--output", "json", "schedule")
	if c.code != 0 {
		t.Fatalf("schedule: exit %d\n%s", c.code, c.output())
	}
	// The difference is shown from one read: applying it costs the dry
	// run's calls and the one write.
	if n, w := cw.srv.CallsTotal(), cw.srv.MutatingCalls(); n != dryCalls+1 || w != 1 {
		t.Errorf("schedule made %d calls (%d writes), want the dry run's %d and 1 write", n, w, dryCalls)
	}
	var doc struct {
		Command string
		DryRun  bool `json:"dry_run"`
		Slots   []struct {
			Slot    string
			Applied bool
			Changes []string
			Wanted  struct {
				Next   time.Time `json:"next_rotation_time"`
				Period float64   `json:"rotation_period_seconds"`
				Topics []string
			}
		}
	}
	if err := json.Unmarshal(c.stdout.Bytes(), &doc); err != nil {
		t.Fatalf("schedule -o json: %v\n%s", err, c.stdout.String())
	}
	if len(doc.Slots) != 1 || !doc.Slots[0].Applied || len(doc.Slots[0].Changes) != 3 || !doc.Slots[0].Wanted.Next.Equal(wantNext) ||
		doc.Slots[0].Wanted.Period != 90*24*3600 {
		t.Errorf("schedule -o json = %+v, want one slot applied with 3 changes, next %v, period 90d", doc, wantNext)
	}
	after, _ := cw.srv.Secret(secret)
	var topics []string
	for _, tp := range after.GetTopics() {
		topics = append(topics, tp.GetName())
	}
	if strings.Join(topics, " ") != auditTopic+" "+scheduleTopic {
		t.Errorf("topics after schedule = %v, want %s kept and %s added", topics, auditTopic, scheduleTopic)
	}
	if r := after.GetRotation(); !r.GetNextRotationTime().AsTime().Equal(wantNext) || r.GetRotationPeriod().AsDuration() != 90*24*time.Hour {
		t.Errorf("rotation after schedule = %v, want next %v every 90d", r, wantNext)
	}
	if !maps(before.GetAnnotations(), after.GetAnnotations()) || !maps(before.GetLabels(), after.GetLabels()) {
		t.Errorf("schedule changed the secret's annotations or labels")
	}
	if n := cw.srv.Calls("secretmanager.UpdateSecret"); n != 1 {
		t.Errorf("schedule made %d UpdateSecret calls, want 1", n)
	}

	cw.srv.ResetCalls()
	c = cw.run("--config", cw.w.config, "schedule")
	if c.code != 0 || !strings.Contains(c.stdout.String(), "nothing to do") {
		t.Fatalf("schedule again: exit %d, want 0 and nothing to do\n%s", c.code, c.output())
	}
	if n := cw.srv.MutatingCalls(); n != 0 {
		t.Errorf("schedule again made %d mutating calls, want none", n)
	}
	if again, _ := cw.srv.Secret(secret); again.GetEtag() != after.GetEtag() {
		t.Error("schedule again wrote the secret")
	}

	t.Logf("schedule again:\n%s", c.stdout.String())
	c = cw.run("--config", cw.w.config, "status")
	if c.code != 0 || !strings.Contains(c.stdout.String(), "next rotation "+wantNext.Format(time.RFC3339)+", every 90d, to "+auditTopic+", "+scheduleTopic) {
		t.Errorf("status does not show the schedule: exit %d\n%s", c.code, c.output())
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestScheduleRefused: without a topic, or with a topic that is not a
// topic's name, schedule exits 2 before any call; with a topic that does
// not exist, Secret Manager refuses the write and nothing changes.
func TestScheduleRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, topic string
		code        int
		calls       bool // API calls are made
		want        string
	}{
		{"no topic", "", 2, false, "no schedule_topic for slot gemini-prod"},
		{"bad topic name", "projects/" + demoProject + "/topics/goog-rotations", 2, false, "is not a Pub/Sub topic name"},
		{"missing topic", "projects/" + demoProject + "/topics/nope", 1, true, "roles/pubsub.publisher"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cw := scheduleWorld(t, emulator.Options{}, tc.topic)
			before, _ := cw.srv.Secret(cw.secretName())
			c := cw.run("--config", cw.w.config, "schedule")
			t.Logf("schedule:\n%s", c.output())
			if c.code != tc.code || !strings.Contains(c.stderr.String(), tc.want) {
				t.Errorf("schedule: exit %d, want %d and %q\n%s", c.code, tc.code, tc.want, c.output())
			}
			if n := cw.srv.CallsTotal(); !tc.calls && n != 0 {
				t.Errorf("schedule made %d calls, want none", n)
			}
			if got, _ := cw.srv.Secret(cw.secretName()); got.GetEtag() != before.GetEtag() {
				t.Error("a refused schedule wrote the secret")
			}
			// A write that fails still shows the difference (printed before it).
			if tc.calls && !strings.Contains(c.stdout.String(), ", "+tc.topic) {
				t.Errorf("schedule did not show the difference before its write failed:\n%s", c.output())
			}
		})
	}
}

// TestScheduleEndToEnd: schedule sets the schedule; the emulator's clock
// passes the due time; a subscription on the topic receives one
// SECRET_ROTATE, over Google's Pub/Sub client, with Secret Manager's
// attributes and the secret (never a key string) as data; the next
// rotation time has advanced by the period.
func TestScheduleEndToEnd(t *testing.T) {
	t.Parallel()
	const sub = "projects/" + demoProject + "/subscriptions/keyrotate"
	cw, clock, next, period := scheduled(t, sub)
	if period != 90*24*time.Hour || !next.After(clock.Now()) {
		t.Fatalf("schedule set next %v period %v; want a time to come, every 90d", next, period)
	}

	ps := emutest.PubSubClient(t, cw.srv, demoProject)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []*pubsub.Message
	received := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- ps.Subscriber(sub).Receive(ctx, func(_ context.Context, m *pubsub.Message) {
			m.Ack()
			mu.Lock()
			got = append(got, m)
			mu.Unlock()
			select {
			case received <- struct{}{}:
			default:
			}
		})
	}()
	rotates := func() []*pubsub.Message {
		mu.Lock()
		defer mu.Unlock()
		var rs []*pubsub.Message
		for _, m := range got {
			if m.Attributes["eventType"] == "SECRET_ROTATE" {
				rs = append(rs, m)
			}
		}
		return rs
	}

	clock.Advance(next.Sub(clock.Now()) - time.Second) // a second early: nothing
	time.Sleep(200 * time.Millisecond)
	if n := len(rotates()); n != 0 {
		t.Fatalf("%d SECRET_ROTATE a second before the due time", n)
	}
	clock.Advance(2 * time.Second)
	deadline := time.After(15 * time.Second)
	for len(rotates()) == 0 {
		select {
		case <-received:
		case <-deadline:
			t.Fatalf("no SECRET_ROTATE within 15s of the due time; received %d other messages", len(got))
		}
	}
	time.Sleep(200 * time.Millisecond) // a second one would arrive now
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Receive: %v", err)
	}

	rs := rotates()
	if len(rs) != 1 {
		t.Fatalf("received %d SECRET_ROTATE, want 1", len(rs))
	}
	m := rs[0]
	canonical := "projects/" + strconv.Itoa(demoProjectNumber) + "/secrets/" + demoSecretID
	want := map[string]string{"eventType": "SECRET_ROTATE", "secretId": canonical, "dataFormat": "JSON_API_V1"}
	for k, v := range want {
		if m.Attributes[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, m.Attributes[k], v)
		}
	}
	if ts, err := time.Parse(time.RFC3339Nano, m.Attributes["timestamp"]); err != nil || ts.Before(next) {
		t.Errorf("timestamp %q, want the emulator's time, at or after %v", m.Attributes["timestamp"], next)
	}
	var data struct {
		Name     string
		Rotation struct {
			NextRotationTime time.Time
			RotationPeriod   string
		}
	}
	if err := json.Unmarshal(m.Data, &data); err != nil || data.Name != canonical || data.Rotation.RotationPeriod != "7776000s" {
		t.Errorf("data = %s (%v), want the secret as proto3 JSON", m.Data, err)
	}
	after, _ := cw.srv.Secret(cw.secretName())
	if got := after.GetRotation().GetNextRotationTime().AsTime(); !got.Equal(next.Add(period)) || !data.Rotation.NextRotationTime.Equal(got) {
		t.Errorf("next_rotation_time = %v (data: %v), want %v: advanced by the period", got, data.Rotation.NextRotationTime, next.Add(period))
	}
	// No key string in anything published (SECRET_UPDATE and
	// TOPIC_CONFIGURED of schedule's write included).
	for _, n := range cw.srv.Notifications("") {
		if err := cw.noKeyIn(string(n.Data) + fmt.Sprint(n.Attributes)); err != nil {
			t.Errorf("%s message: %v", n.Attributes["eventType"], err)
		}
	}
}
