package targets

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// EnvFile is a parsed .env file that renders back to exactly the bytes it was
// parsed from. It is a sequence of segments, each one or more whole lines:
// an assignment, a comment or blank line, or anything else kept as opaque
// bytes. Only Set changes anything, and only the bytes of one value.
//
// The parsing rules, chosen to agree with the common dotenv tools (docker
// compose, python-dotenv, Node dotenv, godotenv) where they agree, and to
// refuse to guess where they do not:
//
//   - Lines end with LF; a CR before the LF (or at the end of the file) is
//     part of the line ending. A UTF-8 byte order mark at the start is
//     ignored. The last line needs no line ending.
//   - An assignment is: optional spaces or tabs, optional "export" followed
//     by spaces or tabs, a name ([A-Za-z_][A-Za-z0-9_.-]*), optional spaces
//     or tabs, "=", optional spaces or tabs, then the value.
//   - A value that starts with ', " or ` is quoted: it runs to the matching
//     closing quote and may span lines. Double-quoted values honour backslash
//     escapes (\n \r \t \" \\ are decoded, any other \x is kept as written);
//     single- and backtick-quoted values are literal. After the closing quote
//     only spaces, tabs and an optional # comment may follow on its line.
//   - Any other value is unquoted: it runs to the end of the line or to the
//     first # that follows a space or tab (an inline comment), and trailing
//     spaces and tabs are not part of it. A # right after "=" is part of the
//     value ("A=#x" is "#x"); after "= " it starts a comment ("A= #x" is "").
//   - No variable expansion: "$X" is read as the two characters $ and X.
//   - A line that names a variable but whose value cannot be parsed (an
//     unterminated quote, text after a closing quote) is a malformed
//     definition of that name: it is kept byte for byte, counts as a
//     definition for Lookup, and makes Set refuse to touch that name.
//   - Everything else (comments, blank lines, "export NAME" without "=",
//     junk) is kept byte for byte and means nothing.
//
// Where the tools part ways on a file, LoaderConflict says where, so that a
// variable they could read otherwise than these rules is refused rather
// than rotated.
type EnvFile struct {
	segs []segment
}

// segment is one or more whole lines of the file.
type segment struct {
	raw  []byte
	line int // 1-based number of the segment's first line

	// name is set for assignments, well-formed or not.
	name      string
	malformed bool
	// quote is the value's quote character, or 0 for an unquoted value.
	quote byte
	// vstart and vend delimit the value's bytes in raw, inside the quotes.
	vstart, vend int
}

func (s *segment) isDef() bool { return s.name != "" }

// Definition describes one line that defines a variable.
type Definition struct {
	Name string
	// Line is the 1-based number of the line where the definition starts.
	Line int
	// Malformed reports that the value could not be parsed (for example an
	// unterminated quote): the line is kept as it is and Set refuses it.
	Malformed bool
}

// Errors returned by (*EnvFile).Set. Their messages name variables and line
// numbers, never values.
var (
	errNotDefined  = errors.New("variable is not defined")
	errDuplicate   = errors.New("variable is defined more than once")
	errMalformed   = errors.New("variable's value cannot be parsed")
	errUnsafeValue = errors.New("new value cannot be written safely in this file")
)

const bom = "\xef\xbb\xbf"

// ParseEnv parses a .env file. It never fails: whatever it does not
// understand it keeps as opaque bytes, so Bytes always returns src.
func ParseEnv(src []byte) *EnvFile {
	// One copy for all segments; Set gives the segment it edits its own.
	src = bytes.Clone(src)
	f := &EnvFile{segs: make([]segment, 0, bytes.Count(src, []byte{'\n'})+1)}
	line := 1
	for off := 0; off < len(src); {
		skip := 0
		if off == 0 && bytes.HasPrefix(src, []byte(bom)) {
			skip = len(bom)
		}
		seg, end := parseSegment(src, off, skip)
		seg.line = line
		seg.raw = src[off:end:end]
		line += bytes.Count(seg.raw, []byte{'\n'})
		f.segs = append(f.segs, seg)
		off = end
	}
	return f
}

