package targets

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/keyrotate/keyrotate/internal/secret"
)

// keyShapeRE matches strings shaped like Google API key strings: standard
// keys (AIza and 35 more characters) and auth keys (AQ. and more).
var keyShapeRE = regexp.MustCompile(`AIza[0-9A-Za-z_\-]{16,}|AQ\.[0-9A-Za-z_.\-]{16,}`)

// fragmentLen is the length of the shortest piece of a key that Redact
// recognises inside other text: one more than the four characters
// keyrotate ever shows of a key.
const fragmentLen = 5

// Redact removes keys from text that a child process printed, in three
// passes:
//
//  1. every occurrence of each key's string becomes the key's fingerprint;
//  2. anything shaped like a Google API key string (AIza…, AQ.…), such as
//     another key the child printed, becomes its fingerprint;
//  3. every line that holds a piece of a key fragmentLen characters long,
//     in any of the encodings below, is replaced as a whole by a note
//     naming the key's fingerprint. A piece may run over several lines
//     (a key folded into short lines, base64 wrapped at 76 columns): the
//     text is searched with white space and line breaks removed, and
//     every line the piece touches is withheld, so that the lines left
//     cannot be put together into the key.
//
// The encodings searched are the key as it is, UTF-16 (LE or BE: NUL bytes
// are ignored), URL encoding and \xHH or \u00HH escapes (decoded first),
// hex (either case) and base64 or base64url (at each of the three
// alignments a key can have inside a longer encoded value, as in the
// "Authorization: Basic" header of curl -v -u user:KEY).
//
// Control characters other than tab and newline become U+FFFD, so that the
// text cannot rewrite a terminal. What Redact cannot see: a key encrypted,
// reversed or encoded otherwise, or cut into pieces of four characters or
// fewer with other text between them. Do not show a child's output unless
// it is needed.
func Redact(text string, keys ...secret.Key) string {
	for _, k := range keys {
		if !k.IsZero() {
			text = strings.ReplaceAll(text, k.Reveal(), k.Fingerprint())
		}
	}
	text = keyShapeRE.ReplaceAllStringFunc(text, secret.Fingerprint)
	for _, k := range keys {
		if !k.IsZero() {
			text = withholdPieces(text, k)
		}
	}
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if unicode.IsControl(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(text, string(utf8.RuneError)))
}

// redactView is text transformed for searching, with, for each of its
// bytes, the first and last line of the text it comes from.
type redactView struct {
	b      []byte
	lo, hi []int
}

func (v *redactView) add(c byte, lo, hi int) {
	v.b = append(v.b, c)
	v.lo = append(v.lo, lo)
	v.hi = append(v.hi, hi)
}

// keyPieces is every piece of one encoding of a key that Redact looks for.
type keyPieces struct {
	n   int
	set map[string]bool
}

func piecesOf(n int, encoded ...string) keyPieces {
	p := keyPieces{n: n, set: map[string]bool{}}
	for _, s := range encoded {
		m := min(n, len(s))
		for i := 0; i+m <= len(s) && m > 0; i++ {
			p.set[s[i:i+m]] = true
		}
		p.n = min(p.n, max(m, 1))
	}
	return p
}

// mark sets withheld[l] for every line of each piece of p found in v.
func (p keyPieces) mark(v *redactView, withheld []bool) {
	for i := 0; i+p.n <= len(v.b); i++ {
		if p.set[string(v.b[i:i+p.n])] {
			for l := v.lo[i]; l <= v.hi[i+p.n-1]; l++ {
				withheld[l] = true
			}
		}
	}
}

// base64Middles returns, for each alignment of s inside a longer encoded
// value, the part of its base64 (standard and URL alphabets) that depends
// on the bytes of s alone.
func base64Middles(s string) []string {
	var out []string
	for shift := 0; shift < 3; shift++ {
		lo := (8*shift + 5) / 6          // first character made of s's bits only
		hi := (8*(shift+len(s))-6)/6 + 1 // one past the last one
		padded := strings.Repeat("\x00", shift) + s
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			if e := enc.EncodeToString([]byte(padded)); lo < hi && hi <= len(e) {
				out = append(out, e[lo:hi])
			}
		}
	}
	return out
}

// withholdPieces replaces each line that holds, or helps to hold, a piece
// of k (see Redact).
func withholdPieces(text string, k secret.Key) string {
	s := k.Reveal()
	lines := strings.SplitAfter(text, "\n")
	// The text without white space and NUL bytes, then that decoded.
	var joined, decoded, lower redactView
	for li, line := range lines {
		for i := 0; i < len(line); i++ {
			switch c := line[i]; c {
			case ' ', '\t', '\n', '\r', '\v', '\f', 0:
			default:
				joined.add(c, li, li)
			}
		}
	}
	for i := 0; i < len(joined.b); {
		if c, n := escapedByte(joined.b[i:]); n > 0 {
			if c != 0 {
				decoded.add(c, joined.lo[i], joined.hi[i+n-1])
			}
			i += n
			continue
		}
		decoded.add(joined.b[i], joined.lo[i], joined.hi[i])
		i++
	}
	lower = redactView{b: bytes.ToLower(joined.b), lo: joined.lo, hi: joined.hi}

	withheld := make([]bool, len(lines))
	raw := piecesOf(fragmentLen, s)
	raw.mark(&joined, withheld)
	raw.mark(&decoded, withheld)
	piecesOf(2*fragmentLen, hex.EncodeToString([]byte(s))).mark(&lower, withheld)
	piecesOf(8, base64Middles(s)...).mark(&joined, withheld)

	changed := false
	for li, line := range lines {
		if !withheld[li] {
			continue
		}
		nl := ""
		if strings.HasSuffix(line, "\n") {
			nl = "\n"
		}
		lines[li] = "[line withheld: it holds part of key " + k.Fingerprint() + "]" + nl
		changed = true
	}
	if !changed {
		return text
	}
	return strings.Join(lines, "")
}

// escapedByte decodes %HH, \xHH or \u00HH at the start of b; n is 0 when b
// does not start with one of them.
func escapedByte(b []byte) (c byte, n int) {
	var digits []byte
	switch {
	case len(b) >= 3 && b[0] == '%':
		digits, n = b[1:3], 3
	case len(b) >= 4 && b[0] == '\\' && (b[1] == 'x' || b[1] == 'X'):
		digits, n = b[2:4], 4
	case len(b) >= 6 && b[0] == '\\' && b[1] == 'u' && b[2] == '0' && b[3] == '0':
		digits, n = b[4:6], 6
	default:
		return 0, 0
	}
	var out [1]byte
	if _, err := hex.Decode(out[:], digits); err != nil {
		return 0, 0
	}
	return out[0], n
}

// redacted returns the captured output with key removed (see Redact). When
// output was dropped, the last, incomplete line is dropped too: it may end
// in the first characters of a key that Redact could not recognise.
func (c *capture) redacted(key secret.Key) string {
	data, dropped := c.buf, c.dropped
	if dropped > 0 {
		i := bytes.LastIndexByte(data, '\n')
		dropped += int64(len(data) - (i + 1))
		data = data[:i+1]
	}
	s := Redact(string(data), key)
	if dropped > 0 {
		s += fmt.Sprintf("[%d more bytes not shown]", dropped)
	}
	return s
}
