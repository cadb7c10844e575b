package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// TestReadLocalTargets: the file targets are built and read once, before
// any client exists, and the job keeps the targets it read (a write
// compares with that read); targets in a service are left to the clients.
func TestReadLocalTargets(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, ".env")
	if err := os.WriteFile(env, []byte("GEMINI_API_KEY=old-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	slot := &config.Slot{Name: "a", Targets: []config.Target{
		{Type: config.TargetSecretManager, Secret: "projects/p/secrets/other"},
		{Type: config.TargetDotEnv, Path: env, Var: "GEMINI_API_KEY"},
	}}
	local, err := readLocalTargets(context.Background(), []*config.Slot{slot})
	if err != nil {
		t.Fatalf("readLocalTargets: %v", err)
	}
	if len(local) != 1 || len(local[0]) != 2 {
		t.Fatalf("readLocalTargets = %v, want one slot of two targets", local)
	}
	if local[0][0] != nil {
		t.Errorf("the secretmanager target = %v, want nil (built with the clients)", local[0][0])
	}
	// A file target refuses a write without an earlier read: this one
	// writes, so it is the target that was read.
	if err := local[0][1].Write(context.Background(), secret.New("new-value")); err != nil {
		t.Errorf("Write to the target read by readLocalTargets: %v", err)
	}

	slot.Targets[1].Var = "OTHER_KEY"
	_, err = readLocalTargets(context.Background(), []*config.Slot{slot})
	if !errors.Is(err, rotate.ErrInvalidTarget) || !strings.HasPrefix(err.Error(), "slot a: ") {
		t.Errorf("readLocalTargets with an undefined variable = %v, want slot a: … %v", err, rotate.ErrInvalidTarget)
	}
}
