package rotate

import (
	"context"
	"strings"
	"sync"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/gcp"
)

// A fleet's rotations read their current keys with one ListKeys of their
// project instead of one GetKey each. The API Keys API allows 240 reads a
// minute per project; a first rotation reads LookupKey, GetKey and the
// create's operation before its new key can start to propagate, so 100
// slots of a project (300 reads) waited a whole quota window. One list
// (a read per page of ListPageSize keys) replaces the GetKeys.
//
// Equivalence. ListKeys answers with the same Key resource GetKey answers
// with — name, uid, displayName, createTime, updateTime, deleteTime,
// annotations, restrictions, etag, serviceAccountEmail — and, like GetKey,
// without the key string (the REST reference of
// projects.locations.keys.list: "keys[]: object (Key)", "The key string of
// the API key isn't included in the response"; the discovery document,
// internal/emulator/apikeys-api.json: V2ListKeysResponse.keys items are
// V2Key, the type keys.get returns; Google's "Getting information about
// API keys" shows a list answer of whole keys with their etags). Only
// soft-deleted keys differ: the list leaves them out (without
// showDeleted), and a key not in the list is read with GetKey, which tells
// what it tells today (deleted, purged, or in another project). So is a
// key created after the list.
//
// Freshness. A rotation uses a list only if the list was sent after the
// rotation's preflight started (it joins one in flight, or takes one that
// has answered). GetKey is no fresher than that: it is sent during the
// preflight too, and the data it reads is used until the old key is
// deleted, minutes later; what guards that span is the same for both
// reads — the old key's etag on every write of it (UpdateKey, DeleteKey),
// and the lock's compare-and-swap on the secret read at the start of the
// preflight, which any other keyrotate run changing the slot's keys has
// written. A list sent after that secret read shows the keys at least as
// new as the secret shows the slot. A list sent before the rotation
// started is never used, however recent: the next run of a Rotator lists
// again. (Generations, not clocks, order lists and rotations, so that a
// test's manual clock changes nothing.)
//
// When. Only rotations of a project that the Rotator runs more than one at
// a time (a fleet) list it: a single rotation keeps its one GetKey, which a
// list of a project holding thousands of keys would cost more than. A
// rotation lists when at least two rotations of its project — and, once a
// list has shown how many pages the project takes, at least that many —
// are in their preflight.
//
// Failure. A list that fails (apikeys.keys.list denied, an error after the
// retries) sends every rotation waiting for it to GetKey, and the Rotator
// does not list that project again: no storm of failing lists. A list cut
// short by its starter's context is not remembered as failed.

// keyLists is what the rotations of one Rotator share of their projects'
// key lists. The zero value is ready.
//
// Retention. A list serves the rotations that were reading when it was
// sent (its readers), and keeps only the keys one of them that has not
// read yet may take: the key each reader asked for (its id, once it asks),
// and, while some reader has not asked yet, the keys it may ask for — a
// key keyrotate made for a slot (keyrotate.slot) only while that slot's
// reader has not asked, a key without it (made before keyrotate) while
// any reader has not asked. The rest are dropped as the pages arrive and
// as the readers ask: a shard (Rotator.Shards) lists every key of its
// projects and takes only its own slots' keys. A key is dropped when taken
// and the list when its last reader's preflight has read, not at the
// project's last preflight. This decides only what is kept; which key a
// rotation takes is matched by the name it asks for, as before, and a key
// dropped is read with GetKey as a key not listed is.
type keyLists struct {
	mu sync.Mutex
	// reading holds the rotations of each project (Slot.Project) between
	// the start of their preflight and their read of the current key.
	reading map[string]map[*keyRead]struct{}
	// gen counts the lists started per project; a rotation's mark is the
	// count when its preflight started.
	gen map[string]uint64
	// last is each project's newest list while a rotation that may use it
	// is reading; pages how many pages the project's last list took.
	last  map[string]*keyList
	pages map[string]int
	// failed lists the projects whose list failed: GetKey for the rest of
	// the Rotator's life.
	failed map[string]bool
}

