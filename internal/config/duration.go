package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

const day = 24 * time.Hour

// Duration is a time.Duration that also accepts whole days, which is how
// people think about key lifetimes: "90d", "1d12h", "36h", "0s", "0". Days
// must come first; weeks, months and years are not accepted because their
// length is ambiguous (write 7d, 30d, 365d).
type Duration time.Duration

// ParseDuration parses a Go duration (time.ParseDuration) optionally
// preceded by a whole number of days ("1d12h"). It accepts negative values;
// whether a negative duration makes sense is the caller's decision. Errors
// carry a Hint method with the fix.
func ParseDuration(s string) (Duration, error) {
	d, msg, hint := parseDuration(s)
	if msg != "" {
		return 0, &durationError{msg: msg, hint: hint}
	}
	return d, nil
}

type durationError struct{ msg, hint string }

func (e *durationError) Error() string { return e.msg }
func (e *durationError) Hint() string  { return e.hint }

const durationHint = "write a number and a unit: d, h, m, s, ms (for example 90d, 1d12h, 36h, 10m, 0s)"

// parseDuration returns a message and a hint instead of an error so that the
// validator can place them in an *Error with the file position.
func parseDuration(s string) (d Duration, msg, hint string) {
	if s == "" {
		return 0, "empty duration", durationHint
	}
	i := strings.IndexByte(s, 'd')
	if i < 0 {
		return parseGo(s, s)
	}
	days, rest := s[:i], s[i+1:]
	neg := false
	if days != "" && (days[0] == '-' || days[0] == '+') {
		neg = days[0] == '-'
		days = days[1:]
	}
	if days == "" || strings.Trim(days, "0123456789") != "" {
		if strings.ContainsAny(days, "hmsuµμn") {
			return 0, fmt.Sprintf("invalid duration %q: days must come first", s), "write the days first, for example 1d12h"
		}
		if strings.ContainsRune(days, '.') {
			return 0, fmt.Sprintf("invalid duration %q: days must be a whole number", s), "write fractions of a day in hours, for example 36h for 1.5d"
		}
		return 0, fmt.Sprintf("invalid duration %q", s), durationHint
	}
	n, err := strconv.ParseInt(days, 10, 64)
	if err != nil || n > int64(math.MaxInt64/day) {
		return 0, fmt.Sprintf("duration %q is too long", s), "use at most 106751d (about 292 years)"
	}
	total := time.Duration(n) * day
	if strings.HasPrefix(rest, "ay") {
		return 0, fmt.Sprintf("invalid duration %q", s), "write days as d, for example " + days + "d"
	}
	if rest != "" {
		if strings.ContainsRune(rest, 'd') {
			return 0, fmt.Sprintf("invalid duration %q: days given twice", s), "write the days once, first, for example 1d12h"
		}
		if rest[0] == '-' || rest[0] == '+' {
			return 0, fmt.Sprintf("invalid duration %q: a sign may only lead the duration", s), durationHint
		}
		r, msg, hint := parseGo(rest, s)
		if msg != "" {
			return 0, msg, hint
		}
		if time.Duration(r) > math.MaxInt64-total {
			return 0, fmt.Sprintf("duration %q is too long", s), "use at most 106751d (about 292 years)"
		}
		total += time.Duration(r)
	}
	if neg {
		total = -total
	}
	return Duration(total), "", ""
}

// parseGo parses s with time.ParseDuration and turns its errors into
// messages about whole (the text the user wrote).
func parseGo(s, whole string) (Duration, string, string) {
	d, err := time.ParseDuration(s)
	if err == nil {
		return Duration(d), "", ""
	}
	if c := s[0]; !(c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+') {
		return 0, fmt.Sprintf("invalid duration %q", whole), durationHint
	}
	if u := unknownUnit(s); u != "" {
		switch u {
		case "w", "wk", "week", "weeks", "y", "yr", "year", "years", "mo", "month", "months":
			return 0, fmt.Sprintf("unknown unit %q in duration %q", u, whole), "the longest unit is d (days): write 7d for a week, 30d for a month, 365d for a year"
		case "D", "H", "M", "S":
			return 0, fmt.Sprintf("unknown unit %q in duration %q", u, whole), "units are lower case: d, h, m, s"
		}
		return 0, fmt.Sprintf("unknown unit %q in duration %q", u, whole), durationHint
	}
	if strings.Trim(s, "+-0123456789.") == "" {
		n := strings.TrimLeft(s, "+-")
		return 0, fmt.Sprintf("missing unit in duration %q", whole), "add a unit, for example " + n + "d, " + n + "m or " + n + "s"
	}
	return 0, fmt.Sprintf("invalid duration %q", whole), durationHint
}

// unknownUnit returns the first unit in s that time.ParseDuration does not
// know, or "".
func unknownUnit(s string) string {
	for i := 0; i < len(s); {
		if c := s[i]; c >= '0' && c <= '9' || c == '.' || c == '+' || c == '-' {
			i++
			continue
		}
		j := i
		for j < len(s) && !(s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
			j++
		}
		switch u := s[i:j]; u {
		case "ns", "us", "µs", "μs", "ms", "s", "m", "h":
		default:
			return u
		}
		i = j
	}
	return ""
}

// String formats d so that ParseDuration reads it back: whole days as "90d",
// longer durations as "1d12h0m0s", shorter ones as time.Duration does.
func (d Duration) String() string {
	t := time.Duration(d)
	if t < 0 {
		if t == math.MinInt64 {
			return t.String() // cannot be negated; time's form parses back
		}
		return "-" + Duration(-t).String()
	}
	if t < day {
		return t.String()
	}
	days, rest := t/day, t%day
	if rest == 0 {
		return strconv.FormatInt(int64(days), 10) + "d"
	}
	return strconv.FormatInt(int64(days), 10) + "d" + rest.String()
}

// MarshalText renders d as String does (for YAML and JSON output).
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses text with ParseDuration.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
