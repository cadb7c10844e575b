package gcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	apikeysapi "cloud.google.com/go/apikeys/apiv2"
	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
)

// Keys wraps the few API Keys calls the rotation protocol makes: each is
// retried under its policy, waits for its long-running operation and
// translates errors at the boundary (ErrKeyNotFound, ErrAlreadyExists, a
// hint for a denied permission). Retries are safe: a call whose answer was
// lost is recognised when it is repeated (see each method).
type Keys struct {
	Service      *apikeys.Service   // the REST client: only it carries a key's service account binding
	LookupClient *apikeysapi.Client // LookupKey only, over gRPC (nil: Lookup fails with ErrNoLookupClient)
	Poll         time.Duration      // first interval between operations.get polls (0: 250ms)
	Retry        RetryPolicy
}

func (k *Keys) Get(ctx context.Context, name string) (*apikeys.V2Key, error) {
	var key *apikeys.V2Key
	err := k.Retry.named("apikeys.keys.get", name).Do(ctx, func(ctx context.Context, _ Attempt) error {
		var err error
		key, err = k.Service.Projects.Locations.Keys.Get(name).Context(ctx).Do()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get key %s: %w", name, keyErr(err, "apikeys.keys.get", name))
	}
	return key, nil
}

func (k *Keys) KeyString(ctx context.Context, name string) (secret.Key, error) {
	var resp *apikeys.V2GetKeyStringResponse
	err := k.Retry.named("apikeys.keys.getKeyString", name).Do(ctx, func(ctx context.Context, _ Attempt) error {
		var err error
		resp, err = k.Service.Projects.Locations.Keys.GetKeyString(name).Context(ctx).Do()
		return err
	})
	if err != nil {
		return secret.Key{}, fmt.Errorf("get key string of %s: %w", name, keyErr(err, "apikeys.keys.getKeyString", name))
	}
	return secret.New(resp.KeyString), nil
}

// Lookup maps a key string to its key's resource name. It goes over gRPC
// (k.LookupClient): the REST keys:lookupKey carries the key string in its URL,
// where proxies and access logs record it; the gRPC request carries it in
// its body.
func (k *Keys) Lookup(ctx context.Context, key secret.Key) (string, error) {
	if k.LookupClient == nil {
		return "", fmt.Errorf("look up key %s: %w", key, ErrNoLookupClient)
	}
	var resp *apikeyspb.LookupKeyResponse
	err := k.Retry.named("apikeys.keys.lookup", key.Fingerprint()).Do(ctx, func(ctx context.Context, _ Attempt) error {
		var err error
		resp, err = k.LookupClient.LookupKey(ctx, &apikeyspb.LookupKeyRequest{KeyString: key.Reveal()})
		return secret.StripQuery(err)
	})
	if err != nil {
		return "", fmt.Errorf("look up key %s: %w", key, lookupErr(err))
	}
	if resp.GetName() == "" {
		return "", fmt.Errorf("look up key %s: the key was purged: %w", key, ErrKeyNotFound)
	}
	return resp.GetName(), nil
}

// ErrNoLookupClient: Keys without its gRPC client (LookupClient) was asked
// to look a key string up. LookupKey is never sent over REST,
// which would put the key string in the URL.
var ErrNoLookupClient = errors.New("no gRPC API Keys client for LookupKey")

// lookupErr translates a gRPC LookupKey error: INVALID_ARGUMENT (a string
// the API never issued) and NOT_FOUND are ErrKeyNotFound, PERMISSION_DENIED
// gets the hint of a missing permission.
func lookupErr(err error) error {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound:
		return &apiError{err: err, kind: ErrKeyNotFound}
	case codes.PermissionDenied:
		return denied(err, "apikeys.keys.lookup", "")
	}
	return err
}

// ListPageSize is the page size List asks for. Google documents no maximum
// for ListKeys's pageSize ("the maximum number of results to be returned at
// a time"); 300 is the emulator's, and a server with a smaller maximum
// clamps the request (AIP-158), so asking for more costs nothing. List
// follows nextPageToken whatever the server's page size.
const ListPageSize = 300

