package rotate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// junkKey is a value that looks like a key but is none.
const junkKey = "AIzaSyD-not-a-key-of-any-project-000000"

// status runs Status and checks that it wrote nothing and leaked nothing.
func (w *world) status() *rotate.SlotStatus {
	w.t.Helper()
	w.srv.ResetCalls()
	st, err := w.r.Status(context.Background(), w.slot)
	if err != nil {
		w.t.Fatalf("Status: %v", err)
	}
	w.readOnly("Status", st)
	return st
}

// verify runs Verify and checks that it wrote nothing and leaked nothing.
func (w *world) verify() *rotate.HealthReport {
	w.t.Helper()
	w.srv.ResetCalls()
	v, err := w.r.CheckHealth(context.Background(), w.slot)
	if err != nil {
		w.t.Fatalf("CheckHealth: %v", err)
	}
	w.readOnly("Verify", v, v.Err(), errhint.Of(v.Err()))
	return v
}

func (w *world) readOnly(what string, outs ...any) {
	w.t.Helper()
	if n := w.srv.MutatingCalls(); n != 0 {
		w.t.Errorf("%s made %d mutating calls: %v", what, n, w.srv.CallCounts())
	}
	var sinks []string
	for _, o := range outs {
		b, _ := json.Marshal(o)
		sinks = append(sinks, string(b), fmt.Sprintf("%+v %#v", o, o))
	}
	sinks = append(sinks, w.logs.String())
	strs := []string{junkKey}
	for _, k := range w.srv.Keys(project, true) {
		strs = append(strs, k.KeyString)
	}
	for _, s := range strs {
		for _, sink := range sinks {
			if strings.Contains(sink, s) {
				w.t.Fatalf("%s: a key string leaked into its output: %s", what, sink)
			}
		}
	}
}

// putInEnv writes value as the .env's key, as a person editing it would.
func (w *world) putInEnv(value string) {
	w.t.Helper()
	text := strings.Replace(w.envText, w.oldKey, value, 1)
	if err := os.WriteFile(w.envPath, []byte(text), 0o640); err != nil {
		w.t.Fatal(err)
	}
}

func checkOf(v *rotate.HealthReport, check string) rotate.HealthCheck {
	for _, c := range v.Checks {
		if c.Check == check {
			return c
		}
	}
	return rotate.HealthCheck{}
}

func TestStatusHealthy(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	st := w.status()
	k := st.Current
	if k.Name != w.oldName || k.Fingerprint != secret.Fingerprint(w.oldKey) || k.UID == "" || k.DisplayName != "Gemini (prod)" {
		t.Errorf("current key = %+v, want %s %s", k, w.oldName, secret.Fingerprint(w.oldKey))
	}
	if k.Type != "auth key" || k.ServiceAccount != sa {
		t.Errorf("type = %q bound to %q, want an auth key bound to %s", k.Type, k.ServiceAccount, sa)
	}
	if len(k.Restrictions) == 0 || k.Restrictions[0] != "api generativelanguage.googleapis.com" {
		t.Errorf("restrictions = %q", k.Restrictions)
	}
	if st.Due || !st.DueAt.Equal(k.Created.Add(w.slot.MaxAge)) || st.Age < 0 || st.Age > time.Minute {
		t.Errorf("due = %v at %v, age %v; want not due, at created+90d", st.Due, st.DueAt, st.Age)
	}
	if st.Drift || len(st.Targets) != 1 || st.Targets[0].Holds != rotate.HoldsCurrent || st.Targets[0].Fingerprint != k.Fingerprint {
		t.Errorf("targets = %+v, want one holding the current key", st.Targets)
	}
	if len(st.OldKeys) != 0 || st.Rotation != nil {
		t.Errorf("old keys %v, rotation %v; want none", st.OldKeys, st.Rotation)
	}

	v := w.verify()
	if !v.Healthy || v.Err() != nil {
		t.Fatalf("Verify = %+v, %v; want healthy", v, v.Err())
	}
	if c := checkOf(v, "key"); c.Status != rotate.CheckOK || !strings.Contains(c.Subject, w.oldName) {
		t.Errorf("key check = %+v", c)
	}
	if c := checkOf(v, "target"); c.Status != rotate.CheckOK || c.Subject != w.slot.Targets[0].String() {
		t.Errorf("target check = %+v", c)
	}
	if n := w.srv.Calls("gemini.CountTokens"); n != 1 {
		t.Errorf("Verify probed %d times, want once", n)
	}

	w.slot.Prober = nil // verify: none
	if c := checkOf(w.verify(), "key"); c.Status != rotate.CheckSkipped {
		t.Errorf("key check with verify: none = %+v, want skipped", c)
	}
}

