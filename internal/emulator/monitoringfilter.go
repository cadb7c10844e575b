package emulator

// The subset of Cloud Monitoring's filter language
// (https://cloud.google.com/monitoring/api/v3/filters) that ListTimeSeries
// accepts here: comparisons joined by AND, each
//
//	metric.type = "…"
//	resource.type = "…"
//	metric.label.KEY = "…"       (also metric.labels.KEY)
//	resource.label.KEY = "…"     (also resource.labels.KEY)
//
// where the right-hand side may also be starts_with("…") or
// one_of("…", "…"). Both spellings, label and labels, appear in Google's
// own examples (the filters page uses metric.label, the ListTimeSeries
// request's comment metric.labels). Anything else — OR, NOT, parentheses,
// !=, has_substring, regular expressions, unquoted values, a lower-case
// "and", project = … — is refused with INVALID_ARGUMENT: the strictest
// plausible reading, so that a client that passes here sends only what the
// real API certainly accepts. The filter must name exactly one metric type
// ("The filter must specify a single metric type", the comment of
// ListTimeSeriesRequest.filter in cloud.google.com/go/monitoring v1.32.1).

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
)

// matchOp is how a filter term compares a field with its value(s).
type matchOp int

const (
	opEquals matchOp = iota
	opStartsWith
	opOneOf
)

// filterTerm is one comparison: field is "metric.type", "resource.type",
// "metric.label.KEY" or "resource.label.KEY" (normalized to .label.).
type filterTerm struct {
	field  string
	op     matchOp
	values []string
}

func (t filterTerm) match(v string, ok bool) bool {
	if !ok {
		return false
	}
	switch t.op {
	case opStartsWith:
		return strings.HasPrefix(v, t.values[0])
	case opOneOf:
		for _, w := range t.values {
			if v == w {
				return true
			}
		}
		return false
	}
	return v == t.values[0]
}

// tsFilter is a parsed filter: all terms must hold.
type tsFilter struct {
	metricType string
	terms      []filterTerm
}

// matches reports whether a series with these types and labels passes.
func (f *tsFilter) matches(metricType, resourceType string, metricLabels, resourceLabels map[string]string) bool {
	for _, t := range f.terms {
		var v string
		var ok bool
		switch {
		case t.field == "metric.type":
			v, ok = metricType, true
		case t.field == "resource.type":
			v, ok = resourceType, true
		case strings.HasPrefix(t.field, "metric.label."):
			v, ok = metricLabels[strings.TrimPrefix(t.field, "metric.label.")]
		case strings.HasPrefix(t.field, "resource.label."):
			v, ok = resourceLabels[strings.TrimPrefix(t.field, "resource.label.")]
		}
		if !t.match(v, ok) {
			return false
		}
	}
	return true
}

// filterError is Google's shape for a bad request field.
func filterError(filter, why string) error {
	return newError(codes.InvalidArgument, "Field filter had an invalid value of %q: %s", filter, why)
}

// parseFilter parses the supported subset (see the file comment).
func parseFilter(filter string) (*tsFilter, error) {
	if strings.TrimSpace(filter) == "" {
		return nil, newError(codes.InvalidArgument, "Field filter is required.")
	}
	p := &filterParser{src: filter}
	f := &tsFilter{}
	for {
		t, err := p.term()
		if err != nil {
			return nil, filterError(filter, err.Error())
		}
		if t.field == "metric.type" {
			if t.op != opEquals || f.metricType != "" {
				return nil, filterError(filter, "The filter must specify exactly one metric type with =.")
			}
			f.metricType = t.values[0]
		}
		f.terms = append(f.terms, t)
		p.space()
		if p.eof() {
			break
		}
		if !p.keyword("AND") {
			return nil, filterError(filter, fmt.Sprintf("unsupported syntax at offset %d: only comparisons joined by AND are supported", p.pos))
		}
	}
	if f.metricType == "" {
		return nil, filterError(filter, "The filter must specify a metric type (metric.type = \"…\").")
	}
	return f, nil
}

