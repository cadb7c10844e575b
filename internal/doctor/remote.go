package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/verify"
)

const (
	geminiService = "generativelanguage.googleapis.com"
	// companionService is "Gemini for Google Cloud" (Gemini Code Assist,
	// the Cloud console's assistant): a different API that people pick in
	// the key's API restrictions when they mean the Gemini API.
	companionService = "cloudaicompanion.googleapis.com"
	// undeleteWindow is how long UndeleteKey can restore a deleted key.
	undeleteWindow = 30 * 24 * time.Hour
	timeLayout     = "2006-01-02 15:04 UTC"

	migrateFix = "migrate to an auth key: set service_account (a service account of the key's project) on the slot and rotate it; " +
		"the org policy iam.managed.disableServiceAccountApiKeyCreation must allow bound keys"
	leakedFix = "replace it with a new key in every place that uses it and delete it, then find where it leaked"
	// addGeminiTarget fixes API restrictions that exclude the Gemini API.
	addGeminiTarget = "add generativelanguage.googleapis.com (\"Generative Language API\") to the key's API restrictions " +
		"(Cloud console → APIs & Services → Credentials → the key)"
	viewerFix = "grant the caller roles/serviceusage.apiKeysViewer (apikeys.keys.lookup, apikeys.keys.get) on the key's project"
)

// remote asks Google about the cleaned value: the API Keys API for the key's
// project, state, restrictions and binding, then the Gemini API itself.
func (c *checkup) remote(ctx context.Context) {
	key := secret.New(c.clean)
	var meta *apikeys.V2Key
	if c.d.Keys == nil || c.d.Lookup == nil {
		reason := "no Google credentials"
		if c.d.KeysErr != nil {
			reason = c.scrub(firstLine(c.d.KeysErr.Error()))
		}
		c.add(FindCredentials, StatusSkip, "key lookup skipped (project, deletion, restrictions, binding): "+reason,
			"set up Application Default Credentials (`gcloud auth application-default login`, or a service account in the job) "+
				"for a caller with roles/serviceusage.apiKeysViewer on the key's project, then run doctor again")
	} else {
		meta = c.lookup(ctx, key)
	}

	var probeErr error
	probed := false
	if c.d.Probe != nil {
		probeErr = c.d.Probe.Probe(ctx, key)
		probed = true
	}
	var pe *verify.ProbeError
	if errors.As(probeErr, &pe) {
		pe.Message = c.scrub(pe.Message)
		c.r.ProbeError = pe
	}

	if meta != nil {
		c.state(meta)
		c.restrictions(meta)
		c.binding(meta, probed, pe)
	}
	if !probed {
		c.add(FindProbe, StatusSkip, "live probe skipped", "")
		return
	}
	c.probe(probeErr, pe, meta)
}

