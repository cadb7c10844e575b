package rotate

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/errhint"
)

// KeyInfo describes an API key for people: names and a fingerprint only.
type KeyInfo struct {
	Name           string    `json:"name"`
	UID            string    `json:"uid,omitempty"`
	DisplayName    string    `json:"display_name,omitempty"`
	Fingerprint    string    `json:"fingerprint,omitempty"`
	ServiceAccount string    `json:"service_account,omitempty"`
	Type           string    `json:"type"` // "auth key" (bound) or "standard key"
	Created        time.Time `json:"created,omitzero"`
	Restrictions   []string  `json:"restrictions,omitempty"`
	Deleted        bool      `json:"deleted,omitempty"`
	// DeletedAt is when a deleted key was deleted, and RestorableUntil
	// the end of its retention (KeyRetention later): until then UndeleteKey
	// restores it.
	DeletedAt       time.Time `json:"deleted_at,omitzero"`
	RestorableUntil time.Time `json:"restorable_until,omitzero"`
	// Usage is what Cloud Monitoring counted of the key's calls (status
	// and plan with a Monitoring client).
	Usage *KeyUsage `json:"usage,omitempty"`
}

// KeyRetention is how long the API Keys API keeps a deleted key, which
// UndeleteKey restores until then: "API Keys that are deleted will be
// retained in the system for 30 days" (gcloud services api-keys undelete
// reference; the REST reference of keys.undelete: "Undeletes an API key
// which was deleted within 30 days").
const KeyRetention = 30 * 24 * time.Hour

// PlanTarget is one target as preflight found it.
type PlanTarget struct {
	Target      string `json:"target"`
	Fingerprint string `json:"fingerprint"`
	// Holds is "current key", "new key" (of the rotation in progress) or
	// "other key" (drift: rotating overwrites it).
	Holds string `json:"holds"`
}

// Plan is what Rotate would do, learned without any write.
type Plan struct {
	Slot       string       `json:"slot"`
	Secret     string       `json:"secret"`
	Version    string       `json:"current_version,omitempty"`
	Current    KeyInfo      `json:"current_key"`
	Due        bool         `json:"due"`
	DueAt      time.Time    `json:"due_at,omitzero"`
	InProgress *Record      `json:"in_progress,omitempty"`
	Targets    []PlanTarget `json:"targets"`
	// WillRotate is false when rotate would do nothing or refuse; Blocked
	// then says why: for nothing to do, in the very words of the Result's
	// Reason, and Skip names its kind as the Result's Skip does.
	WillRotate bool     `json:"will_rotate"`
	Blocked    string   `json:"blocked,omitempty"`
	Skip       string   `json:"skip,omitempty"`
	Actions    []string `json:"actions"`
	// Checks are what the rotation needs of the caller's access, proved
	// with read-only calls (see gcp.AccessClients; none without them). A
	// missing one makes AccessErr non-nil.
	Checks []AccessCheck `json:"checks"`
	// UsageUnknown says, in one line, why Cloud Monitoring could not tell
	// who uses the current key.
	UsageUnknown string `json:"usage_unknown,omitempty"`
	// Retire is what the rotation will do with the old key, and the
	// policy when Cloud Monitoring cannot answer.
	Retire *RetirePlan `json:"retire,omitempty"`
}

// RetirePlan is what a rotation of a slot does with the old key once every
// target holds the new one (Slot.Retire and its settings).
type RetirePlan struct {
	Mode RetireMode `json:"mode"`
	// GraceSeconds is how long the old key is kept with retire: grace,
	// and what retire: quiet falls back to under usage: best-effort.
	GraceSeconds int64 `json:"grace_seconds"`
	// With retire: quiet, the drain gate's settings: the quiet period,
	// the drain timeout, how old Cloud Monitoring's data must be to count
	// (UsageDelay), and the policy when it cannot answer.
	QuietPeriodSeconds  int64       `json:"quiet_period_seconds,omitempty"`
	DrainTimeoutSeconds int64       `json:"drain_timeout_seconds,omitempty"`
	UsageDelaySeconds   int64       `json:"usage_delay_seconds,omitempty"`
	Usage               UsagePolicy `json:"usage,omitempty"`
	// Summary says it all in one line for people.
	Summary string `json:"summary"`
}

