package main

import (
	"io"
	"slices"
	"testing"
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
