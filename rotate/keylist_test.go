package rotate_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/verify"
)

// A key fleet is many slots of one project on an in-process emulator, for
// counting the API Keys reads a fleet run makes before its creates.
type keyFleet struct {
	t       *testing.T
	srv     *emulator.Server
	slots   []*rotate.Slot
	keys    []string // each slot's current key, in slot order
	strings []string // every key string seeded
}

const keyFleetProject = "fleet-keys"

// newKeyFleet seeds n slots of one project, and extra keys of no slot.
// Every call takes 20ms, so that the rotations a fleet starts together are
// all in their preflight before the first of them reads its key.
func newKeyFleet(t *testing.T, n, extra int) *keyFleet {
	t.Helper()
	srv := emutest.Start(t, emulator.Options{Latency: 20 * time.Millisecond})
	srv.AddProject(keyFleetProject, 777000000001)
	kf := &keyFleet{t: t, srv: srv}
	g := &verify.Gemini{BaseURL: "http://" + srv.GeminiAddr}
	for i := range n {
		name := fmt.Sprintf("slot-%02d", i)
		key, ks, err := srv.SeedKey(keyFleetProject, name+"-2026", &apikeys.V2Key{
			DisplayName:         "Gemini " + name,
			Restrictions:        &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}}},
			ServiceAccountEmail: "gemini@" + keyFleetProject + ".iam.gserviceaccount.com",
			Annotations:         map[string]string{"team": name},
		})
		if err != nil {
			t.Fatal(err)
		}
		sec, err := srv.SeedSecret(keyFleetProject, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.SeedSecretVersion(sec, []byte(ks)); err != nil {
			t.Fatal(err)
		}
		kf.keys = append(kf.keys, key)
		kf.strings = append(kf.strings, ks)
		kf.slots = append(kf.slots, &rotate.Slot{Name: name, Project: keyFleetProject, Secret: sec, Prober: g,
			MaxAge: 90 * 24 * time.Hour, PropagationTimeout: 5 * time.Second, LeaseTTL: 15 * time.Minute})
	}
	for i := range extra {
		_, ks, err := srv.SeedKey(keyFleetProject, fmt.Sprintf("other-%04d", i), &apikeys.V2Key{
			Restrictions: &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "maps-backend.googleapis.com"}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		kf.strings = append(kf.strings, ks)
	}
	return kf
}

// rotator is a fresh Rotator on the emulator: a new process, as far as
// what it shares between rotations goes.
func (kf *keyFleet) rotator() *rotate.Rotator {
	kf.t.Helper()
	ctx := context.Background()
	keys, err := kf.srv.APIKeysService(ctx)
	if err != nil {
		kf.t.Fatal(err)
	}
	sm, err := kf.srv.SecretManagerClient(ctx)
	if err != nil {
		kf.t.Fatal(err)
	}
	kf.t.Cleanup(func() { sm.Close() })
	lookup, err := kf.srv.APIKeysLookupClient(ctx)
	if err != nil {
		kf.t.Fatal(err)
	}
	kf.t.Cleanup(func() { lookup.Close() })
	return &rotate.Rotator{Keys: keys, Lookup: lookup, Secrets: sm,
		PollInterval: time.Millisecond, ProbeInterval: 5 * time.Millisecond, ProbeMaxInterval: 20 * time.Millisecond,
		Retry: gcp.RetryPolicy{Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond, CallTimeout: 5 * time.Second, MaxElapsed: 5 * time.Second}}
}

// run rotates slots with r, all at once, and returns each slot's outcome.
func (kf *keyFleet) run(r *rotate.Rotator, slots []*rotate.Slot, opts rotate.Options) map[string]rotate.Outcome {
	kf.t.Helper()
	var mu sync.Mutex
	out := map[string]rotate.Outcome{}
	f := &rotate.Fleet{Rotator: r, Parallel: len(slots), Done: func(o rotate.Outcome) { mu.Lock(); out[o.Slot.Name] = o; mu.Unlock() }}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f.Run(ctx, slots, opts)
	return out
}