// retireMode is what a rotation of slot with opts does with the old key,
// grace being its grace period: opts.Retire, else RetireGrace when
// opts.Grace is set, else the slot's retire mode; "" is the library's
// default: kept for grace when grace > 0, else deleted at once. Plan and
// Rotate both decide by it.
func retireMode(slot *Slot, opts Options, grace time.Duration) RetireMode {
	switch {
	case opts.Retire != "":
		return opts.Retire
	case opts.Grace != nil:
		return RetireGrace
	case slot.Retire != "":
		return slot.Retire
	case grace > 0:
		return RetireGrace
	}
	return RetireNow
}

// usagePolicy is the slot's usage policy; "" is UsageBestEffort.
func usagePolicy(slot *Slot) UsagePolicy {
	if slot.Usage == "" {
		return UsageBestEffort
	}
	return slot.Usage
}

// retirePlan says what a rotation of slot with grace does with the old key.
func (r *Rotator) retirePlan(slot *Slot, opts Options, grace time.Duration) *RetirePlan {
	rp := &RetirePlan{Mode: retireMode(slot, opts, grace), GraceSeconds: int64(grace / time.Second)}
	switch rp.Mode {
	case RetireQuiet:
		rp.QuietPeriodSeconds, rp.DrainTimeoutSeconds = int64(slot.QuietPeriod/time.Second), int64(slot.DrainTimeout/time.Second)
		rp.UsageDelaySeconds, rp.Usage = int64(r.UsageDelay/time.Second), usagePolicy(slot)
		policy := fmt.Sprintf("best-effort (fall back to grace %s)", human(grace))
		if rp.Usage == UsageRequired {
			policy = "required (keep the old key and stop)"
		}
		rp.Summary = fmt.Sprintf("quiet — delete the old key after %s without successful calls (settled %s), wait up to %s "+
			"(still used then: kept for finalize); if Cloud Monitoring cannot answer: %s",
			human(slot.QuietPeriod), human(r.UsageDelay), human(slot.DrainTimeout), policy)
	case RetireGrace:
		rp.Summary = fmt.Sprintf("grace — keep the old key for %s, then finalize deletes it", human(grace))
	default:
		rp.Summary = "now — delete the old key at once, without reading its usage"
	}
	return rp
}

// Plan runs the read-only preflight and lists what Rotate would do with the
// same options. It makes no write of any kind.
func (r *Rotator) Plan(ctx context.Context, slot *Slot, opts Options) (*Plan, error) {
	pre, err := r.preflight(ctx, slot)
	if err != nil {
		return nil, r.planFailed(ctx, slot, err)
	}
	p := &Plan{Slot: slot.Name, Secret: slot.Secret, Version: pre.latest.Name, InProgress: pre.rec}
	p.Current = describeKey(pre.old, pre.oldName)
	if pre.old != nil {
		p.Current.Fingerprint = pre.oldKey.Fingerprint()
		p.DueAt = pre.dueAt(slot)
	} else if pre.rec != nil {
		p.Current.Fingerprint = pre.rec.OldFP
	}
	p.Due = pre.due(slot, r.now())
	r.addPlanUsage(ctx, p, pre.oldName)
	sa := serviceAccountOf(slot, pre.old)
	p.Checks = r.checkAccess(ctx, slot, sa)
	p.Targets = planTargets(slot, pre, p.Current.Fingerprint)
	grace := slot.Grace
	if opts.Grace != nil {
		grace = *opts.Grace
	}
	p.Retire = r.retirePlan(slot, opts, grace)
	if !r.planDecide(slot, pre, opts, p) {
		return p, nil
	}
	p.Actions = append(p.Actions, planActions(slot, pre, p, sa, grace)...)
	return p, nil
}