// TestStatusDrift: a target that holds anything but the current key is
// drift, named with what it holds, and fails Verify.
func TestStatusDrift(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		grace  time.Duration
		value  func(*world) string
		holds  string
		detail string
	}{
		{"old key in grace", 24 * time.Hour, func(w *world) string { return w.oldKey }, rotate.HoldsOld, "stops working when finalize deletes it"},
		{"deleted old key", 0, func(w *world) string { return w.oldKey }, rotate.HoldsOther, "deleted at"},
		{"not a key", 0, func(*world) string { return junkKey }, rotate.HoldsOther, "not a live API key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			g := tc.grace
			res, err := w.rotate(rotate.Options{Grace: &g})
			if err != nil {
				t.Fatal(err)
			}
			w.putInEnv(tc.value(w))
			st := w.status()
			if !st.Drift || len(st.Targets) != 1 {
				t.Fatalf("Status = %+v, want drift", st)
			}
			tg := st.Targets[0]
			if tg.Holds != tc.holds || !tg.Drift || !strings.Contains(tg.Detail, tc.detail) || tg.Fingerprint != secret.Fingerprint(tc.value(w)) {
				t.Errorf("target = %+v, want it to hold the %s (%q)", tg, tc.holds, tc.detail)
			}
			if st.Current.Fingerprint != res.NewKey.Fingerprint {
				t.Errorf("current key = %s, want the new key %s", st.Current.Fingerprint, res.NewKey.Fingerprint)
			}
			if tc.value(w) == w.oldKey && tg.Key != w.oldName {
				t.Errorf("target's key = %q, want %s", tg.Key, w.oldName)
			}

			v := w.verify()
			err = v.Err()
			if v.Healthy || !errors.Is(err, rotate.ErrDrift) || errors.Is(err, rotate.ErrKeyDead) {
				t.Fatalf("Verify = %+v, %v; want drift alone", v, err)
			}
			for _, want := range []string{w.slot.Targets[0].String(), tg.Fingerprint, res.NewKey.Fingerprint} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Verify error %q does not name %s", err, want)
				}
			}
			// The library reports the finding; the command that fixes it
			// (repair) is the CLI's to name (cmd/keyrotate nameFixes).
			if c := checkOf(v, "target"); !c.Drift || strings.Contains(c.Hint, "keyrotate") || strings.Contains(errhint.Of(err), "keyrotate") {
				t.Errorf("target check = %+v, hint %q; want Drift set and no command named", c, errhint.Of(err))
			}
		})
	}
}

