package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/subscribe"
	"github.com/keyrotate/keyrotate/internal/subscribe/tokentest"
)

// The acceptance tests of serve and listen (issue 15): the demo world on
// the emulator, its Pub/Sub (Google's own fake, pstest) over loopback, and
// SECRET_ROTATE messages published as Secret Manager publishes them
// (attributes eventType, secretId, dataFormat, timestamp; data the Secret
// as JSON: https://cloud.google.com/secret-manager/docs/event-notifications).
// For serve, the test plays Pub/Sub's push: it pulls each message from
// pstest, POSTs it with a signed OIDC token, and acks it on a 2xx answer,
// else nacks it — the push contract.

const (
	pushAudience = "https://keyrotate-test.a.run.app/"
	pushAccount  = "pubsub-push@demo-project.iam.gserviceaccount.com"
	topicName    = "projects/" + demoProject + "/topics/keyrotate"
	subName      = "projects/" + demoProject + "/subscriptions/keyrotate"
)

type subWorld struct {
	t      *testing.T
	srv    *emulator.Server
	w      *seeded
	client *pubsub.Client
	is     *tokentest.Issuer
	// seen collects every Pub/Sub payload and HTTP answer, for the canary.
	mu   sync.Mutex
	seen bytes.Buffer
}

func newSubWorld(t *testing.T) *subWorld {
	return newSubWorldWith(t, emulator.Options{})
}

func newSubWorldWith(t *testing.T, opts emulator.Options) *subWorld {
	t.Helper()
	srv := emutest.Start(t, opts)
	w, err := seedDemo(srv, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	client := startPubSub(t, srv)
	is, err := tokentest.New("push-key")
	if err != nil {
		t.Fatal(err)
	}
	return &subWorld{t: t, srv: srv, w: w, client: client, is: is}
}

// startPubSub makes the topic and its subscription on the emulator's
// Pub/Sub (Google's pstest, PUBSUB_EMULATOR_HOST in srv.Env()) and returns
// a client of it.
func startPubSub(t *testing.T, srv *emulator.Server) *pubsub.Client {
	t.Helper()
	if err := srv.CreateTopic(topicName); err != nil {
		t.Fatal(err)
	}
	if err := srv.CreateSubscription(subName, topicName, 600*time.Second); err != nil {
		t.Fatal(err)
	}
	return emutest.PubSubClient(t, srv, demoProject)
}

func (sw *subWorld) record(format string, args ...any) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	fmt.Fprintf(&sw.seen, format+"\n", args...)
}

// publish publishes a Secret Manager notification of event for secret,
// an event of now.
func (sw *subWorld) publish(event, secretName string) {
	sw.t.Helper()
	sw.publishAt(event, secretName, time.Now())
}

// publishAt publishes a notification of an event that happened at when.
func (sw *subWorld) publishAt(event, secretName string, when time.Time) {
	sw.t.Helper()
	data, _ := json.Marshal(map[string]any{"name": secretName, "rotation": map[string]string{"rotationPeriod": "7776000s"}})
	m := &pubsub.Message{Data: data, Attributes: map[string]string{
		subscribe.AttrEventType: event, subscribe.AttrSecretID: secretName,
		subscribe.AttrDataFormat: "JSON_API_V1", subscribe.AttrTimestamp: when.Format(time.RFC3339Nano),
	}}
	pub := sw.client.Publisher(topicName)
	defer pub.Stop()
	if _, err := pub.Publish(context.Background(), m).Get(context.Background()); err != nil {
		sw.t.Fatal(err)
	}
	sw.record("published %s %v", data, m.Attributes)
}

func (sw *subWorld) secretName() string {
	return "projects/" + demoProject + "/secrets/" + demoSecretID
}

// newKeys are the keys of the demo project besides the seeded one,
// deleted ones included.
func (sw *subWorld) newKeys() []string {
	var out []string
	for _, k := range sw.srv.Keys(demoProject, true) {
		if k.Name != sw.w.keyName {
			out = append(out, k.Name)
		}
	}
	return out
}

// liveKeys counts the demo project's keys that are not deleted.
func (sw *subWorld) liveKeys() int {
	return len(sw.srv.Keys(demoProject, false))
}

// noKeyIn fails the test when any key string of the emulator appears in
// out (the canary).
func (sw *subWorld) noKeyIn(what, out string) {
	sw.t.Helper()
	for _, k := range sw.srv.Keys(demoProject, true) {
		if k.KeyString != "" && (strings.Contains(out, k.KeyString) || strings.Contains(out, k.KeyString[4:16])) {
			sw.t.Errorf("the key string of %s appears in %s", k.Name, what)
		}
	}
}

