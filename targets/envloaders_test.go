package targets

// The differential test of the .env parser against the loaders applications
// use: github.com/joho/godotenv, docker compose's
// github.com/compose-spec/compose-go/v2/dotenv (both run here), and Node's
// dotenv package (its readings of loaderCorpus are checked in under
// testdata/dotenv-loaders; regenerate them with the generate.sh there).
//
// The property, for a variable of a file: keyrotate either refuses the
// variable (Read would fail), or every loader that can read the file reads
// the variable as keyrotate does, before and after keyrotate writes a new
// key into it, and reads every other variable the same after the write as
// before.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	composedotenv "github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/joho/godotenv"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/rotate"
)

var updateLoaderCorpus = flag.Bool("update-loader-corpus", false,
	"write loaderCorpus to testdata/dotenv-loaders/corpus (then run node-dotenv.js there)")

// loaderKey is the key the differential tests write: the shape of an auth
// key, as keyrotate writes them.
const loaderKey = "AQ.Ab8RN6LHnew-loader_key-0000"

// goLoader reads a .env file the way one Go loader does.
type goLoader struct {
	name string
	read func(src []byte) (map[string]string, error)
}

var goLoaders = []goLoader{
	{"godotenv", func(src []byte) (vars map[string]string, err error) {
		defer func() {
			if r := recover(); r != nil {
				vars, err = nil, fmt.Errorf("panic: %v", r)
			}
		}()
		return godotenv.UnmarshalBytes(src)
	}},
	{"docker compose", func(src []byte) (map[string]string, error) {
		// docker compose reads env files with ParseWithLookup and the
		// environment it runs in: a line holding only a name takes
		// the value from there.
		return composedotenv.ParseWithLookup(bytes.NewReader(src), func(name string) (string, bool) {
			return "<environment of docker compose: " + name + ">", true
		})
	}},
}

// loaderReading is what one loader read from a file: its variables, or the
// error that made it read nothing.
type loaderReading struct {
	Vars  map[string]string `json:"vars,omitempty"`
	Error string            `json:"error,omitempty"`
}

// keyrotateAccepts reports whether keyrotate would rotate name in f: the
// check Read and Write make.
func keyrotateAccepts(f *EnvFile, name string) error {
	return (&DotEnv{path: ".env", variable: name}).checkDefinition(f)
}

// rotateWithLoaders checks the property for name in the file in, with the
// readings of the loaders before (read) and after the write (readAfter). It
// returns the file keyrotate would write, or nil when keyrotate refuses.
func rotateWithLoaders(t *testing.T, in []byte, name string, loader string, read, readAfter func([]byte) loaderReading) []byte {
	t.Helper()
	f := ParseEnv(in)
	if keyrotateAccepts(f, name) != nil {
		return nil // a refusal is always allowed
	}
	want, _ := f.Lookup(name)
	before := read(in)
	if before.Error == "" {
		if got, ok := before.Vars[name]; !ok || got != want {
			t.Errorf("in %q keyrotate reads %s = %q, %s reads %q (defined: %v); want a refusal naming %s",
				in, name, want, loader, got, ok, loader)
			return nil
		}
	}
	if err := f.Set(name, loaderKey); err != nil {
		t.Errorf("in %q, Set(%s) = %v after the check accepted it", in, name, err)
		return nil
	}
	out := f.Bytes()
	if err := keyrotateAccepts(ParseEnv(out), name); err != nil {
		t.Errorf("in %q, keyrotate accepted %s but refuses what it wrote, %q: %v", in, name, out, err)
	}
	if readAfter == nil {
		return out
	}
	after := readAfter(out)
	switch {
	case before.Error != "" && after.Error != "":
		return out
	case before.Error != "" || after.Error != "":
		t.Errorf("%s on %q: error %q, after keyrotate wrote %s: %q, error %q", loader, in, before.Error, name, out, after.Error)
		return out
	}
	if got := after.Vars[name]; got != loaderKey {
		t.Errorf("after keyrotate wrote %s into %q: %q, %s reads %q, want the new key", name, in, out, loader, got)
	}
	for k, v := range before.Vars {
		if k == name {
			continue
		}
		got, ok := after.Vars[k]
		if ok && got != v && expands(in, name) {
			continue // a ${NAME} in its value follows the key
		}
		if !ok || got != v {
			t.Errorf("after keyrotate wrote %s into %q: %q, %s reads %s = %q (defined: %v), before %q", name, in, out, loader, k, got, ok, v)
		}
	}
	for k := range after.Vars {
		if _, ok := before.Vars[k]; !ok {
			t.Errorf("after keyrotate wrote %s into %q: %q, %s reads a new variable %s", name, in, out, loader, k)
		}
	}
	return out
}

