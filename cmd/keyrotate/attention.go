package main

import (
	"fmt"
	"strings"

	"github.com/keyrotate/keyrotate/rotate"
)

// exitAttention (5): the run rotated, but an old key is still in use (or
// its use is unknown) and was kept: someone must move its caller to the
// new key. A fleet run exits 5 only when no slot failed: any failure's
// code (1 to 4) wins, for it needs attention too and says more.
const exitAttention = 5

// attentionError ends a run whose rotations succeeded but kept old keys
// that the drain gate found in use, or could not check under usage:
// required. Its text names the slots, the keys, and who calls with them.
type attentionError struct {
	results []*rotate.Result
}

// attentionOf returns the attention error of results, nil when none needs
// attention.
func attentionOf(results []*rotate.Result) error {
	var need []*rotate.Result
	for _, r := range results {
		if r.NeedsAttention() {
			need = append(need, r)
		}
	}
	if len(need) == 0 {
		return nil
	}
	return &attentionError{results: need}
}

func (e *attentionError) Error() string {
	var lines []string
	for _, r := range e.results {
		line := fmt.Sprintf("slot %s: rotated, but old key %s was kept: %s", r.Slot, r.OldKey.Name, r.KeptReason)
		if len(r.Drain.Usage) > 0 {
			line += "; calls with it in the last hour: " + usageText(r.Drain.Usage)
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// Hint says what to do next, per slot, with the commands.
func (e *attentionError) Hint() string {
	var hs []string
	for _, r := range e.results {
		h := nextHint(rotate.Next{Action: rotate.NextFinalizeWhenQuiet, Slot: r.Slot})
		if r.Drain.Outcome == rotate.DrainUnknown {
			h = "let keyrotate read Cloud Monitoring (" + r.Drain.Reason + "); then " + h
		}
		if len(e.results) > 1 {
			h = r.Slot + ": " + h
		}
		hs = append(hs, h)
	}
	return strings.Join(hs, "; ")
}

// usageText words a key's calls by service and method for people.
func usageText(rates []rotate.MethodRate) string {
	var parts []string
	for _, m := range rates {
		ok, failed := m.PerMinute()
		s := fmt.Sprintf("%s %s %d ok (%.1f/min)", m.Service, shortMethod(m.Method), m.LastHour.OK, ok)
		if m.LastHour.Error > 0 {
			s += fmt.Sprintf(", %d failed (%.1f/min)", m.LastHour.Error, failed)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}
