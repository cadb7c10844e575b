package rotate_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/rotate"
)

// TestMigrationUnderDefaultOrgPolicy: binding a standard key's successor to
// a service account (service_account on the slot) under the default
// org policy, which allows bound keys only when restricted to the Gemini
// API. A key restricted to other APIs too, or by client restrictions only,
// is refused by plan and rotate before anything is created — unless the
// slot says to narrow the new key to the Gemini API, or to copy the
// restrictions because the organization allows it.
func TestMigrationUnderDefaultOrgPolicy(t *testing.T) {
	t.Parallel() // its own emulator(s); mostly waiting out per-secret write rates
	gemini := &apikeys.V2ApiTarget{Service: "generativelanguage.googleapis.com"}
	translate := &apikeys.V2ApiTarget{Service: "translate.googleapis.com"}
	ips := &apikeys.V2ServerKeyRestrictions{AllowedIps: []string{"127.0.0.1", "::1"}}
	tests := []struct {
		name    string
		targets []*apikeys.V2ApiTarget // the old key's API targets (IPs always)
		mode    string                 // slot.BoundKeyRestrictions
		policy  bool                   // the emulator enforces the default policy
		// want: "refused" (ErrBadConfig, nothing created), "org policy"
		// (CreateKey refused by the policy, nothing changed), or the
		// services of the new key's API targets.
		want string
	}{
		{"other APIs too, nothing said", []*apikeys.V2ApiTarget{gemini, translate}, "", true, "refused"},
		{"client restrictions only, nothing said", nil, "", true, "refused"},
		{"other APIs too, narrowed", []*apikeys.V2ApiTarget{gemini, translate}, rotate.BoundGemini, true, "generativelanguage.googleapis.com"},
		{"client restrictions only, narrowed", nil, rotate.BoundGemini, true, "generativelanguage.googleapis.com"},
		{"other APIs too, copied, policy allows", []*apikeys.V2ApiTarget{gemini, translate}, rotate.BoundCopy, false, "generativelanguage.googleapis.com,translate.googleapis.com"},
		{"other APIs too, copied, policy enforced", []*apikeys.V2ApiTarget{gemini, translate}, rotate.BoundCopy, true, "org policy"},
		{"Gemini only, nothing said", []*apikeys.V2ApiTarget{gemini}, "", true, "generativelanguage.googleapis.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, func(k *apikeys.V2Key, s *rotate.Slot) {
				k.ServiceAccountEmail = ""
				k.Restrictions = &apikeys.V2Restrictions{ApiTargets: tt.targets, ServerKeyRestrictions: ips}
				s.ServiceAccount = sa
				s.BoundKeyRestrictions = tt.mode
			})
			w.srv.EnforceDefaultBoundKeyPolicy(project, tt.policy)
			p, err := w.r.Plan(context.Background(), w.slot, rotate.Options{Force: true})
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			_, err = w.rotate(rotate.Options{})
			switch tt.want {
			case "refused":
				if p.WillRotate || !strings.Contains(p.Blocked, "bound_key_restrictions") {
					t.Errorf("Plan: WillRotate %v, Blocked %q; want blocked, naming bound_key_restrictions", p.WillRotate, p.Blocked)
				}
				if !errors.Is(err, rotate.ErrBadConfig) {
					t.Fatalf("Rotate = %v, want ErrBadConfig", err)
				}
				h := errhint.Of(err)
				for _, s := range []string{"bound_key_restrictions: gemini", "bound_key_restrictions: copy", "organization administrator"} {
					if !strings.Contains(h, s) {
						t.Errorf("hint %q lacks %q", h, s)
					}
				}
				if n := w.srv.MutatingCalls(); n != 0 {
					t.Errorf("a refused migration made %d mutating calls: %v", n, w.srv.CallCounts())
				}
			case "org policy":
				if err == nil || !strings.Contains(err.Error()+errhint.Of(err), "disableServiceAccountApiKeyCreation") {
					t.Fatalf("Rotate = %v, want the org policy's refusal named", err)
				}
				if len(w.liveKeys()) != 1 || !w.srv.KeyWorks(w.oldKey) {
					t.Errorf("after the refused create: %d live keys, old key works %v; want the old key alone", len(w.liveKeys()), w.srv.KeyWorks(w.oldKey))
				}
			default:
				if err != nil {
					t.Fatalf("Rotate = %v", err)
				}
				live := w.liveKeys()
				if len(live) != 1 || live[0].ServiceAccountEmail != sa {
					t.Fatalf("live keys = %+v, want one bound to %s", live, sa)
				}
				var got []string
				for _, at := range live[0].Restrictions.ApiTargets {
					got = append(got, at.Service)
				}
				if diff := cmp.Diff(tt.want, strings.Join(got, ",")); diff != "" {
					t.Errorf("new key's API targets (-want +got):\n%s", diff)
				}
				if r := live[0].Restrictions.ServerKeyRestrictions; r == nil || len(r.AllowedIps) != 2 {
					t.Errorf("new key's client restrictions = %+v, want the old key's IPs kept", r)
				}
			}
			w.invariant()
		})
	}
}
