package targets

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type lookup struct {
	value string
	count int
}

var parseTests = []struct {
	name string
	in   string
	want map[string]lookup
}{
	{
		name: "realistic",
		in: `# Gemini settings
# (managed by keyrotate)

GEMINI_API_KEY=AQ.old-key_000
GEMINI_MODEL=gemini-2.5-flash   # fast and cheap
export REGION=europe-west1
  INDENTED = spaced value  
DATABASE_URL=postgres://u:p@db/app?sslmode=require&x=1
EMPTY=
EMPTY_COMMENT= # nothing here
HASH_IN_VALUE=abc#def
HASH_FIRST=#abc
`,
		want: map[string]lookup{
			"GEMINI_API_KEY": {"AQ.old-key_000", 1},
			"GEMINI_MODEL":   {"gemini-2.5-flash", 1},
			"REGION":         {"europe-west1", 1},
			"INDENTED":       {"spaced value", 1},
			"DATABASE_URL":   {"postgres://u:p@db/app?sslmode=require&x=1", 1},
			"EMPTY":          {"", 1},
			"EMPTY_COMMENT":  {"", 1},
			"HASH_IN_VALUE":  {"abc#def", 1},
			"HASH_FIRST":     {"#abc", 1},
			"export":         {"", 0},
			"MISSING":        {"", 0},
		},
	},
	{
		name: "quotes",
		in: `SINGLE='it is # not a comment'
DOUBLE="tab\there \"quoted\" back\\slash \$HOME \x"  # comment
BACKTICK=` + "`a 'b' \"c\"`" + `
EMPTY_SINGLE=''
EMPTY_DOUBLE=""
AFTER="x"#tight comment
EQUALS='a=b=c'
`,
		want: map[string]lookup{
			"SINGLE":       {"it is # not a comment", 1},
			"DOUBLE":       {"tab\there \"quoted\" back\\slash \\$HOME \\x", 1},
			"BACKTICK":     {`a 'b' "c"`, 1},
			"EMPTY_SINGLE": {"", 1},
			"EMPTY_DOUBLE": {"", 1},
			"AFTER":        {"x", 1},
			"EQUALS":       {"a=b=c", 1},
		},
	},
	{
		name: "multiline",
		in:   "CERT=\"-----BEGIN-----\nabc\\\"def\n-----END-----\" # pem\nNEXT=1\nSQ='line1\nline2'\nLAST=2",
		want: map[string]lookup{
			"CERT": {"-----BEGIN-----\nabc\"def\n-----END-----", 1},
			"NEXT": {"1", 1},
			"SQ":   {"line1\nline2", 1},
			"LAST": {"2", 1},
		},
	},
	{
		name: "crlf",
		in:   "# windows\r\nA=1\r\nB = \"two\"\r\n\r\nexport C=three # c\r\nD=4",
		want: map[string]lookup{
			"A": {"1", 1}, "B": {"two", 1}, "C": {"three", 1}, "D": {"4", 1},
		},
	},
	{
		name: "no trailing newline, trailing CR",
		in:   "A=1\nB=2\r",
		want: map[string]lookup{"A": {"1", 1}, "B": {"2", 1}},
	},
	{
		name: "bom",
		in:   bom + "A=1\n",
		want: map[string]lookup{"A": {"1", 1}},
	},
	{
		name: "duplicates",
		in:   "KEY=a\nOTHER=x\nexport KEY=b\n",
		want: map[string]lookup{"KEY": {"", 2}, "OTHER": {"x", 1}},
	},
	{
		name: "unterminated quote",
		in:   "OPEN=\"never closed\nNEXT=after\n",
		want: map[string]lookup{"OPEN": {"", 1}, "NEXT": {"after", 1}},
	},
	{
		// A quote closes wherever the next one is, as in the tools
		// that allow multi-line values: the definitions in between
		// are part of the value, not definitions.
		name: "quote closed lines later",
		in:   "OPEN=\"a\nHIDDEN=x\nb\"\nNEXT=1\n",
		want: map[string]lookup{"OPEN": {"a\nHIDDEN=x\nb", 1}, "HIDDEN": {"", 0}, "NEXT": {"1", 1}},
	},
	{
		name: "text after closing quote",
		in:   "JUNK='x' trailing\nOK=1\nTAIL=\"a\nb\" c\nZ=9\n",
		want: map[string]lookup{
			"JUNK": {"", 1}, "OK": {"1", 1}, "TAIL": {"", 1}, "Z": {"9", 1}, "b": {"", 0},
		},
	},
	{
		name: "junk",
		in:   "just words\nexport ONLY_EXPORTED\nYAML: style\n=novalue\n9DIGIT=x\n\x00\xff=\xfe\nexport =weird\n\t\n   # indented comment\nGOOD=yes",
		want: map[string]lookup{
			"ONLY_EXPORTED": {"", 0}, "YAML": {"", 0}, "9DIGIT": {"", 0},
			"export": {"weird", 1}, "GOOD": {"yes", 1},
		},
	},
	{
		name: "names",
		in:   "dotted.name=1\ndash-name=2\n_under=3\nexportX=4\nexport\texport=5\n",
		want: map[string]lookup{
			"dotted.name": {"1", 1}, "dash-name": {"2", 1}, "_under": {"3", 1},
			"exportX": {"4", 1}, "export": {"5", 1},
		},
	},
	{name: "empty file", in: "", want: map[string]lookup{"A": {"", 0}}},
	{name: "only newline", in: "\n", want: map[string]lookup{"A": {"", 0}}},
}