// server is one keyrotate serve process, run in-process.
type server struct {
	addr   string
	cancel context.CancelFunc // SIGTERM
	done   chan error
	stderr *syncBuffer
	once   sync.Once
}

func (sw *subWorld) serve() *server {
	sw.t.Helper()
	v, err := sw.is.Validator(context.Background())
	if err != nil {
		sw.t.Fatal(err)
	}
	s := &server{done: make(chan error, 1), stderr: &syncBuffer{}}
	ready := make(chan string, 1)
	app := newApp(io.Discard, s.stderr)
	app.Metadata[pushValidatorKey] = v
	app.Metadata[serveReadyKey] = func(addr string) { ready <- addr }
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		s.done <- runApp(ctx, app, []string{"keyrotate", "--config", sw.w.config, "--log-format", "json", "--log-level", "info",
			"serve", "--port", "0", "--audience", pushAudience, "--push-service-account", pushAccount})
	}()
	select {
	case s.addr = <-ready:
	case err := <-s.done:
		sw.t.Fatalf("serve ended at once: %v\n%s", err, s.stderr)
	case <-time.After(30 * time.Second):
		sw.t.Fatal("serve did not listen within 30s")
	}
	sw.t.Cleanup(func() { s.stop(sw.t); sw.noKeyIn("serve's logs", s.stderr.String()) })
	return s
}

// stop sends the server its SIGTERM and waits for it to end.
func (s *server) stop(t *testing.T) {
	t.Helper()
	s.once.Do(func() {
		s.cancel()
		start := time.Now()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("serve ended with %v\n%s", err, s.stderr)
			}
			t.Logf("serve stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
		case <-time.After(30 * time.Second):
			t.Errorf("serve did not stop within 30s of SIGTERM")
		}
	})
}

// delivery is one message pulled from the subscription, to push.
type delivery struct {
	ackID string
	body  []byte
}

// pull takes the next message from the subscription (waiting for one).
func (sw *subWorld) pull() delivery {
	sw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		resp, err := sw.client.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{Subscription: subName, MaxMessages: 1})
		if err != nil {
			sw.t.Fatalf("pull: %v", err)
		}
		if len(resp.ReceivedMessages) == 0 {
			continue
		}
		rm := resp.ReceivedMessages[0]
		m := rm.Message
		// The push body, as Pub/Sub posts it (wrapped format).
		body, _ := json.Marshal(map[string]any{
			"message": map[string]any{
				"attributes": m.Attributes, "data": base64.StdEncoding.EncodeToString(m.Data),
				"messageId": m.MessageId, "publishTime": m.PublishTime.AsTime().Format(time.RFC3339Nano),
			},
			"subscription": subName, "deliveryAttempt": rm.DeliveryAttempt,
		})
		return delivery{ackID: rm.AckId, body: body}
	}
}

// push posts d to s with token and returns the answer's status.
func (sw *subWorld) push(s *server, d delivery, token string) int {
	sw.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/", bytes.NewReader(d.body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		sw.t.Fatalf("push: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sw.record("push answer %d %s", resp.StatusCode, b)
	return resp.StatusCode
}

// settle acks d when code is a success, else nacks it (delivered again).
func (sw *subWorld) settle(d delivery, code int) {
	sw.t.Helper()
	ctx := context.Background()
	var err error
	if code/100 == 2 {
		err = sw.client.SubscriptionAdminClient.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: subName, AckIds: []string{d.ackID}})
	} else {
		err = sw.client.SubscriptionAdminClient.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: subName, AckIds: []string{d.ackID}, AckDeadlineSeconds: 0})
	}
	if err != nil {
		sw.t.Fatal(err)
	}
}

// deliver pulls the next message, pushes it to s with a good token and
// settles it; it returns the answer's status.
func (sw *subWorld) deliver(s *server) int {
	sw.t.Helper()
	d := sw.pull()
	code := sw.push(s, d, sw.is.Sign(tokentest.Good(pushAudience, pushAccount)))
	sw.settle(d, code)
	return code
}

func (sw *subWorld) canary() {
	sw.t.Helper()
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.noKeyIn("Pub/Sub payloads and push answers", sw.seen.String())
}

