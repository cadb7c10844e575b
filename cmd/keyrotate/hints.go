package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/verify"
)

// The library states facts (a typed error, a finding); these turn them into
// the keyrotate command that fixes the situation. errhint.Replace puts the
// command in place of the library's hint, which says what is wrong.

// holderOf describes the run of a held slot: what it does, its process and
// since when.
func holderOf(rec *rotate.Record) string {
	h := rec.Holder
	kind := rec.Kind
	if kind == "" {
		kind = rotate.KindRotate
	}
	s := fmt.Sprintf("%s %s is running on host %s as pid %d (run %s, started %s; its lease, renewed while it runs, lasts until %s)",
		kind, rec.ID, h.Host, h.PID, h.Run, rec.Started.Format(time.RFC3339), rec.Expires.Format(time.RFC3339))
	if where := h.Elsewhere(); where != "" {
		s += "; it runs " + where
	}
	return s
}

// heldHint gives err, when another live run holds the slot, a hint that
// names that run and what to do instead of cmd (e.g. "abort gemini-prod"):
// stop it with SIGTERM — keyrotate stops at a safe point and releases the
// slot (see stop.go) — and then run cmd, or wait for it.
func heldHint(err error, cmd string) error {
	var held *rotate.HeldError
	if !errors.As(err, &held) {
		return err
	}
	rec := &held.Record
	stop := fmt.Sprintf("stop it with `kill -TERM %d` on host %s (keyrotate stops at a safe point and releases the slot)", rec.Holder.PID, rec.Holder.Host)
	if rec.Holder.Elsewhere() != "" {
		stop = fmt.Sprintf("stop it with `kill -TERM %d` from within its container or pid namespace on host %s "+
			"(keyrotate stops at a safe point and releases the slot)", rec.Holder.PID, rec.Holder.Host)
	}
	return errhint.Replace(err, fmt.Sprintf("%s. To %s instead: %s, then run `keyrotate %s`; or wait for it to finish",
		holderOf(rec), verbOf(cmd), stop, cmd))
}

func verbOf(cmd string) string {
	for i := range len(cmd) {
		if cmd[i] == ' ' {
			return cmd[:i]
		}
	}
	return cmd
}

// repairHint names the command for what stopped a repair of slot.
func repairHint(err error, slot string) error {
	var unf *rotate.UnfinishedError
	switch {
	case errors.As(err, &unf) && unf.Kind() == rotate.KindRotate:
		return errhint.Replace(err, fmt.Sprintf("nothing was changed; `keyrotate rotate --slot %s` resumes the rotation, which writes the new key to every target "+
			"(or `keyrotate abort %s` undoes it and puts the old key back everywhere)", slot, slot))
	case errors.As(err, &unf):
		return errhint.Replace(err,
			fmt.Sprintf("nothing was changed; `keyrotate %s %s` finishes the %s, which writes its key to every target", unf.Kind(), slot, unf.Kind()))
	case errors.Is(err, rotate.ErrKeyDead):
		return errhint.Replace(err, fmt.Sprintf("nothing was written: the current key does not work. "+
			"`keyrotate doctor` diagnoses it; `keyrotate rotate --slot %s --now` makes a new key and writes it to every place", slot))
	}
	return heldHint(err, "repair --slot "+slot)
}

// driftHint names the command that fixes drift on slot: repair, or the
// resume of the rotation in progress (which rewrites every target).
func driftHint(slot string, inProgress bool) string {
	if inProgress {
		return fmt.Sprintf("`keyrotate rotate --slot %s` resumes the rotation in progress, which writes the new key to every target", slot)
	}
	return fmt.Sprintf("`keyrotate repair --slot %s` writes the current key back into the drifted targets (no new key); "+
		"`keyrotate rotate --slot %s --now` replaces the key everywhere instead", slot, slot)
}

// rotateHeldHint: a rotate that found the slot held by another live run
// can wait for it instead of exit 4.
func rotateHeldHint(err error, slot string) error {
	var held *rotate.HeldError
	if !errors.As(err, &held) {
		return err
	}
	return errhint.Replace(err, fmt.Sprintf("%s. Run `keyrotate rotate --slot %s --wait-for-lease %s` to wait for it and report its outcome, or let it finish",
		holderOf(&held.Record), slot, waitFor(held.Record)))
}