// reads are the API Keys reads that can come before a create.
type reads struct{ List, Lookup, Get int }

func (kf *keyFleet) reads() reads {
	return reads{List: kf.srv.Calls("apikeys.ListKeys"), Lookup: kf.srv.Calls("apikeys.LookupKey"), Get: kf.srv.Calls("apikeys.GetKey")}
}

// readsBeforeLastCreate records the reads made when the n-th CreateKey
// arrives: by then every slot of the run has read its current key.
func (kf *keyFleet) readsBeforeLastCreate(n int) func() reads {
	var (
		mu  sync.Mutex
		got reads
	)
	kf.srv.SetHook("apikeys.CreateKey", func(ctx context.Context, i int) error {
		if i == n {
			mu.Lock()
			got = kf.reads()
			mu.Unlock()
		}
		return nil
	})
	return func() reads { mu.Lock(); defer mu.Unlock(); return got }
}

// TestFleetSharesKeyList: N slots of one project rotating at once read
// their current keys with one ListKeys of the project (a page per 300
// keys) instead of one GetKey each: before the creates, ceil(keys/300)
// ListKeys, N LookupKey and no GetKey. The next scheduled run (a new
// process: the names come from the secrets' annotations, no LookupKey)
// shares a list too.
func TestFleetSharesKeyList(t *testing.T) {
	for _, tc := range []struct {
		name         string
		slots, extra int
		pages        int // ceil((slots+extra)/300)
	}{
		{name: "one page", slots: 6, pages: 1},
		{name: "three pages", slots: 6, extra: 600, pages: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kf := newKeyFleet(t, tc.slots, tc.extra)
			before := kf.readsBeforeLastCreate(tc.slots)
			for _, o := range kf.run(kf.rotator(), kf.slots, rotate.Options{Force: true}) {
				if o.Err != nil || !o.Result.Rotated {
					t.Fatalf("%s: rotated %v, %v", o.Slot.Name, o.Result != nil && o.Result.Rotated, o.Err)
				}
				// What the list gave is what GetKey gives: the new key
				// copies the old one's display name and binding.
				nk := kf.srv.Keys(keyFleetProject, false)
				var found bool
				for _, k := range nk {
					if k.Name == o.Result.NewKey.Name {
						found = true
						if k.DisplayName != "Gemini "+o.Slot.Name || k.ServiceAccountEmail == "" || len(k.Restrictions.ApiTargets) != 1 {
							t.Errorf("%s: new key %s has display name %q, binding %q, restrictions %+v", o.Slot.Name, k.Name, k.DisplayName, k.ServiceAccountEmail, k.Restrictions)
						}
					}
				}
				if !found {
					t.Errorf("%s: new key %s not found", o.Slot.Name, o.Result.NewKey.Name)
				}
			}
			if got, want := before(), (reads{List: tc.pages, Lookup: tc.slots}); got != want {
				t.Errorf("API Keys reads before the last create = %+v, want %+v", got, want)
			}
			if got := kf.reads(); got.Get != 0 {
				t.Errorf("GetKey calls in the run = %d, want 0", got.Get)
			}

			// The next scheduled run: nothing is due.
			kf.srv.ResetCalls()
			for _, o := range kf.run(kf.rotator(), kf.slots, rotate.Options{}) {
				if o.Err != nil || o.Result.Rotated {
					t.Errorf("next run, %s: rotated %v, %v", o.Slot.Name, o.Result != nil && o.Result.Rotated, o.Err)
				}
			}
			if got, want := kf.reads(), (reads{List: tc.pages}); got != want {
				t.Errorf("next run: API Keys reads = %+v, want %+v", got, want)
			}
		})
	}
}