// TestServeRotatesOnce: a SECRET_ROTATE for the slot's secret rotates it
// once; the same message delivered again (Pub/Sub's at-least-once
// delivery) and to a second instance does nothing more.
func TestServeRotatesOnce(t *testing.T) {
	sw := newSubWorld(t)
	a, b := sw.serve(), sw.serve()
	sw.publish(subscribe.EventRotate, sw.secretName())
	d := sw.pull()
	tok := sw.is.Sign(tokentest.Good(pushAudience, pushAccount))
	if code := sw.push(a, d, tok); code != http.StatusNoContent {
		t.Fatalf("push = %d, want 204\n%s", code, a.stderr)
	}
	sw.settle(d, http.StatusNoContent)
	if n := len(sw.newKeys()); n != 1 {
		t.Fatalf("%d new keys, want 1", n)
	}
	// The same message again, to both instances.
	for _, s := range []*server{a, b} {
		if code := sw.push(s, d, tok); code != http.StatusNoContent {
			t.Errorf("duplicate push = %d, want 204", code)
		}
	}
	if n := len(sw.newKeys()); n != 1 || sw.liveKeys() != 1 {
		t.Errorf("%d new keys (%d live), want 1 (1 live) after duplicates", n, sw.liveKeys())
	}
	if !strings.Contains(b.stderr.String(), "requested at") {
		t.Errorf("the duplicate's log does not say the request was answered:\n%s", b.stderr)
	}
	sw.canary()
}

// offsetClock is the wall clock moved by an offset that a test changes.
type offsetClock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().UTC().Add(c.d)
}

func (c *offsetClock) set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.d = d
}

// TestServeLateDuplicate: a message delivered again long after its
// rotation (more than lease_ttl: Pub/Sub keeps unacknowledged messages for
// days) does nothing, because the current key was made after the event.
// The emulator's clock runs behind the wall clock: the seeded key was made
// 3h ago, the event happened 2h ago, its rotation made the new key 1h ago.
func TestServeLateDuplicate(t *testing.T) {
	clock := &offsetClock{d: -3 * time.Hour}
	sw := newSubWorldWith(t, emulator.Options{Clock: clock})
	clock.set(-time.Hour)
	s := sw.serve()
	sw.publishAt(subscribe.EventRotate, sw.secretName(), time.Now().Add(-2*time.Hour))
	d := sw.pull()
	tok := sw.is.Sign(tokentest.Good(pushAudience, pushAccount))
	if code := sw.push(s, d, tok); code != http.StatusNoContent || len(sw.newKeys()) != 1 {
		t.Fatalf("push = %d with %d new keys, want 204 and 1\n%s", code, len(sw.newKeys()), s.stderr)
	}
	if code := sw.push(s, d, tok); code != http.StatusNoContent {
		t.Errorf("late duplicate = %d, want 204", code)
	}
	if n := len(sw.newKeys()); n != 1 || sw.liveKeys() != 1 {
		t.Errorf("%d new keys (%d live) after a late duplicate, want 1 (1 live)", n, sw.liveKeys())
	}
	sw.canary()
}

// TestServeConcurrentDuplicates: the same message pushed to two instances
// at once, while the new key propagates, makes one new key: one run holds
// the lease, the other answers 503 and its redelivery does nothing.
func TestServeConcurrentDuplicates(t *testing.T) {
	sw := newSubWorld(t)
	sw.srv.SetPropagationDelay(3 * time.Second)
	a, b := sw.serve(), sw.serve()
	sw.publish(subscribe.EventRotate, sw.secretName())
	d := sw.pull()
	tok := sw.is.Sign(tokentest.Good(pushAudience, pushAccount))
	codes := make([]int, 2)
	var wg sync.WaitGroup
	for i, s := range []*server{a, b} {
		wg.Go(func() { codes[i] = sw.push(s, d, tok) })
	}
	wg.Wait()
	ok := 0
	for _, c := range codes {
		switch c {
		case http.StatusNoContent:
			ok++
		case http.StatusServiceUnavailable:
			// Delivered again later: by then the rotation is done.
			if code := sw.push(b, d, tok); code != http.StatusNoContent {
				t.Errorf("redelivery = %d, want 204", code)
			}
		default:
			t.Errorf("push = %d, want 204 or 503", c)
		}
	}
	if ok == 0 {
		t.Errorf("answers %v: no instance rotated", codes)
	}
	if n := len(sw.newKeys()); n != 1 || sw.liveKeys() != 1 {
		t.Errorf("%d new keys (%d live), want exactly 1 new and 1 live", n, sw.liveKeys())
	}
	sw.canary()
}

