package rotate_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/targets"
)

// The tests in this file exercise the rotation lock (step 2, lock, of docs/design.md):
// who may take over a rotation record, that exactly one of many concurrent
// runs rotates, that a live run renews its lease, and that a run which lost
// its lease stops without finishing on top of the new holder.

const recordAnn = "keyrotate.rotation"

// otherRun returns a copy of the world's slot with its own .env target (a
// DotEnv remembers what it last read, so runs must not share one) and a
// Rotator that shares the world's clients but not its log buffers.
func (w *world) otherRun() (*rotate.Rotator, *rotate.Slot) {
	s := *w.slot
	s.Targets = []rotate.Target{targets.NewDotEnv(w.envPath, "GEMINI_API_KEY")}
	r := &rotate.Rotator{
		Keys: w.r.Keys, Lookup: w.r.Lookup, Secrets: w.r.Secrets,
		PollInterval: w.r.PollInterval, ProbeInterval: w.r.ProbeInterval, ProbeMaxInterval: w.r.ProbeMaxInterval,
	}
	return r, &s
}

// record returns the secret's rotation record, or nil.
func (w *world) record() *rotate.Record {
	w.t.Helper()
	raw, ok := w.secret().Annotations[recordAnn]
	if !ok {
		return nil
	}
	var rec rotate.Record
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		w.t.Fatalf("rotation record %q: %v", raw, err)
	}
	return &rec
}

// putRecord writes rec as the secret's rotation record through the Secret
// Manager API, with a compare-and-swap on the etag as another run would,
// retrying when a renewal of the current holder wins the race.
func (w *world) putRecord(rec *rotate.Record) {
	w.t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		w.t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		sec := w.secret()
		if sec.Annotations == nil {
			sec.Annotations = map[string]string{}
		}
		sec.Annotations[recordAnn] = string(b)
		err := w.updateSecret(&secretmanagerpb.UpdateSecretRequest{
			// Only what the mask writes (and the etag): the rest of a read
			// secret is output-only or not written.
			Secret:     &secretmanagerpb.Secret{Name: sec.GetName(), Etag: sec.GetEtag(), Annotations: sec.GetAnnotations()},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}},
		})
		if err == nil {
			return
		}
		if status.Code(err) != codes.FailedPrecondition || attempt >= 10 {
			w.t.Fatalf("write rotation record: %v", err)
		}
	}
}

// seededRecord is a rotation record of another run that locked the slot
// and may have created the new key, held by h until expires.
func (w *world) seededRecord(h rotate.Holder, expires time.Time) *rotate.Record {
	const id = "20261130000000-aaaaaaaa"
	return &rotate.Record{
		ID: id, Slot: w.slot.Name, Phase: rotate.PhaseLocked,
		OldKey: w.oldName, OldVersion: w.srv.SecretVersions(w.slot.Secret)[0].Name, OldFP: secret.Fingerprint(w.oldKey),
		NewKeyID: w.slot.Name + "-" + id, Grace: "0s",
		Started: time.Now().Add(-time.Hour).UTC(), Holder: h, Expires: expires.UTC(),
	}
}

// newKeys returns the keys of the project, deleted or not, other than the
// old key.
func (w *world) newKeys() []string {
	var names []string
	for _, k := range w.srv.Keys(project, true) {
		if k.Name != w.oldName {
			names = append(names, k.Name)
		}
	}
	return names
}

// rotatedOnce checks the state after exactly one successful rotation: one
// new key, live, in the secret's latest version (the second version) and
// in the .env; the old key deleted; no record left.
func (w *world) rotatedOnce() {
	w.t.Helper()
	nk := w.newKeys()
	if len(nk) != 1 {
		w.t.Fatalf("new keys = %v, want exactly 1", nk)
	}
	k, _ := w.srv.Key(nk[0])
	if k.DeleteTime != "" || !w.srv.KeyWorks(k.KeyString) {
		w.t.Errorf("new key %s deleted = %q, works = %t; want live and working", k.Name, k.DeleteTime, w.srv.KeyWorks(k.KeyString))
	}
	if old, _ := w.srv.Key(w.oldName); old.DeleteTime == "" {
		w.t.Errorf("old key %s not deleted", w.oldName)
	}
	if vs := w.srv.SecretVersions(w.slot.Secret); len(vs) != 2 {
		w.t.Errorf("secret versions = %d, want 2 (no duplicate of the new key)", len(vs))
	}
	if w.latest() != k.KeyString {
		w.t.Errorf("secret latest does not hold the new key %s", k.Name)
	}
	if w.envValue() != k.KeyString {
		w.t.Errorf(".env does not hold the new key %s", k.Name)
	}
	if rec := w.record(); rec != nil {
		w.t.Errorf("rotation record left on the secret: %+v", rec)
	}
	w.invariant()
}

