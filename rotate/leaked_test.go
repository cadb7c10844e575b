package rotate_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

func TestLeakedCurrentKey(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	slots := []*rotate.Slot{w.slot}
	leak, err := w.r.FindLeak(ctx, secret.New(w.oldKey), slots)
	w.noLeaks(nil, err)
	if err != nil {
		t.Fatal(err)
	}
	want := &rotate.Leak{Key: w.oldName, Project: "projects/424242424242", Fingerprint: secret.Fingerprint(w.oldKey),
		DisplayName: "Gemini (prod)", Slot: "gemini-prod", Role: "current",
		HeldBy: []string{"secretmanager:" + w.slot.Secret, w.slot.Targets[0].String()}}
	if diff := cmp.Diff(want, leak); diff != "" {
		t.Errorf("FindLeak (-want +got):\n%s", diff)
	}
	w.slot.Grace = 24 * time.Hour // the slot's grace does not apply to a leak
	resp, err := w.r.RespondToLeak(ctx, leak, w.slot)
	w.noLeaks(resp.Rotation, err)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := w.srv.Key(w.oldName); k.DeleteTime == "" {
		t.Errorf("leaked key not deleted")
	}
	if live := w.liveKeys(); len(live) != 1 || live[0].KeyString != w.envValue() || w.latest() != live[0].KeyString {
		t.Errorf("want one live key, in the secret and the .env")
	}
}

func TestLeakedOldKeyInGrace(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	g := 24 * time.Hour
	if _, err := w.rotate(rotate.Options{Grace: &g}); err != nil {
		t.Fatal(err)
	}
	leak, err := w.r.FindLeak(ctx, secret.New(w.oldKey), []*rotate.Slot{w.slot})
	if err != nil {
		t.Fatal(err)
	}
	if leak.Role != "old" || leak.Slot != "gemini-prod" || leak.DeleteAfter == nil || len(leak.HeldBy) != 0 {
		t.Fatalf("FindLeak = %+v, want an old key in grace, held nowhere", leak)
	}
	w.srv.ResetCalls()
	resp, err := w.r.RespondToLeak(ctx, leak, w.slot)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rotation != nil {
		t.Errorf("rotated although no place held the leaked old key")
	}
	if k, _ := w.srv.Key(w.oldName); k.DeleteTime == "" {
		t.Errorf("leaked old key not deleted")
	}
	if n := w.srv.Calls("apikeys.CreateKey"); n != 0 {
		t.Errorf("CreateKey calls = %d, want 0", n)
	}
	if _, ok := w.secret().Annotations["keyrotate.pending"]; ok {
		t.Errorf("the deleted key is still indexed as pending")
	}
}

func TestRevoke(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.r.Revoke(ctx, w.oldName, []*rotate.Slot{w.slot}); !errors.Is(err, rotate.ErrKeyInUse) {
		t.Fatalf("Revoke of the current key = %v, want a refusal", err)
	}
	if k, _ := w.srv.Key(w.oldName); k.DeleteTime != "" {
		t.Fatalf("the current key was deleted")
	}
	info, err := w.r.Revoke(ctx, w.oldName, nil)
	if err != nil || !info.Deleted {
		t.Fatalf("Revoke without slots = %+v, %v", info, err)
	}
}
