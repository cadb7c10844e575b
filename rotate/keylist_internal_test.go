package rotate

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
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
	return listServerOf(t, code, `{"name":"projects/42/locations/global/keys/k1","etag":"e1","displayName":"one"},`+
		`{"name":"projects/42/locations/global/keys/k2","etag":"e2"}`)
}

// listServerOf is listServer answering with keys, the JSON objects of the
// keys' list.
func listServerOf(t testing.TB, code int, keys string) (*gcp.Keys, *atomic.Int32) {
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
		w.Write([]byte(`{"keys":[` + keys + `]}`))
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
	m := l.begin("p", "")
	end := m.end
	if _, ok, _ := l.get(ctx, ka, m, "projects/p/locations/global/keys/k1"); ok || lists.Load() != 0 {
		t.Fatalf("a rotation alone in its project used a list (%d sent)", lists.Load())
	}
	end()

	// Two together: one list, each takes its key once, by the project's
	// id or number.
	m1 := l.begin("p", "")
	end1 := m1.end
	m2 := l.begin("p", "")
	end2 := m2.end
	k, ok, err := l.get(ctx, ka, m1, "projects/p/locations/global/keys/k1")
	if !ok || err != nil || k.Etag != "e1" || k.DisplayName != "one" {
		t.Fatalf("first get = %+v, %v, %v", k, ok, err)
	}
	if k, ok, _ := l.get(ctx, ka, m2, "projects/42/locations/global/keys/k2"); !ok || k.Etag != "e2" {
		t.Fatalf("second get = %+v, %v", k, ok)
	}
	if _, ok, _ := l.get(ctx, ka, m2, "projects/42/locations/global/keys/k1"); ok {
		t.Error("k1 handed out twice")
	}
	if _, ok, _ := l.get(ctx, ka, m2, "projects/other/locations/global/keys/k2"); ok {
		t.Error("a key of another project found in p's list")
	}
	if _, ok, _ := l.get(ctx, ka, m2, "projects/p/locations/global/keys/k3"); ok {
		t.Error("a key not listed found")
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("%d lists sent, want 1", n)
	}

	// A rotation that starts after the list was sent lists again, with
	// another; it does not take the first list.
	m3 := l.begin("p", "")
	end3 := m3.end
	if _, ok, _ := l.get(ctx, ka, m3, "projects/p/locations/global/keys/k1"); !ok {
		t.Error("a later rotation, with two reading, found no key")
	}
	if n := lists.Load(); n != 2 {
		t.Errorf("%d lists sent, want 2: a list sent before a rotation started was used", n)
	}
	end1()
	end2()
	end2() // once only
	if len(l.reading["p"]) != 1 || l.last["p"] == nil {
		t.Errorf("reading %d, list %v: want 1 reading and its list kept", len(l.reading["p"]), l.last["p"])
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
		m1 := l.begin("p", "")
		end1 := m1.end
		m2 := l.begin("p", "")
		end2 := m2.end
		_, ok1, _ := l.get(ctx, ka, m1, "projects/p/locations/global/keys/k1")
		_, ok2, err2 := l.get(ctx, ka, m2, "projects/p/locations/global/keys/k2")
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
	m1 := l.begin("q", "")
	l.begin("q", "")
	l.get(ctx, ka, m1, "projects/q/locations/global/keys/k1")
	if n := lists.Load(); n != 2 {
		t.Errorf("%d lists sent, want 2: project q's list", n)
	}
}

// TestKeyListsKeepOnlyOwnKeys: a shard's rotations list every key of their
// project and keep only those their own slots may take: the keys its
// readers asked for and, while some reader has not asked yet, the keys
// made for its slot (keyrotate.slot) or made without keyrotate. Another
// shard's keys are dropped as the list arrives; a key dropped is read with
// GetKey, as a key not listed is; the list goes once its own readers read,
// though later rotations of the project still read.
func TestKeyListsKeepOnlyOwnKeys(t *testing.T) {
	ctx := context.Background()
	key := func(id, slot string) string {
		ann := ""
		if slot != "" {
			ann = `,"annotations":{"keyrotate.slot":"` + slot + `","team":"x"}`
		}
		return `{"name":"projects/42/locations/global/keys/` + id + `","etag":"e-` + id + `"` + ann + `}`
	}
	name := func(id string) string { return "projects/p/locations/global/keys/" + id }
	ids := func(list *keyList) []string {
		return slices.Sorted(maps.Keys(list.keys))
	}

	t.Run("made by keyrotate", func(t *testing.T) {
		// This shard rotates slots a and b; c, d and e are other shards'.
		ka, _ := listServerOf(t, http.StatusOK, strings.Join([]string{
			key("ka", "a"), key("kb", "b"), key("kc", "c"), key("kd", "d"), key("ke", "e"), key("old", ""),
		}, ","))
		var l keyLists
		a, b := l.begin("p", "a"), l.begin("p", "b")
		if k, ok, err := l.get(ctx, ka, a, name("ka")); !ok || err != nil || k.Etag != "e-ka" {
			t.Fatalf("a's get = %+v, %v, %v", k, ok, err)
		}
		list := l.last["p"]
		if got, want := ids(list), []string{"kb", "old"}; !slices.Equal(got, want) {
			t.Errorf("kept after a took its key: %v, want %v (b's key, and one made without keyrotate while b has not asked)", got, want)
		}
		if k, ok, _ := l.get(ctx, ka, b, name("kb")); !ok || k.Etag != "e-kb" || k.Annotations["team"] != "x" {
			t.Fatalf("b's get = %+v, %v", k, ok)
		}
		if got := ids(list); len(got) != 0 {
			t.Errorf("kept after every reader took its key: %v, want none", got)
		}
		c := l.begin("p", "c") // after the list: lists again, not kept by it
		a.end()
		b.end()
		if l.last["p"] == list {
			t.Error("the list outlived its readers, kept for a rotation that began after it")
		}
		c.end()
	})

	t.Run("a slot's other keys go when it asks", func(t *testing.T) {
		// b's slot also has an older key keyrotate made (kb-old, say in
		// its grace period): kept while b has not asked, dropped as b
		// asks for kb, while c has still not asked.
		ka, _ := listServerOf(t, http.StatusOK, strings.Join([]string{
			key("ka", "a"), key("kb", "b"), key("kb-old", "b"), key("kc", "c"), key("old", ""),
		}, ","))
		var l keyLists
		a, b, c := l.begin("p", "a"), l.begin("p", "b"), l.begin("p", "c")
		if _, ok, _ := l.get(ctx, ka, a, name("ka")); !ok {
			t.Fatal("a found no key")
		}
		list := l.last["p"]
		if got, want := ids(list), []string{"kb", "kb-old", "kc", "old"}; !slices.Equal(got, want) {
			t.Errorf("kept after a took its key: %v, want %v", got, want)
		}
		if _, ok, _ := l.get(ctx, ka, b, name("kb")); !ok {
			t.Fatal("b found no key")
		}
		if got, want := ids(list), []string{"kc", "old"}; !slices.Equal(got, want) {
			t.Errorf("kept after b took its key: %v, want %v (c's, and one made without keyrotate while c has not asked)", got, want)
		}
		a.end()
		b.end()
		c.end()
	})

	t.Run("made before keyrotate", func(t *testing.T) {
		ka, lists := listServerOf(t, http.StatusOK, strings.Join([]string{
			key("k1", ""), key("k2", ""), key("k3", ""), key("k4", ""), key("k5", ""),
		}, ","))
		var l keyLists
		a, b, c := l.begin("p", "a"), l.begin("p", "b"), l.begin("p", "c")
		if _, ok, _ := l.get(ctx, ka, a, name("k1")); !ok {
			t.Fatal("a found no key")
		}
		list := l.last["p"]
		if got, want := ids(list), []string{"k2", "k3", "k4", "k5"}; !slices.Equal(got, want) {
			t.Errorf("kept while b and c have not asked: %v, want %v", got, want)
		}
		if _, ok, _ := l.get(ctx, ka, b, name("k2")); !ok {
			t.Fatal("b found no key")
		}
		// c asks for a key another shard's slot would take: it is still
		// there while c has not asked, and c takes it by its name.
		if k, ok, _ := l.get(ctx, ka, c, "projects/42/locations/global/keys/k4"); !ok || k.Etag != "e-k4" {
			t.Fatalf("c's get = %+v, %v", k, ok)
		}
		if got := ids(list); len(got) != 0 {
			t.Errorf("kept after every reader asked: %v, want none (other shards' keys)", got)
		}
		a.end()
		b.end()
		c.end()
		if n := lists.Load(); n != 1 {
			t.Errorf("%d lists sent, want 1", n)
		}
	})

	t.Run("dropped key read with GetKey", func(t *testing.T) {
		// b's secret holds a key made for slot c (another shard's): by the
		// time the list arrives b asked for it and it is kept; a key made
		// for c that no reader asked for is not.
		ka, _ := listServerOf(t, http.StatusOK, strings.Join([]string{key("ka", "a"), key("kc", "c"), key("kc2", "c")}, ","))
		var l keyLists
		a, b := l.begin("p", "a"), l.begin("p", "b")
		b.l.mu.Lock()
		b.ask(name("kc"))
		b.l.mu.Unlock()
		if _, ok, _ := l.get(ctx, ka, a, name("ka")); !ok {
			t.Fatal("a found no key")
		}
		if _, ok, _ := l.get(ctx, ka, b, name("kc")); !ok {
			t.Error("b did not find the key it asked for before the list arrived")
		}
		if _, ok, _ := l.get(ctx, ka, b, name("kc2")); ok {
			t.Error("a key no reader asked for was kept")
		}
		a.end()
		b.end()
	})
}

// BenchmarkKeyListAsks: a shard's 500 rotations of one project read their
// keys from one list of 2,000 keys (theirs, and three other shards'):
// each ask and end checks only the keys it may change, not the whole
// list.
func BenchmarkKeyListAsks(b *testing.B) {
	const readers, shards = 500, 4
	var keys []string
	for i := range readers * shards {
		keys = append(keys, fmt.Sprintf(`{"name":"projects/42/locations/global/keys/k%d","etag":"e","annotations":{"keyrotate.slot":"s%d"}}`, i, i))
	}
	ka, _ := listServerOf(b, http.StatusOK, strings.Join(keys, ","))
	ctx := context.Background()
	for b.Loop() {
		var l keyLists
		reads := make([]*keyRead, readers)
		for i := range reads {
			reads[i] = l.begin("p", fmt.Sprintf("s%d", i*shards))
		}
		for i, r := range reads {
			if _, ok, err := l.get(ctx, ka, r, fmt.Sprintf("projects/p/locations/global/keys/k%d", i*shards)); !ok || err != nil {
				b.Fatalf("reader %d: %v, %v", i, ok, err)
			}
			r.end()
		}
	}
}