// procStartOf reads a process's start time (field 22 of /proc/PID/stat).
func procStartOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return f[19]
}

// onThisHost fills in h what a holder running on this host, boot, pid and
// time namespaces records beyond host, pid and start time.
func onThisHost(t *testing.T, h rotate.Holder) rotate.Holder {
	t.Helper()
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Skipf("no boot id: %v", err)
	}
	h.BootID = strings.TrimSpace(string(boot))
	if h.PIDNS, err = os.Readlink("/proc/self/ns/pid"); err != nil {
		t.Skipf("no pid namespace: %v", err)
	}
	h.TimeNS, _ = os.Readlink("/proc/self/ns/time")
	return h
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	return cmd.Process.Pid
}

// TestTakeover seeds a rotation record held by somebody else and checks who
// may take it over: a takeable record is resumed (the new key gets the
// record's key id, exactly one new key), a live one stops the run before any
// write. A live lease on another host is TestLiveLeaseStopsSecondRun.
func TestTakeover(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	parent := os.Getppid()
	future, past := time.Now().Add(time.Hour), time.Now().Add(-time.Minute)
	for _, tc := range []struct {
		name     string
		holder   func(t *testing.T) rotate.Holder
		expires  time.Time
		takeable bool
	}{
		{"other host, expired", func(*testing.T) rotate.Holder {
			return rotate.Holder{Host: "other-host", PID: 7, ProcStart: "123", Run: "x"}
		}, past, true},
		{"released", func(*testing.T) rotate.Holder { return rotate.Holder{} }, past, true},
		{"same host, dead process", func(t *testing.T) rotate.Holder {
			return onThisHost(t, rotate.Holder{Host: host, PID: deadPID(t), ProcStart: "4242", Run: "x"})
		}, future, true},
		{"same host, pid reused by another process", func(t *testing.T) rotate.Holder {
			return onThisHost(t, rotate.Holder{Host: host, PID: parent, ProcStart: procStartOf(t, parent) + "0", Run: "x"})
		}, future, true},
		{"same process, finished run", func(t *testing.T) rotate.Holder {
			return onThisHost(t, rotate.Holder{Host: host, PID: me, ProcStart: procStartOf(t, me), Run: "finished"})
		}, future, true},
		{"same host, live process", func(t *testing.T) rotate.Holder {
			return onThisHost(t, rotate.Holder{Host: host, PID: parent, ProcStart: procStartOf(t, parent), Run: "x"})
		}, future, false},
		{"same host, live process, start unknown", func(t *testing.T) rotate.Holder {
			return onThisHost(t, rotate.Holder{Host: host, PID: parent, Run: "x"})
		}, future, false},
		// The pid of a holder in another pid namespace (a container with
		// the same hostname) means nothing here: live until it expires.
		{"same host, other pid namespace, pid not in ours", func(t *testing.T) rotate.Holder {
			h := onThisHost(t, rotate.Holder{Host: host, PID: deadPID(t), ProcStart: "4242", Run: "x"})
			h.PIDNS = "pid:[1]"
			return h
		}, future, false},
		{"same host, other boot, pid not running", func(t *testing.T) rotate.Holder {
			h := onThisHost(t, rotate.Holder{Host: host, PID: deadPID(t), ProcStart: "4242", Run: "x"})
			h.BootID = "00000000-0000-0000-0000-000000000000"
			return h
		}, future, false},
		// A record of an older keyrotate names no namespace or boot.
		{"same host, record without namespace or boot id, pid not running", func(t *testing.T) rotate.Holder {
			return rotate.Holder{Host: host, PID: deadPID(t), ProcStart: "4242", Run: "x"}
		}, future, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			rec := w.seededRecord(tc.holder(t), tc.expires)
			w.putRecord(rec)
			w.srv.ResetCalls()
			res, err := w.rotate(rotate.Options{})
			if !tc.takeable {
				if !errors.Is(err, rotate.ErrRotationInProgress) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(rec.Holder.PID)) {
					t.Fatalf("Rotate error = %v, want ErrRotationInProgress naming the holder", err)
				}
				if n := w.srv.MutatingCalls(); n != 0 {
					t.Errorf("mutating calls = %d, want 0 while another run holds the lease: %v", n, w.srv.CallCounts())
				}
				if got := w.record(); got == nil || got.Holder != rec.Holder {
					t.Errorf("record after a refused run = %+v, want it untouched", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Rotate: %v, want the rotation taken over", err)
			}
			if !res.Rotated || !res.Resumed || res.RotationID != rec.ID {
				t.Errorf("Rotated, Resumed, RotationID = %t, %t, %q; want true, true, %q", res.Rotated, res.Resumed, res.RotationID, rec.ID)
			}
			if want := "/keys/" + rec.NewKeyID; !strings.HasSuffix(res.NewKey.Name, want) {
				t.Errorf("new key = %q, want the record's key id (…%s)", res.NewKey.Name, want)
			}
			w.rotatedOnce()
		})
	}
}

