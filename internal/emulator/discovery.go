package emulator

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
)

// Every API Keys REST request is checked against the API's published
// definition, the discovery document Google's Go client is generated from,
// before it is handled: the method (HTTP verb and path), its parameters
// (known, required ones present, types and enum values), the body's fields
// (known, recursively through the schemas, with their JSON types and enum
// values) and the updateMask paths. A request that breaks the definition is
// refused as Google's front end refuses it, and recorded (SchemaViolations):
// the test that sent it fails even when the product would have coped with
// the error, since the request would not have done what it meant on the
// real API.
//
// Public sources for the answers: an unknown body field is 400
// INVALID_ARGUMENT "Invalid JSON payload received. Unknown name \"x\" at
// 'key': Cannot find field." with a google.rpc.BadRequest field violation,
// several joined by newlines (the wording of Google's JSON transcoder as
// quoted in google-gemini/gemini-cli#13972, zed-industries/zed#62539,
// mnfst/llm-gateway#1858); the paths it names are the proto field names
// (snake_case). An output-only field (readOnly in the discovery document)
// is NOT refused: google/api/field_behavior.proto says the server "must
// ignore it and must not throw an error"; it is recorded all the same, since
// a client that sends it believes it sets something. Where no public
// source gives the wording (an unknown query parameter, a wrong query type
// or enum, a missing required parameter, a bad updateMask path) the
// emulator refuses with INVALID_ARGUMENT, the strictest plausible reading,
// in the transcoder's style.

// apiKeysDiscovery is a copy of apikeys-api.json from the module
// google.golang.org/api v0.312.0 (apikeys/v2, revision 20260818), the
// client keyrotate uses; TestDiscoveryCopyMatchesModule keeps it equal to
// the file in the version go.mod names.
//
//go:embed apikeys-api.json
var apiKeysDiscovery []byte

type discoveryDoc struct {
	Parameters map[string]*discoveryParam    `json:"parameters"`
	Schemas    map[string]*discoverySchema   `json:"schemas"`
	Resources  map[string]*discoveryResource `json:"resources"`
	methods    []*discoveryMethod
}

type discoveryResource struct {
	Methods   map[string]*discoveryMethod   `json:"methods"`
	Resources map[string]*discoveryResource `json:"resources"`
}

type discoveryMethod struct {
	ID         string                     `json:"id"`
	HTTPMethod string                     `json:"httpMethod"`
	FlatPath   string                     `json:"flatPath"`
	Path       string                     `json:"path"`
	Parameters map[string]*discoveryParam `json:"parameters"`
	Request    *discoverySchema           `json:"request"`
	pathRE     *regexp.Regexp
}

type discoveryParam struct {
	Type        string   `json:"type"`
	Format      string   `json:"format"`
	Location    string   `json:"location"`
	Required    bool     `json:"required"`
	Repeated    bool     `json:"repeated"`
	Enum        []string `json:"enum"`
	Description string   `json:"description"`
}

type discoverySchema struct {
	ID                   string                      `json:"id"`
	Ref                  string                      `json:"$ref"`
	Type                 string                      `json:"type"`
	Format               string                      `json:"format"`
	Enum                 []string                    `json:"enum"`
	ReadOnly             bool                        `json:"readOnly"`
	Properties           map[string]*discoverySchema `json:"properties"`
	Items                *discoverySchema            `json:"items"`
	AdditionalProperties *discoverySchema            `json:"additionalProperties"`
}

var (
	discoveryOnce sync.Once
	discoveryAPI  *discoveryDoc
)

// apiKeysDefinition returns the parsed discovery document.
func apiKeysDefinition() *discoveryDoc {
	discoveryOnce.Do(func() {
		var d discoveryDoc
		if err := json.Unmarshal(apiKeysDiscovery, &d); err != nil {
			panic("emulator: embedded apikeys-api.json: " + err.Error())
		}
		var walk func(map[string]*discoveryResource)
		walk = func(rs map[string]*discoveryResource) {
			for _, r := range rs {
				for _, m := range r.Methods {
					p := m.FlatPath
					if p == "" {
						p = m.Path
					}
					re := regexp.MustCompile(`\\\{[^}]+\\\}`).ReplaceAllString(regexp.QuoteMeta(p), `[^/:]+`)
					m.pathRE = regexp.MustCompile("^/" + re + "$")
					d.methods = append(d.methods, m)
				}
				walk(r.Resources)
			}
		}
		walk(d.Resources)
		sort.Slice(d.methods, func(i, j int) bool { return d.methods[i].ID < d.methods[j].ID })
		discoveryAPI = &d
	})
	return discoveryAPI
}

// Violation is a request that breaks its API's published definition.
type Violation struct {
	// Method is the emulator's name of the call ("apikeys.UpdateKey"), or
	// the HTTP verb and path when no method matches.
	Method string
	// Field is the offending field or parameter, as the API names it
	// ("key.restrictions.api_targets[0].servise"), when there is one.
	Field string
	// Message says what is wrong, in the API's words where known.
	Message string
	// Refused is false for what the API ignores (an output-only field).
	Refused bool
}

