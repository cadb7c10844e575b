package doctor

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/runenames"

	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/targets"
)

// The variables Google's Gemini SDKs read.
const (
	GeminiAPIKeyEnv = "GEMINI_API_KEY"
	GoogleAPIKeyEnv = "GOOGLE_API_KEY"
)

// Key shapes. A standard key is "AIza" and 35 more characters of
// [A-Za-z0-9_-]. An auth key (bound to a service account) starts with "AQ.";
// Google does not document its length, so only a value shorter than any
// standard key is called "shorter than usual".
const (
	standardPrefix = "AIza"
	standardLen    = 39
	authPrefix     = "AQ."
	authMinLen     = 40
)

// sdkPrecedence is what Google's Gen AI SDKs do when both variables are set:
// python-genai (google/genai/_api_client.py, get_env_api_key), go-genai
// (client.go, getAPIKeyFromEnv) and js-genai (src/node/node_client.ts,
// getApiKeyFromEnv) all return GOOGLE_API_KEY and log "Both GOOGLE_API_KEY
// and GEMINI_API_KEY are set. Using GOOGLE_API_KEY."; an empty variable
// counts as unset (js-genai trims whitespace first).
const sdkPrecedence = "Google's Gen AI SDKs (google-genai for Python, Go and JavaScript) use GOOGLE_API_KEY when both are set"

// source reads the raw value and reports on where it came from.
func (c *checkup) source(in Input) (string, bool) {
	env := in.Env
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	switch {
	case in.Stdin:
		c.r.Source = Source{Kind: "stdin"}
		if in.Value == "" {
			c.addRemedy(FindSource, StatusFail, "standard input held no key (an empty first line)",
				"pipe the key in from where it is stored", Remedy{Kind: RemedyStdin})
			return "", false
		}
		c.add(FindSource, StatusOK, fmt.Sprintf("read a value from standard input (%s)", chars(in.Value)), "")
		return in.Value, true
	case in.DotEnv != nil:
		return c.dotenvSource(in, env)
	}
	return c.envSource(in, env)
}

func (c *checkup) envSource(in Input, env func(string) (string, bool)) (string, bool) {
	name := in.Var
	if name == "" {
		name = GeminiAPIKeyEnv
		if v, _ := env(GeminiAPIKeyEnv); v == "" {
			if v, _ := env(GoogleAPIKeyEnv); v != "" {
				name = GoogleAPIKeyEnv
			}
		}
	}
	c.r.Source = Source{Kind: "env", Var: name}
	v, set := env(name)
	switch {
	case !set && in.Var == "":
		c.add(FindSource, StatusFail, "neither GEMINI_API_KEY nor GOOGLE_API_KEY is set",
			"set GEMINI_API_KEY in the environment of the program that calls Gemini (from a secret store, not typed into a shell), "+
				"or name the variable with --env, or read a file with --dotenv FILE")
		return "", false
	case !set:
		c.add(FindSource, StatusFail, name+" is not set",
			"set "+name+" in the environment of the program that calls Gemini, or check the name (--env)")
		return "", false
	case v == "":
		c.add(FindSource, StatusFail, name+" is set but empty",
			"put the key into "+name+"; an empty variable counts as unset for the Gemini SDKs")
		return "", false
	}
	msg := name + " is set (" + chars(v) + ")"
	if in.Var == "" && name == GoogleAPIKeyEnv {
		if _, set := env(GeminiAPIKeyEnv); set {
			msg += "; GEMINI_API_KEY is set but empty"
		} else {
			msg += "; GEMINI_API_KEY is not set"
		}
	}
	c.add(FindSource, StatusOK, msg, "")
	c.both(name, env, "the environment")
	return v, true
}