// TestLeaseOfFinishedRunInSameProcess: a run that stopped part-way leaves a
// record; the next Rotate of the same process resumes it at once, whether
// the first run managed to release its lease or not (then the record still
// names this process, with a run id no longer active).
func TestLeaseOfFinishedRunInSameProcess(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		failRelease   bool
		wantHolderRun bool   // the record left by the first run still names it
		runID         string // Rotator.RunID, the same for both calls (one run of the CLI)
	}{
		{"released", false, false, ""},
		{"release failed", true, true, ""},
		{"released, one run id", false, false, rotate.NewID(time.Now())},
		{"release failed, one run id", true, true, rotate.NewID(time.Now())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.r.RunID = tc.runID
			w.srv.Fail("secretmanager.AddSecretVersion", 1, fake.Fault{Code: codes.PermissionDenied})
			if tc.failRelease {
				w.srv.Fail("secretmanager.UpdateSecret", 2, fake.Fault{Code: codes.PermissionDenied}) // 1: lock, 2: release
			}
			first, err := w.rotate(rotate.Options{})
			if !errors.Is(err, rotate.ErrStoppedPartWay) {
				t.Fatalf("first Rotate = %+v, %v; want ErrStoppedPartWay", first, err)
			}
			w.invariant()
			rec := w.record()
			if rec == nil {
				t.Fatal("no rotation record after a run that stopped part-way")
			}
			if got := rec.Holder.Run != ""; got != tc.wantHolderRun {
				t.Errorf("record holder = %v; still held = %t, want %t", rec.Holder, got, tc.wantHolderRun)
			}
			if tc.runID != "" && (rec.ID != tc.runID || (tc.wantHolderRun && rec.Holder.Run != tc.runID)) {
				t.Errorf("record id %q, holder run %q; want the run id %q for both", rec.ID, rec.Holder.Run, tc.runID)
			}
			if tc.wantHolderRun && !time.Now().Before(rec.Expires) {
				t.Fatalf("record expires %s, want a live lease for this test", rec.Expires)
			}
			res, err := w.rotate(rotate.Options{})
			if err != nil {
				t.Fatalf("second Rotate: %v, want it to resume at once", err)
			}
			if !res.Rotated || !res.Resumed || res.RotationID != rec.ID {
				t.Errorf("Rotated, Resumed, RotationID = %t, %t, %q; want true, true, %q", res.Rotated, res.Resumed, res.RotationID, rec.ID)
			}
			w.rotatedOnce()
		})
	}
}

// runResult is the outcome of one Rotate call.
type runResult struct {
	res *rotate.Result
	err error
}

// rotateBehind starts a forced rotation of the world's slot in the
// background and returns what waits for its result: the test fails when
// the run has not returned 10s after the wait began (what says after
// what, for the message).
func (w *world) rotateBehind() (wait func(what string) runResult) {
	done := make(chan runResult, 1)
	go func() {
		res, err := w.r.Rotate(context.Background(), w.slot, rotate.Options{Force: true})
		done <- runResult{res, err}
	}()
	return func(what string) runResult {
		w.t.Helper()
		select {
		case got := <-done:
			return got
		case <-time.After(10 * time.Second):
			w.t.Fatalf("the run did not return %s", what)
			return runResult{}
		}
	}
}