// TestServeProjectNumber: a notification naming the secret with the
// project number, where the config names it with the project id, rotates
// the slot.
func TestServeProjectNumber(t *testing.T) {
	sw := newSubWorld(t)
	s := sw.serve()
	sw.publish(subscribe.EventRotate, fmt.Sprintf("projects/%d/secrets/%s", demoProjectNumber, demoSecretID))
	if code := sw.deliver(s); code != http.StatusNoContent || len(sw.newKeys()) != 1 {
		t.Errorf("push = %d with %d new keys, want 204 and 1\n%s", code, len(sw.newKeys()), s.stderr)
	}
}

// TestServeIgnoresOthers: another event type, and a rotation event of a
// secret that is no slot's, are acknowledged and do nothing.
func TestServeIgnoresOthers(t *testing.T) {
	sw := newSubWorld(t)
	s := sw.serve()
	sw.publish("SECRET_VERSION_ADD", sw.secretName())
	sw.publish(subscribe.EventRotate, "projects/"+demoProject+"/secrets/someone-elses")
	for range 2 {
		if code := sw.deliver(s); code != http.StatusNoContent {
			t.Errorf("push = %d, want 204", code)
		}
	}
	if n := sw.srv.MutatingCalls(); n != 0 {
		t.Errorf("%d mutating calls, want none", n)
	}
	if n := len(sw.newKeys()); n != 0 {
		t.Errorf("%d new keys, want none", n)
	}
}

// TestServeRedeliveryFinishes: a rotation that stops part-way (Secret
// Manager refuses the new version once) answers 503; the redelivery
// resumes it and finishes, with the key the first attempt made.
func TestServeRedeliveryFinishes(t *testing.T) {
	sw := newSubWorld(t)
	s := sw.serve()
	sw.srv.Fail("secretmanager.AddSecretVersion", fake.Next, fake.Fault{Code: codes.PermissionDenied})
	sw.publish(subscribe.EventRotate, sw.secretName())
	if code := sw.deliver(s); code != http.StatusServiceUnavailable {
		t.Fatalf("first delivery = %d, want 503 (stopped part-way)\n%s", code, s.stderr)
	}
	if sw.liveKeys() != 2 {
		t.Errorf("%d live keys after the stop, want 2 (both work)", sw.liveKeys())
	}
	if code := sw.deliver(s); code != http.StatusNoContent {
		t.Fatalf("redelivery = %d, want 204\n%s", code, s.stderr)
	}
	if n := len(sw.newKeys()); n != 1 || sw.liveKeys() != 1 {
		t.Errorf("%d new keys (%d live), want 1 (1 live)", n, sw.liveKeys())
	}
	sw.canary()
}

// TestServeSIGTERM: SIGTERM while a push's rotation waits for its new key
// stops it at a safe point (both keys work, the lease released) and
// answers 503; a new instance's redelivery completes the rotation.
func TestServeSIGTERM(t *testing.T) {
	sw := newSubWorld(t)
	sw.srv.SetPropagationDelay(5 * time.Second) // the new key works 5s after its creation
	s := sw.serve()
	sw.publish(subscribe.EventRotate, sw.secretName())
	d := sw.pull()
	answered := make(chan int, 1)
	go func() { answered <- sw.push(s, d, sw.is.Sign(tokentest.Good(pushAudience, pushAccount))) }()
	deadline := time.Now().Add(30 * time.Second)
	for len(sw.newKeys()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // probing the new key
	s.stop(t)
	code := <-answered
	if code != http.StatusServiceUnavailable {
		t.Fatalf("push during SIGTERM = %d, want 503\n%s", code, s.stderr)
	}
	sw.settle(d, code)
	if sw.liveKeys() != 2 {
		t.Errorf("%d live keys after SIGTERM, want 2 (both work)", sw.liveKeys())
	}
	sw.srv.SetPropagationDelay(0)
	s2 := sw.serve()
	if code := sw.deliver(s2); code != http.StatusNoContent {
		t.Fatalf("redelivery = %d, want 204\n%s", code, s2.stderr)
	}
	if n := len(sw.newKeys()); n != 1 || sw.liveKeys() != 1 {
		t.Errorf("%d new keys (%d live), want 1 (1 live)", n, sw.liveKeys())
	}
	sw.canary()
}

// TestServeRejectsBadTokens: pushes without the push service account's
// valid token are refused and change nothing.
func TestServeRejectsBadTokens(t *testing.T) {
	sw := newSubWorld(t)
	s := sw.serve()
	sw.publish(subscribe.EventRotate, sw.secretName())
	d := sw.pull()
	forger, err := tokentest.New("push-key")
	if err != nil {
		t.Fatal(err)
	}
	good := tokentest.Good(pushAudience, pushAccount)
	expired, wrongAud, wrongEmail := good, good, good
	expired.Expires = time.Now().Add(-time.Minute).Unix()
	wrongAud.Audience = "https://other.a.run.app/"
	wrongEmail.Email = "attacker@evil.iam.gserviceaccount.com"
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"missing", "", http.StatusUnauthorized},
		{"forged", forger.Sign(good), http.StatusUnauthorized},
		{"expired", sw.is.Sign(expired), http.StatusUnauthorized},
		{"wrong audience", sw.is.Sign(wrongAud), http.StatusUnauthorized},
		{"wrong email", sw.is.Sign(wrongEmail), http.StatusForbidden},
	} {
		if code := sw.push(s, d, tc.token); code != tc.want {
			t.Errorf("%s token: %d, want %d", tc.name, code, tc.want)
		}
	}
	if n := sw.srv.MutatingCalls(); n != 0 {
		t.Errorf("%d mutating calls after refused pushes, want none", n)
	}
	sw.canary()
}