// TestFleetKeyListMissingKey: a key the list does not show (here,
// soft-deleted before the run: ListKeys leaves deleted keys out) is read
// with GetKey, and the rotation ends as it ends without the list.
func TestFleetKeyListMissingKey(t *testing.T) {
	t.Parallel()
	kf := newKeyFleet(t, 4, 0)
	r := kf.rotator()
	ka := &gcp.Keys{Service: r.Keys, Poll: time.Millisecond, Retry: r.Retry}
	if err := ka.Delete(context.Background(), kf.keys[2], ""); err != nil {
		t.Fatal(err)
	}
	kf.srv.ResetCalls()
	out := kf.run(r, kf.slots, rotate.Options{Force: true})
	for i, s := range kf.slots {
		o := out[s.Name]
		if i == 2 {
			if !errors.Is(o.Err, rotate.ErrKeyNotFound) || !strings.Contains(fmt.Sprint(o.Err), "was deleted at") {
				t.Errorf("%s: err = %v, want the current key deleted (ErrKeyNotFound)", s.Name, o.Err)
			}
			continue
		}
		if o.Err != nil || !o.Result.Rotated {
			t.Errorf("%s: rotated %v, %v", s.Name, o.Result != nil && o.Result.Rotated, o.Err)
		}
	}
	if got := kf.reads(); got.List != 1 || got.Get != 1 {
		t.Errorf("reads = %+v, want 1 ListKeys and 1 GetKey (the deleted key)", got)
	}
}

// TestFleetKeyListDenied: without apikeys.keys.list every rotation reads
// its key with GetKey, and the Rotator asks for the list once: a second
// run of the same Rotator does not ask again.
func TestFleetKeyListDenied(t *testing.T) {
	t.Parallel()
	kf := newKeyFleet(t, 5, 0)
	kf.srv.DenyPermission("apikeys.keys.list")
	r := kf.rotator()
	for run, opts := range []rotate.Options{{Force: true}, {Force: true, Again: true}} {
		for _, o := range kf.run(r, kf.slots, opts) {
			if o.Err != nil || !o.Result.Rotated {
				t.Errorf("run %d, %s: rotated %v, %v", run, o.Slot.Name, o.Result != nil && o.Result.Rotated, o.Err)
			}
		}
	}
	if got := kf.reads(); got.List != 1 || got.Get != 2*len(kf.slots) {
		t.Errorf("reads = %+v, want 1 ListKeys (denied) and %d GetKey", got, 2*len(kf.slots))
	}
}

// TestKeyListNotForOneSlot: a rotation that is the only one of its project
// in flight reads its key with GetKey: a list of a project with thousands
// of keys would cost more.
func TestKeyListNotForOneSlot(t *testing.T) {
	t.Parallel()
	kf := newKeyFleet(t, 2, 0)
	r := kf.rotator()
	if res, err := r.Rotate(context.Background(), kf.slots[0], rotate.Options{Force: true}); err != nil || !res.Rotated {
		t.Fatalf("rotate: %v", err)
	}
	// A fleet of one slot of the project.
	for _, o := range kf.run(r, kf.slots[1:], rotate.Options{Force: true}) {
		if o.Err != nil || !o.Result.Rotated {
			t.Fatalf("%s: %v", o.Slot.Name, o.Err)
		}
	}
	if got := kf.reads(); got.List != 0 || got.Get != 2 {
		t.Errorf("reads = %+v, want 2 GetKey and no ListKeys", got)
	}
}

