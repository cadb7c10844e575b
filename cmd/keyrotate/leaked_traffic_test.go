package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/rotate"
)

const generateRPC = "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent"

// TestLeakedReportsTraffic: an unconfigured consumer calls with the key
// that leaks; rotate --leaked deletes the key at once and reports the
// traffic that breaks with it, by service and method with its rate, in
// the text, the run record and the webhook summary, and in --output json.
// When Cloud Monitoring refuses, the key is deleted all the same and the
// report says why the traffic is unknown, naming the role.
func TestLeakedReportsTraffic(t *testing.T) {
	t.Parallel()
	fw := newFleetWorld(t, emulator.Options{}, 0, 0)
	ok, failed := consume(t, fw.srv, fw.w.key, 3)
	// And a busier hour than a test can make with real calls: 60 more
	// 10 minutes ago.
	for range 60 {
		if err := fw.srv.RecordRequest(fw.w.keyName, generateRPC, 200, fw.srv.Now().Add(-10*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	total := int64(60 + ok + failed)
	perMinute := math.Round(float64(total)/60*100) / 100
	rate := strconv.FormatFloat(perMinute, 'f', -1, 64)

	hook := newWebhook(t)
	report := filepath.Join(t.TempDir(), "run.json")
	fw.crashWorld.stdin = fw.w.key.Reveal() + "\n"
	c := fw.run(t, hook.env(), fw.config("rotate", "--leaked", "--report", report, "--notify-on", "always")...)
	if code := c.wait(t); code != 0 {
		t.Fatalf("rotate --leaked exit %d: %s", code, c.output())
	}
	if k, _ := fw.srv.Key(fw.w.keyName); k.DeleteTime == "" {
		t.Fatal("the leaked key was not deleted")
	}
	out := c.stdout.String()
	for _, want := range []string{
		"traffic  that breaks with it: " + rate + "/min over the last hour",
		"  generativelanguage GenerateContent: " + rate + "/min over the last hour (peak ",
		"last seen ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "traffic  "), strings.Index(out, "retire     deleted key"); i < 0 || j < 0 || i > j {
		t.Errorf("traffic not reported before the delete:\n%s", out)
	}

	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.leaks("the run record", string(b)); err != nil {
		t.Error(err)
	}
	var rec struct {
		Command string       `json:"command"`
		Leak    *rotate.Leak `json:"leak"`
		Slots   []slotRecord `json:"slots"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	checkTraffic := func(what string, l *rotate.Leak) {
		t.Helper()
		if l == nil || l.Traffic == nil || len(l.Traffic.ByMethod) != 1 {
			t.Fatalf("%s: leak %+v, want its traffic by method", what, l)
		}
		m := l.Traffic.ByMethod[0]
		if m.Method != generateRPC || m.Service != "generativelanguage.googleapis.com" ||
			m.LastHour.Total() != total || m.PerMinute != perMinute {
			t.Errorf("%s: traffic %+v, want %d calls of GenerateContent in the hour", what, m, total)
		}
	}
	checkTraffic("run record", rec.Leak)
	if rec.Command != "rotate --leaked" || len(rec.Slots) != 1 || rec.Slots[0].Action != "rotated" {
		t.Errorf("run record = %s, want the leak's rotation", b)
	}

	posts := hook.posts()
	if len(posts) != 1 {
		t.Fatalf("webhook posts = %d, want 1", len(posts))
	}
	if err := fw.leaks("the webhook post", string(posts[0].Body)); err != nil {
		t.Error(err)
	}
	var msg struct {
		Text      string `json:"text"`
		Keyrotate struct {
			Leak *rotate.Leak `json:"leak"`
		} `json:"keyrotate"`
	}
	if err := json.Unmarshal(posts[0].Body, &msg); err != nil {
		t.Fatal(err)
	}
	checkTraffic("webhook", msg.Keyrotate.Leak)
	if !strings.Contains(msg.Text, "generativelanguage GenerateContent: "+rate+"/min") {
		t.Errorf("webhook text lacks the traffic:\n%s", msg.Text)
	}

	// --output json, on the same key now deleted: its traffic is still
	// read (and grows only by failing calls).
	c = fw.run(t, nil, fw.config("--output", "json", "rotate", "--leaked")...)
	if code := c.wait(t); code != 0 {
		t.Fatalf("rotate --leaked --output json exit %d: %s", code, c.output())
	}
	var doc leakOutput
	if err := json.Unmarshal([]byte(c.stdout.String()), &doc); err != nil {
		t.Fatalf("JSON: %v\n%s", err, c.stdout.String())
	}
	checkTraffic("--output json", doc.Response.Leak)

	t.Run("monitoring denied", func(t *testing.T) {
		fw := newFleetWorld(t, emulator.Options{}, 0, 0)
		fw.srv.DenyPermission("monitoring.timeSeries.list")
		fw.crashWorld.stdin = fw.w.key.Reveal() + "\n"
		c := fw.run(t, nil, fw.config("rotate", "--leaked")...)
		if code := c.wait(t); code != 0 {
			t.Fatalf("rotate --leaked exit %d: %s", code, c.output())
		}
		if k, _ := fw.srv.Key(fw.w.keyName); k.DeleteTime == "" {
			t.Fatal("the leaked key was not deleted")
		}
		for _, want := range []string{"traffic  unknown, going on without it: the caller lacks monitoring.timeSeries.list", "roles/monitoring.viewer"} {
			if !strings.Contains(c.stdout.String(), want) {
				t.Errorf("text lacks %q:\n%s", want, c.output())
			}
		}
	})
}