// TestListen: the pull subscription rotates the slot once; a duplicate
// message does nothing; a rotation that stops part-way is nacked and its
// redelivery finishes it; SIGTERM ends listen.
func TestListen(t *testing.T) {
	sw := newSubWorld(t)
	stderr := &syncBuffer{}
	app := newApp(io.Discard, stderr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runApp(ctx, app, []string{"keyrotate", "--config", sw.w.config, "--log-format", "json", "--log-level", "info",
			"listen", "--subscription", subName})
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60s\n%s", what, stderr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	sw.srv.Fail("secretmanager.AddSecretVersion", fake.Next, fake.Fault{Code: codes.PermissionDenied})
	sw.publish(subscribe.EventRotate, sw.secretName())
	waitFor("rotated after a stop and a redelivery", func() bool { return len(sw.newKeys()) == 1 && sw.liveKeys() == 1 })
	if !strings.Contains(stderr.String(), "will be delivered again") {
		t.Errorf("no nack logged for the stopped rotation:\n%s", stderr)
	}
	waitFor("message acknowledged", func() bool { return strings.Contains(stderr.String(), "slot rotated; message acknowledged") })
	sw.publish(subscribe.EventRotate, sw.secretName())
	sw.publish("SECRET_UPDATE", sw.secretName())
	waitFor("both handled", func() bool {
		return strings.Count(stderr.String(), "message acknowledged") >= 3
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("listen ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("listen did not stop within 30s of SIGTERM")
	}
	if n := len(sw.newKeys()); n != 1 || sw.liveKeys() != 1 {
		t.Errorf("%d new keys (%d live), want 1 (1 live)", n, sw.liveKeys())
	}
	sw.noKeyIn("listen's logs", stderr.String())
	sw.canary()
}

// TestListenSIGTERM runs the real binary: SIGTERM while a pulled
// message's rotation waits for its new key stops the rotation at a safe
// point (both keys work), nacks the message and exits 0; the next
// listener gets the message again and completes the rotation.
func TestListenSIGTERM(t *testing.T) {
	t.Parallel()
	cw := newCrashWorld(t)
	client := startPubSub(t, cw.srv)
	sw := &subWorld{t: t, srv: cw.srv, w: cw.w, client: client}
	cw.srv.SetPropagationDelay(5 * time.Second)
	args := []string{"--config", cw.w.config, "--log-format", "json", "--log-level", "info", "listen", "--subscription", subName}
	c := cw.start(args...)
	sw.publish(subscribe.EventRotate, sw.secretName())
	deadline := time.Now().Add(60 * time.Second)
	for len(sw.newKeys()) == 0 && time.Now().Before(deadline) && !c.stopped() {
		time.Sleep(50 * time.Millisecond)
	}
	if len(sw.newKeys()) == 0 {
		c.kill()
		t.Fatalf("no new key within 60s\n%s", c.output())
	}
	time.Sleep(500 * time.Millisecond) // probing the new key
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(t); code != 0 {
		t.Errorf("listen exited %d after SIGTERM, want 0\n%s", code, c.output())
	}
	if !strings.Contains(c.output(), "will be delivered again") {
		t.Errorf("the stopped rotation's message was not nacked:\n%s", c.output())
	}
	if n := sw.liveKeys(); n != 2 {
		t.Errorf("%d live keys after SIGTERM, want 2 (both work)", n)
	}
	sw.noKeyIn("listen's output", c.output())
	cw.srv.SetPropagationDelay(0)
	c2 := cw.start(args...)
	deadline = time.Now().Add(60 * time.Second)
	for sw.liveKeys() != 1 && time.Now().Before(deadline) && !c2.stopped() {
		time.Sleep(50 * time.Millisecond)
	}
	if err := c2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c2.wait(t)
	if n := len(sw.newKeys()); n != 1 || sw.liveKeys() != 1 {
		t.Errorf("%d new keys (%d live) after the redelivery, want 1 (1 live)\n%s", n, sw.liveKeys(), c2.output())
	}
	sw.noKeyIn("listen's output", c2.output())
	sw.canary()
}

// TestListenNoSubscription: a subscription that does not exist ends listen
// with exit 1 and a hint, having rotated nothing.
func TestListenNoSubscription(t *testing.T) {
	sw := newSubWorld(t)
	var stderr bytes.Buffer
	app := newApp(io.Discard, &stderr)
	err := runApp(context.Background(), app, []string{"keyrotate", "--config", sw.w.config, "listen", "--subscription", subName + "-missing"})
	if code := reportRun(app, &stderr, err); code != exitFailed || !strings.Contains(stderr.String(), "roles/pubsub.subscriber") {
		t.Errorf("exit %d, want %d with a hint naming roles/pubsub.subscriber:\n%s", code, exitFailed, &stderr)
	}
	if n := sw.srv.MutatingCalls(); n != 0 {
		t.Errorf("%d mutating calls, want none", n)
	}
}

// TestScheduleToListen is the end to end, with the real binary:
// schedule sets the slot's schedule and topic; the emulator's clock passes
// the due time; Secret Manager publishes SECRET_ROTATE; listen rotates the
// slot once (the events the rotation's own writes publish are acknowledged
// and do nothing); the next rotation time has advanced by the period.
func TestScheduleToListen(t *testing.T) {
	t.Parallel()
	const sub = "projects/" + demoProject + "/subscriptions/keyrotate-listen"
	cw, clock, next, period := scheduled(t, sub)
	sw := &subWorld{t: t, srv: cw.srv, w: cw.w}
	l := cw.start("--config", cw.w.config, "--log-format", "json", "--log-level", "info", "listen", "--subscription", sub)
	defer func() {
		if !l.stopped() {
			l.kill()
		}
	}()
	time.Sleep(500 * time.Millisecond)
	if n := len(sw.newKeys()); n != 0 {
		t.Fatalf("%d new keys before the due time", n)
	}
	clock.Advance(next.Sub(clock.Now()) + time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for !(len(sw.newKeys()) == 1 && sw.liveKeys() == 1 && strings.Contains(l.output(), "slot rotated; message acknowledged")) {
		if time.Now().After(deadline) || l.stopped() {
			t.Fatalf("the slot was not rotated within 60s of the due time\n%s", l.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // the rotation's own notifications, handled
	if err := l.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := l.wait(t); code != 0 {
		t.Errorf("listen exited %d after SIGTERM, want 0\n%s", code, l.output())
	}
	if n := len(sw.newKeys()); n != 1 || sw.liveKeys() != 1 {
		t.Errorf("%d new keys (%d live), want exactly 1 (1 live)", n, sw.liveKeys())
	}
	if n := strings.Count(l.output(), "slot rotated; message acknowledged"); n != 1 {
		t.Errorf("%d rotations logged, want 1\n%s", n, l.output())
	}
	after, _ := cw.srv.Secret(cw.secretName())
	if got := after.GetRotation().GetNextRotationTime().AsTime(); !got.Equal(next.Add(period)) {
		t.Errorf("next_rotation_time = %v, want %v: advanced by the period", got, next.Add(period))
	}
	if err := cw.noKeyIn(l.output()); err != nil {
		t.Errorf("listen's output: %v", err)
	}
	for _, n := range cw.srv.Notifications("") {
		if err := cw.noKeyIn(string(n.Data) + fmt.Sprint(n.Attributes)); err != nil {
			t.Errorf("%s message: %v", n.Attributes["eventType"], err)
		}
	}
}