// planFailed is Plan's error when the preflight failed with err: an
// AccessError when the access checks, which may explain the failure, find
// something missing (a first run lacks several permissions at once).
func (r *Rotator) planFailed(ctx context.Context, slot *Slot, err error) error {
	checks := r.checkAccess(ctx, slot, slot.ServiceAccount)
	p := &Plan{Slot: slot.Name, Secret: slot.Secret, Blocked: err.Error(), Checks: checks, Targets: []PlanTarget{}, Actions: []string{}}
	if p.AccessErr() != nil {
		return &AccessError{Plan: p, Err: err}
	}
	return err
}

// serviceAccountOf is the service account a new key of slot is bound to:
// the slot's, else the one the current key old is bound to ("" when none).
func serviceAccountOf(slot *Slot, old *apikeys.V2Key) string {
	if slot.ServiceAccount == "" && old != nil {
		return old.ServiceAccountEmail
	}
	return slot.ServiceAccount
}

// planTargets says what each target holds; current is the fingerprint of
// the current key.
func planTargets(slot *Slot, pre *preflight, current string) []PlanTarget {
	var out []PlanTarget
	for i, t := range slot.Targets {
		k := pre.targets[i]
		holds := "other key"
		switch {
		case pre.unreadable[i]:
			holds = "unknown (write-only) key"
		case pre.rec != nil && k.Fingerprint() == pre.rec.NewFP && pre.rec.NewFP != "":
			holds = "new key"
		case k.Fingerprint() == current:
			holds = "current key"
		}
		out = append(out, PlanTarget{Target: t.String(), Fingerprint: k.Fingerprint(), Holds: holds})
	}
	return out
}

// planDecide decides, as Rotate would, whether a rotation runs: it fills
// p's WillRotate, or Blocked (and Skip) with why not. A rotation in
// progress is resumed (the first of p's Actions says so).
func (r *Rotator) planDecide(slot *Slot, pre *preflight, opts Options, p *Plan) bool {
	bindBlocked := ""
	if pre.old != nil {
		bindBlocked = bindErr(slot, pre.old)
	}
	switch {
	case pre.rec != nil && !takeable(pre.rec.Holder, pre.rec.Expires, r.now()):
		p.Blocked = (&HeldError{Record: *pre.rec}).Error() // rotate stops at its lock
	case pre.rec != nil && pre.rec.kind() != KindRotate:
		p.Blocked = (&UnfinishedError{Record: *pre.rec}).Error() // rotate refuses to resume another kind
	case pre.rec != nil:
		p.WillRotate = true
		p.Actions = append(p.Actions, fmt.Sprintf("resume rotation %s (phase %s, lease held by %s until %s)",
			pre.rec.ID, pre.rec.Phase, pre.rec.Holder, pre.rec.Expires.Format(time.RFC3339)))
	case skipOf(r, slot, pre, opts, p):
	case pre.old == nil || !restricted(pre.old.Restrictions):
		p.Blocked = "the current key has no restrictions; keyrotate will not create an unrestricted key"
	case bindBlocked != "":
		p.Blocked = bindBlocked
	default:
		p.WillRotate = true
	}
	return p.WillRotate
}