// lookup maps the key string to its project and name (LookupKey), checks
// the project and returns the key's metadata (GetKey), or nil.
func (c *checkup) lookup(ctx context.Context, key secret.Key) *apikeys.V2Key {
	keys := c.d.Keys
	// Over gRPC: the REST keys:lookupKey would carry the key string in
	// its URL.
	resp, err := c.d.Lookup.LookupKey(ctx, &apikeyspb.LookupKeyRequest{KeyString: key.Reveal()})
	if err != nil {
		err = secret.StripQuery(err)
		switch status.Code(err) {
		case codes.InvalidArgument, codes.NotFound:
			c.add(FindLookup, StatusFail, c.after+"Google's API Keys service knows no key with this value: it is mistyped, incomplete, or not a Google Cloud API key",
				"copy the key again from the Cloud console (APIs & Services → Credentials), or "+c.currentKeyFix())
		case codes.PermissionDenied, codes.Unauthenticated:
			fix := viewerFix
			if ce := gcp.ConsumerErrorOf(err, c.d.Project); ce != nil {
				fix = ce.Hint() // the charged project, not a role, is the cause
			}
			c.add(FindLookup, StatusSkip, "key lookup not allowed: "+c.scrub(firstLine(err.Error())), fix)
		default:
			c.add(FindLookup, StatusSkip, "key lookup failed: "+c.scrub(firstLine(err.Error())), "retry later")
		}
		return nil
	}
	project := strings.TrimSuffix(resp.GetParent(), "/locations/global")
	c.r.Project = project
	if resp.GetName() == "" {
		c.add(FindLookup, StatusFail,
			fmt.Sprintf("%sthe key belonged to %s but was deleted more than 30 days ago and purged: it cannot be undeleted", c.after, project),
			c.currentKeyFix()+", or create a new one")
		return nil
	}
	c.r.KeyName = resp.GetName()
	c.add(FindLookup, StatusOK, fmt.Sprintf("%skey %s, in %s", c.after, resp.GetName(), project), "")

	name := resp.GetName()
	if p := c.d.Project; p != "" {
		num := strings.TrimPrefix(project, "projects/")
		keyID := name[strings.LastIndex(name, "/")+1:]
		switch {
		case p == num:
			c.add(FindProject, StatusOK, "the key belongs to project "+p+", as --project says", "")
		case isDigits(p):
			c.add(FindProject, StatusFail, fmt.Sprintf("the key belongs to project %s, not to project %s", num, p),
				"use a key of project "+p+" (read it from the secret that holds it: "+secretAccessCmd(p)+"), or correct --project")
		default:
			// Names in responses carry the project number; asking for the
			// key under the project id tells whether the id is that project.
			_, err := keys.Projects.Locations.Keys.Get("projects/" + p + "/locations/global/keys/" + keyID).Context(ctx).Do()
			switch code := apiCode(err); {
			case err == nil:
				c.add(FindProject, StatusOK, fmt.Sprintf("the key belongs to project %s (number %s), as --project says", p, num), "")
			case code == http.StatusNotFound || code == http.StatusForbidden || code == http.StatusBadRequest:
				c.add(FindProject, StatusFail, fmt.Sprintf("the key belongs to project %s, not to project %s", num, p),
					"use a key of project "+p+" (read it from the secret that holds it: "+secretAccessCmd(p)+"), or correct --project")
			default:
				c.add(FindProject, StatusSkip, "could not compare the key's project with --project: "+c.scrub(firstLine(err.Error())), "")
			}
		}
	}

	meta, err := keys.Projects.Locations.Keys.Get(name).Context(ctx).Do()
	if err != nil {
		fix := "retry later"
		if code := apiCode(err); code == http.StatusForbidden || code == http.StatusUnauthorized {
			fix = viewerFix
		}
		c.add(FindDeleted, StatusSkip, "could not read the key's metadata: "+c.scrub(firstLine(err.Error())), fix)
		return nil
	}
	return meta
}

// state reports whether the key is deleted, and until when it can be
// restored.
func (c *checkup) state(k *apikeys.V2Key) {
	if k.DeleteTime == "" {
		msg := "the key is not deleted"
		if t, err := time.Parse(time.RFC3339Nano, k.CreateTime); err == nil {
			msg += " (created " + t.UTC().Format(timeLayout) + ")"
		}
		c.add(FindDeleted, StatusOK, msg, "")
		return
	}
	keyID := k.Name[strings.LastIndex(k.Name, "/")+1:]
	project := strings.TrimPrefix(c.r.Project, "projects/")
	del, err := time.Parse(time.RFC3339Nano, k.DeleteTime)
	if err != nil {
		c.add(FindDeleted, StatusFail, "the key is deleted", c.currentKeyFix())
		return
	}
	until := del.Add(undeleteWindow).UTC().Format(timeLayout)
	c.add(FindDeleted, StatusFail,
		fmt.Sprintf("the key was deleted on %s; it can be undeleted until %s", del.UTC().Format(timeLayout), until),
		fmt.Sprintf("%s; to restore this one (until %s): `gcloud services api-keys undelete %s --project=%s`", c.currentKeyFix(), until, keyID, project))
}

