package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJSONLogsReportErrors: with JSON logs, the run's errors are ERROR
// entries (one per problem, with hint, exit code and the run's labels),
// not text lines, so that Cloud Logging files them by severity.
func TestJSONLogsReportErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "keyrotate.yaml")
	if err := os.WriteFile(bad, []byte("version: 1\nslots: []\nfoo: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	app := newApp(&stdout, &stderr)
	err := app.Run([]string{"keyrotate", "--log-format", "json", "--config", bad, "rotate"})
	if code := reportRun(app, &stderr, err); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 entries (two problems), got:\n%s", stderr.String())
	}
	for _, l := range lines {
		var e struct {
			Severity, Message, Hint string
			ExitCode                int               `json:"exit_code"`
			Labels                  map[string]string `json:"logging.googleapis.com/labels"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("not a JSON entry: %q", l)
		}
		if e.Severity != "ERROR" || !strings.Contains(e.Message, "keyrotate.yaml:") || e.Hint == "" || e.ExitCode != exitUsage ||
			e.Labels["command"] != "rotate" || e.Labels["run"] == "" {
			t.Errorf("entry %+v", e)
		}
	}
	// Text logs keep the text report.
	stderr.Reset()
	app = newApp(&stdout, &stderr)
	err = app.Run([]string{"keyrotate", "--log-format", "text", "--config", bad, "rotate"})
	reportRun(app, &stderr, err)
	if !strings.HasPrefix(stderr.String(), "keyrotate: error: ") {
		t.Errorf("text report = %q", stderr.String())
	}
}
