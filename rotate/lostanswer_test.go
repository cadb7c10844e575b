package rotate_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
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
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/rotate"
)

// The tests in this file make a write of the rotation record land while
// its answer is lost (a per-call timeout on a loaded machine, a connection
// reset after the server applied it): the client retries with the same
// etag and meets FAILED_PRECONDITION, because its own write moved the
// etag. The run must recognise its own write from the secret's state and
// go on as if the answer had come; a write of another run must still stop
// it as a lost lease.

const updateSecretMethod = "/google.cloud.secretmanager.v1.SecretManagerService/UpdateSecret"

// lostAnswers makes the first UpdateSecret that lose picks land and then
// answer UNAVAILABLE; before, when set, runs before each UpdateSecret is
// sent (to let another writer in first).
type lostAnswers struct {
	mu     sync.Mutex
	lose   func(req *secretmanagerpb.UpdateSecretRequest) bool
	before func(req *secretmanagerpb.UpdateSecretRequest)
	lost   int
}

func (la *lostAnswers) n() int {
	la.mu.Lock()
	defer la.mu.Unlock()
	return la.lost
}

func (la *lostAnswers) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method != updateSecretMethod {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	r := req.(*secretmanagerpb.UpdateSecretRequest)
	la.mu.Lock()
	before := la.before
	la.mu.Unlock()
	if before != nil {
		before(r)
	}
	if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
		return err
	}
	la.mu.Lock()
	defer la.mu.Unlock()
	if la.lost == 0 && la.lose != nil && la.lose(r) {
		la.lost++
		return status.Error(codes.Unavailable, "connection reset after the request landed")
	}
	return nil
}

// loseAnswers gives the world's rotator a Secret Manager client whose
// UpdateSecret calls go through la, and returns a client without it, for
// the test's own writes as another run.
func (w *world) loseAnswers(la *lostAnswers) (plain *secretmanager.Client) {
	w.t.Helper()
	ctx := context.Background()
	sm, err := w.srv.SecretManagerClient(ctx, option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(la.interceptor)))
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { sm.Close() })
	plain = w.r.Secrets
	w.r.Secrets = sm
	return plain
}

// sentRecord is the rotation record an UpdateSecret request writes, or nil
// when it writes none (a clear).
func sentRecord(t testing.TB, req *secretmanagerpb.UpdateSecretRequest) *rotate.Record {
	raw, ok := req.GetSecret().GetAnnotations()[recordAnn]
	if !ok {
		return nil
	}
	var rec rotate.Record
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		t.Errorf("rotation record sent %q: %v", raw, err)
		return nil
	}
	return &rec
}

// writeAs writes the secret's annotations (and, when aliases is not nil,
// its version aliases) through c with the current etag, as another run
// would, waiting out the per-secret write rate.
func (w *world) writeAs(c *secretmanager.Client, ann map[string]string, aliases map[string]int64) {
	w.t.Helper()
	sec := &secretmanagerpb.Secret{Name: w.slot.Secret, Etag: w.secret().GetEtag(), Annotations: ann}
	mask := []string{"annotations"}
	if aliases != nil {
		sec.VersionAliases = aliases
		mask = append(mask, "version_aliases")
	}
	if err := updateSecretWith(c, &secretmanagerpb.UpdateSecretRequest{Secret: sec, UpdateMask: &fieldmaskpb.FieldMask{Paths: mask}}); err != nil {
		w.t.Errorf("write as another run: %v", err)
	}
}

// checkAliases: current names the newest version and previous the one
// before it (the unlock's write).
func (w *world) checkAliases() {
	w.t.Helper()
	want := map[string]int64{"current": 2, "previous": 1}
	if got := w.secret().GetVersionAliases(); !maps.Equal(got, want) {
		w.t.Errorf("version aliases = %v, want %v", got, want)
	}
}