// restrictions reports on API targets and application restrictions.
func (c *checkup) restrictions(k *apikeys.V2Key) {
	r := k.Restrictions
	if r == nil {
		r = &apikeys.V2Restrictions{}
	}
	var services []string
	var gemini *apikeys.V2ApiTarget
	companion := false
	for _, t := range r.ApiTargets {
		if t == nil {
			continue
		}
		services = append(services, t.Service)
		switch t.Service {
		case geminiService:
			gemini = t
		case companionService:
			companion = true
		}
	}
	switch {
	case len(services) == 0:
		c.add(FindAPITargets, StatusWarn, "no API restrictions: the key can call every API enabled in its project",
			"restrict the key to generativelanguage.googleapis.com; keyrotate copies restrictions to every new key")
	case gemini == nil:
		msg := "the key's API restrictions allow only " + strings.Join(services, ", ") + ", not the Gemini API (generativelanguage.googleapis.com)"
		if companion {
			msg += "; cloudaicompanion.googleapis.com is \"Gemini for Google Cloud\" (Gemini Code Assist, the Cloud console assistant), " +
				"a different API from the Gemini API"
		}
		c.add(FindAPITargets, StatusFail, msg, addGeminiTarget)
	case len(gemini.Methods) > 0:
		c.add(FindAPITargets, StatusWarn, "the key may call only these Gemini API methods: "+strings.Join(gemini.Methods, ", "),
			"make sure every method your program calls is listed, or allow all methods of generativelanguage.googleapis.com")
	default:
		msg := "the key's API restrictions allow the Gemini API (generativelanguage.googleapis.com)"
		if len(services) > 1 {
			msg += ", among " + plural(len(services), "API")
		}
		c.add(FindAPITargets, StatusOK, msg, "")
	}

	const fix = "fine if every caller matches; otherwise widen the key's application restrictions (Cloud console → Credentials → the key)"
	switch {
	case r.BrowserKeyRestrictions != nil:
		c.add(FindClientRestrictions, StatusWarn, "browser key: only requests whose Referer matches "+listOrNone(r.BrowserKeyRestrictions.AllowedReferrers)+
			" are accepted; calls from servers without that header fail with 403 API_KEY_HTTP_REFERRER_BLOCKED", fix)
	case r.ServerKeyRestrictions != nil:
		c.add(FindClientRestrictions, StatusWarn, "server key: only calls from the IP addresses "+listOrNone(r.ServerKeyRestrictions.AllowedIps)+
			" are accepted; elsewhere they fail with 403 API_KEY_IP_ADDRESS_BLOCKED", fix)
	case r.AndroidKeyRestrictions != nil:
		var apps []string
		for _, a := range r.AndroidKeyRestrictions.AllowedApplications {
			if a != nil {
				apps = append(apps, a.PackageName)
			}
		}
		c.add(FindClientRestrictions, StatusWarn, "Android key: only the apps "+listOrNone(apps)+
			" (with their signing certificates) may use it; other callers fail with 403 API_KEY_ANDROID_APP_BLOCKED", fix)
	case r.IosKeyRestrictions != nil:
		c.add(FindClientRestrictions, StatusWarn, "iOS key: only apps with the bundle IDs "+listOrNone(r.IosKeyRestrictions.AllowedBundleIds)+
			" may use it; other callers fail with 403 API_KEY_IOS_APP_BLOCKED", fix)
	default:
		c.add(FindClientRestrictions, StatusOK, "no application restrictions (referrer, IP address, Android or iOS app)", "")
	}
}

// binding reports whether the key is bound to a service account: an auth
// key, the only kind the Gemini API accepts since September 2026.
func (c *checkup) binding(k *apikeys.V2Key, probed bool, pe *verify.ProbeError) {
	if sa := k.ServiceAccountEmail; sa != "" {
		c.r.ServiceAccount = sa
		c.add(FindBinding, StatusOK, "bound to service account "+sa+" (an auth key)", "")
		return
	}
	msg := "not bound to a service account: a standard key, which the Gemini API rejects since September 2026"
	migrate := Remedy{Kind: RemedyMigrate, KeyRead: true}
	switch {
	case pe != nil && pe.Cause == verify.CauseStandardKeyRejected:
		c.addRemedy(FindBinding, StatusFail, msg, migrateFix, migrate)
	case probed && pe == nil:
		c.addRemedy(FindBinding, StatusWarn, msg+" (it still answered here)", migrateFix, migrate)
	default:
		c.addRemedy(FindBinding, StatusWarn, msg, migrateFix, migrate)
	}
}