// checkOneWinner checks that exactly one of the runs rotated (a fresh
// rotation, not a takeover of another's) and that every other run stopped
// at the lock with ErrRotationInProgress, having changed nothing.
func checkOneWinner(t *testing.T, out []runResult) {
	t.Helper()
	rotated := 0
	for i, o := range out {
		switch {
		case o.err == nil && o.res.Rotated:
			rotated++
			if o.res.Resumed {
				t.Errorf("run %d rotated by taking over another live run's rotation %s", i, o.res.RotationID)
			}
		case errors.Is(o.err, rotate.ErrRotationInProgress) && !errors.Is(o.err, rotate.ErrStoppedPartWay):
		default:
			t.Errorf("run %d = %+v, %v; want rotated or ErrRotationInProgress before any change", i, o.res, o.err)
		}
	}
	if rotated != 1 {
		t.Errorf("runs that rotated = %d, want exactly 1", rotated)
	}
}

// TestConcurrentRotations starts 8 forced rotations of one slot at once: the
// first UpdateSecret (the lock write) of each is held until all 8 have sent
// it, so that they all race for the same etag. Exactly one rotates.
func TestConcurrentRotations(t *testing.T) {
	t.Parallel()
	t.Run("own run ids", func(t *testing.T) { t.Parallel(); testConcurrentRotations(t, "") })
	// Rotators of one run share its id (the CLI's slots do): the lease is
	// still exclusive.
	t.Run("one run id", func(t *testing.T) { t.Parallel(); testConcurrentRotations(t, rotate.NewID(time.Now())) })
}

func testConcurrentRotations(t *testing.T, runID string) {
	const n = 8
	w := newWorld(t)
	// The first n UpdateSecret calls that reach the hook (the lock writes;
	// a write Secret Manager's per-secret rate refuses never reaches it,
	// and is sent again after the RetryInfo wait) are held until all n
	// are there, then let go together.
	var arrived, together atomic.Int32
	all := make(chan struct{})
	w.srv.SetHook("secretmanager.UpdateSecret", func(ctx context.Context, _ int) error {
		k := arrived.Add(1)
		if k > n {
			return nil
		}
		if k == n {
			close(all)
		}
		select {
		case <-all:
			together.Add(1)
			return nil
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-time.After(10 * time.Second):
			return status.Error(codes.DeadlineExceeded, "test barrier: not all runs reached the lock")
		}
	})
	out := make([]runResult, n)
	var wg sync.WaitGroup
	for i := range n {
		r, slot := w.otherRun()
		r.RunID = runID
		// Each run has its own Secret Manager client, as runs in separate
		// processes do. Through one client the per-secret write pacer
		// (internal/gcp/secretpace.go) lets at most 2 lock writes be in
		// flight, and 8 could never reach the barrier together.
		sm, err := w.srv.SecretManagerClient(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sm.Close() })
		r.Secrets = sm
		wg.Go(func() {
			res, err := r.Rotate(context.Background(), slot, rotate.Options{Force: true})
			out[i] = runResult{res, err}
		})
	}
	wg.Wait()
	if got := together.Load(); got != n {
		t.Fatalf("runs that reached the lock together = %d, want %d", got, n)
	}
	checkOneWinner(t, out)
	if got := w.srv.Calls("apikeys.CreateKey"); got != 1 {
		t.Errorf("CreateKey calls = %d, want 1 (only the lock holder creates)", got)
	}
	w.rotatedOnce()
}

// TestConcurrentRunDuringLockWrite: a second run of the same process that
// reads the secret after the first run's lock write landed, but before the
// first run saw the answer, must see a live lease. The first run's client
// holds the answer to its lock write back while the second run runs.
func TestConcurrentRunDuringLockWrite(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	rB, slotB := w.otherRun()
	var once sync.Once
	var second runResult
	sm, err := secretmanager.NewClient(context.Background(),
		option.WithEndpoint(w.srv.SecretManagerAddr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithGRPCDialOption(grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil && strings.HasSuffix(method, "/UpdateSecret") {
				once.Do(func() {
					res, err := rB.Rotate(context.Background(), slotB, rotate.Options{Force: true})
					second = runResult{res, err}
				})
			}
			return err
		})),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sm.Close() })
	rA, slotA := w.otherRun()
	rA.Secrets = sm
	res, err := rA.Rotate(context.Background(), slotA, rotate.Options{Force: true})
	checkOneWinner(t, []runResult{{res, err}, second})
	if err != nil || !res.Rotated {
		t.Errorf("first run = %+v, %v; want it to rotate", res, err)
	}
	w.rotatedOnce()
}