// keyRead is one rotation's preflight from its start to its read of the
// current key.
type keyRead struct {
	l             *keyLists
	project, slot string
	mark          uint64
	asked         bool   // it asked for its key (get)
	id            string // the key id it asked for ("" for a name not of a key)
	lists         []*keyList
	ended         bool
}

// keyList is one ListKeys of a project, in flight until done is closed.
type keyList struct {
	gen  uint64
	done chan struct{}
	// Set before done is closed; keys shrinks as rotations take theirs.
	ok     bool
	number string                    // the project's number, as the listed names carry it
	keys   map[string]*apikeys.V2Key // by key id
	// Under keyLists.mu: the readers still reading; the key ids the
	// readers that asked want; the slots of the readers that did not ask
	// yet, and how many they are.
	readers int
	wanted  map[string]int
	unasked map[string]int
	waiting int
	// bySlot indexes the kept keys keyrotate made by their slot
	// (keyrotate.slot); swept: the keys no reader asked for are gone
	// (waiting reached 0). So a reader's ask or end checks only the keys
	// it may change (prune), not the whole list.
	bySlot map[string][]string
	swept  bool
}

// begin marks the start of a preflight of a project's slot: it returns the
// rotation's read, whose end marks the end of its reading.
func (l *keyLists) begin(project, slot string) *keyRead {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reading == nil {
		l.reading, l.gen = map[string]map[*keyRead]struct{}{}, map[string]uint64{}
		l.last, l.pages, l.failed = map[string]*keyList{}, map[string]int{}, map[string]bool{}
	}
	r := &keyRead{l: l, project: project, slot: slot, mark: l.gen[project]}
	if l.reading[project] == nil {
		l.reading[project] = map[*keyRead]struct{}{}
	}
	l.reading[project][r] = struct{}{}
	return r
}

// end ends r's reading; later calls do nothing.
func (r *keyRead) end() {
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.ended {
		return
	}
	r.ended = true
	delete(l.reading[r.project], r)
	for _, list := range r.lists {
		list.readers--
		if r.asked {
			list.wanted[r.id]--
		} else {
			list.unasked[r.slot]--
			list.waiting--
		}
		list.prune(r.id, r.slot)
		if list.readers <= 0 && l.last[r.project] == list {
			// No rotation that may use it is left: any later one
			// started after it was sent (its mark is the list's
			// generation or more).
			delete(l.last, r.project)
		}
	}
	r.lists = nil
	if len(l.reading[r.project]) == 0 {
		delete(l.reading, r.project)
		delete(l.last, r.project)
	}
}

// ask records, under l.mu, the key r asks for.
func (r *keyRead) ask(name string) {
	if r.asked {
		return
	}
	r.asked = true
	if _, id, ok := splitKeyName(name); ok {
		r.id = id
	}
	for _, list := range r.lists {
		list.unasked[r.slot]--
		list.waiting--
		list.wanted[r.id]++
		list.prune("", r.slot)
	}
}

// keeps reports whether a reader of list that has not read yet may take k
// (id its key id).
func (list *keyList) keeps(id string, k *apikeys.V2Key) bool {
	if list.wanted[id] > 0 {
		return true
	}
	if list.waiting <= 0 {
		return false
	}
	slot, made := k.Annotations[annSlot]
	return !made || list.unasked[slot] > 0
}

// prune drops, under keyLists.mu, the keys of an answered list that no
// reader may take any more after a reader's ask or end changed the counts
// of key id and of slot: only those keys can have changed (keeps), and
// every key no reader asked for once no reader is left to ask.
func (list *keyList) prune(id, slot string) {
	if list.waiting <= 0 && !list.swept {
		list.swept = true
		for id, k := range list.keys {
			list.drop(id, k)
		}
		return
	}
	if k, ok := list.keys[id]; ok {
		list.drop(id, k)
	}
	for _, id := range list.bySlot[slot] {
		if k, ok := list.keys[id]; ok {
			list.drop(id, k)
		}
	}
}

