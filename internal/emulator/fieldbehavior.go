package emulator

import (
	"context"
	"fmt"
	"strings"

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
		method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
		name := serviceName(info.FullMethod) + "." + method
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
	c := &fbChecker{method: method}
	m := req.ProtoReflect()
	update := m.Descriptor().Fields().ByName("update_mask") != nil
	c.message("", m, true, update, false)
	return c.vs
}

type fbChecker struct {
	method string
	vs     []Violation
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
func (c *fbChecker) message(at string, m protoreflect.Message, top, inUpdate, resource bool) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		path := join(at, string(fd.Name()))
		required, outputOnly := behaviours(fd)
		set := m.Has(fd)
		if required && !set && (top || !inUpdate) && !zeroIsAValue(fd) {
			c.vs = append(c.vs, Violation{Method: c.method, Field: path, Refused: true,
				Message: fmt.Sprintf("Required field '%s' is not set.", path)})
		}
		if outputOnly && set && !(resource && fd.Name() == "name") && !strings.HasPrefix(c.method, "run.") {
			c.vs = append(c.vs, Violation{Method: c.method, Field: path,
				Message: fmt.Sprintf("Output-only field '%s' sent in a request: the API ignores it.", path)})
		}
		if !set || fd.Kind() != protoreflect.MessageKind {
			continue
		}
		childUpdate := inUpdate
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				m.Get(fd).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
					c.message(fmt.Sprintf("%s[%v]", path, k.Interface()), v.Message(), false, childUpdate, false)
					return true
				})
			}
		case fd.IsList():
			l := m.Get(fd).List()
			for j := 0; j < l.Len(); j++ {
				c.message(fmt.Sprintf("%s[%d]", path, j), l.Get(j).Message(), false, childUpdate, false)
			}
		default:
			if fd.Message().FullName().Parent() == "google.protobuf" {
				continue // well-known types (FieldMask, Timestamp) carry no behaviours
			}
			c.message(path, m.Get(fd).Message(), false, childUpdate, top)
		}
	}
}