// TestConcurrentRunFinishesFirst: two runs read the slot together; the lock
// write of the second is held until the first has finished the whole
// rotation. The second run's view of the slot is stale then (the key it
// read as current is deleted): it must not start a rotation of its own on
// top of it.
func TestConcurrentRunFinishesFirst(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	second, firstDone := make(chan struct{}), make(chan struct{})
	w.srv.SetHook("secretmanager.UpdateSecret", func(ctx context.Context, call int) error {
		var wait chan struct{}
		switch call {
		case 1:
			wait = second // the first lock write waits until both runs have read the slot
		case 2:
			close(second)
			wait = firstDone
		default:
			return nil
		}
		select {
		case <-wait:
			return nil
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-time.After(10 * time.Second):
			return status.Error(codes.DeadlineExceeded, "test barrier timed out")
		}
	})
	results := make(chan runResult, 2)
	for range 2 {
		r, slot := w.otherRun()
		go func() {
			res, err := r.Rotate(context.Background(), slot, rotate.Options{Force: true})
			results <- runResult{res, err}
		}()
	}
	first := <-results
	close(firstDone)
	last := <-results
	if first.err != nil || !first.res.Rotated {
		t.Errorf("first run to finish = %+v, %v; want it to rotate", first.res, first.err)
	}
	checkOneWinner(t, []runResult{first, last})
	w.rotatedOnce()
}