func TestStatusGraceOldKeys(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	g := 24 * time.Hour
	res, err := w.rotate(rotate.Options{Grace: &g})
	if err != nil {
		t.Fatal(err)
	}
	st := w.status()
	if st.Drift || st.Targets[0].Holds != rotate.HoldsCurrent {
		t.Errorf("targets = %+v, want the new key everywhere", st.Targets)
	}
	if len(st.OldKeys) != 1 {
		t.Fatalf("old keys = %+v, want the kept one", st.OldKeys)
	}
	o := st.OldKeys[0]
	if o.Name != w.oldName || o.Fingerprint != secret.Fingerprint(w.oldKey) || !o.DeleteAfter.Equal(*res.DeleteAfter) || o.Due {
		t.Errorf("old key = %+v, want %s kept until %s", o, w.oldName, res.DeleteAfter)
	}
	if c := checkOf(w.verify(), "old key"); c.Status != "" {
		t.Errorf("a kept old key not yet due gives a check: %+v", c)
	}

	// Without the secret's index, the key's own annotation still shows it.
	sec := w.secret()
	delete(sec.Annotations, "keyrotate.pending")
	if err := w.updateSecret(&secretmanagerpb.UpdateSecretRequest{
		// Only what the mask writes (and the etag): the rest of a read
		// secret is output-only or not written.
		Secret:     &secretmanagerpb.Secret{Name: sec.GetName(), Etag: sec.GetEtag(), Annotations: sec.GetAnnotations()},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}},
	}); err != nil {
		t.Fatal(err)
	}
	// Past the grace period, it is due.
	w.r.Now = func() time.Time { return time.Now().Add(g + time.Hour) }
	st = w.status()
	if len(st.OldKeys) != 1 || st.OldKeys[0].Name != w.oldName || !st.OldKeys[0].Due || !st.OldKeys[0].DeleteAfter.Equal(*res.DeleteAfter) {
		t.Fatalf("old keys = %+v, want %s due", st.OldKeys, w.oldName)
	}
	v := w.verify()
	if c := checkOf(v, "old key"); c.Status != rotate.CheckWarn || c.Then != (rotate.Next{Action: rotate.NextFinalize, Slot: w.slot.Name}) {
		t.Errorf("old key check = %+v, want a warning naming finalize", c)
	}
	if !v.Healthy {
		t.Errorf("a due old key made the slot unhealthy: %v", v.Err())
	}
}

func TestStatusRotationInProgress(t *testing.T) {
	t.Parallel()
	t.Run("stopped part-way", func(t *testing.T) {
		w := newWorld(t)
		w.srv.Fail("apikeys.DeleteKey", 1, fake.Fault{Code: codes.PermissionDenied})
		if _, err := w.rotate(rotate.Options{}); !errors.Is(err, rotate.ErrStoppedPartWay) {
			t.Fatalf("Rotate = %v, want ErrStoppedPartWay", err)
		}
		st := w.status()
		rs := st.Rotation
		if rs == nil || rs.Kind != rotate.KindRotate || rs.Phase != rotate.PhaseDistributed || rs.OldKey != w.oldName || rs.ID == "" {
			t.Fatalf("rotation = %+v, want the stopped one in phase distributed", rs)
		}
		resume := rotate.Next{Action: rotate.NextResume, Slot: "gemini-prod", Kind: rotate.KindRotate}
		if rs.Lease != "released" || rs.Holder.Run != "" || rs.Then != resume {
			t.Errorf("lease = %q held by %v, then %+v; want released, resume (%+v)", rs.Lease, rs.Holder, rs.Then, resume)
		}
		if st.Drift || st.Targets[0].Holds != rotate.HoldsNew || st.Targets[0].Key != rs.NewKey {
			t.Errorf("target = %+v, want the new key of the rotation (no drift)", st.Targets[0])
		}
		if st.Current.Name != w.oldName {
			t.Errorf("current key = %s, want the old key until the rotation finishes", st.Current.Name)
		}
		v := w.verify()
		if !v.Healthy || v.Key.Name != rs.NewKey {
			t.Errorf("Verify = %+v (%v), want healthy, probing the new key", v, v.Err())
		}
		// Resume names abort as the alternative (cmd/keyrotate words it).
		resume = rotate.Next{Action: rotate.NextResume, Slot: w.slot.Name, Kind: rotate.KindRotate}
		if c := checkOf(v, "rotation"); c.Status != rotate.CheckWarn || c.Then != resume {
			t.Errorf("rotation check = %+v", c)
		}
	})
	t.Run("before distribution", func(t *testing.T) {
		w := newWorld(t)
		w.srv.Fail("secretmanager.AddSecretVersion", 1, fake.Fault{Code: codes.PermissionDenied})
		if _, err := w.rotate(rotate.Options{}); !errors.Is(err, rotate.ErrStoppedPartWay) {
			t.Fatalf("Rotate = %v, want ErrStoppedPartWay", err)
		}
		st := w.status()
		if st.Rotation == nil || st.Drift || st.Targets[0].Holds != rotate.HoldsCurrent {
			t.Errorf("Status = %+v rotation %+v", st, st.Rotation)
		}
		if len(st.OldKeys) != 0 {
			t.Errorf("the rotation's new key is listed as an old key: %+v", st.OldKeys)
		}
	})
	t.Run("live lease", func(t *testing.T) {
		w := newWorld(t)
		exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		rec := `{"id":"20261130000000-aaaaaaaa","slot":"gemini-prod","phase":"locked","old_key":"` + w.oldName +
			`","new_key_id":"gemini-prod-20261130000000-aaaaaaaa","holder":{"host":"other-host","pid":7,"run":"x"},"expires":"` +
			exp.Format(time.RFC3339) + `"}`
		sec := w.secret()
		sec.Annotations["keyrotate.rotation"] = rec
		if err := w.updateSecret(&secretmanagerpb.UpdateSecretRequest{
			// Only what the mask writes (and the etag): the rest of a read
			// secret is output-only or not written.
			Secret:     &secretmanagerpb.Secret{Name: sec.GetName(), Etag: sec.GetEtag(), Annotations: sec.GetAnnotations()},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}},
		}); err != nil {
			t.Fatal(err)
		}
		rs := w.status().Rotation
		if rs == nil || rs.Lease != "live" || rs.Holder.Host != "other-host" || !rs.Expires.Equal(exp) || !strings.Contains(rs.Next, "wait") {
			t.Errorf("rotation = %+v, want a live lease held by other-host until %s", rs, exp)
		}
		if c := checkOf(w.verify(), "rotation"); !strings.Contains(c.Message, "other-host") {
			t.Errorf("rotation check = %+v, want the holder named", c)
		}
	})
}