func (c *checkup) dotenvSource(in Input, env func(string) (string, bool)) (string, bool) {
	f := targets.ParseEnv(in.DotEnv)
	file := in.DotEnvPath
	if file == "" {
		file = ".env"
	}
	name := in.Var
	if name == "" {
		name = GeminiAPIKeyEnv
		if len(f.Definitions(GeminiAPIKeyEnv)) == 0 && len(f.Definitions(GoogleAPIKeyEnv)) > 0 {
			name = GoogleAPIKeyEnv
		}
	}
	c.r.Source = Source{Kind: "dotenv", Var: name, File: file}
	envV, envSet := env(name)
	defs := f.Definitions(name)
	v, n := f.Lookup(name)
	switch {
	case n == 0:
		what := name
		if in.Var == "" {
			what = "GEMINI_API_KEY nor GOOGLE_API_KEY"
		}
		msg := file + " does not define " + what
		if in.Var == "" {
			msg = file + " defines neither " + what
		}
		if envSet && envV != "" {
			msg += fmt.Sprintf("; the environment has %s (%s), which programs that do not load %s use", name, secret.Fingerprint(envV), file)
		}
		c.add(FindSource, StatusFail, msg, "add `"+name+"=<key>` to "+file+", or check the variable's name with --env")
		return "", false
	case n > 1:
		c.add(FindSource, StatusFail, fmt.Sprintf("%s defines %s %d times (%s): dotenv tools disagree on which one wins", file, name, n, defLines(defs)),
			"keep one definition of "+name+" in "+file)
		return "", false
	case defs[0].Malformed:
		c.add(FindSource, StatusFail,
			fmt.Sprintf("%s line %d defines %s with a value that cannot be parsed (an unterminated quote, or text after the closing quote)", file, defs[0].Line, name),
			"fix the quoting on line "+strconv.Itoa(defs[0].Line)+" of "+file)
		return "", false
	case v == "":
		c.add(FindSource, StatusFail, fmt.Sprintf("%s line %d sets %s to an empty value", file, defs[0].Line, name),
			"put the key into "+name+" on line "+strconv.Itoa(defs[0].Line)+" of "+file)
		return "", false
	}
	if lc := f.LoaderConflict(name); lc != nil {
		// The program may load another value than the one checked here.
		c.add(FindSource, StatusWarn,
			fmt.Sprintf("%s line %d defines %s (%s), but on line %d %s %s", file, defs[0].Line, name, chars(v), lc.Line, lc.Loaders, lc.Reason),
			fmt.Sprintf("line %d of %s: %s", lc.Line, file, lc.Fix))
	} else {
		c.add(FindSource, StatusOK, fmt.Sprintf("%s line %d defines %s (%s)", file, defs[0].Line, name, chars(v)), "")
	}

	switch {
	case !envSet || envV == "":
		c.add(FindSourceDotEnv, StatusOK,
			name+" is not set in this environment: only programs that load "+file+" see the key (fine for docker compose, python-dotenv and the like)", "")
	case envV == v:
		c.add(FindSourceDotEnv, StatusOK, name+" in the environment holds the same value as "+file, "")
	default:
		c.add(FindSourceDotEnv, StatusWarn,
			fmt.Sprintf("%s differs between %s (%s) and the environment (%s): python-dotenv, Node's dotenv and godotenv keep a variable "+
				"that is already set, so programs started from this environment use the environment's key",
				name, file, secret.Fingerprint(v), secret.Fingerprint(envV)),
			"make them agree: update or unset "+name+" in the environment, or fix "+file)
	}
	fileLookup := func(n string) (string, bool) {
		v, count := f.Lookup(n)
		return v, count == 1
	}
	c.both(name, fileLookup, file)
	return v, true
}