// expands reports whether in may refer to the variable name in a value
// that godotenv or docker compose expand: $NAME and ${NAME, and godotenv's
// $(NAME and $({NAME too. godotenv v1.5.1's expandVarRegex is
// `(\\)?(\$)(\()?\{?([A-Z0-9_]+)?\}?`, and the test meant to leave "$(" alone
// checks the wrong group (submatch[2], always "$"), so $(NAME expands
// (found by FuzzLoaders: testdata/fuzz/FuzzLoaders/4c6f48f982cc7af9).
func expands(in []byte, name string) bool {
	for _, ref := range []string{"$", "${", "$(", "$({"} {
		if bytes.Contains(in, []byte(ref+name)) {
			return true
		}
	}
	return false
}

func readWith(l goLoader) func([]byte) loaderReading {
	return func(src []byte) loaderReading {
		vars, err := l.read(src)
		if err != nil {
			return loaderReading{Error: err.Error()}
		}
		return loaderReading{Vars: vars}
	}
}

// checkGoLoaders checks the property for name in in with each Go loader.
func checkGoLoaders(t *testing.T, in []byte, name string) {
	t.Helper()
	for _, l := range goLoaders {
		rotateWithLoaders(t, in, name, l.name, readWith(l), readWith(l))
	}
}

// loaderCorpus holds files on which the loaders and keyrotate have been
// seen to disagree, and ordinary ones on which they must agree. The
// variable rotated is API_KEY.
var loaderCorpus = []struct{ name, in string }{
	{"plain", "API_KEY=AIzaSyOld_key-000\nOTHER=x\n"},
	{"export-spaces-comment", "# keys\nexport  API_KEY = AIzaOld   # rotated\nMODEL=gemini\n"},
	{"single-quoted", "API_KEY='AIzaOld' # c\nOTHER='a b'\n"},
	{"double-quoted", "API_KEY=\"AIzaOld\"\nOTHER=\"x\"\n"},
	{"crlf", "A=1\r\nAPI_KEY=AIzaOld\r\nB=\"two\"\r\n"},
	{"bom", bom + "API_KEY=AIzaOld\nB=2\n"},
	{"no-final-newline", "A=1\nAPI_KEY=AIzaOld"},
	{"empty-value", "API_KEY=\nB=2\n"},
	{"multiline-pem-before", "CERT=\"-----BEGIN-----\nabc\n-----END-----\"\nAPI_KEY=AIzaOld\n"},
	{"escaped-newlines-before", "PRIVATE_KEY=\"-----BEGIN-----\\nabc\\n-----END-----\\n\"\nAPI_KEY=AIzaOld\n"},
	{"commented-definition", "# API_KEY=put-your-key-here\nAPI_KEY=AIzaOld\n"},
	{"url-with-hash-other", "API_KEY=AIzaOld\nURL=https://x/#frag\n"},
	{"expansion-other", "API_KEY=AIzaOld\nURL=\"https://x/?key=${API_KEY}\"\n"},
	{"inline-comment-mentions", "OTHER=abc # API_KEY=not-this\nAPI_KEY=AIzaOld\n"},

	// From the issue: CR-only line endings (godotenv and Node end lines
	// at a lone CR, docker compose and keyrotate do not).
	{"cr-only", "API_KEY=AIzaOld\rOTHER=x\r"},
	{"cr-only-before", "OTHER=x\rAPI_KEY=AIzaOld\r"},
	{"cr-only-hidden-definition", "OTHER=x\rAPI_KEY=AIzaEvil\nAPI_KEY=AIzaOld\n"},
	// YAML-style lines are definitions for all three loaders.
	{"yaml-after", "API_KEY=AIzaNew\nAPI_KEY: AIzaOld\n"},
	{"yaml-only", "API_KEY: AIzaOld\n"},
	{"yaml-no-space", "API_KEY=AIzaNew\nAPI_KEY:AIzaOld\n"},
	{"yaml-before", "API_KEY: AIzaOld\nAPI_KEY=AIzaNew\n"},
	// Backticks are quotes for Node only.
	{"backtick", "API_KEY=`AIzaOld`\n"},
	{"backtick-multiline-hides", "OTHER=`a\nAPI_KEY=AIzaEvil\n`\nAPI_KEY=AIzaOld\n"},
	{"backtick-multiline-before", "OTHER=`a\nB='\n`\nAPI_KEY=AIzaOld\nC='\n"},
	// A tab before # starts a comment for godotenv and Node, not compose.
	{"tab-before-comment", "API_KEY=AIzaOld\t# rotated\n"},
	{"hash-in-value", "API_KEY=AIzaOld#x\n"},
	{"hash-first", "API_KEY=#AIzaOld\n"},
	{"empty-then-comment", "API_KEY= # todo\n"},
	{"two-comments", "API_KEY=AIzaOld # a # b\n"},
	{"comment-hash-word", "API_KEY=AIzaOld # see #1\n"},
	{"dollar-unquoted", "HOME_X=1\nAPI_KEY=AIza$HOME_X\n"},
	{"dollar-double", "API_KEY=\"AIza${X}\"\n"},
	{"dollar-single", "API_KEY='AIza$X'\n"},
	{"backslash-double", "API_KEY=\"AIza\\tOld\"\n"},
	{"backslash-single-end", "API_KEY='AIzaOld\\'\nB='x'\n"},
	{"escaped-quote-before", "OTHER='a\\'\nAPI_KEY=AIzaOld\nC='\n"},
	{"escaped-dquote-before", "OTHER=\"a\\\\\"\nAPI_KEY=AIzaOld\nC=\"\n"},
	{"escaped-dquote-inside", "PASSWORD=\"p@ss\\\"word\\\" \\\\x\"\nAPI_KEY=AIzaOld\nC=\"\n"},
	{"backslashes-in-single", "WIN_PATH='C:\\dir\\sub' # c\nAPI_KEY=AIzaOld\n"},
	{"escaped-squote-inside", "OTHER='it\\'s'\nAPI_KEY=AIzaOld\nC='\n"},
	{"after-closing-quote", "OTHER=\"a\" API_KEY=AIzaEvil\nAPI_KEY=AIzaOld\n"},
	{"after-closing-quote-only", "OTHER='a' API_KEY=AIzaOld\n"},
	{"nbsp-indent", "\u00a0API_KEY=AIzaEvil\nAPI_KEY=AIzaOld\n"},
	{"vtab-indent", "\vAPI_KEY=AIzaEvil\nAPI_KEY=AIzaOld\n"},
	{"bare-name", "API_KEY=AIzaOld\nAPI_KEY\n"},
	{"export-bare-name", "API_KEY=AIzaOld\nexport API_KEY\n"},
	{"yaml-quoted-multiline-before", "OTHER: 'a\nAPI_KEY=AIzaOld\n'\n"},
	{"empty-then-quoted-line", "OTHER=\n'\nAPI_KEY=AIzaOld\n'\n"},
	{"vtab-then-quote", "OTHER=\v'\nAPI_KEY=AIzaOld\n'\n"},
	{"line-separator", "OTHER=a #\u2028API_KEY=AIzaEvil\nAPI_KEY=AIzaOld\n"},
	{"unterminated-before", "OTHER=\"open\nAPI_KEY=AIzaOld\n"},
	{"text-after-quote-multiline", "OTHER=\"a\nAPI_KEY=AIzaEvil\nb\" c\nAPI_KEY=AIzaOld\n"},
	{"duplicate", "API_KEY=AIzaOld\nAPI_KEY=AIzaOld2\n"},
	{"nbsp-in-value", "API_KEY=AIzaOld\u00a0\n"},
	{"space-in-value", "API_KEY=AIza Old\n"},
	{"quote-in-value", "API_KEY=AIza'Old\n"},
	{"dash-name-other", "my-var=1\nAPI_KEY=AIzaOld\n"},
	{"inside-double-quotes", "OTHER=\"\nAPI_KEY=AIzaEvil\n\"\nAPI_KEY=AIzaOld\n"},
	{"spaces-inside-quotes", "API_KEY=' AIzaOld '\n"},
	{"ff-before-value", "API_KEY=\fAIzaOld\n"},
	{"trailing-cr-eof", "B=2\nAPI_KEY=AIzaOld\r"},
	{"json-other", "CONFIG='{\"a\": \"b\"}'\nAPI_KEY=AIzaOld\n"},
	{"export-tab", "export\tAPI_KEY=AIzaOld\n"},
	{"colon-in-value", "API_KEY=AIza:Old\n"},
	{"equals-in-value", "API_KEY=AIza=Old=\n"},
}