func TestVerifyDeadKey(t *testing.T) {
	t.Parallel()
	t.Run("suspended", func(t *testing.T) {
		w := newWorld(t)
		w.srv.SuspendKey(w.oldName)
		v := w.verify()
		err := v.Err()
		if v.Healthy || !errors.Is(err, rotate.ErrKeyDead) || errors.Is(err, rotate.ErrDrift) {
			t.Fatalf("Verify = %+v, %v; want a dead key", v, err)
		}
		if !strings.Contains(err.Error(), w.oldName) || !strings.Contains(err.Error(), "CONSUMER_SUSPENDED") {
			t.Errorf("error %q does not name the key and the cause", err)
		}
		// The fix (doctor, rotate --now) is named by the CLI (nameFixes,
		// verify_cmd_dead.txtar); the library marks the check Dead and
		// keeps the probe's own hint.
		if c := checkOf(v, "key"); !c.Dead || !strings.Contains(c.Hint, "suspended") {
			t.Errorf("key check = %+v, want Dead with the probe's hint", c)
		}
		if c := checkOf(v, "target"); c.Status != rotate.CheckOK {
			t.Errorf("target check = %+v: the target holds the current key, dead or not", c)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		w := newWorld(t)
		if _, err := w.r.Keys.Projects.Locations.Keys.Delete(w.oldName).Do(); err != nil {
			t.Fatal(err)
		}
		if k, _ := w.srv.Key(w.oldName); k.DeleteTime == "" {
			t.Fatal("key not deleted")
		}
		if _, err := w.r.Status(context.Background(), w.slot); !errors.Is(err, rotate.ErrKeyNotFound) {
			t.Errorf("Status = %v, want ErrKeyNotFound", err)
		}
		v := w.verify()
		err := v.Err()
		if v.Healthy || !errors.Is(err, rotate.ErrKeyDead) {
			t.Fatalf("Verify = %+v, %v; want a dead key", v, err)
		}
		if !strings.Contains(err.Error(), w.oldName) || !strings.Contains(err.Error(), "deleted") {
			t.Errorf("error %q does not name the deleted key", err)
		}
		if h := errhint.Of(err); !strings.Contains(h, "undelete") {
			t.Errorf("hint = %q, want undelete", h)
		}
	})
}