// both reports on GEMINI_API_KEY and GOOGLE_API_KEY both being set in one
// place.
func (c *checkup) both(name string, lookup func(string) (string, bool), where string) {
	if name != GeminiAPIKeyEnv && name != GoogleAPIKeyEnv {
		return
	}
	gem, _ := lookup(GeminiAPIKeyEnv)
	goo, _ := lookup(GoogleAPIKeyEnv)
	if gem == "" || goo == "" {
		return
	}
	if gem == goo {
		c.add(FindSourceBoth, StatusOK, "GEMINI_API_KEY and GOOGLE_API_KEY are both set in "+where+", to the same value", "")
		return
	}
	msg := fmt.Sprintf("GEMINI_API_KEY (%s) and GOOGLE_API_KEY (%s) are both set in %s and differ: %s",
		secret.Fingerprint(gem), secret.Fingerprint(goo), where, sdkPrecedence)
	if name == GoogleAPIKeyEnv {
		c.add(FindSourceBoth, StatusWarn, msg+"; this check reads GOOGLE_API_KEY, the one they use",
			"unset GEMINI_API_KEY (or give it the same key) so that every tool reads the same key")
		return
	}
	c.addRemedy(FindSourceBoth, StatusFail, msg+", not GEMINI_API_KEY, which this check reads",
		"unset GOOGLE_API_KEY (or give it the same key)", Remedy{Kind: RemedyCheckVar, Var: GoogleAPIKeyEnv})
}

// junk is one unwanted character in the raw value.
type junk struct {
	r          rune
	char, byte int // 1-based character and 0-based byte position
}

// junkFound is the junk in a value, by kind.
type junkFound struct {
	lines     []junk // CR, LF and other line separators
	invisible []junk // format, control and space characters other than U+0020
	foreign   []junk // visible characters outside ASCII
	ends      []junk // spaces and tabs at either end
	quotes    string // the quotes around the key ("double quotes and …"), "" if none
	prefixes  string // the prefixes before it ("`export` and …"), "" if none
}

func (j *junkFound) none() bool {
	return len(j.lines)+len(j.invisible)+len(j.foreign)+len(j.ends) == 0 && j.quotes == "" && j.prefixes == ""
}

// hygiene looks for junk in raw and returns the value without it, and what
// was removed (for "after removing …").
func (c *checkup) hygiene(raw string) (clean string, removed []string) {
	var found junkFound
	s, space := found.sortChars(raw)
	s, found.ends = trimBlanks(s, space)
	s, found.quotes, found.prefixes = unwrap(s)
	if strings.Contains(found.quotes, "typographic") {
		// The quotes were removed and are reported as quotes.
		kept := found.foreign[:0]
		for _, j := range found.foreign {
			if !strings.ContainsRune(typographicQuotes, j.r) {
				kept = append(kept, j)
			}
		}
		found.foreign = kept
	}
	return s, c.reportJunk(&found, utf8.RuneCountInString(raw))
}

// sortChars files each character of raw that is not part of a key under
// its kind of junk and returns raw without line breaks and invisible
// characters, and where its spaces and tabs are (which the format check
// reports where they are not at an end).
func (j *junkFound) sortChars(raw string) (s string, space []junk) {
	var b strings.Builder
	ci := 0
	for bi := 0; bi < len(raw); {
		r, size := utf8.DecodeRuneInString(raw[bi:])
		ci++
		jk := junk{r: r, char: ci, byte: bi}
		if r == utf8.RuneError && size == 1 {
			jk.r = -int32(raw[bi]) // an invalid byte, named by its value
		}
		switch {
		case r == '\r' || r == '\n' || r == '\u0085' || r == '\u2028' || r == '\u2029' || r == '\v' || r == '\f':
			j.lines = append(j.lines, jk)
		case r == ' ' || r == '\t':
			b.WriteRune(r) // trimmed later if at an end; inside, the format check reports it
			space = append(space, jk)
		case jk.r < 0 || isInvisible(r):
			j.invisible = append(j.invisible, jk)
		case r >= utf8.RuneSelf:
			b.WriteRune(r)
			j.foreign = append(j.foreign, jk)
		default:
			b.WriteRune(r)
		}
		bi += size
	}
	return b.String(), space
}

