package emulator

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/secret"
)

// adminCall makes one call of the consumers' admin endpoint and decodes
// its JSON answer into out (when not nil); it returns the status and the
// raw body.
func adminCall(t *testing.T, s *Server, method, path, body string, out any) (int, string) {
	t.Helper()
	code, b := callGemini(t, s, method, path, "", body)
	if out != nil && code == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return code, string(b)
}

// waitCalls waits until the consumer with id made at least n successful
// calls, as the admin endpoint lists it.
func waitCalls(t *testing.T, s *Server, id string, n int) consumerJSON {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var list struct{ Consumers []consumerJSON }
		adminCall(t, s, http.MethodGet, ConsumerAdminPath, "", &list)
		for _, c := range list.Consumers {
			if c.ID == id && c.OK >= n {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s: fewer than %d calls in 10s: %+v", id, n, list.Consumers)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConsumerAdmin drives the consumers' admin endpoint over real HTTP,
// as `keyrotate emulator` users do: a consumer started by the key's NAME
// calls with its string (Monitoring counts it under the key's uid), lists
// with the key's name and fingerprint, stops by id; its calls are not
// Gemini calls, and no answer carries a key string.
func TestConsumerAdmin(t *testing.T) {
	s, c, clock := startMonitoring(t, Options{})
	name, ks, uid := seedKey(t, s, "forgotten", nil)
	var all strings.Builder

	var started consumerJSON
	code, body := adminCall(t, s, http.MethodPost, ConsumerAdminPath,
		`{"key": "projects/`+testProject+`/locations/global/keys/forgotten", "every": "10ms", "call": "countTokens"}`, &started)
	all.WriteString(body)
	if code != http.StatusOK {
		t.Fatalf("POST %s: %d %s", ConsumerAdminPath, code, body)
	}
	want := consumerJSON{ID: "c1", Key: name, Fingerprint: secret.Fingerprint(ks), Call: "countTokens", Every: "10ms"}
	if started.ID != want.ID || started.Key != want.Key || started.Fingerprint != want.Fingerprint || started.Call != want.Call || started.Every != want.Every {
		t.Errorf("started %+v, want %+v", started, want)
	}
	waitCalls(t, s, "c1", 3)
	var stopped consumerJSON
	code, body = adminCall(t, s, http.MethodDelete, ConsumerAdminPath+"/c1", "", &stopped)
	all.WriteString(body)
	if code != http.StatusOK || stopped.OK < 3 || stopped.Failed != 0 || stopped.LastStatus != http.StatusOK {
		t.Fatalf("DELETE c1: %d %s, want 200 with ≥3 ok calls", code, body)
	}
	if n := s.Calls("gemini.CountTokens"); n != stopped.OK {
		t.Errorf("emulator saw %d countTokens calls, the stopped consumer counted %d (admin calls are not Gemini calls)", n, stopped.OK)
	}
	if n := s.CallsTotal(); n != stopped.OK {
		t.Errorf("emulator counted %d calls in all, want only the consumer's %d", n, stopped.OK)
	}
	if got := sums(t, c, byCredentialQuery(clock.Now(), time.Hour)); got["apikey:"+uid+"/2xx"] != int64(stopped.OK) {
		t.Errorf("Monitoring counts %v, want %d successes of the forgotten key", got, stopped.OK)
	}
	var list struct{ Consumers []consumerJSON }
	_, body = adminCall(t, s, http.MethodGet, ConsumerAdminPath, "", &list)
	all.WriteString(body)
	if len(list.Consumers) != 0 || len(s.Consumers()) != 0 {
		t.Errorf("after DELETE c1: listed %+v, Consumers() %v, want none", list.Consumers, s.Consumers())
	}

	// Two more, one from a test's StartConsumer: DELETE of the collection
	// stops both, and Close would have.
	if _, err := s.StartConsumerFor(name, time.Hour, ConsumeListModels); err != nil {
		t.Fatal(err)
	}
	direct := s.StartConsumer(secret.New(ks), time.Hour, ConsumeGenerate)
	if direct.ID != "c3" || direct.Key != name {
		t.Errorf("StartConsumer: id %q key %q, want c3 and %s", direct.ID, direct.Key, name)
	}
	code, body = adminCall(t, s, http.MethodDelete, ConsumerAdminPath, "", &list)
	all.WriteString(body)
	if code != http.StatusOK || len(list.Consumers) != 2 || list.Consumers[0].ID != "c2" || list.Consumers[1].ID != "c3" || len(s.Consumers()) != 0 {
		t.Errorf("DELETE all: %d %s; left %v", code, body, s.Consumers())
	}

	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		say                      string
	}{
		{"unknown key", http.MethodPost, ConsumerAdminPath, `{"key": "projects/` + testProject + `/locations/global/keys/nope"}`, 404, "not found"},
		{"malformed key name", http.MethodPost, ConsumerAdminPath, `{"key": "nope"}`, 400, "Invalid key name"},
		{"interval too short", http.MethodPost, ConsumerAdminPath, `{"key": "` + name + `", "every": "1ms"}`, 400, "every must be a duration from 10ms to 24h0m0s"},
		{"interval not a duration", http.MethodPost, ConsumerAdminPath, `{"key": "` + name + `", "every": "often"}`, 400, "every must be"},
		{"unknown call", http.MethodPost, ConsumerAdminPath, `{"key": "` + name + `", "call": "embedContent"}`, 400, "want one of generateContent, countTokens, listModels"},
		{"unknown field (a key string is not taken)", http.MethodPost, ConsumerAdminPath, `{"keyString": "x"}`, 400, "unknown field"},
		{"unknown consumer", http.MethodDelete, ConsumerAdminPath + "/c9", "", 404, `Consumer \"c9\" not found`},
		{"no such method", http.MethodPut, ConsumerAdminPath, "", 404, "Method not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := adminCall(t, s, tc.method, tc.path, tc.body, nil)
			all.WriteString(body)
			if code != tc.code || !strings.Contains(body, tc.say) {
				t.Errorf("%s %s %s: %d %s, want %d saying %q", tc.method, tc.path, tc.body, code, body, tc.code, tc.say)
			}
		})
	}
	if len(s.Consumers()) != 0 {
		t.Errorf("refused starts left consumers: %v", s.Consumers())
	}
	if strings.Contains(all.String(), ks) {
		t.Error("an admin answer carries the key string")
	}
}

// TestCloseStopsConsumers: a consumer does not outlive its emulator.
func TestCloseStopsConsumers(t *testing.T) {
	s, _, _ := startMonitoring(t, Options{})
	_, ks, _ := seedKey(t, s, "forgotten", nil)
	cons := s.StartConsumer(secret.New(ks), time.Hour, ConsumeGenerate)
	s.Close()
	select {
	case <-cons.done:
	case <-time.After(5 * time.Second):
		t.Fatal("consumer still running 5s after Close")
	}
	if len(s.Consumers()) != 0 {
		t.Errorf("after Close: %v", s.Consumers())
	}
}