func TestParseEnvRoundTrip(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			f := ParseEnv([]byte(tt.in))
			if got := string(f.Bytes()); got != tt.in {
				t.Errorf("ParseEnv(%q).Bytes() = %q, want the input", tt.in, got)
			}
			for name, want := range tt.want {
				v, n := f.Lookup(name)
				if got := (lookup{v, n}); got != want {
					t.Errorf("Lookup(%q) = %q, %d, want %q, %d", name, v, n, want.value, want.count)
				}
			}
		})
	}
}

func TestDefinitions(t *testing.T) {
	in := "A=1\n# c\nB=\"x\ny\"\nA=2\nC='open\nA=3\n"
	got := ParseEnv([]byte(in)).Definitions("A")
	want := []Definition{{"A", 1, false}, {"A", 5, false}, {"A", 7, false}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Definitions(A) mismatch (-want +got):\n%s", diff)
	}
	got = ParseEnv([]byte(in)).Definitions("C")
	want = []Definition{{"C", 6, true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Definitions(C) mismatch (-want +got):\n%s", diff)
	}
}

func TestSet(t *testing.T) {
	const key = "AQ.new-key_123"
	tests := []struct {
		name, in, variable, value, want string
	}{
		{"unquoted", "# top\nA=1\nKEY=old\nB=2\n", "KEY", key, "# top\nA=1\nKEY=" + key + "\nB=2\n"},
		{"export and spaces", "export  KEY = old   # rotated by keyrotate\n", "KEY", key,
			"export  KEY = " + key + "   # rotated by keyrotate\n"},
		{"single", "KEY='old' # c\n", "KEY", key, "KEY='" + key + "' # c\n"},
		{"double", "KEY=\"o\\\"ld\"\n", "KEY", key, "KEY=\"" + key + "\"\n"},
		{"backtick", "KEY=`old`", "KEY", key, "KEY=`" + key + "`"},
		{"multiline to one line", "KEY=\"a\nb\"\nX=1\n", "KEY", key, "KEY=\"" + key + "\"\nX=1\n"},
		{"crlf", "A=1\r\nKEY=old\r\nB=2\r\n", "KEY", key, "A=1\r\nKEY=" + key + "\r\nB=2\r\n"},
		{"no trailing newline", "A=1\nKEY=old", "KEY", key, "A=1\nKEY=" + key},
		{"empty", "KEY=\n", "KEY", key, "KEY=" + key + "\n"},
		{"empty with comment", "KEY= # todo\n", "KEY", key, "KEY=" + key + " # todo\n"},
		{"empty at end", "KEY=", "KEY", key, "KEY=" + key},
		{"to empty", "KEY=old # c\n", "KEY", "", "KEY= # c\n"},
		{"equals in value", "KEY=a=b\n", "KEY", "x=y", "KEY=x=y\n"},
		{"unquoted needs quotes", "KEY=old # c\n", "KEY", "two words", "KEY='two words' # c\n"},
		{"unquoted needs double quotes", "KEY=old\n", "KEY", "it's", "KEY=\"it's\"\n"},
		{"hash in value", "KEY=old\n", "KEY", "a#b", "KEY='a#b'\n"},
		{"dollar in single", "KEY='old'\n", "KEY", "$HOME", "KEY='$HOME'\n"},
		{"bom", bom + "KEY=old\n", "KEY", key, bom + "KEY=" + key + "\n"},
		{"other lines malformed", "X=\"open\nKEY=old\n", "KEY", key, "X=\"open\nKEY=" + key + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := ParseEnv([]byte(tt.in))
			if err := f.Set(tt.variable, tt.value); err != nil {
				t.Fatalf("Set(%q) = %v, want nil", tt.variable, err)
			}
			if got := string(f.Bytes()); got != tt.want {
				t.Errorf("after Set, Bytes() = %q, want %q", got, tt.want)
			}
			// The segment stays consistent: Lookup sees the new value
			// before and after a reparse, and a second Set works.
			if v, n := f.Lookup(tt.variable); v != tt.value || n != 1 {
				t.Errorf("Lookup after Set = %q, %d, want %q, 1", v, n, tt.value)
			}
			re := ParseEnv(f.Bytes())
			if v, n := re.Lookup(tt.variable); v != tt.value || n != 1 {
				t.Errorf("Lookup after reparse = %q, %d, want %q, 1", v, n, tt.value)
			}
			if err := f.Set(tt.variable, "v2"); err != nil {
				t.Fatalf("second Set = %v", err)
			}
			if v, _ := ParseEnv(f.Bytes()).Lookup(tt.variable); v != "v2" {
				t.Errorf("Lookup after second Set = %q, want %q", v, "v2")
			}
		})
	}
}