// trimBlanks removes the spaces and tabs at the ends of s, which are the
// first and last of space: only those are "leading or trailing
// whitespace".
func trimBlanks(s string, space []junk) (string, []junk) {
	trimmed := strings.Trim(s, " \t")
	if trimmed == s {
		return s, nil
	}
	lead := len(s) - len(strings.TrimLeft(s, " \t"))
	trail := len(s) - len(strings.TrimRight(s, " \t"))
	var ends []junk
	ends = append(ends, space[:lead]...)
	ends = append(ends, space[len(space)-trail:]...)
	return trimmed, ends
}

// unwrap removes the quotes and prefixes around a key, as in
// `export GEMINI_API_KEY="AIza…"`: prefixes, then quotes, four layers at
// most. It says which quotes and prefixes it removed.
func unwrap(s string) (key, quotes, prefixes string) {
	var quoteList, prefixList []string
	for range 4 {
		if q, inner, ok := unquote(s); ok {
			quoteList = append(quoteList, q)
			s = strings.Trim(inner, " \t")
			continue
		}
		if p, rest, ok := cutPrefix(s); ok {
			prefixList = append(prefixList, p)
			s = strings.Trim(rest, " \t")
			continue
		}
		break
	}
	return s, joinAnd(quoteList), joinAnd(prefixList)
}

// reportJunk adds a finding for each kind of junk found in a value of
// total characters and returns what removing it took away.
func (c *checkup) reportJunk(found *junkFound, total int) (removed []string) {
	if n := len(found.lines); n > 0 {
		c.add(FindLineBreak, StatusFail, fmt.Sprintf("%s: %s", plural(n, "line break"), listJunk(found.lines, total)),
			"remove the line break: write the variable without a final newline (`printf %s`, not `echo`; "+
				"`kubectl create secret --from-literal`, not --from-file of an edited file)")
		removed = append(removed, plural(n, "line break"))
	}
	if n := len(found.invisible); n > 0 {
		c.add(FindInvisible, StatusFail, fmt.Sprintf("%s: %s", plural(n, "invisible character"), listJunk(found.invisible, total)),
			"retype or re-copy the key from the Cloud console (Copy button) or Secret Manager; "+
				"invisible characters come from chat apps, word processors and web pages")
		removed = append(removed, describeRemoved(found.invisible))
	}
	if n := len(found.foreign); n > 0 {
		c.add(FindNonASCII, StatusFail, fmt.Sprintf("%s: %s", plural(n, "non-ASCII character"), listJunk(found.foreign, total)),
			"API keys are plain ASCII: re-copy the key from the Cloud console or Secret Manager instead of retyping it")
	}
	if q := found.quotes; q != "" {
		c.add(FindQuotes, StatusFail, "the value is wrapped in "+q+", which are sent as part of the key",
			"remove the quotes: docker --env-file, Kubernetes, systemd and CI secret stores keep quotes literally (only shells and .env loaders strip them)")
		removed = append(removed, "the "+q)
	}
	if p := found.prefixes; p != "" {
		c.add(FindPrefix, StatusFail, "the value starts with "+p+": the variable must hold only the key",
			"remove "+p+" from the value; the SDKs add the header themselves")
		removed = append(removed, p)
	}
	if len(found.ends) > 0 {
		c.add(FindWhitespace, StatusWarn, fmt.Sprintf("leading or trailing whitespace: %s", listJunk(found.ends, total)),
			"remove the spaces around the key; some clients strip them, HTTP headers and other clients do not")
		removed = append(removed, "the surrounding whitespace")
	}
	if found.none() {
		c.add(FindValue, StatusOK, "no whitespace, quotes, prefixes, line breaks or invisible characters", "")
	}
	return removed
}

// isInvisible reports whether r is a character people cannot see: format
// characters (zero-width space, joiners, BOM, word joiner, direction
// marks, soft hyphen), controls, and spaces other than U+0020.
func isInvisible(r rune) bool {
	return unicode.Is(unicode.Cf, r) || unicode.IsControl(r) ||
		(r >= utf8.RuneSelf && unicode.IsSpace(r)) || unicode.Is(unicode.Zs, r) && r != ' ' ||
		r == '\u3164' || r == '\u115F' || r == '\u1160' // Hangul fillers
}

