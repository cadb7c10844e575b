package targets

import (
	"bytes"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/rotate"
)

// The loaders that applications read .env files with, and that keyrotate
// must not disagree with: github.com/joho/godotenv (v1.5), docker compose
// (github.com/compose-spec/compose-go/v2/dotenv) and Node's dotenv package.
// They agree with each other, and with ParseEnv, on ordinary files, and
// part ways on line endings, YAML-style lines, backticks, escapes, comments
// and where a quoted value ends (envloaders_test.go runs the two Go
// loaders against ParseEnv; testdata/dotenv-loaders holds Node's readings).
const (
	godotenvLoader = "godotenv"
	composeLoader  = "docker compose"
	nodeLoader     = "Node's dotenv"
	everyLoader    = "godotenv, docker compose and Node's dotenv"
	someLoader     = "godotenv, docker compose or Node's dotenv"
)

// LoaderConflict says where a .env loader could read a variable otherwise
// than keyrotate does. It names the line and the loaders, never a value.
type LoaderConflict struct {
	Name string
	// Line is the 1-based number of the line the loaders read otherwise.
	Line int
	// Loaders names the loaders, Reason what they read differently (it
	// follows Loaders in a sentence), Fix what to change on the line.
	Loaders, Reason, Fix string
}

func (c *LoaderConflict) Error() string {
	return fmt.Sprintf("line %d: %s %s", c.Line, c.Loaders, c.Reason)
}

// LoaderConflict returns nil when every loader reads the one well-formed
// definition of name as Lookup does and reads no other definition of it,
// and when Set can replace the value without any loader reading the file's
// other lines differently; otherwise it returns the first line where a
// loader could read something else. It is deliberately conservative: it
// refuses some files on which the loaders happen to agree.
//
// The rules: no line ending other than LF and CRLF; no line that a loader
// could take for a definition of name (NAME: value, a line holding only
// the name, text after a closing quote, a line inside another value) other
// than the definition itself; before the definition, nothing that could
// make a loader's quoted value run onto later lines where keyrotate's does
// not (a quote on a line keyrotate does not read, a backslash before a
// closing quote, a backtick value over several lines, a value keyrotate
// cannot parse); and the definition's value in the form every loader reads
// literally (see valueConflict).
func (f *EnvFile) LoaderConflict(name string) *LoaderConflict {
	src := f.Bytes()
	if c := lineEndConflict(src, name); c != nil {
		return c
	}
	def := -1
	for i := range f.segs {
		if s := &f.segs[i]; s.name == name {
			if def >= 0 {
				def = -1 // more than one: checkDefinition's refusal
				break
			}
			def = i
		}
	}
	if c := f.definitionLineConflict(src, name, def); c != nil {
		return c
	}
	if def < 0 || f.segs[def].malformed {
		return nil
	}
	if name == "export" {
		return &LoaderConflict{Name: name, Line: f.segs[def].line, Loaders: "godotenv and docker compose",
			Reason: "read export before a space as the keyword, not as the variable's name",
			Fix:    "give the variable another name"}
	}
	off := 0
	for i := range f.segs[:def] {
		if c := f.segs[i].runConflict(src[off:off+len(f.segs[i].raw)], name, f.segs[def].line); c != nil {
			return c
		}
		off += len(f.segs[i].raw)
	}
	return f.segs[def].valueConflict()
}

// lineEndConflict refuses line breaks that only some loaders see.
func lineEndConflict(src []byte, name string) *LoaderConflict {
	line := 1
	for i := 0; i < len(src); i++ {
		switch {
		case src[i] == '\n':
			line++
		case src[i] == '\r' && i+1 < len(src) && src[i+1] != '\n':
			return &LoaderConflict{Name: name, Line: line, Loaders: "godotenv and Node's dotenv",
				Reason: "end a line at a lone CR (carriage return), where docker compose and keyrotate do not",
				Fix:    "end the file's lines with LF or CRLF, not a lone CR"}
		case bytes.HasPrefix(src[i:], []byte("\u2028")) || bytes.HasPrefix(src[i:], []byte("\u2029")):
			return &LoaderConflict{Name: name, Line: line, Loaders: nodeLoader,
				Reason: "ends a line at U+2028 or U+2029 (a line or paragraph separator), where the others do not",
				Fix:    "remove the separator character"}
		}
	}
	return nil
}

