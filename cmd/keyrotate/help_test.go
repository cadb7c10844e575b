package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/help")

// TestHelpGolden keeps the --help text of every command in golden files,
// and the README's usage block equal to the top-level help.
func TestHelpGolden(t *testing.T) {
	for _, cmd := range []string{"", "plan", "rotate", "finalize", "serve", "listen", "demo", "emulator"} {
		name := cmd
		if name == "" {
			name = "keyrotate"
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"keyrotate", "--help"}
			if cmd != "" {
				args = []string{"keyrotate", cmd, "--help"}
			}
			var out, errOut bytes.Buffer
			if err := newApp(&out, &errOut).RunContext(context.Background(), args); err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			golden := filepath.Join("testdata", "help", name+".txt")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/keyrotate -run TestHelpGolden -update)", err)
			}
			if out.String() != string(want) {
				t.Errorf("%v printed:\n%s\nwant (%s):\n%s", args, out.String(), golden, want)
			}
		})
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	top, _ := os.ReadFile(filepath.Join("testdata", "help", "keyrotate.txt"))
	if !strings.Contains(string(readme), "```text\n$ keyrotate --help\n"+string(top)+"```") {
		t.Errorf("README.md's usage block differs from `keyrotate --help`; paste testdata/help/keyrotate.txt into it")
	}
}