// List returns every key of parent ("projects/P/locations/global"), all
// pages (each one call, an API Keys read); with showDeleted, soft-deleted
// keys too. Its keys are whole Key resources, as GetKey returns them, and,
// as documented, without their key strings.
func (k *Keys) List(ctx context.Context, parent string, showDeleted bool) ([]*apikeys.V2Key, error) {
	var keys []*apikeys.V2Key
	token := ""
	for {
		var resp *apikeys.V2ListKeysResponse
		err := k.Retry.named("apikeys.keys.list", parent).Do(ctx, func(ctx context.Context, _ Attempt) error {
			var err error
			resp, err = k.Service.Projects.Locations.Keys.List(parent).PageSize(ListPageSize).ShowDeleted(showDeleted).PageToken(token).Context(ctx).Do()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("list keys of %s: %w", parent, keyErr(err, "apikeys.keys.list", parent))
		}
		keys = append(keys, resp.Keys...)
		if resp.NextPageToken == "" || resp.NextPageToken == token {
			return keys, nil
		}
		token = resp.NextPageToken
	}
}

// Create creates a key and returns it with its key string. A retried create
// whose first attempt landed fails with ErrAlreadyExists: the caller adopts
// the key after checking its annotations.
func (k *Keys) Create(ctx context.Context, parent, keyID string, key *apikeys.V2Key) (*apikeys.V2Key, error) {
	name := parent + "/keys/" + keyID
	var op *apikeys.Operation
	err := k.Retry.named("apikeys.keys.create", parent).Do(ctx, func(ctx context.Context, _ Attempt) error {
		var err error
		op, err = k.Service.Projects.Locations.Keys.Create(parent, key).KeyId(keyID).Context(ctx).Do()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create key %s: %w", name, keyErr(err, "apikeys.keys.create", parent))
	}
	created, err := k.wait(ctx, op)
	if err != nil {
		// The key may exist: the request was accepted, only its
		// operation failed or could not be followed.
		return nil, fmt.Errorf("create key %s: %w", name, &accepted{err: err, op: op.Name})
	}
	return created, nil
}

// Resume follows a recorded operation to its end.
func (k *Keys) Resume(ctx context.Context, opName string) (*apikeys.V2Key, error) {
	return k.wait(ctx, &apikeys.Operation{Name: opName})
}

// accepted marks an error that came after the API accepted a request: what
// the request asked for may have happened, whatever the error's status. op
// names the request's long-running operation, for a later run to follow.
type accepted struct {
	err error
	op  string
}

func (a *accepted) Error() string { return a.err.Error() }
func (a *accepted) Unwrap() error { return a.err }

// AcceptedOp returns the operation of an accepted request that failed
// later, or "".
func AcceptedOp(err error) string {
	var a *accepted
	if errors.As(err, &a) {
		return a.op
	}
	return ""
}

// Patch updates the fields in mask, guarded by key.Etag. A retry whose
// first attempt landed meets a changed etag (ABORTED, or another code: see
// stateRefusal): if the key already holds what was asked, that is success.
func (k *Keys) Patch(ctx context.Context, key *apikeys.V2Key, mask string) (*apikeys.V2Key, error) {
	var (
		op   *apikeys.Operation
		done *apikeys.V2Key
	)
	err := k.Retry.named("apikeys.keys.update", key.Name).Do(ctx, func(ctx context.Context, a Attempt) error {
		var err error
		op, err = k.Service.Projects.Locations.Keys.Patch(key.Name, key).UpdateMask(mask).Context(ctx).Do()
		if err != nil && a.retried() && stateRefusal(err) {
			cur, gerr := k.Service.Projects.Locations.Keys.Get(key.Name).Context(ctx).Do()
			if gerr == nil && holds(cur, key, mask) {
				done = cur
				return nil
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update key %s: %w", key.Name, keyErr(err, "apikeys.keys.update", key.Name))
	}
	if done != nil {
		return done, nil
	}
	updated, err := k.wait(ctx, op)
	if err != nil {
		return nil, fmt.Errorf("update key %s: %w", key.Name, err)
	}
	return updated, nil
}

// holds reports whether cur already carries the fields of want in mask
// (annotations and display name; other fields are not compared).
func holds(cur, want *apikeys.V2Key, mask string) bool {
	for _, f := range strings.Split(mask, ",") {
		switch strings.TrimSpace(f) {
		case "annotations":
			if len(cur.Annotations) != len(want.Annotations) {
				return false
			}
			for k, v := range want.Annotations {
				if got, ok := cur.Annotations[k]; !ok || got != v {
					return false
				}
			}
		case "displayName", "display_name":
			if cur.DisplayName != want.DisplayName {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// Delete soft-deletes a key, guarded by etag when it is set. A key found
// already deleted (a retry whose first attempt landed, an earlier run) is
// success. Which code the API answers then is not documented (see
// stateRefusal), so the key's state decides, read after the refusal.
func (k *Keys) Delete(ctx context.Context, name, etag string) error {
	var op *apikeys.Operation
	gone := false
	err := k.Retry.named("apikeys.keys.delete", name).Do(ctx, func(ctx context.Context, a Attempt) error {
		call := k.Service.Projects.Locations.Keys.Delete(name).Context(ctx)
		if etag != "" {
			call = call.Etag(etag)
		}
		var err error
		op, err = call.Do()
		if err != nil && stateRefusal(err) {
			// Already deleted (by our own first attempt, or an earlier
			// run) is what was asked for: read the key to know.
			cur, gerr := k.Service.Projects.Locations.Keys.Get(name).Context(ctx).Do()
			if HTTPCode(gerr) == http.StatusNotFound || (gerr == nil && cur.DeleteTime != "") {
				gone = true
				return nil
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete key %s: %w", name, keyErr(err, "apikeys.keys.delete", name))
	}
	if gone {
		return nil
	}
	if _, err := k.wait(ctx, op); err != nil {
		return fmt.Errorf("delete key %s: %w", name, err)
	}
	return nil
}

// Undelete restores a soft-deleted key (within 30 days of its deletion).
// A key that is not deleted (what a retry whose first attempt landed meets;
// the code of that refusal is not documented, see stateRefusal) is
// returned as it is: its state, read after the refusal, decides.
func (k *Keys) Undelete(ctx context.Context, name string) (*apikeys.V2Key, error) {
	var op *apikeys.Operation
	live := false
	err := k.Retry.named("apikeys.keys.undelete", name).Do(ctx, func(ctx context.Context, _ Attempt) error {
		var err error
		op, err = k.Service.Projects.Locations.Keys.Undelete(name, &apikeys.V2UndeleteKeyRequest{}).Context(ctx).Do()
		if err != nil && stateRefusal(err) {
			if cur, gerr := k.Service.Projects.Locations.Keys.Get(name).Context(ctx).Do(); gerr == nil && cur.DeleteTime == "" {
				live = true
				return nil
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("undelete key %s: %w", name, keyErr(err, "apikeys.keys.undelete", name))
	}
	if live {
		return k.Get(ctx, name)
	}
	if _, err := k.wait(ctx, op); err != nil {
		return nil, fmt.Errorf("undelete key %s: %w", name, err)
	}
	// The operation's response carries the key; read it whole (with its
	// new etag) all the same.
	return k.Get(ctx, name)
}

// wait polls a long-running operation until it is done and decodes the key
// in its response.
func (k *Keys) wait(ctx context.Context, op *apikeys.Operation) (*apikeys.V2Key, error) {
	interval := k.Poll
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	for !op.Done {
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("wait for operation %s: %w", op.Name, context.Cause(ctx))
		case <-t.C:
		}
		if interval < 5*time.Second {
			interval *= 2
		}
		name := op.Name
		err := k.Retry.named("serviceusage.operations.get", name).Do(ctx, func(ctx context.Context, _ Attempt) error {
			next, err := k.Service.Operations.Get(name).Context(ctx).Do()
			if err == nil {
				op = next
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("poll operation %s: %w", name, keyErr(err, "serviceusage.operations.get", name))
		}
	}
	if op.Error != nil {
		return nil, fmt.Errorf("operation %s: %w", op.Name, keyErr(&googleapi.Error{
			Code:    httpStatusFromRPC(op.Error.Code),
			Message: op.Error.Message,
		}, "", ""))
	}
	var key apikeys.V2Key
	if len(op.Response) > 0 {
		if err := json.Unmarshal(op.Response, &key); err != nil {
			return nil, fmt.Errorf("decode operation %s: %w", op.Name, err)
		}
	}
	return &key, nil
}

// httpStatusFromRPC maps a google.rpc.Code to its HTTP status.
func httpStatusFromRPC(code int64) int {
	switch code {
	case 3, 9, 11: // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
		return http.StatusBadRequest
	case 16:
		return http.StatusUnauthorized
	case 7:
		return http.StatusForbidden
	case 5:
		return http.StatusNotFound
	case 6, 10:
		return http.StatusConflict
	case 8:
		return http.StatusTooManyRequests
	case 12:
		return http.StatusNotImplemented
	case 14:
		return http.StatusServiceUnavailable
	case 4:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// keyErr translates API Keys errors into the package's named errors, keeping
// the original for its message. perm is the IAM permission the call needs
// and resource what it acts on, for the hint when the caller lacks it.
func keyErr(err error, perm, resource string) error {
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		return err
	}
	switch {
	case ge.Code == http.StatusNotFound:
		return &apiError{err: err, kind: ErrKeyNotFound}
	case isAlreadyExists(err):
		return &apiError{err: err, kind: ErrAlreadyExists}
	case ge.Code == http.StatusForbidden:
		return denied(err, perm, resource)
	case ge.Code == http.StatusBadRequest && strings.Contains(ge.Message, "disableServiceAccountApiKeyCreation"):
		return errhint.With(err, "the organization policy constraint iam.managed.disableServiceAccountApiKeyCreation blocks creating keys "+
			"bound to a service account: ask an org-policy admin to allow it for this project")
	}
	return err
}

// stateRefusal reports whether err is a refusal that the resource's state
// may explain — a changed etag, a key already deleted or not deleted — so
// that the caller reads the state to decide whether its request is already
// done. Google documents no code for these cases for API Keys: AIP-154 says
// ABORTED (409) for an etag mismatch, other Google APIs answer
// FAILED_PRECONDITION or INVALID_ARGUMENT (400) or 412, and a delete of a
// deleted resource may be NOT_FOUND (404) or ALREADY_EXISTS-like (409). Any
// of them leads to a read, never to a conclusion by code alone.
func stateRefusal(err error) bool {
	switch HTTPCode(err) {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusPreconditionFailed:
		return true
	}
	return false
}

// isAlreadyExists reports whether an API Keys error is ALREADY_EXISTS (409
// is also ABORTED, an etag mismatch).
func isAlreadyExists(err error) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == http.StatusConflict && strings.Contains(strings.ToUpper(ge.Message+errStatus(ge)), "ALREADY")
}

func errStatus(ge *googleapi.Error) string {
	for _, d := range ge.Details {
		if m, ok := d.(map[string]any); ok {
			if r, ok := m["reason"].(string); ok {
				return r
			}
		}
	}
	// The status name ("ALREADY_EXISTS") is in the raw body.
	return ge.Body
}

// ErrAlreadyExists: Keys.Create found the key already made (by an earlier
// attempt whose answer was lost, or an earlier run).
var ErrAlreadyExists = errors.New("already exists")

// apiError keeps the API's error text while matching a named error.
type apiError struct {
	err  error
	kind error
}

func (e *apiError) Error() string   { return e.err.Error() }
func (e *apiError) Unwrap() []error { return []error{e.kind, e.err} }

// HTTPCode returns the HTTP status of an API Keys request's error, or 0 —
// also 0 when the request was accepted and a later step failed (polling its
// operation), so that a 4xx there is not taken for a refused request.
func HTTPCode(err error) int {
	var acc *accepted
	if errors.As(err, &acc) {
		return 0
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	return 0
}