// loaderSpace returns the length of the white space (as some loader counts
// it: Unicode spaces, a BOM; not LF) at the start of b, or 0.
func loaderSpace(b []byte) int {
	r, n := utf8.DecodeRune(b)
	if r != '\n' && (unicode.IsSpace(r) || r == '\ufeff') {
		return n
	}
	return 0
}

func skipLoaderSpace(b []byte, i int) int {
	for i < len(b) {
		n := loaderSpace(b[i:])
		if n == 0 {
			break
		}
		i += n
	}
	return i
}

func isQuote(c byte) bool { return c == '\'' || c == '"' || c == '`' }

// definitionLineConflict finds the lines that some loader could read as a
// definition of name, and refuses any but keyrotate's own definition
// (segment def, or -1). godotenv and docker compose start a definition at
// the start of a line and right after a closing quote; Node's dotenv at the
// start of a line.
func (f *EnvFile) definitionLineConflict(src []byte, name string, def int) *LoaderConflict {
	defLine := 0
	if def >= 0 {
		defLine = f.segs[def].line
	}
	line := 1
	for start := 0; start < len(src); line++ {
		end := bytes.IndexByte(src[start:], '\n')
		if end < 0 {
			end = len(src)
		} else {
			end += start
		}
		l := src[start:end]
		start = end + 1
		p := skipLoaderSpace(l, 0)
		if p == len(l) || l[p] == '#' {
			continue // blank or a comment for every loader
		}
		if sep, ok := definesAt(l, p, name); ok && (line != defLine || sep != '=') {
			return f.strayDefinition(name, line, sep, l[p:], false)
		}
		for i := p; i < len(l); i++ {
			if !isQuote(l[i]) {
				continue
			}
			if sep, ok := definesAt(l, skipLoaderSpace(l, i+1), name); ok {
				return f.strayDefinition(name, line, sep, nil, true)
			}
		}
	}
	return nil
}

// definesAt reports whether l, from i, could be read as a definition of
// name: an optional "export" and space, the name, optional space, then =
// or : (sep), or the end of the line (sep 0: docker compose takes the
// value from its environment).
func definesAt(l []byte, i int, name string) (sep byte, ok bool) {
	rest := l[i:]
	if e := []byte("export"); bytes.HasPrefix(rest, e) && loaderSpace(rest[len(e):]) > 0 {
		if sep, ok := definesAt(l, skipLoaderSpace(l, i+len(e)), name); ok {
			return sep, true
		}
	}
	if !bytes.HasPrefix(rest, []byte(name)) {
		return 0, false
	}
	j := i + len(name)
	if j < len(l) && loaderSpace(l[j:]) == 0 && l[j] != '=' && l[j] != ':' {
		return 0, false // a longer name
	}
	j = skipLoaderSpace(l, j)
	switch {
	case j == len(l):
		return 0, true
	case l[j] == '=' || l[j] == ':':
		return l[j], true
	}
	return 0, false
}

