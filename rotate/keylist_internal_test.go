package rotate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/option"

	"github.com/keyrotate/keyrotate/internal/gcp"
)

// listServer answers every ListKeys of project p with keys k1 and k2 (or
// with status code when it is not 200), counting the requests.
func listServer(t *testing.T, code int) (*gcp.Keys, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if got := r.URL.Query().Get("pageSize"); got != "300" {
			t.Errorf("pageSize = %q, want 300", got)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if code != http.StatusOK {
			w.Write([]byte(`{"error":{"code":403,"message":"Permission 'apikeys.keys.list' denied","status":"PERMISSION_DENIED"}}`))
			return
		}
		w.Write([]byte(`{"keys":[{"name":"projects/42/locations/global/keys/k1","etag":"e1","displayName":"one"},` +
			`{"name":"projects/42/locations/global/keys/k2","etag":"e2"}]}`))
	}))
	t.Cleanup(srv.Close)
	svc, err := apikeys.NewService(context.Background(), option.WithEndpoint(srv.URL+"/"), option.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	return &gcp.Keys{Service: svc, Retry: gcp.RetryPolicy{Initial: time.Millisecond, Max: time.Millisecond, MaxElapsed: 50 * time.Millisecond}}, &n
}

// TestKeyListsRule is the sharing rule alone: who lists, who joins, who
// reads with GetKey instead.
func TestKeyListsRule(t *testing.T) {
	ctx := context.Background()
	ka, lists := listServer(t, http.StatusOK)
	var l keyLists

	// Alone in its project: no list.
	m, end := l.begin("p")
	if _, ok, _ := l.get(ctx, ka, "p", m, "projects/p/locations/global/keys/k1"); ok || lists.Load() != 0 {
		t.Fatalf("a rotation alone in its project used a list (%d sent)", lists.Load())
	}
	end()

	// Two together: one list, each takes its key once, by the project's
	// id or number.
	m1, end1 := l.begin("p")
	m2, end2 := l.begin("p")
	k, ok, err := l.get(ctx, ka, "p", m1, "projects/p/locations/global/keys/k1")
	if !ok || err != nil || k.Etag != "e1" || k.DisplayName != "one" {
		t.Fatalf("first get = %+v, %v, %v", k, ok, err)
	}
	if k, ok, _ := l.get(ctx, ka, "p", m2, "projects/42/locations/global/keys/k2"); !ok || k.Etag != "e2" {
		t.Fatalf("second get = %+v, %v", k, ok)
	}
	if _, ok, _ := l.get(ctx, ka, "p", m2, "projects/42/locations/global/keys/k1"); ok {
		t.Error("k1 handed out twice")
	}
	if _, ok, _ := l.get(ctx, ka, "p", m2, "projects/other/locations/global/keys/k2"); ok {
		t.Error("a key of another project found in p's list")
	}
	if _, ok, _ := l.get(ctx, ka, "p", m2, "projects/p/locations/global/keys/k3"); ok {
		t.Error("a key not listed found")
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("%d lists sent, want 1", n)
	}

	// A rotation that starts after the list was sent lists again, with
	// another; it does not take the first list.
	m3, end3 := l.begin("p")
	if _, ok, _ := l.get(ctx, ka, "p", m3, "projects/p/locations/global/keys/k1"); !ok {
		t.Error("a later rotation, with two reading, found no key")
	}
	if n := lists.Load(); n != 2 {
		t.Errorf("%d lists sent, want 2: a list sent before a rotation started was used", n)
	}
	end1()
	end2()
	end2() // once only
	if l.reading["p"] != 1 || l.last["p"] == nil {
		t.Errorf("reading %d, list %v: want 1 reading and its list kept", l.reading["p"], l.last["p"])
	}
	end3()
	if len(l.reading) != 0 || len(l.last) != 0 {
		t.Errorf("after every rotation read: reading %v, lists %v; want none kept", l.reading, l.last)
	}
}

// TestKeyListsFailure: a failed list sends its rotations to GetKey and is
// not sent again by the same Rotator.
func TestKeyListsFailure(t *testing.T) {
	ctx := context.Background()
	ka, lists := listServer(t, http.StatusForbidden)
	var l keyLists
	for range 3 {
		m1, end1 := l.begin("p")
		m2, end2 := l.begin("p")
		_, ok1, _ := l.get(ctx, ka, "p", m1, "projects/p/locations/global/keys/k1")
		_, ok2, err2 := l.get(ctx, ka, "p", m2, "projects/p/locations/global/keys/k2")
		if ok1 || ok2 || err2 != nil {
			t.Fatalf("denied list: got keys %v %v, second err %v", ok1, ok2, err2)
		}
		if !l.failed["p"] {
			t.Error("the failed list was not remembered")
		}
		end1()
		end2()
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("%d lists sent, want 1", n)
	}
	// Another project still lists.
	m1, _ := l.begin("q")
	l.begin("q")
	l.get(ctx, ka, "q", m1, "projects/q/locations/global/keys/k1")
	if n := lists.Load(); n != 2 {
		t.Errorf("%d lists sent, want 2: project q's list", n)
	}
}