// blockCall makes the first call of method wait until the returned release
// is called or the caller gives up. started is closed when the call arrives
// and cancelled when the caller's context ends while it waits.
func blockCall(t *testing.T, w *world, method string) (started, cancelled <-chan struct{}, release func()) {
	t.Helper()
	s, c, r := make(chan struct{}), make(chan struct{}), make(chan struct{})
	w.srv.SetHook(method, func(ctx context.Context, call int) error {
		if call != 1 {
			return nil
		}
		close(s)
		select {
		case <-r:
			return nil
		case <-ctx.Done():
			close(c)
			return status.FromContextError(ctx.Err()).Err()
		}
	})
	var once sync.Once
	release = func() { once.Do(func() { close(r) }) }
	t.Cleanup(release)
	return s, c, release
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestLeaseRenewal blocks a run in the middle (AddSecretVersion) for more
// than three lease TTLs: the run renews its lease, so its record's expiry
// keeps moving forward and another run is refused long after the first
// expiry; released, the first run finishes.
func TestLeaseRenewal(t *testing.T) {
	// Renewed every third of its TTL, the lease is written twice a
	// second: Secret Manager's limit on one secret.
	const ttl = 1500 * time.Millisecond
	w := newWorld(t)
	w.slot.LeaseTTL = ttl
	// The blocked call outlives three TTLs.
	w.r.Retry.CallTimeout, w.r.Retry.MaxElapsed = 30*time.Second, 30*time.Second
	started, _, release := blockCall(t, w, "secretmanager.AddSecretVersion")
	wait := w.rotateBehind()
	waitFor(t, started, "the run to reach AddSecretVersion")
	blockedAt := time.Now()
	rec0 := w.record()
	if rec0 == nil {
		t.Fatal("no rotation record while the run is in the middle")
	}
	// The lock was written before blockedAt: its expiry is before this.
	origBound := blockedAt.Add(ttl)

	var expiries []time.Time
	for time.Since(blockedAt) < 3*ttl {
		time.Sleep(ttl / 4)
		rec := w.record()
		if rec == nil || rec.ID != rec0.ID || rec.Holder != rec0.Holder {
			t.Fatalf("record while the run is blocked = %+v, want the run's own (%v)", rec, rec0.Holder)
		}
		if n := len(expiries); n > 0 && rec.Expires.Before(expiries[n-1]) {
			t.Errorf("expiry moved back from %s to %s", expiries[n-1], rec.Expires)
		}
		expiries = append(expiries, rec.Expires)
	}
	last := expiries[len(expiries)-1]
	if !last.After(origBound) {
		t.Errorf("expiry after %s blocked = %s, want it renewed past the first expiry (before %s)", time.Since(blockedAt).Round(time.Millisecond), last, origBound)
	}
	if !last.After(time.Now()) {
		t.Errorf("expiry = %s, in the past while the run lives", last)
	}

	// More than one TTL after the first expiry: another run is still refused.
	if !time.Now().After(origBound.Add(ttl)) {
		t.Fatal("test too fast: the first expiry is less than one TTL ago")
	}
	r2, slot2 := w.otherRun()
	w.srv.ResetCalls()
	if res, err := r2.Rotate(context.Background(), slot2, rotate.Options{Force: true}); !errors.Is(err, rotate.ErrRotationInProgress) {
		t.Errorf("second Rotate during the renewed lease = %+v, %v; want ErrRotationInProgress", res, err)
	}
	if n := w.srv.Calls("apikeys.CreateKey"); n != 0 {
		t.Errorf("the refused run called CreateKey %d times", n)
	}

	release()
	first := wait("after release")
	if first.err != nil || !first.res.Rotated || first.res.Resumed {
		t.Fatalf("first run = %+v, %v; want rotated, not resumed", first.res, first.err)
	}
	w.rotatedOnce()
}

// TestLostLease: while a run is blocked, another run overwrites the record
// (a takeover). The first run must stop without finishing the rotation on
// top of the new holder: it leaves the other run's record alone, and every
// place still holds a working key.
func TestLostLease(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string        // the call blocked while the lease is taken
		ttl    time.Duration // the first run's lease
		// byRenewal: the renewal notices the loss and cancels the blocked
		// call; otherwise the call goes through and the next write of the
		// record notices.
		byRenewal bool
		// wantOldKey: the old key must survive (the new key was not read
		// back everywhere before the lease was lost).
		wantOldKey bool
	}{
		{"noticed by renewal", "secretmanager.AddSecretVersion", 300 * time.Millisecond, true, true},
		{"noticed at the next record write", "secretmanager.AddSecretVersion", 15 * time.Minute, false, true},
		{"lost after read-back", "apikeys.DeleteKey", 15 * time.Minute, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.slot.LeaseTTL = tc.ttl
			started, cancelled, release := blockCall(t, w, tc.method)
			wait := w.rotateBehind()
			waitFor(t, started, "the run to reach "+tc.method)
			mine := w.record()
			if mine == nil {
				t.Fatal("no rotation record while the run is in the middle")
			}
			thief := *mine
			thief.Holder = rotate.Holder{Host: "other-host", PID: 99, ProcStart: "1", Run: "thief"}
			thief.Expires = time.Now().Add(time.Hour).UTC()
			w.putRecord(&thief)
			if tc.byRenewal {
				waitFor(t, cancelled, "the renewal to notice the lost lease and stop the run")
			}
			release()
			got := wait("after its lease was lost")
			w.noLeaks(got.res, got.err)
			if !errors.Is(got.err, rotate.ErrRotationInProgress) && !errors.Is(got.err, rotate.ErrStoppedPartWay) {
				t.Fatalf("Rotate after losing its lease = %+v, %v; want ErrRotationInProgress or ErrStoppedPartWay", got.res, got.err)
			}
			if rec := w.record(); rec == nil || rec.Holder != thief.Holder || rec.ID != thief.ID {
				t.Errorf("record after the run = %+v, want the other holder's left alone (%v)", rec, thief.Holder)
			}
			w.invariant()
			old, _ := w.srv.Key(w.oldName)
			oldLive := old.DeleteTime == ""
			if tc.wantOldKey && !oldLive {
				t.Errorf("old key deleted by a run that lost its lease before reading the new key back")
			}
			if !oldLive {
				for _, v := range []string{w.envValue(), w.latest()} {
					if v == w.oldKey {
						t.Errorf("old key deleted while a place still holds it")
					}
				}
			}
			if n := len(w.newKeys()); n != 1 {
				t.Errorf("new keys = %d, want 1", n)
			}
		})
	}
}
