package secret

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
)

const canary = "AIzaSyCANARY-canary-canary-canary-0000"

func TestKeyNeverPrints(t *testing.T) {
	k := New(canary)
	var logs strings.Builder
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	logger.Info("x", "key", k)
	js, _ := json.Marshal(map[string]any{"k": k})
	outs := []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q %x %X %d", k, k, k, k, k, k, k, k),
		fmt.Sprintf("%v", struct{ K Key }{k}), fmt.Sprintf("%+v", &struct{ K Key }{k}),
		string(js), logs.String(), fmt.Errorf("wrap %v", k).Error(),
	}
	for _, o := range outs {
		if strings.Contains(o, canary) || strings.Contains(o, canary[4:20]) {
			t.Errorf("output %q contains the key string", o)
		}
		if !strings.Contains(o, k.Fingerprint()) {
			t.Errorf("output %q lacks the fingerprint %s", o, k.Fingerprint())
		}
	}
}

func TestFingerprint(t *testing.T) {
	got := New("abc").Fingerprint()
	if want := "sha256:ba7816bf8f01"; got != want {
		t.Errorf("Fingerprint(abc) = %q, want %q", got, want)
	}
	if New("").Fingerprint() != "" {
		t.Errorf("Fingerprint of empty key is not empty")
	}
	if got := New(canary).Last4(); got != "0000" {
		t.Errorf("Last4 = %q, want 0000", got)
	}
}

func TestStripQuery(t *testing.T) {
	in := &url.Error{Op: "Get", URL: "http://h/v2/keys:lookupKey?keyString=" + canary, Err: errors.New("connection refused")}
	got := StripQuery(fmt.Errorf("look up: %w", in)).Error()
	if strings.Contains(got, canary) || !strings.Contains(got, "connection refused") || !strings.Contains(got, "lookupKey?<redacted>") {
		t.Errorf("StripQuery(%v) = %q, want the query redacted and the cause kept", in, got)
	}
}
