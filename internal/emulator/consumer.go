package emulator

// An unconfigured consumer: something nobody told keyrotate about (a
// forgotten VM, a teammate's script) that keeps calling the Gemini API with
// a key. It calls the emulator's Gemini address over real loopback HTTP, so
// its calls go through the same checks and are recorded for Cloud
// Monitoring (usage.go) exactly as anyone else's.
//
// Tests start one with StartConsumer (a key string) or StartConsumerFor (a
// key's name). People running `keyrotate emulator` start and stop them
// through the emulator's admin endpoint on the Gemini address
// (withConsumerAdmin below), as Google's own emulators take control
// requests on their own address: the Firestore emulator stops on a POST to
// /shutdown (cloud.google.com/firestore/docs/emulator), and Firebase's
// Firestore and Auth emulators clear their data on a DELETE of
// /emulator/v1/projects/P/databases/(default)/documents and
// /emulator/v1/projects/P/accounts (as public test suites call them; the
// path prefix is taken from there). The admin endpoint names keys,
// never their strings: a consumer is started with a key's resource name
// and the emulator, which holds the string, makes the calls.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/keyrotate/keyrotate/internal/secret"
)

// ConsumerCall is the call a Consumer makes.
type ConsumerCall int

const (
	// ConsumeGenerate calls generateContent, an application's own call
	// (the default).
	ConsumeGenerate ConsumerCall = iota
	// ConsumeCountTokens calls countTokens.
	ConsumeCountTokens
	// ConsumeListModels calls GET /v1beta/models?pageSize=1.
	ConsumeListModels
)

// consumerCalls are the calls' names, as the admin endpoint takes and
// shows them: the Gemini API's method names.
var consumerCalls = []string{ConsumeGenerate: "generateContent", ConsumeCountTokens: "countTokens", ConsumeListModels: "listModels"}

// String is the call's Gemini method name.
func (c ConsumerCall) String() string {
	if int(c) >= 0 && int(c) < len(consumerCalls) {
		return consumerCalls[c]
	}
	return "ConsumerCall(" + strconv.Itoa(int(c)) + ")"
}

// ParseConsumerCall reads a call's name: generateContent, countTokens or
// listModels ("" is generateContent).
func ParseConsumerCall(s string) (ConsumerCall, error) {
	if s == "" {
		return ConsumeGenerate, nil
	}
	if i := slices.Index(consumerCalls, s); i >= 0 {
		return ConsumerCall(i), nil
	}
	return 0, fmt.Errorf("unknown consumer call %q: want one of %s", s, strings.Join(consumerCalls, ", "))
}

// consumerModel is the model a Consumer asks for.
const consumerModel = "models/gemini-2.5-flash"

// Consumer intervals the admin endpoint accepts: often enough to show
// traffic in a demo, not so often that it loads the machine.
const (
	MinConsumerEvery = 10 * time.Millisecond
	MaxConsumerEvery = 24 * time.Hour
)

// Consumer calls the Gemini API with one key at an interval until
// stopped. Start it with StartConsumer or StartConsumerFor.
type Consumer struct {
	// ID names the consumer in the emulator ("c1", "c2", ...).
	ID string
	// Key is the resource name of the key it calls with, "" when the key
	// was unknown to the emulator when it started; Fingerprint is the
	// key string's.
	Key, Fingerprint string
	Every            time.Duration
	Call             ConsumerCall

	mu        sync.Mutex
	ok, fails int
	last      int // HTTP status of the latest call, 0 before the first

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	forget   func() // removes it from the server's list
}

// StartConsumer starts a goroutine that calls the Gemini API with key right
// away and then every interval (wall-clock time: the emulator's clock does
// not drive it), until Stop or the server's Close. A call under way when
// Stop is called is finished, not abandoned, so that Calls matches what the
// emulator saw. The key appears only in the x-goog-api-key header of its
// requests; a Consumer prints as its counts.
func (s *Server) StartConsumer(key secret.Key, every time.Duration, call ConsumerCall) *Consumer {
	s.mu.Lock()
	name := ""
	if k := s.keys.byString[key.Reveal()]; k != nil {
		name = k.name()
	}
	s.mu.Unlock()
	return s.startConsumer(key, name, every, call)
}

