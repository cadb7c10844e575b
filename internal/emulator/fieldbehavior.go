package emulator

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Every gRPC request (API Keys LookupKey, Secret Manager, Cloud Run) is
// checked against its proto's field behaviours (google.api.field_behavior,
// AIP-203) before it is handled:
//   - a REQUIRED field that is not set is refused with INVALID_ARGUMENT, as
//     field_behavior.proto says ("failure to do so will cause an error
//     (usually INVALID_ARGUMENT)"), and recorded;
//   - an OUTPUT_ONLY field that is set is recorded but not refused: the
//     server "must ignore it and must not throw an error" (the same file).
//
// Within the resource an Update request carries, REQUIRED is not checked:
// an update names the fields it writes in its mask (Secret.replication is
// REQUIRED on create, and no update with mask "annotations" sends it). The
// resource's own name is not an output-only violation even where the
// proto marks it OUTPUT_ONLY (Secret.name): the API routes the update by it
// (the HTTP rule's "secret.name"). Cloud Run's Service is exempt from the
// output-only check: Cloud Run documents its output-only etag as the
// conflict check of an update, which only works sent back, so a
// read-modify-write of the service is its expected use.

// checkFieldBehavior is a gRPC server interceptor applying the check.
func (s *Server) checkFieldBehavior(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if m, ok := req.(proto.Message); ok {
		name := methodName(info.FullMethod)
		vs := fieldBehaviorViolations(name, m)
		s.recordViolations(vs)
		if ae := refusal(vs); ae != nil {
			s.mu.Lock()
			s.calls[name]++ // a refused call is still a call made
			s.mu.Unlock()
			return nil, ae
		}
	}
	return h(ctx, req)
}

// methodNames caches methodName: it runs on every gRPC call.
var methodNames struct {
	sync.RWMutex
	m map[string]string
}

// methodName is the emulator's name of a gRPC method
// ("/google.cloud.secretmanager.v1.SecretManagerService/AddSecretVersion"
// is "secretmanager.AddSecretVersion").
func methodName(fullMethod string) string {
	methodNames.RLock()
	name, ok := methodNames.m[fullMethod]
	methodNames.RUnlock()
	if ok {
		return name
	}
	name = serviceName(fullMethod) + "." + fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	methodNames.Lock()
	defer methodNames.Unlock()
	if methodNames.m == nil {
		methodNames.m = map[string]string{}
	}
	methodNames.m[fullMethod] = name
	return name
}

// serviceName is the emulator's short name of a gRPC service, as in its
// method names ("secretmanager.AddSecretVersion").
func serviceName(fullMethod string) string {
	switch {
	case strings.Contains(fullMethod, "secretmanager"):
		return "secretmanager"
	case strings.Contains(fullMethod, "apikeys"):
		return "apikeys"
	case strings.Contains(fullMethod, ".run."):
		return "run"
	}
	return strings.TrimPrefix(fullMethod[:strings.LastIndexByte(fullMethod, '/')], "/")
}

func fieldBehaviorViolations(method string, req proto.Message) []Violation {
	c := fbChecker{method: method, run: strings.HasPrefix(method, "run.")}
	m := req.ProtoReflect()
	update := m.Descriptor().Fields().ByName("update_mask") != nil
	if !c.message("", m, true, update, false) {
		return nil
	}
	c.paths = true
	c.message("", m, true, update, false)
	return c.vs
}

type fbChecker struct {
	method string
	run    bool // Cloud Run: no output-only check (see above)
	// paths: find every violation, with its path; else stop at the first.
	paths bool
	vs    []Violation
}

// fbField is what the check needs of a field, read once per message type
// (fbFieldsOf): reading the field_behavior option decodes an extension,
// which costs allocations on every call.
type fbField struct {
	fd         protoreflect.FieldDescriptor
	required   bool // REQUIRED, and can be told from unset (zeroIsAValue)
	outputOnly bool
	// message: a message, a list of them or a map with message values,
	// not a well-known type (FieldMask, Timestamp carry no behaviours).
	message bool
}

// fbFields caches fbFieldsOf by message descriptor.
var fbFields sync.Map // protoreflect.MessageDescriptor -> []fbField