// planActions lists the steps of the rotation p plans, binding new keys to
// sa and keeping the old key for grace.
func planActions(slot *Slot, pre *preflight, p *Plan, sa string, grace time.Duration) []string {
	bind := "unbound (standard key)"
	if sa != "" {
		bind = "bound to " + sa
		if pre.old != nil && pre.old.ServiceAccountEmail != sa {
			bind += " (migration to an auth key)"
		}
	}
	parent := keyParent(pre.oldName)
	actions := []string{
		fmt.Sprintf("lock the slot with a rotation record on %s (lease %s)", slot.Secret, human(slot.LeaseTTL)),
		fmt.Sprintf("create key %s/keys/%s-<rotation id>: display name %q, restrictions copied, %s", parent, trimSlot(slot.Name), p.Current.DisplayName, bind),
	}
	if slot.Prober != nil {
		actions = append(actions, fmt.Sprintf("probe the new key on the Gemini API%s until it works (at most %s); on failure delete it and stop",
			probeCall(slot.Prober), human(slot.PropagationTimeout)))
	} else {
		actions = append(actions, "skip the live probe (verify: none)")
	}
	actions = append(actions, fmt.Sprintf("add a version holding the new key to %s", slot.Secret))
	for i, t := range p.Targets {
		a := fmt.Sprintf("write the new key to %s (holds the %s)", t.Target, t.Holds)
		if c, ok := slot.Targets[i].(interface{ ConfirmedBy() string }); ok && pre.unreadable[i] {
			a += "; confirmed by " + c.ConfirmedBy()
		}
		actions = append(actions, a)
	}
	actions = append(actions, "read the secret and every target back and compare fingerprints")
	switch mode := p.Retire.Mode; {
	case mode == RetireGrace && grace > 0:
		actions = append(actions, fmt.Sprintf("keep the old key %s for %s (annotated %s for a later finalize)", pre.oldName, human(grace), annDeleteAfter))
	default:
		if mode == RetireQuiet {
			actions = append(actions, fmt.Sprintf("wait until Cloud Monitoring's settled data show no successful call with the old key for %s (at most %s; "+
				"still used then: keep it for finalize)", human(slot.QuietPeriod), human(slot.DrainTimeout)))
		}
		actions = append(actions, fmt.Sprintf("delete the old key %s (soft delete, restorable for 30 days)", pre.oldName))
		if pre.latest.Name != "" {
			actions = append(actions, fmt.Sprintf("disable the old secret version %s", pre.latest.Name))
		}
	}
	return append(actions, "point the version aliases current and previous at the new and old versions, and clear the lock")
}

// skipOf fills p's Skip and Blocked when Rotate with opts would do
// nothing, and reports whether it would.
func skipOf(r *Rotator, slot *Slot, pre *preflight, opts Options, p *Plan) bool {
	p.Skip, p.Blocked = r.skip(slot, pre, opts)
	return p.Skip != ""
}

// bindErr is bindingRestrictions's refusal with its hint, or "".
func bindErr(slot *Slot, old *apikeys.V2Key) string {
	if _, err := bindingRestrictions(slot, old); err != nil {
		return err.Error() + "; " + errhint.Of(err)
	}
	return ""
}

func trimSlot(s string) string {
	if len(s) > 38 {
		return s[:38]
	}
	return s
}

func describeKey(k *apikeys.V2Key, name string) KeyInfo {
	info := KeyInfo{Name: name, Type: "unknown"}
	if k == nil {
		info.Deleted = true
		return info
	}
	info.UID, info.DisplayName, info.ServiceAccount = k.Uid, k.DisplayName, k.ServiceAccountEmail
	info.Created = parseTime(k.CreateTime)
	info.Deleted = k.DeleteTime != ""
	if info.Deleted {
		if t := parseTime(k.DeleteTime); !t.IsZero() {
			info.DeletedAt, info.RestorableUntil = t, t.Add(KeyRetention)
		}
	}
	info.Type = "standard key"
	if k.ServiceAccountEmail != "" {
		info.Type = "auth key"
	}
	info.Restrictions = summarizeRestrictions(k.Restrictions)
	return info
}

func summarizeRestrictions(r *apikeys.V2Restrictions) []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, t := range r.ApiTargets {
		s := "api " + t.Service
		if len(t.Methods) > 0 {
			s += " (" + strings.Join(t.Methods, ", ") + ")"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	if b := r.BrowserKeyRestrictions; b != nil {
		out = append(out, "referrers "+strings.Join(b.AllowedReferrers, ", "))
	}
	if s := r.ServerKeyRestrictions; s != nil {
		out = append(out, "ips "+strings.Join(s.AllowedIps, ", "))
	}
	if a := r.AndroidKeyRestrictions; a != nil {
		var apps []string
		for _, app := range a.AllowedApplications {
			apps = append(apps, app.PackageName)
		}
		out = append(out, "android apps "+strings.Join(apps, ", "))
	}
	if i := r.IosKeyRestrictions; i != nil {
		out = append(out, "ios apps "+strings.Join(i.AllowedBundleIds, ", "))
	}
	return out
}

// probeCall names the call p makes, as " with countTokens on MODEL (free)",
// when p can say (a Describe method); else "".
func probeCall(p Prober) string {
	if d, ok := p.(interface{ Describe() string }); ok {
		return " with " + d.Describe()
	}
	return ""
}