type filterParser struct {
	src string
	pos int
}

func (p *filterParser) eof() bool { return p.pos >= len(p.src) }

func (p *filterParser) space() {
	for !p.eof() && strings.ContainsRune(" \t\r\n", rune(p.src[p.pos])) {
		p.pos++
	}
}

// keyword consumes word when it stands alone (followed by a space).
func (p *filterParser) keyword(word string) bool {
	rest := p.src[p.pos:]
	if strings.HasPrefix(rest, word) && len(rest) > len(word) && strings.ContainsRune(" \t\r\n", rune(rest[len(word)])) {
		p.pos += len(word)
		return true
	}
	return false
}

func isIdent(c byte) bool {
	return c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (p *filterParser) ident() string {
	start := p.pos
	for !p.eof() && isIdent(p.src[p.pos]) {
		p.pos++
	}
	return p.src[start:p.pos]
}

func (p *filterParser) term() (filterTerm, error) {
	p.space()
	at := p.pos
	sel := p.ident()
	field, err := normalizeSelector(sel)
	if err != nil {
		return filterTerm{}, fmt.Errorf("%v at offset %d", err, at)
	}
	p.space()
	if p.eof() || p.src[p.pos] != '=' {
		return filterTerm{}, fmt.Errorf("expected = after %s at offset %d (only = is supported)", sel, p.pos)
	}
	p.pos++
	p.space()
	t := filterTerm{field: field}
	if !p.eof() && p.src[p.pos] == '"' {
		s, err := p.quoted()
		if err != nil {
			return filterTerm{}, err
		}
		t.values = []string{s}
		return t, nil
	}
	fnAt := p.pos
	fn := p.ident()
	switch fn {
	case "starts_with":
		t.op = opStartsWith
	case "one_of":
		t.op = opOneOf
	default:
		return filterTerm{}, fmt.Errorf("expected a quoted string, starts_with(…) or one_of(…) at offset %d", fnAt)
	}
	if p.eof() || p.src[p.pos] != '(' {
		return filterTerm{}, fmt.Errorf("expected ( after %s at offset %d", fn, p.pos)
	}
	p.pos++
	for {
		p.space()
		s, err := p.quoted()
		if err != nil {
			return filterTerm{}, err
		}
		t.values = append(t.values, s)
		p.space()
		if !p.eof() && p.src[p.pos] == ',' && t.op == opOneOf {
			p.pos++
			continue
		}
		if !p.eof() && p.src[p.pos] == ')' {
			p.pos++
			return t, nil
		}
		return filterTerm{}, fmt.Errorf("expected ) at offset %d", p.pos)
	}
}

// normalizeSelector accepts the selectors of the file comment and returns
// them with "labels" spelled "label".
func normalizeSelector(sel string) (string, error) {
	switch sel {
	case "metric.type", "resource.type":
		return sel, nil
	}
	for _, kind := range []string{"metric", "resource"} {
		for _, word := range []string{".label.", ".labels."} {
			if key, ok := strings.CutPrefix(sel, kind+word); ok && key != "" && !strings.Contains(key, ".") {
				return kind + ".label." + key, nil
			}
		}
	}
	if sel == "" {
		return "", fmt.Errorf("expected a selector")
	}
	return "", fmt.Errorf("unsupported selector %q", sel)
}

// quoted reads a double-quoted string with backslash escapes.
func (p *filterParser) quoted() (string, error) {
	if p.eof() || p.src[p.pos] != '"' {
		return "", fmt.Errorf("expected a double-quoted string at offset %d", p.pos)
	}
	p.pos++
	var b strings.Builder
	for !p.eof() {
		c := p.src[p.pos]
		p.pos++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.eof() {
				return "", fmt.Errorf("unterminated string")
			}
			b.WriteByte(p.src[p.pos])
			p.pos++
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("unterminated string")
}