const loaderCorpusDir = "testdata/dotenv-loaders"

// nodeReadings is node-dotenv.json: for each file of the corpus, its
// SHA-256 and Node's readings of it with dotenv.parse, by default and with
// the fast option.
type nodeReadings struct {
	Dotenv string `json:"dotenv"`
	Files  map[string]struct {
		SHA256 string        `json:"sha256"`
		Parse  loaderReading `json:"parse"`
		Fast   loaderReading `json:"fast"`
	} `json:"files"`
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestLoaderCorpus checks the property on loaderCorpus with the Go loaders
// and with Node's dotenv, whose readings (of each file and of what
// keyrotate writes into it) are checked in.
func TestLoaderCorpus(t *testing.T) {
	if *updateLoaderCorpus {
		writeLoaderCorpus(t)
	}
	data, err := os.ReadFile(filepath.Join(loaderCorpusDir, "node-dotenv.json"))
	if err != nil {
		t.Fatal(err)
	}
	var node nodeReadings
	if err := json.Unmarshal(data, &node); err != nil {
		t.Fatal(err)
	}
	nodeRead := func(t *testing.T, file string, fast bool) func([]byte) loaderReading {
		return func(src []byte) loaderReading {
			r, ok := node.Files[file]
			if !ok || r.SHA256 != sha(src) {
				t.Fatalf("Node's reading of %s is missing or stale: run %s/generate.sh", file, loaderCorpusDir)
			}
			if fast {
				return r.Fast
			}
			return r.Parse
		}
	}
	for _, c := range loaderCorpus {
		t.Run(c.name, func(t *testing.T) {
			in := []byte(c.in)
			checkGoLoaders(t, in, "API_KEY")
			for _, fast := range []bool{false, true} {
				loader := "Node's dotenv " + node.Dotenv
				if fast {
					loader += " (fast: true)"
				}
				rotateWithLoaders(t, in, "API_KEY", loader, nodeRead(t, c.name+".env", fast), nodeRead(t, c.name+".after.env", fast))
			}
		})
	}
}

// writeLoaderCorpus writes each corpus file and, where keyrotate writes
// one, the file it writes, for node-dotenv.js to read.
func writeLoaderCorpus(t *testing.T) {
	dir := filepath.Join(loaderCorpusDir, "corpus")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range loaderCorpus {
		if slices.Contains(names, c.name) {
			t.Fatalf("loaderCorpus: %s twice", c.name)
		}
		names = append(names, c.name)
		writeFile(t, filepath.Join(dir, c.name+".env"), c.in, 0o644)
		noop := func([]byte) loaderReading { return loaderReading{Error: "not read"} }
		if out := rotateWithLoaders(t, []byte(c.in), "API_KEY", "none", noop, nil); out != nil {
			writeFile(t, filepath.Join(dir, c.name+".after.env"), string(out), 0o644)
		}
	}
}

// FuzzLoaders checks the property with the Go loaders on every variable
// keyrotate sees in a file, and on API_KEY.
func FuzzLoaders(f *testing.F) {
	for _, c := range loaderCorpus {
		f.Add([]byte(c.in))
	}
	for _, tt := range parseTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ef := ParseEnv(in)
		names := []string{"API_KEY"}
		for i := range ef.segs {
			if n := ef.segs[i].name; n != "" && !slices.Contains(names, n) && len(names) < 8 {
				names = append(names, n)
			}
		}
		for _, name := range names {
			checkGoLoaders(t, in, name)
		}
	})
}

