package main

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestArrangeFrameworkFlags: flags urfave/cli adds by itself pass through
// arrange: --version when the app shows its version, and a shell
// completion request, whose half-typed command is no error.
func TestArrangeFrameworkFlags(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	app.HideVersion = false
	app.EnableBashCompletion = true
	for _, tt := range []struct {
		args, want []string
	}{
		{[]string{"keyrotate", "--version"}, []string{"keyrotate", "--version"}},
		{[]string{"keyrotate", "pl", "--generate-bash-completion"}, []string{"keyrotate", "pl", "--generate-bash-completion"}},
		{[]string{"keyrotate", "rollback", "s", "--to", "k", "-o", "json"}, []string{"keyrotate", "-o", "json", "rollback", "--to", "k", "s"}},
		{[]string{"keyrotate", "abort", "--", "-x"}, []string{"keyrotate", "abort", "--", "-x"}},
	} {
		got, err := arrange(app, tt.args)
		if err != nil || !slices.Equal(got.args, tt.want) {
			t.Errorf("arrange(%q) = %q, %v; want %q", tt.args, got.args, err, tt.want)
		}
	}
}

// TestJSONWhenProcessEndsAtOnce: a process that --timeout (or a second
// signal) ends at once still prints its one JSON document, exit code 4.
func TestJSONWhenProcessEndsAtOnce(t *testing.T) {
	var stdout, stderr syncBuffer
	exits := make(chan int, 1)
	p := newProcess(&stderr, func(code int) { exits <- code })
	app := newApp(&stdout, &stderr)
	app.Metadata[processKey] = p
	// The run is still under way when the deadline comes: a plan of a
	// config that does not exist returns at once, so arm by hand.
	_ = runApp(context.Background(), app, []string{"keyrotate", "-o", "json", "--config", "missing.yaml", "plan"})
	p.arm(50 * time.Millisecond)
	select {
	case code := <-exits:
		if code != exitPartWay {
			t.Errorf("exit(%d), want %d", code, exitPartWay)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline did not end the process")
	}
	var doc struct {
		Command string `json:"command"`
		Error   string `json:"error"`
		Exit    int    `json:"exit_code"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout.String())
	}
	if doc.Command != "plan" || doc.Exit != exitPartWay || !strings.Contains(doc.Error, "--timeout 50ms reached") {
		t.Errorf("document %+v, want command plan, exit_code 4, error naming --timeout", doc)
	}
}