// strayDefinition describes a line that a loader could read as a
// definition of name where keyrotate does not.
func (f *EnvFile) strayDefinition(name string, line int, sep byte, text []byte, afterQuote bool) *LoaderConflict {
	c := &LoaderConflict{Name: name, Line: line}
	switch {
	case afterQuote:
		c.Loaders = "godotenv and docker compose"
		c.Reason = fmt.Sprintf("read the text after a closing quote as a definition of %s", name)
		c.Fix = fmt.Sprintf("put the definition of %s on a line of its own, or delete it", name)
	case sep == ':':
		c.Loaders = "godotenv and docker compose"
		if bytes.HasPrefix(text, []byte(name+":")) && loaderSpace(text[len(name)+1:]) > 0 {
			c.Loaders = everyLoader
		}
		c.Reason = fmt.Sprintf("read %s: value as a definition of %s; keyrotate reads only %s=value", name, name, name)
		c.Fix = fmt.Sprintf("keep one definition of %s, written %s=value", name, name)
	case sep == 0:
		c.Loaders = composeLoader
		c.Reason = fmt.Sprintf("gives %s the value from its own environment on a line holding only the name", name)
		c.Fix = "delete the line"
	default:
		c.Loaders = someLoader
		c.Reason = fmt.Sprintf("may read a definition of %s there, where keyrotate does not", name)
		c.Fix = fmt.Sprintf("keep one definition of %s, on a line that starts with the name (or export and the name)", name)
		for i := range f.segs {
			s := &f.segs[i]
			if s.line < line && line <= s.line+bytes.Count(s.raw, []byte{'\n'}) {
				c.Reason = fmt.Sprintf("may read a definition of %s there, where keyrotate reads part of the value that starts on line %d", name, s.line)
				c.Fix = fmt.Sprintf("move the definition of %s out of that value, or delete it", name)
			}
		}
	}
	return c
}

// runConflict refuses a segment before the definition (on line defLine)
// that could make a loader read a quoted value running onto later lines
// where keyrotate does not, or the other way round. raw is s.raw.
func (s *segment) runConflict(raw []byte, name string, defLine int) *LoaderConflict {
	c := &LoaderConflict{Name: name, Line: s.line, Loaders: someLoader}
	moveUp := fmt.Sprintf(", or move the definition of %s above it", name)
	switch {
	case !s.isDef():
		p := skipLoaderSpace(raw, 0)
		if p == len(raw) || raw[p] == '#' || bytes.IndexFunc(raw, func(r rune) bool { return r < utf8.RuneSelf && isQuote(byte(r)) }) < 0 {
			return nil
		}
		c.Reason = fmt.Sprintf("may read a quoted value that starts there and runs past line %d; keyrotate does not read the line as a definition", defLine)
		c.Fix = "write the line as NAME=value or make it a # comment" + moveUp
	case s.malformed:
		c.Loaders = everyLoader
		c.Reason = fmt.Sprintf("read the value of %s, which keyrotate cannot parse, in different ways, some past line %d", s.name, defLine)
		c.Fix = "close the quote, or move text after the closing quote into a # comment" + moveUp
	case s.quote == 0:
		v := raw[s.vstart:]
		if k := skipLoaderSpace(v, 0); k == 0 || k == len(v) || !isQuote(v[k]) {
			return nil
		}
		c.Loaders = everyLoader
		c.Reason = fmt.Sprintf("read the value of %s as quoted, after the white space it starts with", s.name)
		c.Fix = "remove the white space before the quote" + moveUp
	case s.quote == '`' && bytes.IndexByte(raw[s.vstart:s.vend], '\n') >= 0:
		c.Loaders = "godotenv and docker compose"
		c.Reason = fmt.Sprintf("do not read backticks as quotes: each line of the value of %s is a line of the file to them", s.name)
		c.Fix = "quote the value with ' or \" instead of backticks" + moveUp
	case s.vend > s.vstart && raw[s.vend-1] == '\\':
		// A backslash before any other quote is an escape for every
		// loader that has escapes, and where keyrotate closes the value
		// all of them do; a backslash before the closing quote is an
		// escape for some (godotenv: always; Node's dotenv: it may).
		c.Reason = fmt.Sprintf("may end the quoted value of %s at a later quote: it ends with a backslash", s.name)
		c.Fix = "remove the backslash before the closing quote" + moveUp
	default:
		return nil
	}
	return c
}

