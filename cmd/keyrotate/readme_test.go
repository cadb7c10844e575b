package main

// The README is what a new user follows literally. These tests hold it to
// the CLI: every `keyrotate ...` example (shell blocks, `$ keyrotate` lines
// of text blocks, inline code) is checked against the commands and flags
// that newApp defines, as the deploy manifests are (deploy_test.go); the
// emulator section's examples run against the emulator; every flag is
// documented; the emulator section names every variable the emulator
// prints; the IAM table names every permission and role the hints name.

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emutest"
)

func readREADME(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readmeSection is the text of the "## title" section.
func readmeSection(t *testing.T, readme, title string) string {
	t.Helper()
	i := strings.Index(readme, "\n## "+title+"\n")
	if i < 0 {
		t.Fatalf("README.md has no section %q", title)
	}
	s := readme[i+1:]
	if j := strings.Index(s[3:], "\n## "); j >= 0 {
		s = s[:j+4]
	}
	return s
}

var (
	inlineExampleRE = regexp.MustCompile("`(keyrotate [^`]+)`")
	promptExampleRE = regexp.MustCompile(`^\$ (keyrotate( .*)?)$`)
)

// TestREADMEExamples checks every keyrotate example of the README against
// the CLI definition: the command exists, every flag exists on it or
// globally and has a valid value, and the number of arguments is right.
func TestREADMEExamples(t *testing.T) {
	readme := readREADME(t)
	c := checkDeploy(map[string][]byte{"README.md": []byte(readme)}) // ```sh blocks
	inBlock := false
	for i, line := range strings.Split(readme, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inBlock = !inBlock
			continue
		}
		var examples []string
		if inBlock {
			if m := promptExampleRE.FindStringSubmatch(line); m != nil {
				examples = append(examples, m[1])
			}
		} else {
			for _, m := range inlineExampleRE.FindAllStringSubmatch(line, -1) {
				examples = append(examples, m[1])
			}
		}
		for _, ex := range examples {
			if strings.Contains(ex, "COMMAND") {
				continue // `keyrotate COMMAND --help`: a placeholder for every command
			}
			// Usage notation: [--slot S] is an optional part, shown here.
			ex = strings.NewReplacer("[", "", "]", "").Replace(ex)
			c.checkScript("README.md", ex, i+1)
		}
	}
	if n := c.invocations["README.md"]; n < 10 {
		t.Errorf("found %d keyrotate examples in README.md; want at least 10: this test no longer understands the README", n)
	}
	for _, p := range c.problems {
		t.Error(p)
	}
}

// TestREADMEEmulatorSection runs the emulator section's examples as
// written (the seed directory aside) against an emulator seeded as
// `keyrotate emulator --seed DIR` seeds it, and checks that the section
// names every variable the emulator prints.
func TestREADMEEmulatorSection(t *testing.T) {
	section := readmeSection(t, readREADME(t), "The emulator")
	srv := emutest.Start(t, emulator.Options{})
	for _, kv := range srv.Env() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.Contains(section, name) {
			t.Errorf("the emulator prints %s, and README's emulator section does not name it", name)
		}
	}

	block := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(section)
	if block == nil {
		t.Fatal("README's emulator section has no ```sh block")
	}
	seedRE := regexp.MustCompile(`^keyrotate emulator --seed (\S+)`)
	var seedDir string
	var runs [][]string
	for _, cmd := range deployShellCommands(block[1], 1) {
		w := cmd.words
		if len(w) == 0 || w[0] != "keyrotate" {
			continue
		}
		if m := seedRE.FindStringSubmatch(strings.Join(w, " ")); m != nil {
			seedDir = m[1]
			continue
		}
		runs = append(runs, w)
	}
	if seedDir == "" || len(runs) < 2 {
		t.Fatalf("README's emulator section: seed dir %q, %d commands to run; want `keyrotate emulator --seed DIR` and the commands that use it", seedDir, len(runs))
	}
	dir := t.TempDir()
	gate := emulatorGate(srv) // the config `keyrotate emulator --seed` writes
	if _, err := seedDemoWith(srv, dir, &gate); err != nil {
		t.Fatal(err)
	}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	for _, w := range runs {
		args := make([]string, len(w))
		for i, a := range w {
			args[i] = strings.ReplaceAll(a, seedDir, dir)
		}
		var out, errOut bytes.Buffer
		app := newApp(&out, &errOut)
		err := runApp(context.Background(), app, args)
		if code := reportRun(app, &errOut, err); code != exitOK {
			t.Errorf("%s: exit %d\n%s%s", strings.Join(w, " "), code, out.String(), errOut.String())
		}
	}
}

// TestREADMEDocumentsEveryFlag: a flag that the README never mentions is
// one a user cannot find (`doctor --project`, `demo --keep` were).
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	readme := readREADME(t)
	app := newApp(io.Discard, io.Discard)
	for _, cmd := range app.Commands {
		for _, f := range cmd.Flags {
			name := dashed(f.Names()[0])
			if !regexp.MustCompile(regexp.QuoteMeta(name) + `\b`).MatchString(readme) {
				t.Errorf("`keyrotate %s %s` is not documented in README.md", cmd.Name, name)
			}
		}
	}
}

// TestREADMEIAMTable: every permission a call site names in its error (and
// so in its hint) and every predefined role a hint anywhere names appear in
// the README's IAM section, so that the table and the hints agree.
func TestREADMEIAMTable(t *testing.T) {
	section := readmeSection(t, readREADME(t), "Auth and IAM roles")
	root := filepath.Join("..", "..")
	roleRE := regexp.MustCompile(`roles/[a-zA-Z]+\.[a-zA-Z]+`)
	permRE := regexp.MustCompile(`"((?:apikeys|secretmanager|serviceusage|run|iam)\.[a-zA-Z]+\.[a-zA-Z]+)"`)
	missing := map[string]string{} // what -> where
	// Named by code that only tests call (secretsAPI.enable): no command
	// needs it, and the table lists what commands need.
	onlyTests := map[string]bool{"secretmanager.versions.enable": true}
	perms := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "emulator" || strings.HasPrefix(d.Name(), ".")) && p != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, role := range roleRE.FindAllString(string(src), -1) {
			if !strings.Contains(section, role) {
				missing[role] = p
			}
		}
		if filepath.Base(p) == "iam.go" {
			return nil // the table of explanations, not a call site
		}
		for _, m := range permRE.FindAllStringSubmatch(string(src), -1) {
			if strings.HasSuffix(m[1], ".googleapis.com") {
				continue // a service, not a permission
			}
			perms++
			svc, rest, _ := strings.Cut(m[1], ".")
			res, verb, _ := strings.Cut(rest, ".")
			// The table may group verbs: `secretmanager.versions.add/disable`.
			grouped := regexp.MustCompile(regexp.QuoteMeta(svc+"."+res+".") + `[a-zA-Z/]*\b` + regexp.QuoteMeta(verb) + `\b`)
			if !grouped.MatchString(section) && !onlyTests[m[1]] {
				missing[m[1]] = p
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if perms < 10 {
		t.Fatalf("found %d permissions named at call sites: this test no longer understands the code", perms)
	}
	for what, where := range missing {
		t.Errorf("%s names %s; README's IAM table does not", where, what)
	}
}
