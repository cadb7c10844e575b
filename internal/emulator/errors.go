package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Google's REST APIs answer errors with a JSON body of this shape (the
// "google.rpc.Status" rendered by the ESF front end):
//
//	{"error":{"code":404,"message":"...","status":"NOT_FOUND","details":[...]}}
//
// The HTTP status is the one google.rpc.Code maps to. apiError carries one
// such error through the handlers; writeError renders it, and renders any
// other error (an injected gRPC status from s.enter, a hook's plain error,
// a cancelled context) the same way.

// Type URLs of the google.rpc error details the emulator emits.
const (
	typeErrorInfo        = "type.googleapis.com/google.rpc.ErrorInfo"
	typeLocalizedMessage = "type.googleapis.com/google.rpc.LocalizedMessage"
	typeHelp             = "type.googleapis.com/google.rpc.Help"
	typeRetryInfo        = "type.googleapis.com/google.rpc.RetryInfo"
	typeQuotaFailure     = "type.googleapis.com/google.rpc.QuotaFailure"
	typePrecondition     = "type.googleapis.com/google.rpc.PreconditionFailure"
	typeBadRequest       = "type.googleapis.com/google.rpc.BadRequest"
)

// apiError is a canonical error with optional google.rpc details.
type apiError struct {
	code    codes.Code
	message string
	details []any // JSON-ready detail objects, "@type" first
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s: %s", e.code, e.message)
}

// newError returns an error with code and message and no details.
func newError(code codes.Code, format string, args ...any) *apiError {
	return &apiError{code: code, message: fmt.Sprintf(format, args...)}
}

// withInfo adds a google.rpc.ErrorInfo detail and, as the real front end
// does for ErrorInfo errors, a google.rpc.LocalizedMessage repeating the
// message.
func (e *apiError) withInfo(reason, domain string, metadata map[string]string) *apiError {
	e.details = append(e.details, errorInfo{Type: typeErrorInfo, Reason: reason, Domain: domain, Metadata: metadata})
	e.details = append(e.details, localizedMessage{Type: typeLocalizedMessage, Locale: "en-US", Message: e.message})
	return e
}

// withDetail adds any other detail.
func (e *apiError) withDetail(d any) *apiError {
	e.details = append(e.details, d)
	return e
}

