package secret

import (
	"errors"
	"net/url"
	"strings"
)

// StripQuery drops the query from the URL of a transport error. Some calls
// carry a key string as a query parameter (the API Keys API's LookupKey, by
// its design), and net/http's errors quote the whole URL.
func StripQuery(err error) error {
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