// TestLostAnswerOfLeaseWrite: each write of the record during a rotation,
// landed with its answer lost, leaves the rotation to finish as it does
// with no fault.
func TestLostAnswerOfLeaseWrite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		lose func(n int, rec *rotate.Record) bool // n counts UpdateSecret calls from 1
	}{
		{"lock", func(n int, _ *rotate.Record) bool { return n == 1 }},
		{"first progress write", func(n int, _ *rotate.Record) bool { return n == 2 }},
		{"distributed", func(_ int, rec *rotate.Record) bool { return rec != nil && rec.Phase == rotate.PhaseDistributed }},
		{"unlock", func(_ int, rec *rotate.Record) bool { return rec == nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each case has its own emulator
			w := newWorld(t)
			n := 0
			la := &lostAnswers{lose: func(req *secretmanagerpb.UpdateSecretRequest) bool {
				n++
				return tc.lose(n, sentRecord(t, req))
			}}
			w.loseAnswers(la)
			res, err := w.rotate(rotate.Options{})
			if la.n() != 1 {
				t.Fatalf("answers lost = %d, want 1", la.n())
			}
			if err != nil || !res.Rotated || res.Resumed {
				t.Fatalf("Rotate with the answer of the %s write lost = %+v, %v; want rotated, as with no fault", tc.name, res, err)
			}
			w.rotatedOnce()
			w.checkAliases()
		})
	}
}