func (v Violation) String() string {
	return v.Method + ": " + v.Message
}

// SchemaViolations returns the requests, since Start, that broke the
// published definitions of the APIs (discovery document, proto field
// behaviours). Tests fail when there is any (see internal/emutest).
func (s *Server) SchemaViolations() []Violation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Violation(nil), s.violations...)
}

func (s *Server) recordViolations(vs []Violation) {
	if len(vs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, vs...)
}

// refusal renders the refused violations as Google's INVALID_ARGUMENT with
// a google.rpc.BadRequest, or returns nil when none is refused.
func refusal(vs []Violation) *apiError {
	var msgs []string
	var fvs []fieldViolation
	for _, v := range vs {
		if !v.Refused {
			continue
		}
		msgs = append(msgs, v.Message)
		fvs = append(fvs, fieldViolation{Field: v.Field, Description: v.Message})
	}
	if len(msgs) == 0 {
		return nil
	}
	return newError(codes.InvalidArgument, "%s", strings.Join(msgs, "\n")).
		withDetail(badRequest{Type: typeBadRequest, FieldViolations: fvs})
}

// checkAPIKeysRequest checks a REST request and its body against the
// discovery document. It returns the method's id ("" when none matches)
// and the violations.
func checkAPIKeysRequest(r *http.Request, body []byte, name string) (string, []Violation) {
	d := apiKeysDefinition()
	var m *discoveryMethod
	for _, c := range d.methods {
		if c.HTTPMethod == r.Method && c.pathRE.MatchString(r.URL.Path) {
			m = c
			break
		}
	}
	if m == nil {
		return "", []Violation{{Method: r.Method + " " + r.URL.Path, Message: "no method of the API Keys API matches " + r.Method + " " + r.URL.Path, Refused: true}}
	}
	c := &checker{d: d, method: name}
	q := r.URL.Query()
	for _, k := range slices.Sorted(maps.Keys(q)) {
		p := m.Parameters[k]
		if p == nil || p.Location != "query" {
			p = d.Parameters[k]
		}
		if p == nil || p.Location != "query" {
			c.refuse(snake(k), fmt.Sprintf("Invalid JSON payload received. Unknown name %q: Cannot bind query parameter. "+
				"Field '%s' could not be found in request message.", k, snake(k)))
			continue
		}
		vals := q[k]
		if len(vals) > 1 && !p.Repeated {
			c.refuse(snake(k), fmt.Sprintf("Invalid JSON payload received. Repeated values for field '%s', which is not repeated.", snake(k)))
		}
		for _, v := range vals {
			c.queryValue(k, p, v)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m.Parameters)) {
		p := m.Parameters[k]
		// A query parameter the API documents as "Required." (lookupKey's
		// keyString) is required although the document does not flag it:
		// the strictest reading.
		if p.Location == "query" && (p.Required || strings.HasPrefix(p.Description, "Required.")) && q.Get(k) == "" {
			c.refuse(snake(k), fmt.Sprintf("Missing required parameter '%s'.", snake(k)))
		}
	}
	if m.Request != nil && len(bytes.TrimSpace(body)) > 0 {
		schema := d.resolve(m.Request)
		// The HTTP rule's body: the resource field ("key") for Key
		// bodies, the whole request ("*") otherwise.
		at := ""
		if !strings.HasSuffix(schema.ID, "Request") {
			at = snake(strings.TrimPrefix(schema.ID, "V2"))
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			c.refuse(at, "Invalid JSON payload received. Unexpected token.")
		} else {
			c.value(at, schema, v)
		}
	} else if m.Request == nil && len(bytes.TrimSpace(body)) > 0 {
		c.refuse("", "Invalid JSON payload received. Unexpected body: the method takes none.")
	}
	return m.ID, c.vs
}

type checker struct {
	d      *discoveryDoc
	method string
	vs     []Violation
}

func (c *checker) refuse(field, msg string) {
	c.vs = append(c.vs, Violation{Method: c.method, Field: field, Message: msg, Refused: true})
}

func (d *discoveryDoc) resolve(s *discoverySchema) *discoverySchema {
	for s != nil && s.Ref != "" {
		s = d.Schemas[s.Ref]
	}
	return s
}

// queryValue checks one query parameter's value.
func (c *checker) queryValue(name string, p *discoveryParam, v string) {
	field := snake(name)
	bad := func(typ string) {
		c.refuse(field, fmt.Sprintf("Invalid value at '%s' (%s), %q", field, typ, v))
	}
	switch p.Type {
	case "integer":
		if _, err := strconv.ParseInt(v, 10, 32); err != nil {
			bad("TYPE_INT32")
		}
	case "boolean":
		if v != "true" && v != "false" {
			bad("TYPE_BOOL")
		}
	case "string":
		if len(p.Enum) > 0 && !slices.Contains(p.Enum, v) {
			bad("TYPE_ENUM")
		}
		if p.Format == "google-fieldmask" {
			c.fieldMask(field, v)
		}
	}
}