// TestFleetKeyListFreshness: a list answered before a rotation started is
// not used by it: a change made to the keys between two runs of one
// Rotator is seen by the second, as GetKey would see it.
func TestFleetKeyListFreshness(t *testing.T) {
	t.Parallel()
	kf := newKeyFleet(t, 3, 0)
	r := kf.rotator()
	for _, o := range kf.run(r, kf.slots, rotate.Options{}) { // nothing due: reads only
		if o.Err != nil {
			t.Fatal(o.Err)
		}
	}
	ka := &gcp.Keys{Service: r.Keys, Poll: time.Millisecond, Retry: r.Retry}
	for _, name := range kf.keys {
		k, err := ka.Get(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ka.Patch(context.Background(), &apikeys.V2Key{Name: name, Etag: k.Etag, DisplayName: k.DisplayName + " (renamed)"}, "displayName"); err != nil {
			t.Fatal(err)
		}
	}
	kf.srv.ResetCalls()
	out := kf.run(r, kf.slots, rotate.Options{Force: true})
	if got := kf.reads(); got.List != 1 || got.Get != 0 {
		t.Errorf("second run's reads = %+v, want 1 ListKeys of its own, no GetKey", got)
	}
	names := map[string]string{}
	for _, k := range kf.srv.Keys(keyFleetProject, false) {
		names[k.Name] = k.DisplayName
	}
	for _, o := range out {
		if o.Err != nil || !o.Result.Rotated {
			t.Fatalf("%s: %v", o.Slot.Name, o.Err)
		}
		if got, want := names[o.Result.NewKey.Name], "Gemini "+o.Slot.Name+" (renamed)"; got != want {
			t.Errorf("%s: new key's display name %q, want %q (copied from a stale list?)", o.Slot.Name, got, want)
		}
	}
}

// TestListKeysCarriesNoKeyString: the canary. ListKeys answers, as Google
// documents ("The key string of the API key isn't included in the
// response"), carry no key string: the emulator sends none, so a list
// shared in memory holds no secret.
func TestListKeysCarriesNoKeyString(t *testing.T) {
	t.Parallel()
	kf := newKeyFleet(t, 3, 2)
	resp, err := http.Get("http://" + kf.srv.APIKeysAddr + "/v2/projects/" + keyFleetProject + "/locations/global/keys?pageSize=300")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("ListKeys: %s %v: %s", resp.Status, err, body)
	}
	if strings.Contains(string(body), "keyString") {
		t.Errorf("ListKeys answer has a keyString field: %s", body)
	}
	for _, ks := range kf.strings {
		if strings.Contains(string(body), ks) {
			t.Fatalf("ListKeys answer carries a key string (sha256 %s)", secret.New(ks).Fingerprint())
		}
	}
	if n := strings.Count(string(body), `"etag"`); n != 5 {
		t.Errorf("ListKeys answered %d keys with etags, want 5: %s", n, body)
	}
}

// TestFleetShardKeyList: a shard (a Rotator given some of a project's
// slots, Rotator.Shards 2) keeps only its own slots' keys of the list, and
// still reads every key from it: one ListKeys and no GetKey a run, on the
// first rotation (keys made before keyrotate) and on the next run (keys
// keyrotate made, the other shard's among them).
func TestFleetShardKeyList(t *testing.T) {
	t.Parallel()
	kf := newKeyFleet(t, 8, 3)
	shards := make([][]*rotate.Slot, 2)
	for _, s := range kf.slots {
		i := rotate.Shard(s.Name, 2)
		shards[i] = append(shards[i], s)
	}
	for run, opts := range []rotate.Options{{Force: true}, {Force: true, Again: true}} {
		for i, slots := range shards {
			if len(slots) < 2 {
				t.Fatalf("shard %d has %d slots, want at least 2 to share a list", i, len(slots))
			}
			kf.srv.ResetCalls()
			r := kf.rotator()
			r.Shards = 2
			for _, o := range kf.run(r, slots, opts) {
				if o.Err != nil || !o.Result.Rotated {
					t.Fatalf("run %d, shard %d, %s: rotated %v, %v", run, i, o.Slot.Name, o.Result != nil && o.Result.Rotated, o.Err)
				}
			}
			if got := kf.reads(); got.List != 1 || got.Get != 0 {
				t.Errorf("run %d, shard %d: reads = %+v, want 1 ListKeys and no GetKey", run, i, got)
			}
		}
	}
}