// StartConsumerFor starts a consumer (see StartConsumer) that calls with
// the key named keyName (projects/P/locations/global/keys/K), whose
// string the emulator holds: so that a key's string need not leave the
// emulator to make it call. The key must exist; it may be deleted (its
// calls then fail, as a forgotten consumer's would).
func (s *Server) StartConsumerFor(keyName string, every time.Duration, call ConsumerCall) (*Consumer, error) {
	s.mu.Lock()
	k, err := s.resolveKey(keyName)
	var key secret.Key
	if err == nil {
		key, keyName = secret.New(k.keyString), k.name()
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.startConsumer(key, keyName, every, call), nil
}

func (s *Server) startConsumer(key secret.Key, name string, every time.Duration, call ConsumerCall) *Consumer {
	c := &Consumer{Key: name, Fingerprint: key.Fingerprint(), Every: every, Call: call,
		stop: make(chan struct{}), done: make(chan struct{})}
	s.consumersMu.Lock()
	s.consumerSeq++
	c.ID = "c" + strconv.Itoa(s.consumerSeq)
	if s.consumers == nil {
		s.consumers = map[string]*Consumer{}
	}
	s.consumers[c.ID] = c
	s.consumersMu.Unlock()
	c.forget = func() {
		s.consumersMu.Lock()
		defer s.consumersMu.Unlock()
		delete(s.consumers, c.ID)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	addr := s.GeminiAddr
	go func() {
		defer close(c.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			code := consumeOnce(client, addr, key, call)
			c.mu.Lock()
			switch {
			case code == 0: // no connection: not a call
			case code < 300:
				c.ok++
			default:
				c.fails++
			}
			if code != 0 {
				c.last = code
			}
			c.mu.Unlock()
			select {
			case <-c.stop:
				return
			case <-t.C:
			}
		}
	}()
	return c
}

func consumeOnce(client *http.Client, addr string, key secret.Key, call ConsumerCall) int {
	method, path, body := http.MethodPost, "/v1beta/"+consumerModel+":generateContent",
		`{"contents":[{"parts":[{"text":"ping"}]}],"generationConfig":{"maxOutputTokens":1}}`
	switch call {
	case ConsumeCountTokens:
		path, body = "/v1beta/"+consumerModel+":countTokens", `{"contents":[{"parts":[{"text":"ping"}]}]}`
	case ConsumeListModels:
		method, path, body = http.MethodGet, "/v1beta/models?pageSize=1", ""
	}
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	req, err := http.NewRequest(method, "http://"+addr+path, rd)
	if err != nil {
		return 0
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("X-Goog-Api-Key", key.Reveal())
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// Stop stops the consumer and waits for its last call to finish. It may be
// called more than once.
func (c *Consumer) Stop() {
	c.stopOnce.Do(func() {
		close(c.stop)
		if c.forget != nil {
			c.forget()
		}
	})
	<-c.done
}

// Calls returns how many calls succeeded and failed so far, and the HTTP
// status of the latest (0 before the first).
func (c *Consumer) Calls() (ok, failed, last int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok, c.fails, c.last
}

// String describes the consumer by its counts, never its key.
func (c *Consumer) String() string {
	ok, failed, last := c.Calls()
	return fmt.Sprintf("consumer(%d ok, %d failed, last %d)", ok, failed, last)
}

// Consumers returns the consumers running, in the order they started.
func (s *Server) Consumers() []*Consumer {
	s.consumersMu.Lock()
	defer s.consumersMu.Unlock()
	out := make([]*Consumer, 0, len(s.consumers))
	for _, c := range s.consumers {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Consumer) int { return consumerNum(a.ID) - consumerNum(b.ID) })
	return out
}

func consumerNum(id string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(id, "c"))
	return n
}

// stopConsumers stops every consumer (Close).
func (s *Server) stopConsumers() {
	for _, c := range s.Consumers() {
		c.Stop()
	}
}

// ConsumerAdminPath is where the Gemini address serves the consumers'
// admin endpoint:
//
//	GET    /emulator/v1/consumers       the running consumers
//	POST   /emulator/v1/consumers       start one: {"key": NAME, "every": "20s", "call": "generateContent"}
//	DELETE /emulator/v1/consumers/ID    stop one
//	DELETE /emulator/v1/consumers       stop all
//
// Answers are consumerJSON documents (or {"consumers": [...]}), errors
// Google's JSON error body. No answer carries a key string.
const ConsumerAdminPath = "/emulator/v1/consumers"

// consumerJSON is a consumer as the admin endpoint shows it.
type consumerJSON struct {
	ID          string `json:"id"`
	Key         string `json:"key"`
	Fingerprint string `json:"fingerprint"`
	Call        string `json:"call"`
	Every       string `json:"every"`
	OK          int    `json:"ok"`
	Failed      int    `json:"failed"`
	LastStatus  int    `json:"lastStatus,omitempty"`
}

func (c *Consumer) json() consumerJSON {
	ok, failed, last := c.Calls()
	return consumerJSON{ID: c.ID, Key: c.Key, Fingerprint: c.Fingerprint, Call: c.Call.String(), Every: c.Every.String(),
		OK: ok, Failed: failed, LastStatus: last}
}

// withConsumerAdmin serves the admin endpoint beside next (the Gemini
// API). Its calls are not Gemini calls: they are not counted, faulted or
// recorded for Monitoring.
func (s *Server) withConsumerAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p != ConsumerAdminPath && !strings.HasPrefix(p, ConsumerAdminPath+"/") {
			next.ServeHTTP(w, r)
			return
		}
		id := strings.TrimPrefix(strings.TrimPrefix(p, ConsumerAdminPath), "/")
		switch {
		case id == "" && r.Method == http.MethodGet:
			list := []consumerJSON{}
			for _, c := range s.Consumers() {
				list = append(list, c.json())
			}
			writeJSON(w, http.StatusOK, map[string]any{"consumers": list})
		case id == "" && r.Method == http.MethodPost:
			s.serveStartConsumer(w, r)
		case id == "" && r.Method == http.MethodDelete:
			list := []consumerJSON{}
			for _, c := range s.Consumers() {
				c.Stop()
				list = append(list, c.json())
			}
			writeJSON(w, http.StatusOK, map[string]any{"consumers": list})
		case id != "" && !strings.Contains(id, "/") && r.Method == http.MethodDelete:
			s.consumersMu.Lock()
			c := s.consumers[id]
			s.consumersMu.Unlock()
			if c == nil {
				writeError(w, newError(codes.NotFound, "Consumer %q not found.", id))
				return
			}
			c.Stop()
			writeJSON(w, http.StatusOK, c.json())
		default:
			methodNotFound(w)
		}
	})
}

// startConsumerRequest is the body of a POST to ConsumerAdminPath.
type startConsumerRequest struct {
	Key   string `json:"key"`
	Every string `json:"every"`
	Call  string `json:"call"`
}

func (s *Server) serveStartConsumer(w http.ResponseWriter, r *http.Request) {
	var req startConsumerRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, newError(codes.InvalidArgument, "Invalid JSON payload received. %v", err))
		return
	}
	every := time.Minute
	if req.Every != "" {
		d, err := time.ParseDuration(req.Every)
		if err != nil || d < MinConsumerEvery || d > MaxConsumerEvery {
			writeError(w, newError(codes.InvalidArgument, "every must be a duration from %s to %s, not %q.", MinConsumerEvery, MaxConsumerEvery, req.Every))
			return
		}
		every = d
	}
	call, err := ParseConsumerCall(req.Call)
	if err != nil {
		writeError(w, newError(codes.InvalidArgument, "%v.", err))
		return
	}
	c, err := s.StartConsumerFor(req.Key, every, call)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c.json())
}