// lineBounds returns, for the line that contains position i, the end of its
// content (before any CR LF) and the start of the next line.
func lineBounds(src []byte, i int) (contentEnd, next int) {
	e := bytes.IndexByte(src[i:], '\n')
	if e < 0 {
		e, next = len(src), len(src)
	} else {
		e += i
		next = e + 1
	}
	if e > i && src[e-1] == '\r' {
		e--
	}
	return e, next
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

func skipBlanks(src []byte, i, end int) int {
	for i < end && isBlank(src[i]) {
		i++
	}
	return i
}

func isNameStart(c byte) bool {
	return c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

func isNameChar(c byte) bool {
	return isNameStart(c) || '0' <= c && c <= '9' || c == '.' || c == '-'
}

func scanName(src []byte, i, end int) int {
	if i >= end || !isNameStart(src[i]) {
		return i
	}
	for i < end && isNameChar(src[i]) {
		i++
	}
	return i
}

// parseSegment parses the segment that starts at off (after skip bytes that
// count as leading blanks) and returns it with the offset where it ends.
// Offsets in the returned segment are relative to off.
func parseSegment(src []byte, off, skip int) (segment, int) {
	ce, next := lineBounds(src, off)
	opaque := segment{}

	i := skipBlanks(src, off+skip, ce)
	ns := i
	ne := scanName(src, ns, ce)
	if ne == ns {
		return opaque, next // blank, comment or junk
	}
	if string(src[ns:ne]) == "export" && ne < ce && isBlank(src[ne]) {
		if j := skipBlanks(src, ne, ce); scanName(src, j, ce) > j {
			ns = j
			ne = scanName(src, j, ce)
		}
	}
	j := skipBlanks(src, ne, ce)
	if j >= ce || src[j] != '=' {
		return opaque, next // "export NAME", "NAME: value", junk
	}
	seg := segment{name: string(src[ns:ne])}
	afterEq := j + 1
	vs := skipBlanks(src, afterEq, ce)

	if vs < ce && (src[vs] == '\'' || src[vs] == '"' || src[vs] == '`') {
		q := src[vs]
		closing := findClosingQuote(src, vs+1, q)
		if closing < 0 {
			seg.malformed = true
			return seg, next
		}
		ce2, next2 := lineBounds(src, closing)
		k := skipBlanks(src, closing+1, ce2)
		if k < ce2 && src[k] != '#' {
			seg.malformed = true
			return seg, next2
		}
		seg.quote = q
		seg.vstart, seg.vend = vs+1-off, closing-off
		return seg, next2
	}

	// Unquoted.
	if vs == ce || (src[vs] == '#' && vs > afterEq) {
		// Empty value, maybe followed by a comment: it sits right after
		// "=" so that a value put there stays separated from the comment.
		seg.vstart, seg.vend = afterEq-off, afterEq-off
		return seg, next
	}
	ve := ce
	for k := vs + 1; k < ce; k++ {
		if src[k] == '#' && isBlank(src[k-1]) {
			ve = k
			break
		}
	}
	for ve > vs && isBlank(src[ve-1]) {
		ve--
	}
	seg.vstart, seg.vend = vs-off, ve-off
	return seg, next
}

// findClosingQuote returns the index of the quote q that closes a value
// starting at i, or -1. Inside double quotes a backslash escapes the next
// byte.
func findClosingQuote(src []byte, i int, q byte) int {
	for ; i < len(src); i++ {
		switch src[i] {
		case q:
			return i
		case '\\':
			if q == '"' {
				i++
			}
		}
	}
	return -1
}

// Bytes renders the file. Until Set succeeds it returns the parsed input.
func (f *EnvFile) Bytes() []byte {
	n := 0
	for i := range f.segs {
		n += len(f.segs[i].raw)
	}
	out := make([]byte, 0, n)
	for i := range f.segs {
		out = append(out, f.segs[i].raw...)
	}
	return out
}

// Definitions returns the definitions of name, in file order.
func (f *EnvFile) Definitions(name string) []Definition {
	var defs []Definition
	for i := range f.segs {
		s := &f.segs[i]
		if s.isDef() && s.name == name {
			defs = append(defs, Definition{Name: s.name, Line: s.line, Malformed: s.malformed})
		}
	}
	return defs
}

// Lookup returns the decoded value of name and how many times the file
// defines it (malformed definitions included). The value is "" unless
// count is 1 and that definition is well formed.
func (f *EnvFile) Lookup(name string) (value string, count int) {
	var found *segment
	for i := range f.segs {
		s := &f.segs[i]
		if s.isDef() && s.name == name {
			count++
			found = s
		}
	}
	if count != 1 || found.malformed {
		return "", count
	}
	return found.value(), count
}

// value decodes the segment's value.
func (s *segment) value() string {
	v := s.raw[s.vstart:s.vend]
	if s.quote != '"' || bytes.IndexByte(v, '\\') < 0 {
		return string(v)
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '\\' || i+1 == len(v) {
			b.WriteByte(c)
			continue
		}
		i++
		switch v[i] {
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case '"', '\\':
			b.WriteByte(v[i])
		default:
			b.WriteByte('\\')
			b.WriteByte(v[i])
		}
	}
	return b.String()
}

// Set replaces the value of name, changing only the bytes of that value.
// It keeps the quoting style; an unquoted value gains quotes only when the
// new value needs them. It refuses, changing nothing, when name is not
// defined, defined more than once or malformed, or when value cannot be
// written safely (control characters such as newline or NUL, or a
// character its quotes cannot hold). Errors never contain the value.
func (f *EnvFile) Set(name, value string) error {
	var found *segment
	var lines []int
	for i := range f.segs {
		s := &f.segs[i]
		if s.isDef() && s.name == name {
			found = s
			lines = append(lines, s.line)
		}
	}
	switch {
	case len(lines) == 0:
		return fmt.Errorf("%s: %w", name, errNotDefined)
	case len(lines) > 1:
		return fmt.Errorf("%s on %s: %w", name, lineList(lines), errDuplicate)
	case found.malformed:
		return fmt.Errorf("%s on line %d: %w", name, found.line, errMalformed)
	}
	repl, quote, err := encodeValue(found.quote, value)
	if err != nil {
		return fmt.Errorf("%s on line %d: %w", name, found.line, err)
	}
	raw := make([]byte, 0, len(found.raw)-(found.vend-found.vstart)+len(repl))
	raw = append(raw, found.raw[:found.vstart]...)
	raw = append(raw, repl...)
	raw = append(raw, found.raw[found.vend:]...)
	found.raw = raw
	if quote != found.quote {
		// An unquoted value gained quotes: the value is inside them.
		found.quote = quote
		found.vstart++
		found.vend = found.vstart + len(value)
	} else {
		found.vend = found.vstart + len(repl)
	}
	return nil
}

// encodeValue returns the bytes that represent value in a value slot quoted
// with quote (0: unquoted), and the quote character actually used.
func encodeValue(quote byte, value string) (string, byte, error) {
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 0x20 || c == 0x7f {
			return "", 0, fmt.Errorf("it contains a control character: %w", errUnsafeValue)
		}
	}
	fits := func(q byte) bool {
		switch q {
		case '\'', '`':
			// A backslash before the closing quote escapes it for
			// some loaders (see LoaderConflict).
			return strings.IndexByte(value, q) < 0 && strings.IndexByte(value, '\\') < 0
		case '"':
			// Tools disagree on escapes and expansion inside double
			// quotes: write only what every one of them reads literally.
			return !strings.ContainsAny(value, "\"\\$`")
		}
		return plainValue(value)
	}
	if fits(quote) {
		return value, quote, nil
	}
	if quote == 0 {
		for _, q := range []byte{'\'', '"'} {
			if fits(q) {
				return string(q) + value + string(q), q, nil
			}
		}
	}
	what := "unquoted"
	if quote != 0 {
		what = string(quote) + "-quoted"
	}
	return "", 0, fmt.Errorf("it holds a character a %s value cannot: %w", what, errUnsafeValue)
}

// plainValue reports whether value can be written without quotes and read
// back the same by every tool: no blanks, quotes, #, $, backslash or shell
// metacharacters.
func plainValue(value string) bool {
	for i := 0; i < len(value); i++ {
		c := value[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("._-+/=:@,%^", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// lineList formats line numbers for people: "line 3", "lines 3 and 9",
// "lines 3, 9 and 12".
func lineList(lines []int) string {
	s := make([]string, len(lines))
	for i, l := range lines {
		s[i] = strconv.Itoa(l)
	}
	if len(s) == 1 {
		return "line " + s[0]
	}
	return "lines " + strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}