// probe reports the live call's outcome with its exact classification.
func (c *checkup) probe(err error, pe *verify.ProbeError, meta *apikeys.V2Key) {
	if err == nil {
		c.add(FindProbe, StatusOK, c.after+"the Gemini API accepts the key ("+c.d.Probe.Describe()+")", "")
		return
	}
	if pe == nil {
		c.add(FindProbe, StatusSkip, "live probe not finished: "+c.scrub(firstLine(err.Error())), "run doctor again")
		return
	}
	answer := fmt.Sprintf("the Gemini API answers %d %s", pe.HTTPStatus, firstNonEmpty(pe.Reason, pe.Status, pe.Cause.String()))
	project := strings.TrimPrefix(c.r.Project, "projects/")
	addRemedy := func(st Status, what, fix string, rem Remedy) {
		c.addRemedy(FindProbe, st, c.after+answer+": "+what, fix, rem)
	}
	add := func(st Status, what, fix string) { addRemedy(st, what, fix, Remedy{}) }
	switch pe.Cause {
	case verify.CauseInvalid:
		what := "the key is invalid, deleted or expired"
		fix, rem := c.currentKeyFix(), Remedy{Kind: RemedyRotate}
		switch {
		case meta != nil && meta.DeleteTime != "":
			what = "the key is deleted"
		case meta != nil:
			what = "the key exists and is not deleted: if it was created in the last 10 minutes it has not propagated yet"
			if t, err := time.Parse(time.RFC3339Nano, meta.CreateTime); err == nil {
				what += " (created " + t.UTC().Format(timeLayout) + ")"
			}
			fix, rem = "wait up to 10 minutes after creating a key, then run doctor again", Remedy{}
		}
		addRemedy(StatusFail, what, fix, rem)
	case verify.CauseStandardKeyRejected:
		addRemedy(StatusFail, "the Gemini API no longer accepts standard keys (not bound to a service account)", migrateFix,
			Remedy{Kind: RemedyMigrate, KeyRead: true})
	case verify.CauseServiceBlocked:
		add(StatusFail, "the key's API restrictions exclude the Gemini API (generativelanguage.googleapis.com)", addGeminiTarget)
	case verify.CauseServiceDisabled:
		fix := "enable the Generative Language API in the key's project"
		if project != "" {
			fix += ": `gcloud services enable generativelanguage.googleapis.com --project=" + project + "`"
		}
		if u := pe.Metadata["activationUrl"]; u != "" && !strings.ContainsAny(u, " \n") {
			fix += ", or visit " + c.scrub(u)
		}
		where := "the key's project"
		if project != "" {
			where = "project " + project
		}
		add(StatusFail, "the Generative Language API is not enabled in "+where, fix)
	case verify.CauseSuspended:
		// The caller may know a command that does this (Report.ProbeError
		// has the cause).
		add(StatusFail, "Google suspended the key, typically because it was found leaked (for example in a public repository or app)", leakedFix)
	case verify.CauseLeaked:
		// No ErrorInfo here: Google's message is the whole answer.
		add(StatusFail, "Google reported the key as leaked (found exposed, for example in a public repository, app or log) and blocks it", leakedFix)
	case verify.CauseClientBlocked:
		add(StatusWarn, "the key's application restrictions reject this caller; callers that match them may still succeed",
			"run doctor where the program runs, or widen the key's application restrictions")
	case verify.CauseThrottled:
		add(StatusWarn, "the key is valid but rate limited", "wait and retry, or raise the project's Gemini API quota")
	case verify.CauseServer, verify.CauseNetwork:
		c.add(FindProbe, StatusSkip, "live probe not finished: "+c.scrub(firstLine(pe.Error())), "retry later")
	case verify.CauseModelNotFound:
		// Says nothing about the key: the probe's model is not served.
		c.add(FindProbe, StatusSkip,
			"live probe not finished: the Gemini API does not serve "+c.d.Probe.Describe()+" (the model is retired, misspelled, or not a generation model)",
			"name a current model with --model (GET /v1beta/models lists them)")
	default:
		what := "the key was refused"
		if pe.Message != "" {
			what += " (" + c.scrub(firstLine(pe.Message)) + ")"
		}
		addRemedy(StatusFail, what, c.currentKeyFix(), Remedy{Kind: RemedyRotate})
	}
}

// currentKeyFix says how to get the key that belongs in the variable: the
// secret that holds it shows the key itself (a fingerprint would not help
// to fix the value). The project is --project, else the key's own.
func (c *checkup) currentKeyFix() string {
	project := "PROJECT"
	if c.d.Project != "" {
		project = c.d.Project
	} else if c.r.Project != "" {
		project = strings.TrimPrefix(c.r.Project, "projects/")
	}
	return "put the current key into the variable: read it from the secret that holds it, " + secretAccessCmd(project)
}

// secretAccessCmd is the gcloud command that prints the newest key of a
// secret in project.
func secretAccessCmd(project string) string {
	return "`gcloud secrets versions access latest --secret SECRET --project " + project + "`"
}

func apiCode(err error) int {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	return 0
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
