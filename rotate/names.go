package rotate

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"google.golang.org/api/apikeys/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Annotations keyrotate puts on the API keys it creates and retires.
const (
	annSlot        = "keyrotate.slot"
	annRotation    = "keyrotate.rotation"
	annSupersedes  = "keyrotate.supersedes"
	annDeleteAfter = "keyrotate.delete-after"
	annSuperseded  = "keyrotate.superseded-by"
)

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

// versionNumber returns the last segment of a version name.
func versionNumber(name string) string {
	return name[strings.LastIndex(name, "/")+1:]
}

// parseVersion returns the number of a version name.
func parseVersion(name string) (int64, bool) {
	if name == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(versionNumber(name), 10, 64)
	return n, err == nil
}

func isCode(err error, c codes.Code) bool {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code() == c
	}
	return false
}
