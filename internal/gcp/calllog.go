package gcp

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// LogCalls returns a transport that logs every call it carries to base
// (nil: http.DefaultTransport) at debug level on the default logger: the
// method (named as Meter counts it), the resource name, the HTTP status or
// error, and how long it took. It logs neither the URL's query nor any
// body nor header: a key string travels in a header or a body, never here.
func LogCalls(api string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &loggedTransport{api: api, base: base}
}

type loggedTransport struct {
	api  string
	base http.RoundTripper
}

func (t *loggedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if !slog.Default().Enabled(ctx, slog.LevelDebug) {
		return t.base.RoundTrip(req)
	}
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	method, resource := restMethod(t.api, req)
	if resource == "" && t.api == Gemini {
		resource = strings.TrimPrefix(req.URL.Path, "/")
	}
	st := ""
	if err != nil {
		st = err.Error()
	} else {
		st = resp.Status
	}
	slog.DebugContext(ctx, "google call", "method", method, "http", req.Method, "resource", resource, "status", st,
		"took", time.Since(start).Round(time.Millisecond))
	return resp, err
}

// LogUnaryCalls is LogCalls for gRPC clients: the method, the resource the
// request names (never the request itself: LookupKey's carries the key
// string), the status code and how long it took.
func LogUnaryCalls(api string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, fullMethod string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if !slog.Default().Enabled(ctx, slog.LevelDebug) {
			return invoker(ctx, fullMethod, req, reply, cc, opts...)
		}
		start := time.Now()
		err := invoker(ctx, fullMethod, req, reply, cc, opts...)
		name := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
		slog.DebugContext(ctx, "google call", "method", api+"."+name, "resource", grpcResource(req), "status", status.Code(err).String(),
			"took", time.Since(start).Round(time.Millisecond))
		return err
	}
}
