package gcp

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/api/googleapi"
	"google.golang.org/grpc/codes"
)

// Errors a call here may wrap, for errors.Is. Each keeps the API's own
// error for its message.
var (
	// ErrKeyNotFound: the API key does not exist (or was purged).
	ErrKeyNotFound = errors.New("API key not found")
	// ErrSecretNotFound: the secret or the secret version does not exist.
	ErrSecretNotFound = errors.New("secret not found")
)

// IsNotFound reports whether err is a REST call's 404.
func IsNotFound(err error) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == http.StatusNotFound
}

// IsDenied reports whether err is PERMISSION_DENIED, from REST (403) or
// gRPC.
func IsDenied(err error) bool {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code == http.StatusForbidden
	}
	st, ok := grpcStatus(err)
	return ok && st.Code() == codes.PermissionDenied
}

// Summary is an error's message, short (the code and Google's message),
// for a check that could not be made.
func Summary(err error) string {
	var ge *googleapi.Error
	if errors.As(err, &ge) && ge.Message != "" {
		return fmt.Sprintf("%d %s", ge.Code, ge.Message)
	}
	if st, ok := grpcStatus(err); ok {
		return st.Code().String() + " " + st.Message()
	}
	return err.Error()
}
