package rotate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/googleapi"

	"github.com/keyrotate/keyrotate/secret"
)

// Annotations keyrotate puts on the API keys it creates and retires.
const (
	annSlot        = "keyrotate.slot"
	annRotation    = "keyrotate.rotation"
	annSupersedes  = "keyrotate.supersedes"
	annDeleteAfter = "keyrotate.delete-after"
	annSuperseded  = "keyrotate.superseded-by"
)

// keysAPI wraps the few API Keys calls the protocol makes: each waits for its
// long-running operation and translates errors at the boundary.
type keysAPI struct {
	svc  *apikeys.Service
	poll time.Duration // first interval between operations.get polls
}

func (k *keysAPI) get(ctx context.Context, name string) (*apikeys.V2Key, error) {
	key, err := k.svc.Projects.Locations.Keys.Get(name).Context(ctx).Do()
	if err != nil {
		return nil, fmt.Errorf("get key %s: %w", name, keyErr(err))
	}
	return key, nil
}

func (k *keysAPI) keyString(ctx context.Context, name string) (secret.Key, error) {
	resp, err := k.svc.Projects.Locations.Keys.GetKeyString(name).Context(ctx).Do()
	if err != nil {
		return secret.Key{}, fmt.Errorf("get key string of %s: %w", name, keyErr(err))
	}
	return secret.New(resp.KeyString), nil
}

// lookup maps a key string to its key's resource name.
func (k *keysAPI) lookup(ctx context.Context, key secret.Key) (string, error) {
	resp, err := k.svc.Keys.LookupKey().KeyString(key.Reveal()).Context(ctx).Do()
	if err != nil {
		return "", fmt.Errorf("look up key %s: %w", key, keyErr(stripQuery(err)))
	}
	if resp.Name == "" {
		return "", fmt.Errorf("look up key %s: the key was purged: %w", key, ErrKeyNotFound)
	}
	return resp.Name, nil
}

// create creates a key and returns it with its key string.
func (k *keysAPI) create(ctx context.Context, parent, keyID string, key *apikeys.V2Key) (*apikeys.V2Key, error) {
	op, err := k.svc.Projects.Locations.Keys.Create(parent, key).KeyId(keyID).Context(ctx).Do()
	if err != nil {
		return nil, fmt.Errorf("create key %s/keys/%s: %w", parent, keyID, keyErr(err))
	}
	created, err := k.wait(ctx, op)
	if err != nil {
		return nil, fmt.Errorf("create key %s/keys/%s: %w", parent, keyID, err)
	}
	return created, nil
}

func (k *keysAPI) patch(ctx context.Context, key *apikeys.V2Key, mask string) (*apikeys.V2Key, error) {
	op, err := k.svc.Projects.Locations.Keys.Patch(key.Name, key).UpdateMask(mask).Context(ctx).Do()
	if err != nil {
		return nil, fmt.Errorf("update key %s: %w", key.Name, keyErr(err))
	}
	updated, err := k.wait(ctx, op)
	if err != nil {
		return nil, fmt.Errorf("update key %s: %w", key.Name, err)
	}
	return updated, nil
}

func (k *keysAPI) delete(ctx context.Context, name, etag string) error {
	call := k.svc.Projects.Locations.Keys.Delete(name).Context(ctx)
	if etag != "" {
		call = call.Etag(etag)
	}
	op, err := call.Do()
	if err != nil {
		return fmt.Errorf("delete key %s: %w", name, keyErr(err))
	}
	if _, err := k.wait(ctx, op); err != nil {
		return fmt.Errorf("delete key %s: %w", name, err)
	}
	return nil
}

// wait polls a long-running operation until it is done and decodes the key
// in its response.
func (k *keysAPI) wait(ctx context.Context, op *apikeys.Operation) (*apikeys.V2Key, error) {
	interval := k.poll
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	for !op.Done {
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("wait for operation %s: %w", op.Name, ctx.Err())
		case <-t.C:
		}
		if interval < 5*time.Second {
			interval *= 2
		}
		var err error
		op, err = k.svc.Operations.Get(op.Name).Context(ctx).Do()
		if err != nil {
			return nil, fmt.Errorf("poll operation: %w", keyErr(err))
		}
	}
	if op.Error != nil {
		return nil, fmt.Errorf("operation %s: %w", op.Name, keyErr(&googleapi.Error{
			Code:    httpStatusFromRPC(op.Error.Code),
			Message: op.Error.Message,
		}))
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
// the original for its message.
func keyErr(err error) error {
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		return err
	}
	switch {
	case ge.Code == http.StatusNotFound:
		return &apiError{err: err, kind: ErrKeyNotFound}
	case ge.Code == http.StatusConflict && strings.Contains(strings.ToUpper(ge.Message+errStatus(ge)), "ALREADY"):
		return &apiError{err: err, kind: errAlreadyExists}
	case ge.Code == http.StatusForbidden:
		return WithHint(err, permissionHint(ge.Message, "roles/serviceusage.apiKeysAdmin (API Keys Admin)"))
	case ge.Code == http.StatusBadRequest && strings.Contains(ge.Message, "disableServiceAccountApiKeyCreation"):
		return WithHint(err, "the organization policy constraint iam.managed.disableServiceAccountApiKeyCreation blocks creating keys bound to a service account: ask an org-policy admin to allow it for this project")
	}
	return err
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

var errAlreadyExists = errors.New("already exists")

// apiError keeps the API's error text while matching a named error.
type apiError struct {
	err  error
	kind error
}

func (e *apiError) Error() string   { return e.err.Error() }
func (e *apiError) Unwrap() []error { return []error{e.kind, e.err} }
func permissionHint(msg, role string) string {
	return "the caller lacks a permission (" + msg + "); grant " + role + " on the project"
}

// restricted reports whether a key has any restriction: API targets or a
// client restriction.
func restricted(r *apikeys.V2Restrictions) bool {
	if r == nil {
		return false
	}
	return len(r.ApiTargets) > 0 || r.BrowserKeyRestrictions != nil || r.ServerKeyRestrictions != nil ||
		r.AndroidKeyRestrictions != nil || r.IosKeyRestrictions != nil
}

// keyParent returns "projects/N/locations/L" of a key name.
func keyParent(name string) string {
	if i := strings.Index(name, "/keys/"); i >= 0 {
		return name[:i]
	}
	return ""
}

// keyIDOf returns the last segment of a key name.
func keyIDOf(name string) string {
	return name[strings.LastIndex(name, "/")+1:]
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// stripQuery drops the query from the URL of a transport error: LookupKey
// sends the key string as a query parameter (the API's design), and
// net/http's errors quote the whole URL.
func stripQuery(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	u := ue.URL
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i] + "?<redacted>"
	}
	return &url.Error{Op: ue.Op, URL: u, Err: ue.Err}
}

// httpCode returns the HTTP status of an API Keys error, or 0.
func httpCode(err error) int {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	return 0
}