func unquote(s string) (desc, inner string, ok bool) {
	if len(s) < 2 {
		return "", s, false
	}
	for _, q := range []struct {
		open, close byte
		name        string
	}{{'"', '"', "double quotes"}, {'\'', '\'', "single quotes"}, {'`', '`', "backticks"}, {'<', '>', "angle brackets"}} {
		if s[0] == q.open && s[len(s)-1] == q.close {
			return q.name, s[1 : len(s)-1], true
		}
	}
	// Typographic quotes that editors substitute.
	for _, q := range [][2]string{{"\u201c", "\u201d"}, {"\u2018", "\u2019"}, {"\u00ab", "\u00bb"}} {
		if strings.HasPrefix(s, q[0]) && strings.HasSuffix(s, q[1]) && len(s) >= len(q[0])+len(q[1]) {
			return "typographic quotes (" + runeName([]rune(q[0])[0]) + ")", s[len(q[0]) : len(s)-len(q[1])], true
		}
	}
	return "", s, false
}

const typographicQuotes = "\u201c\u201d\u2018\u2019\u00ab\u00bb"

// prefixes people paste along with a key, matched case-insensitively.
var prefixes = []string{
	"authorization: bearer ", "bearer ", "x-goog-api-key:", "x-goog-api-key=", "?key=", "&key=", "key=", "key:",
	"api_key=", "apikey=", "export ", "gemini_api_key=", "google_api_key=",
}

func cutPrefix(s string) (desc, rest string, ok bool) {
	for _, p := range prefixes {
		if len(s) > len(p) && strings.EqualFold(s[:len(p)], p) {
			return "`" + strings.TrimSpace(s[:len(p)]) + "`", s[len(p):], true
		}
	}
	return "", s, false
}

// format checks the cleaned value's shape and reports whether it can be a
// key, worth asking Google about.
func (c *checkup) format(s string) bool {
	if s == "" {
		if c.raw != "" {
			c.add(FindFormat, StatusFail, "nothing is left after removing the junk: the value holds no key",
				"put the key itself into the variable")
		}
		return false
	}
	n := utf8.RuneCountInString(s)
	var bad []junk
	ci := 0
	for bi, r := range s {
		ci++
		if r < utf8.RuneSelf && !isKeyChar(byte(r)) || r >= utf8.RuneSelf {
			bad = append(bad, junk{r: r, char: ci, byte: bi})
		}
	}
	after := ""
	if c.after != "" {
		after = " (" + strings.TrimSuffix(c.after, ", ") + ")"
	}
	if len(bad) > 0 {
		kind := "the value"
		switch {
		case strings.HasPrefix(s, standardPrefix):
			c.r.KeyType, kind = "standard", "it starts like a standard key (AIza…) but"
		case strings.HasPrefix(s, authPrefix):
			c.r.KeyType, kind = "auth", "it starts like an auth key (AQ.…) but"
		}
		c.add(FindFormat, StatusFail, fmt.Sprintf("%s holds characters no API key has%s: %s", kind, after, listJunk(bad, n)),
			"re-copy the key from the Cloud console or Secret Manager")
		c.add(FindLookup, StatusSkip, "remote checks skipped: the value holds characters no API key has", "")
		return false
	}
	switch {
	case strings.HasPrefix(s, standardPrefix):
		c.r.KeyType = "standard"
		switch {
		case n < standardLen:
			c.add(FindLength, StatusFail, fmt.Sprintf("%d characters%s; a standard key has exactly %d: the value looks truncated", n, after, standardLen),
				"copy the whole key again (Cloud console → APIs & Services → Credentials → Show key, or Secret Manager)")
		case n > standardLen:
			c.add(FindLength, StatusFail,
				fmt.Sprintf("%d characters%s; a standard key has exactly %d: extra characters, or two keys run together", n, after, standardLen),
				"put exactly one key into the variable")
		}
		c.addRemedy(FindFormat, StatusWarn,
			"standard key (AIza…): the Gemini API rejects standard keys since September 2026 and needs an auth key (AQ.…), bound to a service account",
			"migrate to an auth key: set service_account on the slot and rotate it", Remedy{Kind: RemedyMigrate})
	case strings.HasPrefix(s, authPrefix):
		c.r.KeyType = "auth"
		if n < authMinLen {
			c.add(FindLength, StatusWarn, fmt.Sprintf("%d characters%s: shorter than usual for an auth key, it may be truncated", n, after),
				"compare with the key in the Cloud console or Secret Manager, and copy it whole")
		}
		c.add(FindFormat, StatusOK, "auth key (AQ.…), the kind the Gemini API requires", "")
	default:
		c.r.KeyType = "unknown"
		c.add(FindFormat, StatusFail, "not a Google API key: it starts with neither AIza (standard key) nor AQ. (auth key)"+hintOther(s),
			"create or copy one in the Cloud console, or "+c.currentKeyFix())
		c.add(FindLookup, StatusSkip, "remote checks skipped: the value is not an API key", "")
		return false
	}
	return true
}