// valueConflict refuses a definition whose value some loader reads
// differently: it must be printable ASCII without backslashes, not quoted
// with backticks, without $ unless in single quotes, and when unquoted
// without # and followed by nothing or by a space and a comment.
func (s *segment) valueConflict() *LoaderConflict {
	c := &LoaderConflict{Name: s.name, Line: s.line, Loaders: everyLoader}
	v := s.raw[s.vstart:s.vend]
	quoteIt := "quote the value with ' and keep only the key in it"
	for _, b := range v {
		if b < 0x20 || b >= 0x7f {
			c.Reason = fmt.Sprintf("treat white space, control characters and non-ASCII bytes in the value of %s differently", s.name)
			c.Fix = "keep only the key in the value"
			return c
		}
	}
	switch {
	case s.quote == '`':
		c.Loaders = "godotenv and docker compose"
		c.Reason = fmt.Sprintf("read the backticks around the value of %s as part of it (Node's dotenv and keyrotate do not)", s.name)
		c.Fix = "quote the value with ' instead of backticks"
	case bytes.IndexByte(v, '\\') >= 0:
		c.Reason = fmt.Sprintf("read a backslash in the value of %s in different ways (as an escape or not)", s.name)
		c.Fix = "keep only the key in the value, without backslashes"
	case s.quote != '\'' && bytes.IndexByte(v, '$') >= 0:
		c.Loaders = "godotenv and docker compose"
		c.Reason = fmt.Sprintf("expand the $ in the value of %s as a variable reference", s.name)
		c.Fix = quoteIt
	case s.quote == 0 && bytes.IndexByte(v, '#') >= 0:
		c.Loaders = nodeLoader
		c.Reason = fmt.Sprintf("ends the value of %s at the #", s.name)
		c.Fix = quoteIt
	case s.quote == 0:
		return s.commentConflict(c)
	default:
		return nil
	}
	return c
}

// commentConflict checks what follows an unquoted value on its line.
// docker compose starts a comment only at " #", godotenv at the last
// white space and # on the line, and with an empty value godotenv and
// docker compose read the comment as the value.
func (s *segment) commentConflict(c *LoaderConflict) *LoaderConflict {
	ce, _ := lineBounds(s.raw, s.vend)
	rest := s.raw[s.vend:ce]
	h := bytes.IndexByte(rest, '#')
	switch {
	case h < 0:
		return nil
	case s.vstart == s.vend:
		c.Loaders = "godotenv and docker compose"
		c.Reason = fmt.Sprintf("read the comment after the empty value of %s as its value", s.name)
		c.Fix = "delete the comment"
	case h == 0 || rest[h-1] != ' ':
		c.Loaders = composeLoader
		c.Reason = fmt.Sprintf("reads a comment after a tab as part of the value of %s (it starts a comment only at a space and #)", s.name)
		c.Fix = "put a space before the #"
	default:
		for i := h + 1; i < len(rest); i++ {
			if rest[i] == '#' && (loaderSpace(rest[i-1:]) > 0 || rest[i-1] >= utf8.RuneSelf) {
				c.Loaders = godotenvLoader
				c.Reason = fmt.Sprintf("ends the value of %s only at the last # after white space, and reads the comment before it as part of the value", s.name)
				c.Fix = "remove the second # from the comment"
				return c
			}
		}
		return nil
	}
	return c
}

// loaderConflict refuses the target's variable when a .env loader could
// read it otherwise than keyrotate does.
func (t *DotEnv) loaderConflict(f *EnvFile) error {
	c := f.LoaderConflict(t.variable)
	if c == nil {
		return nil
	}
	return errhint.With(
		fmt.Errorf("%s: line %d of %s: %s %s: %w", t, c.Line, t.path, c.Loaders, c.Reason, rotate.ErrInvalidTarget),
		fmt.Sprintf("line %d of %s: %s", c.Line, t.path, c.Fix))
}
