package emulator

// An unconfigured consumer: something nobody told keyrotate about (a
// forgotten VM, a teammate's script) that keeps calling the Gemini API with
// a key. It calls the emulator's Gemini address over real loopback HTTP, so
// its calls go through the same checks and are recorded for Cloud
// Monitoring (usage.go) exactly as anyone else's.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

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

// consumerModel is the model a Consumer asks for.
const consumerModel = "models/gemini-2.5-flash"

// Consumer calls the Gemini API with one key at an interval until
// stopped. Start it with StartConsumer.
type Consumer struct {
	mu        sync.Mutex
	ok, fails int
	last      int // HTTP status of the latest call, 0 before the first

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// StartConsumer starts a goroutine that calls the Gemini API with key right
// away and then every interval (wall-clock time: the emulator's clock does
// not drive it), until Stop. A call under way when Stop is called is
// finished, not abandoned, so that Calls matches what the emulator saw.
// The key appears only in the x-goog-api-key header of its requests; a
// Consumer prints as its counts.
func (s *Server) StartConsumer(key secret.Key, every time.Duration, call ConsumerCall) *Consumer {
	c := &Consumer{stop: make(chan struct{}), done: make(chan struct{})}
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
	c.stopOnce.Do(func() { close(c.stop) })
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