// hintOther recognises credentials that are not API keys; it names only the
// kind, never the value.
func hintOther(s string) string {
	switch {
	case strings.HasPrefix(s, "ya29."):
		return " — it looks like an OAuth access token (ya29.…), which goes in an Authorization header, not in an API key variable"
	case strings.HasPrefix(s, "{"):
		return " — it looks like JSON, perhaps a service account key file (use GOOGLE_APPLICATION_CREDENTIALS for that)"
	case strings.HasPrefix(s, "sk-"):
		return " — it looks like an OpenAI-style key (sk-…)"
	}
	return ""
}

func listJunk(js []junk, total int) string {
	const max = 4
	parts := make([]string, 0, max+1)
	for i, j := range js {
		if i == max {
			parts = append(parts, fmt.Sprintf("and %d more", len(js)-max))
			break
		}
		pos := fmt.Sprintf("at character %d of %d", j.char, total)
		if j.byte != j.char-1 {
			pos += fmt.Sprintf(" (byte offset %d)", j.byte)
		}
		parts = append(parts, runeName(j.r)+" "+pos)
	}
	return strings.Join(parts, ", ")
}

// describeRemoved says which invisible characters were removed.
func describeRemoved(js []junk) string {
	if len(js) == 1 {
		return "the " + runeName(js[0].r)
	}
	return plural(len(js), "invisible character")
}

// runeName names a character: "U+200B ZERO WIDTH SPACE". A negative r is an
// invalid byte.
func runeName(r rune) string {
	if r < 0 {
		return fmt.Sprintf("byte 0x%02X (not valid UTF-8)", -r)
	}
	var name string
	switch r {
	case '\t':
		name = "CHARACTER TABULATION (tab)"
	case '\n':
		name = "LINE FEED"
	case '\r':
		name = "CARRIAGE RETURN"
	case '\v':
		name = "LINE TABULATION"
	case '\f':
		name = "FORM FEED"
	case 0:
		name = "NULL"
	case 0xFEFF:
		name = "ZERO WIDTH NO-BREAK SPACE (byte order mark)"
	default:
		name = runenames.Name(r)
		if name == "" || strings.HasPrefix(name, "<") {
			if unicode.IsControl(r) {
				name = "control character"
			} else {
				name = "unnamed character"
			}
		}
	}
	return fmt.Sprintf("U+%04X %s", r, name)
}

func chars(s string) string {
	n := utf8.RuneCountInString(s)
	if n == 1 {
		return "1 character"
	}
	return strconv.Itoa(n) + " characters"
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

func defLines(defs []targets.Definition) string {
	s := make([]string, len(defs))
	for i, d := range defs {
		s[i] = strconv.Itoa(d.Line)
	}
	return "lines " + strings.Join(s, ", ")
}