func TestSetRefuses(t *testing.T) {
	const secretValue = "AQ.s3cret-canary"
	tests := []struct {
		name, in, value string
		want            error
		wantMsg         string
	}{
		{"missing", "A=1\n", secretValue, errNotDefined, "KEY"},
		{"only exported name", "export KEY\n", secretValue, errNotDefined, "KEY"},
		{"duplicate", "KEY=1\nA=2\nexport KEY=3\n", secretValue, errDuplicate, "lines 1 and 3"},
		{"triplicate", "KEY=1\nKEY=2\nKEY=3\n", secretValue, errDuplicate, "lines 1, 2 and 3"},
		{"duplicate malformed", "KEY=1\nKEY=\"open\n", secretValue, errDuplicate, "lines 1 and 2"},
		{"malformed", "A=1\nKEY='open\n", secretValue, errMalformed, "line 2"},
		{"junk after quote", "KEY=\"x\" y\n", secretValue, errMalformed, "line 1"},
		{"newline", "KEY=old\n", "a\nb", errUnsafeValue, "control character"},
		{"cr", "KEY='old'\n", "a\rb", errUnsafeValue, "control character"},
		{"nul", "KEY=\"old\"\n", "a\x00b", errUnsafeValue, "control character"},
		{"single quote in single", "KEY='old'\n", "it's", errUnsafeValue, "'-quoted"},
		{"backtick in backtick", "KEY=`old`\n", "a`b", errUnsafeValue, "`-quoted"},
		{"backslash in single", "KEY='old'\n", `a\b`, errUnsafeValue, "'-quoted"},
		{"backslash in backtick", "KEY=`old`\n", `a\`, errUnsafeValue, "`-quoted"},
		{"dollar in double", "KEY=\"old\"\n", "$HOME", errUnsafeValue, "\"-quoted"},
		{"backslash in double", "KEY=\"old\"\n", `a\b`, errUnsafeValue, "\"-quoted"},
		{"both quotes unquoted", "KEY=old\n", `'"`, errUnsafeValue, "unquoted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := ParseEnv([]byte(tt.in))
			err := f.Set("KEY", tt.value)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Set = %v, want %v", err, tt.want)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.wantMsg) || strings.Contains(msg, tt.value) {
				t.Errorf("Set error %q: want it to contain %q and not the value", msg, tt.wantMsg)
			}
			if got := string(f.Bytes()); got != tt.in {
				t.Errorf("after refused Set, Bytes() = %q, want unchanged %q", got, tt.in)
			}
		})
	}
}