// fieldMask checks that every path of an updateMask names a field of the
// request's resource (V2Key) that the client may write: one of those the
// parameter's description lists as mutable (display_name, restrictions,
// annotations), or below them. Output-only fields and serviceAccountEmail
// are not mutable.
func (c *checker) fieldMask(field, mask string) {
	key := c.d.Schemas["V2Key"]
	mutable := map[string]bool{"displayName": true, "restrictions": true, "annotations": true}
	for _, path := range strings.Split(mask, ",") {
		path = strings.TrimSpace(path)
		if path == "*" {
			continue
		}
		s := key
		ok := path != ""
		for i, seg := range strings.Split(path, ".") {
			if s == nil {
				ok = false
				break
			}
			if s.AdditionalProperties != nil {
				s = c.d.resolve(s.AdditionalProperties) // a map key
				continue
			}
			f := s.Properties[camel(seg)]
			if f == nil || (i == 0 && !mutable[camel(seg)]) {
				ok = false
				break
			}
			s = c.d.resolve(f)
		}
		if !ok {
			c.refuse(field, fmt.Sprintf("Invalid update_mask path %q: Key has no such mutable field (mutable: display_name, restrictions, annotations).", path))
		}
	}
}

// value checks a decoded JSON value against schema s at path at.
func (c *checker) value(at string, s *discoverySchema, v any) {
	s = c.d.resolve(s)
	if s == nil || v == nil {
		return // null is the field's default in proto3 JSON
	}
	bad := func(typ string) {
		shown, _ := json.Marshal(v)
		c.refuse(at, fmt.Sprintf("Invalid value at '%s' (%s), %s", at, typ, shown))
	}
	switch {
	case s.Properties != nil || (s.Type == "object" && s.AdditionalProperties == nil):
		obj, ok := v.(map[string]any)
		if !ok {
			bad("type.googleapis.com/google.api.apikeys.v2." + strings.TrimPrefix(s.ID, "V2"))
			return
		}
		c.message(at, s, obj)
	case s.Type == "object": // a map
		obj, ok := v.(map[string]any)
		if !ok {
			bad("TYPE_MESSAGE")
			return
		}
		for k, e := range obj {
			c.value(at+"["+k+"]", s.AdditionalProperties, e)
		}
	case s.Type == "array":
		arr, ok := v.([]any)
		if !ok {
			bad("TYPE_MESSAGE")
			return
		}
		for i, e := range arr {
			c.value(fmt.Sprintf("%s[%d]", at, i), s.Items, e)
		}
	case s.Type == "string":
		str, ok := v.(string)
		if !ok {
			bad("TYPE_STRING")
			return
		}
		if len(s.Enum) > 0 && !slices.Contains(s.Enum, str) {
			bad("TYPE_ENUM")
		}
	case s.Type == "boolean":
		if _, ok := v.(bool); !ok {
			bad("TYPE_BOOL")
		}
	case s.Type == "integer":
		n, ok := v.(json.Number)
		if ok {
			_, err := n.Int64()
			ok = err == nil
		} else if str, isStr := v.(string); isStr {
			_, err := strconv.ParseInt(str, 10, 64)
			ok = err == nil
		}
		if !ok {
			bad("TYPE_INT32")
		}
	case s.Type == "number":
		if _, ok := v.(json.Number); !ok {
			bad("TYPE_DOUBLE")
		}
	}
}

// message checks the fields of a message obj against its schema s at path
// at: each must be a known field that is not output-only.
func (c *checker) message(at string, s *discoverySchema, obj map[string]any) {
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		f := s.Properties[k]
		if f == nil {
			f = s.Properties[camel(k)] // proto JSON accepts the proto name too
		}
		if f == nil {
			where := ""
			if at != "" {
				where = fmt.Sprintf(" at '%s'", at)
			}
			c.refuse(join(at, snake(k)), fmt.Sprintf("Invalid JSON payload received. Unknown name %q%s: Cannot find field.", k, where))
			continue
		}
		if f.ReadOnly {
			c.vs = append(c.vs, Violation{Method: c.method, Field: join(at, snake(k)),
				Message: fmt.Sprintf("Output-only field '%s' sent in a request: the API ignores it.", join(at, snake(k)))})
			continue
		}
		c.value(join(at, snake(k)), f, obj[k])
	}
}

func join(at, name string) string {
	if at == "" {
		return name
	}
	return at + "." + name
}

// snake turns a JSON name into the proto field name: apiTargets ->
// api_targets.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// camel turns a proto field name into its JSON name: api_targets ->
// apiTargets.
func camel(s string) string {
	var b strings.Builder
	up := false
	for _, r := range s {
		if r == '_' {
			up = true
			continue
		}
		if up && r >= 'a' && r <= 'z' {
			r -= 'a' - 'A'
		}
		up = false
		b.WriteRune(r)
	}
	return b.String()
}