// TestLostAnswerOfRenewal: a renewal that lands while its answer is lost
// keeps the lease; the run finishes.
func TestLostAnswerOfRenewal(t *testing.T) {
	t.Parallel()
	const ttl = 1500 * time.Millisecond // renewed twice a second: Secret Manager's limit on one secret
	w := newWorld(t)
	w.slot.LeaseTTL = ttl
	w.r.Retry.CallTimeout, w.r.Retry.MaxElapsed = 30*time.Second, 30*time.Second
	var armed atomic.Bool
	la := &lostAnswers{lose: func(*secretmanagerpb.UpdateSecretRequest) bool { return armed.Load() }}
	w.loseAnswers(la)
	started, _, release := blockCall(t, w, "secretmanager.AddSecretVersion")
	wait := w.rotateBehind()
	waitFor(t, started, "the run to reach AddSecretVersion")
	armed.Store(true) // the run is blocked: its next writes are renewals
	deadline := time.Now().Add(10 * time.Second)
	for la.n() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if la.n() == 0 {
		t.Fatal("no renewal within 10s")
	}
	// One more renewal after the lost one, on top of it.
	lost := w.record()
	for time.Now().Before(deadline) {
		if rec := w.record(); rec != nil && rec.Expires.After(lost.Expires) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	release()
	got := wait("after release")
	w.noLeaks(got.res, got.err)
	if got.err != nil || !got.res.Rotated {
		t.Fatalf("Rotate with a renewal's answer lost = %+v, %v; want rotated", got.res, got.err)
	}
	w.rotatedOnce()
}

// TestLostAnswerOfRelease: a run that stops part-way releases its lease;
// the release lands with its answer lost. The run stops as with no fault,
// without a warning that the lease stays held, and the next run resumes.
func TestLostAnswerOfRelease(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	la := &lostAnswers{lose: func(req *secretmanagerpb.UpdateSecretRequest) bool {
		rec := sentRecord(t, req)
		return rec != nil && rec.Holder.Run == ""
	}}
	w.loseAnswers(la)
	w.srv.Fail("apikeys.DeleteKey", 1, fake.Fault{Code: codes.PermissionDenied})
	_, err := w.rotate(rotate.Options{})
	if !errors.Is(err, rotate.ErrStoppedPartWay) || strings.Contains(err.Error(), "taken over") {
		t.Fatalf("Rotate with a fault at DeleteKey = %v, want ErrStoppedPartWay, not a lost lease", err)
	}
	if la.n() != 1 {
		t.Fatalf("answers lost = %d, want 1 (the release)", la.n())
	}
	if strings.Contains(w.logs.String(), "could not release") {
		t.Errorf("the run warned that its landed release failed:\n%s", w.logs)
	}
	if rec := w.record(); rec == nil || rec.Holder != (rotate.Holder{}) {
		t.Errorf("record after the stop = %+v, want the rotation's, released", rec)
	}
	w.invariant()
	w.srv.ClearFaults()
	w.resumes("the stop")
	w.rotatedOnce()
}

// TestLostAnswerOfRestore: an abort whose old key no longer works puts the
// rotation's record back; that write lands with its answer lost. The abort
// fails as with no fault, leaving the rotation to finish.
func TestLostAnswerOfRestore(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.stopAt("secretmanager.UpdateSecret", 2)
	w.srv.SuspendKey(w.oldName)
	la := &lostAnswers{lose: func(req *secretmanagerpb.UpdateSecretRequest) bool {
		rec := sentRecord(t, req)
		return rec != nil && rec.Kind != rotate.KindAbort && rec.Holder.Run == ""
	}}
	w.loseAnswers(la)
	_, err := w.r.Abort(context.Background(), w.slot)
	var ne *rotate.NextError
	if err == nil || strings.Contains(err.Error(), "restoring the rotation record") || !errors.As(err, &ne) || ne.Next.Action != rotate.NextFinishRotation {
		t.Fatalf("Abort with a dead old key and the restore's answer lost = %v, want the rotation left to finish", err)
	}
	if la.n() != 1 {
		t.Fatalf("answers lost = %d, want 1 (the restore)", la.n())
	}
	rec := w.secret().Annotations[recordAnn]
	if !strings.Contains(rec, `"phase":"distributed"`) || strings.Contains(rec, `"kind":"abort"`) {
		t.Errorf("record after the failed abort = %s, want the rotation's, released", rec)
	}
	w.resumes("the failed abort")
}

// resumes runs a rotation that must resume the one left after what.
func (w *world) resumes(after string) {
	w.t.Helper()
	res, err := w.rotate(rotate.Options{})
	if err != nil || !res.Resumed {
		w.t.Fatalf("Rotate after %s = %+v, %v; want the rotation resumed", after, res, err)
	}
}

// TestLostAnswerNotATakeover: a write of the record that fails its
// compare-and-swap because another run wrote the secret is still a lost
// lease, even when the secret looks much like what the run's own write
// would have left. Each case makes one check the only thing that tells.
func TestLostAnswerNotATakeover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// other writes the secret as another run, before the run's
		// write of the record that pick selects; skew moves the run's
		// clock.
		pick  func(rec *rotate.Record) bool
		other func(w *world, c *secretmanager.Client, req *secretmanagerpb.UpdateSecretRequest, skew *atomic.Int64)
	}{
		{
			// Another run holds the record when the run unlocks.
			"unlock meets another run's record",
			func(rec *rotate.Record) bool { return rec == nil },
			func(w *world, c *secretmanager.Client, _ *secretmanagerpb.UpdateSecretRequest, _ *atomic.Int64) {
				w.writeAs(c, withRecord(w, thiefRecord(w)), nil)
			},
		},
		{
			// Our lease expired; another run took over, finished the
			// same way and cleared: the secret is what our clear would
			// have left, but the expiry says another run may have left it.
			"record gone after the lease expired",
			func(rec *rotate.Record) bool { return rec == nil },
			func(w *world, c *secretmanager.Client, req *secretmanagerpb.UpdateSecretRequest, skew *atomic.Int64) {
				w.writeAs(c, req.GetSecret().GetAnnotations(), req.GetSecret().GetVersionAliases())
				skew.Store(int64(2 * w.slot.LeaseTTL))
			},
		},
		{
			// The record was removed while our lease was live, but not by
			// our clear: the version aliases it set are not there.
			"record gone without the unlock's aliases",
			func(rec *rotate.Record) bool { return rec == nil },
			func(w *world, c *secretmanager.Client, req *secretmanagerpb.UpdateSecretRequest, _ *atomic.Int64) {
				w.writeAs(c, req.GetSecret().GetAnnotations(), map[string]int64{})
			},
		},
		{
			// The record was removed while our lease was live, but not by
			// our clear: the annotations it set are not there.
			"record gone without the unlock's annotations",
			func(rec *rotate.Record) bool { return rec == nil },
			func(w *world, c *secretmanager.Client, req *secretmanagerpb.UpdateSecretRequest, _ *atomic.Int64) {
				ann := maps.Clone(w.secret().GetAnnotations())
				delete(ann, recordAnn)
				w.writeAs(c, ann, req.GetSecret().GetVersionAliases())
			},
		},
		{
			"progress write meets another run's record",
			func(rec *rotate.Record) bool { return rec != nil && rec.Phase == rotate.PhaseDistributed },
			func(w *world, c *secretmanager.Client, _ *secretmanagerpb.UpdateSecretRequest, _ *atomic.Int64) {
				w.writeAs(c, withRecord(w, thiefRecord(w)), nil)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each case has its own emulator
			w := newWorld(t)
			var skew atomic.Int64
			w.r.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
			la := &lostAnswers{}
			var plain *secretmanager.Client
			var once sync.Once
			la.before = func(req *secretmanagerpb.UpdateSecretRequest) {
				if rec := sentRecord(t, req); tc.pick(rec) && (rec == nil || rec.Holder.Run != "thief") {
					once.Do(func() { tc.other(w, plain, req, &skew) })
				}
			}
			la.lose = func(req *secretmanagerpb.UpdateSecretRequest) bool { return false }
			plain = w.loseAnswers(la)
			res, err := w.rotate(rotate.Options{})
			if !errors.Is(err, rotate.ErrStoppedPartWay) || !errors.Is(err, rotate.ErrRotationInProgress) || !strings.Contains(err.Error(), "taken over") {
				t.Fatalf("Rotate after another run wrote the secret = %+v, %v; want the lease lost", res, err)
			}
			if !strings.HasPrefix(tc.name, "record gone") {
				if rec := w.record(); rec == nil || rec.Holder.Run != "thief" {
					t.Errorf("record after the run = %+v, want the other run's left alone", rec)
				}
			}
			w.invariant()
		})
	}
}