// firstUnique returns the index of the segment that holds the first
// well-formed definition of a name defined once, or -1. dup is the first
// name defined more than once, if any.
func firstUnique(f *EnvFile) (i int, dup string) {
	i = -1
	for j := range f.segs {
		s := &f.segs[j]
		if !s.isDef() {
			continue
		}
		if _, n := f.Lookup(s.name); n > 1 {
			if dup == "" {
				dup = s.name
			}
		} else if !s.malformed && i < 0 {
			i = j
		}
	}
	return i, dup
}

func FuzzDotEnv(f *testing.F) {
	for _, tt := range parseTests {
		f.Add([]byte(tt.in))
	}
	f.Add([]byte("KEY=\"a\\\"\nb\"\n"))
	f.Add([]byte("export export=1"))
	f.Fuzz(func(t *testing.T, in []byte) {
		ef := ParseEnv(in)
		if got := ef.Bytes(); !bytes.Equal(got, in) {
			t.Fatalf("ParseEnv(%q).Bytes() = %q", in, got)
		}
		i, dup := firstUnique(ef)
		if dup != "" {
			if err := ef.Set(dup, "x"); !errors.Is(err, errDuplicate) {
				t.Fatalf("Set(%q) on a duplicated name = %v, want errDuplicate", dup, err)
			}
			if got := ef.Bytes(); !bytes.Equal(got, in) {
				t.Fatalf("refused Set changed %q to %q", in, got)
			}
		}
		if i < 0 {
			return
		}
		s := ef.segs[i]
		// Absolute byte range of the value in the input.
		off := 0
		for _, p := range ef.segs[:i] {
			off += len(p.raw)
		}
		start, end := off+s.vstart, off+s.vend

		const key = "AQ.new-key_123"
		if err := ef.Set(s.name, key); err != nil {
			t.Fatalf("Set(%q) = %v", s.name, err)
		}
		out := ef.Bytes()
		want := append(append(append([]byte{}, in[:start]...), key...), in[end:]...)
		if !bytes.Equal(out, want) {
			t.Fatalf("Set(%q) on %q = %q, want only bytes %d:%d replaced: %q", s.name, in, out, start, end, want)
		}
		re := ParseEnv(out)
		if v, n := re.Lookup(s.name); v != key || n != 1 {
			t.Fatalf("after Set(%q) on %q, Lookup = %q, %d, want the key, 1", s.name, in, v, n)
		}
		if len(re.segs) != len(ef.segs) {
			t.Fatalf("after Set(%q) on %q, %d segments, want %d", s.name, in, len(re.segs), len(ef.segs))
		}
	})
}

func BenchmarkDotEnvSet(b *testing.B) {
	var buf bytes.Buffer
	for i := range 200 {
		switch i % 5 {
		case 0:
			fmt.Fprintf(&buf, "# section %d\n", i)
		case 1:
			fmt.Fprintf(&buf, "export VAR_%d=value-%d # note\n", i, i)
		case 2:
			fmt.Fprintf(&buf, "QUOTED_%d=\"some value %d\"\n", i, i)
		case 3:
			buf.WriteString("\n")
		default:
			fmt.Fprintf(&buf, "PLAIN_%d=%d\n", i, i)
		}
	}
	buf.WriteString("GEMINI_API_KEY=AQ.old-key_000\n")
	in := buf.Bytes()
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		f := ParseEnv(in)
		if err := f.Set("GEMINI_API_KEY", "AQ.new-key_123"); err != nil {
			b.Fatal(err)
		}
		_ = f.Bytes()
	}
}