// TestDotEnvRefusesLoaderConflicts checks the refusals people see: the
// line, the loader that disagrees, a hint, and no key.
func TestDotEnvRefusesLoaderConflicts(t *testing.T) {
	tests := []struct {
		name, in          string
		wantMsg, wantHint []string
	}{
		{"cr-only", "GEMINI_API_KEY=" + oldKey + "\rOTHER=x\r",
			[]string{"line 1", "godotenv", "Node's dotenv", "CR"}, []string{"LF", "line 1"}},
		{"yaml", "GEMINI_API_KEY=" + oldKey + "\nGEMINI_API_KEY: " + oldKey + "\n",
			[]string{"line 2", "godotenv", "docker compose", "Node's dotenv", "GEMINI_API_KEY: value"}, []string{"line 2", "GEMINI_API_KEY=value"}},
		{"backtick", "GEMINI_API_KEY=`" + oldKey + "`\n",
			[]string{"line 1", "godotenv", "docker compose", "backtick"}, []string{"'", "line 1"}},
		{"tab before comment", "A=1\nGEMINI_API_KEY=" + oldKey + "\t# rotated\n",
			[]string{"line 2", "docker compose", "tab"}, []string{"space before the #", "line 2"}},
		{"hash in value", "GEMINI_API_KEY=" + oldKey + "#1\n",
			[]string{"line 1", "Node's dotenv", "#"}, []string{"quote", "line 1"}},
		{"after a closing quote", "X='a' GEMINI_API_KEY=" + oldKey + "\nGEMINI_API_KEY=" + oldKey + "\n",
			[]string{"line 1", "godotenv", "docker compose"}, []string{"line 1"}},
		{"quote may end elsewhere", "X='a\\'\nGEMINI_API_KEY=" + oldKey + "\nY='b'\n",
			[]string{"line 1", "godotenv"}, []string{"line 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), ".env")
			writeFile(t, path, tt.in, 0o600)
			_, err := NewDotEnv(path, "GEMINI_API_KEY").Read(t.Context())
			if err == nil {
				t.Fatalf("Read(%q) = nil error, want a refusal", tt.in)
			}
			checkErr(t, err, rotate.ErrInvalidTarget)
			msg, hint := err.Error(), errhint.Of(err)
			for _, w := range tt.wantMsg {
				if !strings.Contains(msg, w) {
					t.Errorf("Read error %q: want it to contain %q", msg, w)
				}
			}
			for _, w := range tt.wantHint {
				if !strings.Contains(hint, w) {
					t.Errorf("Read hint %q: want it to contain %q", hint, w)
				}
			}
		})
	}
}