// drop removes k (id its key id) unless a reader may still take it.
func (list *keyList) drop(id string, k *apikeys.V2Key) {
	if !list.keeps(id, k) {
		delete(list.keys, id)
	}
}

// get returns the key name (projects/P/locations/global/keys/K, P the
// project's id or number) from a list of r's project sent after r's mark,
// or false when the rotation is to read it with GetKey: no list is due,
// the list failed, or the key is not in it. A key is handed out once. err
// is the list's error, returned only to the rotation that sent it.
func (l *keyLists) get(ctx context.Context, ka *gcp.Keys, r *keyRead, name string) (_ *apikeys.V2Key, ok bool, err error) {
	project := r.project
	l.mu.Lock()
	if l.reading == nil || l.failed[project] {
		l.mu.Unlock()
		return nil, false, nil
	}
	r.ask(name)
	list := l.last[project]
	if list == nil || list.gen <= r.mark {
		if len(l.reading[project]) < max(2, l.pages[project]) {
			l.mu.Unlock()
			return nil, false, nil
		}
		l.gen[project]++
		list = &keyList{gen: l.gen[project], done: make(chan struct{}), wanted: map[string]int{}, unasked: map[string]int{}}
		for o := range l.reading[project] {
			list.readers++
			if o.asked {
				list.wanted[o.id]++
			} else {
				list.unasked[o.slot]++
				list.waiting++
			}
			o.lists = append(o.lists, list)
		}
		l.last[project] = list
		l.mu.Unlock()
		if err := l.fill(ctx, ka, project, list); err != nil {
			return nil, false, err
		}
	} else {
		l.mu.Unlock()
		select {
		case <-list.done:
		case <-ctx.Done():
			return nil, false, nil
		}
	}
	if !list.ok {
		return nil, false, nil
	}
	p, id, named := splitKeyName(name)
	if !named || (p != project && p != list.number) {
		return nil, false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := list.keys[id]
	delete(list.keys, id)
	return k, k != nil, nil
}

// fill lists project's keys into list, keeping those its readers may take,
// and closes its done.
func (l *keyLists) fill(ctx context.Context, ka *gcp.Keys, project string, list *keyList) error {
	keys, err := ka.List(ctx, "projects/"+project+"/locations/global", false)
	l.mu.Lock()
	defer l.mu.Unlock()
	defer close(list.done)
	if err != nil {
		if ctx.Err() == nil {
			l.failed[project] = true
		}
		return err
	}
	list.ok = true
	list.keys = map[string]*apikeys.V2Key{}
	for _, k := range keys {
		p, id, ok := splitKeyName(k.Name)
		if !ok {
			continue
		}
		list.number = p
		if !list.keeps(id, k) {
			continue
		}
		list.keys[id] = k
		if slot, made := k.Annotations[annSlot]; made {
			if list.bySlot == nil {
				list.bySlot = map[string][]string{}
			}
			list.bySlot[slot] = append(list.bySlot[slot], id)
		}
	}
	list.swept = list.waiting <= 0
	l.pages[project] = max(1, (len(keys)+gcp.ListPageSize-1)/gcp.ListPageSize)
	return nil
}

// readKey reads the key name for a preflight of slot (read its reading):
// from its project's shared list when there is one, else with GetKey.
func (r *Rotator) readKey(ctx context.Context, ka *gcp.Keys, slot *Slot, read *keyRead, name string) (*apikeys.V2Key, error) {
	k, ok, err := r.keyLists.get(ctx, ka, read, name)
	if err != nil {
		r.log().Warn("listing the project's keys failed; each rotation reads its key with GetKey (one API Keys read each)",
			"project", slot.Project, "error", err.Error())
	}
	if ok {
		return k, nil
	}
	return ka.Get(ctx, name)
}

// splitKeyName splits projects/P/locations/global/keys/K into P and K.
func splitKeyName(name string) (project, id string, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 6 || parts[0] != "projects" || parts[2] != "locations" || parts[3] != "global" || parts[4] != "keys" || parts[1] == "" || parts[5] == "" {
		return "", "", false
	}
	return parts[1], parts[5], true
}