func fbFieldsOf(md protoreflect.MessageDescriptor) []fbField {
	if v, ok := fbFields.Load(md); ok {
		return v.([]fbField)
	}
	fields := md.Fields()
	out := make([]fbField, fields.Len())
	for i := range out {
		fd := fields.Get(i)
		required, outputOnly := behaviours(fd)
		f := fbField{fd: fd, required: required && !zeroIsAValue(fd), outputOnly: outputOnly}
		switch {
		case fd.IsMap():
			f.message = fd.MapValue().Kind() == protoreflect.MessageKind
		case fd.Kind() == protoreflect.MessageKind:
			f.message = fd.Message().FullName().Parent() != "google.protobuf"
		}
		out[i] = f
	}
	v, _ := fbFields.LoadOrStore(md, out)
	return v.([]fbField)
}

func behaviours(fd protoreflect.FieldDescriptor) (required, outputOnly bool) {
	fbs, _ := proto.GetExtension(fd.Options(), annotations.E_FieldBehavior).([]annotations.FieldBehavior)
	for _, b := range fbs {
		switch b {
		case annotations.FieldBehavior_REQUIRED:
			required = true
		case annotations.FieldBehavior_OUTPUT_ONLY:
			outputOnly = true
		}
	}
	return required, outputOnly
}

// zeroIsAValue reports whether fd is a proto3 enum without presence whose
// zero is a real value, not *_UNSPECIFIED (ListTimeSeriesRequest.view:
// FULL = 0): on the wire it cannot be told from an unset field, so no API
// can refuse it as missing.
func zeroIsAValue(fd protoreflect.FieldDescriptor) bool {
	if fd.Kind() != protoreflect.EnumKind || fd.HasPresence() {
		return false
	}
	v := fd.Enum().Values().ByNumber(0)
	return v != nil && !strings.HasSuffix(string(v.Name()), "UNSPECIFIED")
}

// message checks m at path at. top: m is the request; inUpdate: m is (in)
// the resource of an update request, where REQUIRED is not checked;
// resource: m is the resource a request carries, whose name addresses it.
// It reports whether it found a violation. Unless c.paths, it stops at
// the first and builds no path: a well-formed request, the usual one,
// costs no allocation; fieldBehaviorViolations checks again with paths
// when there is something to report.
func (c *fbChecker) message(at string, m protoreflect.Message, top, inUpdate, resource bool) (found bool) {
	fields := fbFieldsOf(m.Descriptor())
	for i := range fields {
		f := &fields[i]
		fd := f.fd
		set := m.Has(fd)
		missing := f.required && !set && (top || !inUpdate)
		sent := f.outputOnly && set && !(resource && fd.Name() == "name") && !c.run
		if (missing || sent) && !c.paths {
			return true
		}
		path := ""
		if c.paths {
			path = join(at, string(fd.Name()))
		}
		if missing {
			c.vs = append(c.vs, Violation{Method: c.method, Field: path, Refused: true,
				Message: fmt.Sprintf("Required field '%s' is not set.", path)})
		}
		if sent {
			c.vs = append(c.vs, Violation{Method: c.method, Field: path,
				Message: fmt.Sprintf("Output-only field '%s' sent in a request: the API ignores it.", path)})
		}
		found = found || missing || sent
		if !set || !f.message {
			continue
		}
		var sub bool
		switch {
		case fd.IsMap():
			sub = c.mapValues(path, m.Get(fd).Map(), inUpdate)
		case fd.IsList():
			l := m.Get(fd).List()
			for j := 0; j < l.Len() && !(sub && !c.paths); j++ {
				elem := ""
				if c.paths {
					elem = fmt.Sprintf("%s[%d]", path, j)
				}
				sub = c.message(elem, l.Get(j).Message(), false, inUpdate, false) || sub
			}
		default:
			sub = c.message(path, m.Get(fd).Message(), false, inUpdate, top)
		}
		if sub && !c.paths {
			return true
		}
		found = found || sub
	}
	return found
}

// mapValues checks the message values of the map at path, as message
// does. It checks with a checker of its own, so that the closure Range
// takes does not make c escape to the heap.
func (c *fbChecker) mapValues(path string, mp protoreflect.Map, inUpdate bool) bool {
	sub := &fbChecker{method: c.method, run: c.run, paths: c.paths}
	found := false
	mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		at := ""
		if sub.paths {
			at = fmt.Sprintf("%s[%v]", path, k.Interface())
		}
		found = sub.message(at, v.Message(), false, inUpdate, false) || found
		return !found || sub.paths
	})
	c.vs = append(c.vs, sub.vs...)
	return found
}