type errorInfo struct {
	Type     string            `json:"@type"`
	Reason   string            `json:"reason"`
	Domain   string            `json:"domain"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type localizedMessage struct {
	Type    string `json:"@type"`
	Locale  string `json:"locale"`
	Message string `json:"message"`
}

type helpLink struct {
	Description string `json:"description"`
	URL         string `json:"url"`
}

type help struct {
	Type  string     `json:"@type"`
	Links []helpLink `json:"links"`
}

type retryInfo struct {
	Type       string `json:"@type"`
	RetryDelay string `json:"retryDelay"`
}

type quotaViolation struct {
	QuotaMetric     string            `json:"quotaMetric,omitempty"`
	QuotaID         string            `json:"quotaId,omitempty"`
	QuotaDimensions map[string]string `json:"quotaDimensions,omitempty"`
	QuotaValue      string            `json:"quotaValue,omitempty"`
}

type quotaFailure struct {
	Type       string           `json:"@type"`
	Violations []quotaViolation `json:"violations"`
}

type preconditionViolation struct {
	Type        string `json:"type"`
	Subject     string `json:"subject"`
	Description string `json:"description"`
}

type fieldViolation struct {
	Field       string `json:"field,omitempty"`
	Description string `json:"description"`
}

type badRequest struct {
	Type            string           `json:"@type"`
	FieldViolations []fieldViolation `json:"fieldViolations"`
}

type preconditionFailure struct {
	Type       string                  `json:"@type"`
	Violations []preconditionViolation `json:"violations"`
}

// newRetryInfo renders d as a google.protobuf.Duration in JSON: "30s",
// "0.05s".
func newRetryInfo(d time.Duration) retryInfo {
	return retryInfo{Type: typeRetryInfo, RetryDelay: strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"}
}

// GRPCStatus renders the error for the gRPC APIs, with the details gRPC
// can carry (ErrorInfo, LocalizedMessage, Help, BadRequest, RetryInfo).
func (e *apiError) GRPCStatus() *status.Status {
	st := status.New(e.code, e.message)
	var ds []protoadapt.MessageV1
	for _, d := range e.details {
		switch d := d.(type) {
		case errorInfo:
			ds = append(ds, &errdetails.ErrorInfo{Reason: d.Reason, Domain: d.Domain, Metadata: d.Metadata})
		case localizedMessage:
			ds = append(ds, &errdetails.LocalizedMessage{Locale: d.Locale, Message: d.Message})
		case help:
			h := &errdetails.Help{}
			for _, l := range d.Links {
				h.Links = append(h.Links, &errdetails.Help_Link{Description: l.Description, Url: l.URL})
			}
			ds = append(ds, h)
		case badRequest:
			br := &errdetails.BadRequest{}
			for _, v := range d.FieldViolations {
				br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
			}
			ds = append(ds, br)
		case retryInfo:
			if dur, err := time.ParseDuration(d.RetryDelay); err == nil {
				ds = append(ds, &errdetails.RetryInfo{RetryDelay: durationpb.New(dur)})
			}
		}
	}
	if len(ds) > 0 {
		if withDetails, err := st.WithDetails(ds...); err == nil {
			return withDetails
		}
	}
	return st
}

// errorBody is the JSON error document.
type errorBody struct {
	Error errorStatus `json:"error"`
}

type errorStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
	Details []any  `json:"details,omitempty"`
}

// httpStatus maps a canonical code to its HTTP status, as
// google/rpc/code.proto documents it.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Canceled:
		return 499 // Client Closed Request; net/http has no name for it
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	default: // Unknown, Internal, DataLoss
		return http.StatusInternalServerError
	}
}

// statusName is the google.rpc.Code enum name ("NOT_FOUND"); gRPC-Go's
// String is CamelCase ("NotFound").
func statusName(c codes.Code) string {
	switch c {
	case codes.OK:
		return "OK"
	case codes.Canceled:
		return "CANCELLED"
	case codes.Unknown:
		return "UNKNOWN"
	case codes.InvalidArgument:
		return "INVALID_ARGUMENT"
	case codes.DeadlineExceeded:
		return "DEADLINE_EXCEEDED"
	case codes.NotFound:
		return "NOT_FOUND"
	case codes.AlreadyExists:
		return "ALREADY_EXISTS"
	case codes.PermissionDenied:
		return "PERMISSION_DENIED"
	case codes.ResourceExhausted:
		return "RESOURCE_EXHAUSTED"
	case codes.FailedPrecondition:
		return "FAILED_PRECONDITION"
	case codes.Aborted:
		return "ABORTED"
	case codes.OutOfRange:
		return "OUT_OF_RANGE"
	case codes.Unimplemented:
		return "UNIMPLEMENTED"
	case codes.Internal:
		return "INTERNAL"
	case codes.Unavailable:
		return "UNAVAILABLE"
	case codes.DataLoss:
		return "DATA_LOSS"
	case codes.Unauthenticated:
		return "UNAUTHENTICATED"
	default:
		return "UNKNOWN"
	}
}

// asAPIError turns any error into an apiError: an apiError as it is, a
// gRPC status (an injected fault) or a context error by its code, anything
// else (a hook's plain error) as UNKNOWN.
func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		st := status.FromContextError(err)
		return &apiError{code: st.Code(), message: st.Message()}
	}
	if st, ok := status.FromError(err); ok {
		return &apiError{code: st.Code(), message: st.Message()}
	}
	return &apiError{code: codes.Unknown, message: err.Error()}
}

// writeError renders err as Google's JSON error body.
func writeError(w http.ResponseWriter, err error) {
	ae := asAPIError(err)
	body := errorBody{Error: errorStatus{
		Code:    httpStatus(ae.code),
		Message: ae.message,
		Status:  statusName(ae.code),
		Details: ae.details,
	}}
	writeJSON(w, body.Error.Code, body)
}

// writeJSON writes v as the JSON response with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"error":{"code":500,"message":"emulator: cannot encode response","status":"INTERNAL"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Vary", "Origin, X-Origin, Referer")
	w.WriteHeader(code)
	_, _ = w.Write(b)
	_, _ = w.Write([]byte("\n"))
}

// methodNotFound is the front end's answer to a path no method maps to.
func methodNotFound(w http.ResponseWriter) {
	writeError(w, newError(codes.NotFound, "Method not found."))
}