// thiefRecord is the world's current record taken over by another run.
func thiefRecord(w *world) *rotate.Record {
	rec := w.record()
	if rec == nil {
		w.t.Fatal("no record to take over")
	}
	rec.Holder = rotate.Holder{Host: "other-host", PID: 99, ProcStart: "1", Run: "thief"}
	rec.Expires = time.Now().Add(time.Hour).UTC()
	return rec
}

// withRecord is the secret's annotations with rec as its record.
func withRecord(w *world, rec *rotate.Record) map[string]string {
	b, err := json.Marshal(rec)
	if err != nil {
		w.t.Fatal(err)
	}
	ann := maps.Clone(w.secret().GetAnnotations())
	if ann == nil {
		ann = map[string]string{}
	}
	ann[recordAnn] = string(b)
	return ann
}

// TestReleaseMeetsAnotherRun: a release refused because another run took
// the record over leaves that run's record alone (and says the lease was
// not released) rather than taking the refusal for its own landed write.
func TestReleaseMeetsAnotherRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var plain *secretmanager.Client
	var once sync.Once
	la := &lostAnswers{before: func(req *secretmanagerpb.UpdateSecretRequest) {
		if rec := sentRecord(t, req); rec != nil && rec.Holder.Run == "" {
			once.Do(func() { w.writeAs(plain, withRecord(w, thiefRecord(w)), nil) })
		}
	}}
	plain = w.loseAnswers(la)
	w.srv.Fail("apikeys.DeleteKey", 1, fake.Fault{Code: codes.PermissionDenied})
	if _, err := w.rotate(rotate.Options{}); !errors.Is(err, rotate.ErrStoppedPartWay) {
		t.Fatalf("Rotate with a fault at DeleteKey = %v, want ErrStoppedPartWay", err)
	}
	if rec := w.record(); rec == nil || rec.Holder.Run != "thief" {
		t.Errorf("record after the stop = %+v, want the other run's left alone", rec)
	}
	if !strings.Contains(w.logs.String(), "could not release") || !strings.Contains(w.logs.String(), "taken over") {
		t.Errorf("the run did not say its lease was taken over before its release:\n%s", w.logs)
	}
	w.invariant()
}