// waitFor suggests a --wait-for-lease that outlasts the holder's lease as
// it stands, rounded up to a minute.
func waitFor(rec rotate.Record) string {
	d := time.Until(rec.Expires) + time.Minute
	if d < time.Minute {
		d = time.Minute
	}
	return strings.TrimSuffix((d.Truncate(time.Minute)).String(), "0s")
}

// commandHint is the hint of err with the library's words for what
// resolves it (a rotate.NextError's hint) replaced by the command that does
// it, where the outer hints repeat them.
func commandHint(err error) string {
	h := errhint.Of(err)
	var ne *rotate.NextError
	if h != "" && errors.As(err, &ne) {
		h = strings.Replace(h, ne.Hint(), nextErrorHint(ne), 1)
	}
	return probeHint(err, h)
}

// suspendedHint is what to do about a key Google suspended, with the
// command that does it.
const suspendedHint = "the key was suspended, typically because it leaked: replace it now with `keyrotate rotate --leaked` (the key on stdin)"

// probeHint is h with a failed probe's words for what fixes it (the hint of
// a verify.ProbeError in err) replaced by the command that does it.
func probeHint(err error, h string) string {
	var pe *verify.ProbeError
	if !errors.As(err, &pe) || pe.Cause != verify.CauseSuspended {
		return h
	}
	return strings.Replace(h, pe.Hint(), suspendedHint, 1)
}

// nextErrorHint is the hint of ne with its command: the hints inside it
// (with their commands), then its own.
func nextErrorHint(ne *rotate.NextError) string {
	n := ne.Next
	var h string
	switch n.Action {
	case rotate.NextResume:
		h = ne.Safe + "; run `keyrotate rotate --slot " + n.Slot + "` again to resume, or `keyrotate abort " + n.Slot + "` to undo"
		if n.Kind != rotate.KindRotate {
			h = fmt.Sprintf("%s; run `keyrotate %s %s` again to finish", ne.Safe, n.Kind, n.Slot)
		}
	case rotate.NextFinishFirst:
		h = fmt.Sprintf("%s: `keyrotate %s %s`", ne.Safe, n.Kind, n.Slot)
	case rotate.NextFinishOrUndoFirst:
		h = fmt.Sprintf("finish it with `keyrotate rotate --slot %s` or undo it with `keyrotate abort %s` first", n.Slot, n.Slot)
	case rotate.NextFinishRotation:
		h = fmt.Sprintf("%s; finish it with `keyrotate rotate --slot %s`", ne.Safe, n.Slot)
	case rotate.NextDiagnose:
		h = "the secret does not hold a live API key: run `keyrotate doctor` on it, or name the key with `key:`"
	case rotate.NextReplaceFirst:
		h = "deleting it would break every place that uses it: `keyrotate rotate --leaked` (key on stdin) or " +
			"`keyrotate rotate --slot " + n.Slot + " --now` replaces it first"
	case rotate.NextMoreTime:
		h = "the run ended (its --timeout, or interrupted) before this slot's turn; " +
			"nothing was changed: run again, with a larger --parallel or --timeout for a fleet this size"
	case rotate.NextOrAbort:
		h = ne.Safe + ", or `keyrotate abort`"
	case rotate.NextNameKey:
		h = ne.Safe + " with --to projects/P/locations/global/keys/K"
	default:
		return ne.Hint()
	}
	return errhint.Join(commandHint(ne.Err), h)
}

// nextHint words a finding's next step (a rotation left unfinished, an old
// key due for deletion) as the command that takes it.
func nextHint(n rotate.Next) string {
	switch {
	case n.Action == rotate.NextResume && n.Kind == rotate.KindRotate:
		return fmt.Sprintf("run `keyrotate rotate --slot %s` to resume it, or `keyrotate abort %s` to undo it", n.Slot, n.Slot)
	case n.Action == rotate.NextResume:
		return fmt.Sprintf("run `keyrotate %s %s` again to finish it", n.Kind, n.Slot)
	case n.Action == rotate.NextFinalize && n.Slot != "":
		return fmt.Sprintf("`keyrotate finalize --slot %s` deletes it", n.Slot)
	case n.Action == rotate.NextFinalizeWhenQuiet && n.Slot != "":
		return fmt.Sprintf("find what still calls with the old key and move it to the new key (the secret holds it); "+
			"`keyrotate finalize --slot %s` deletes the old key once it has been quiet, `keyrotate finalize --slot %s --force` at once", n.Slot, n.Slot)
	}
	return ""
}
