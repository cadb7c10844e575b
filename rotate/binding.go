package rotate

import (
	"fmt"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/errhint"
)

// geminiService is the Gemini API's service name in API restrictions.
const geminiService = "generativelanguage.googleapis.com"

// Values of Slot.BoundKeyRestrictions.
const (
	// BoundGemini narrows a newly bound key's API restriction to the
	// Gemini API (its client restrictions are kept).
	BoundGemini = "gemini"
	// BoundCopy copies the old key's restrictions to a newly bound key:
	// the organization allows bound keys with them.
	BoundCopy = "copy"
)

// geminiOnly reports whether r restricts a key to the Gemini API and
// nothing else: API targets naming that one service (methods allowed).
func geminiOnly(r *apikeys.V2Restrictions) bool {
	if r == nil || len(r.ApiTargets) == 0 {
		return false
	}
	for _, t := range r.ApiTargets {
		if t.Service != geminiService {
			return false
		}
	}
	return true
}

// bindingRestrictions returns the restrictions a new key gets when
// old's are copied, and refuses (ErrBadConfig) a migration to an auth key
// that the default organization policy would refuse.
//
// The org-policy constraint iam.managed.disableServiceAccountApiKeyCreation,
// enforced by default on organizations created since 2024, allows keys
// bound to a service account only when they are restricted to the Gemini
// API. keyrotate cannot read an organization's policy with the permissions a
// rotation needs, so a migration (service_account set on a slot whose key
// is not bound to it) of a key not restricted to the Gemini API alone is
// refused before anything is created, unless the slot says what to do. A
// key already bound keeps what it has: the organization allowed it.
func bindingRestrictions(slot *Slot, old *apikeys.V2Key) (*apikeys.V2Restrictions, error) {
	r := old.Restrictions
	migrating := slot.ServiceAccount != "" && old.ServiceAccountEmail != slot.ServiceAccount
	if !migrating || geminiOnly(r) {
		return r, nil
	}
	switch slot.BoundKeyRestrictions {
	case BoundCopy:
		return r, nil
	case BoundGemini:
		n := &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: geminiService}}}
		if r != nil {
			n.BrowserKeyRestrictions, n.ServerKeyRestrictions = r.BrowserKeyRestrictions, r.ServerKeyRestrictions
			n.AndroidKeyRestrictions, n.IosKeyRestrictions = r.AndroidKeyRestrictions, r.IosKeyRestrictions
		}
		return n, nil
	}
	what := "is restricted to other APIs as well"
	if r == nil || len(r.ApiTargets) == 0 {
		what = "has no API restriction (only client restrictions)"
	}
	return nil, errhint.With(
		fmt.Errorf("slot %s: binding new keys to %s needs a key restricted to the Gemini API alone, but key %s %s: %w",
			slot.Name, slot.ServiceAccount, old.Name, what, ErrBadConfig),
		fmt.Sprintf("the default organization policy (iam.managed.disableServiceAccountApiKeyCreation) allows keys bound to "+
			"a service account only when they are restricted to %s. Either set bound_key_restrictions: gemini on the slot, "+
			"so the new key may call the Gemini API only (check that the application calls nothing else with it), "+
			"or, if your organization administrator has allowed bound keys with these restrictions, "+
			"set bound_key_restrictions: copy", geminiService))
}
