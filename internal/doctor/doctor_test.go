package doctor_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	apikeysapi "cloud.google.com/go/apikeys/apiv2"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyrotate/keyrotate/internal/doctor"
	"github.com/keyrotate/keyrotate/internal/emulator"
	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emutest"
	"github.com/keyrotate/keyrotate/verify"
)

const (
	docProject    = "doc-project"
	docProjectNum = "345678901234"
	offProject    = "doc-off"
	offProjectNum = "456789012345"
	docSA         = "caller@doc-project.iam.gserviceaccount.com"
)

var docNow = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

// docWorld is an emulator with one key in every state doctor tells apart.
type docWorld struct {
	srv   *emulator.Server
	clock *fake.ManualClock
	svc   *apikeys.Service
	// lookup is the gRPC client for LookupKey.
	lookup *apikeysapi.Client
	key    map[string]string // key id -> key string
	name   map[string]string // key id -> key name
}

func newDocWorld(t *testing.T) *docWorld {
	t.Helper()
	clock := fake.NewManualClock(docNow)
	srv := emutest.Start(t, emulator.Options{Clock: clock})
	srv.AddProject(docProject, 345678901234)
	srv.AddProject(offProject, 456789012345)
	srv.SetServiceEnabled(offProject, "generativelanguage.googleapis.com", false)
	srv.RejectStandardKeys(true)
	svc, err := srv.APIKeysService(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	lookup, err := srv.APIKeysLookupClient(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lookup.Close() })
	w := &docWorld{srv: srv, clock: clock, svc: svc, lookup: lookup, key: map[string]string{}, name: map[string]string{}}
	gemini := func() *apikeys.V2Restrictions {
		return &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}}}
	}
	seed := func(project, id string, k *apikeys.V2Key) {
		t.Helper()
		name, s, err := srv.SeedKey(project, id, k)
		if err != nil {
			t.Fatal(err)
		}
		w.key[id], w.name[id] = s, name
	}
	seed(docProject, "good", &apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: docSA})
	seed(docProject, "other", &apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: docSA})
	seed(docProject, "standard", &apikeys.V2Key{Restrictions: gemini()})
	seed(docProject, "companion", &apikeys.V2Key{ServiceAccountEmail: docSA, Restrictions: &apikeys.V2Restrictions{
		ApiTargets: []*apikeys.V2ApiTarget{{Service: "cloudaicompanion.googleapis.com"}}}})
	seed(docProject, "unrestricted", &apikeys.V2Key{ServiceAccountEmail: docSA})
	seed(docProject, "browser", &apikeys.V2Key{ServiceAccountEmail: docSA, Restrictions: &apikeys.V2Restrictions{
		ApiTargets:             gemini().ApiTargets,
		BrowserKeyRestrictions: &apikeys.V2BrowserKeyRestrictions{AllowedReferrers: []string{"https://chat.example.com/*"}},
	}})
	seed(docProject, "suspended", &apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: docSA})
	srv.SuspendKey(w.name["suspended"])
	seed(docProject, "reported", &apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: docSA})
	srv.MarkLeaked(w.name["reported"])
	seed(docProject, "deleted", &apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: docSA})
	if _, err := svc.Projects.Locations.Keys.Delete(w.name["deleted"]).Do(); err != nil {
		t.Fatal(err)
	}
	seed(offProject, "disabled", &apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: "caller@doc-off.iam.gserviceaccount.com"})

	// A key just created through the API, which Gemini does not accept yet.
	srv.SetPropagationDelay(time.Hour)
	if _, err := svc.Projects.Locations.Keys.Create("projects/"+docProject+"/locations/global",
		&apikeys.V2Key{Restrictions: gemini(), ServiceAccountEmail: docSA}).KeyId("fresh").Do(); err != nil {
		t.Fatal(err)
	}
	w.name["fresh"] = "projects/" + docProjectNum + "/locations/global/keys/fresh"
	k, ok := srv.Key(w.name["fresh"])
	if !ok {
		t.Fatal("fresh key not found")
	}
	w.key["fresh"] = k.KeyString
	return w
}

func (w *docWorld) doctor(project string) *doctor.Doctor {
	return &doctor.Doctor{Keys: w.svc, Lookup: w.lookup, Probe: &verify.Gemini{BaseURL: "http://" + w.srv.GeminiAddr}, Project: project}
}

// allKeys returns every key string the emulator knows.
func (w *docWorld) allKeys() []string {
	var ks []string
	for _, p := range []string{docProject, offProject} {
		for _, k := range w.srv.Keys(p, true) {
			ks = append(ks, k.KeyString)
		}
	}
	return ks
}

func envOf(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

type want struct {
	status  map[string]doctor.Status // finding id -> status (the findings named; others may exist)
	healthy bool
	cause   string   // summary cause when not healthy
	has     []string // substrings of the rendered findings (messages and fixes)
	hasNot  []string // finding IDs that must be absent
	// remedy: finding id -> the remedy the CLI words with its commands
	// (cmd/keyrotate's doctor golden files check those words).
	remedy   map[string]doctor.Remedy
	probeErr error // errors.Is(Report.ProbeError, probeErr), when set
}

type doctorCase struct {
	name   string
	in     func(w *docWorld) doctor.Input
	doctor func(w *docWorld) *doctor.Doctor // default: w.doctor("")
	setup  func(t *testing.T, w *docWorld)
	want   want
}

const (
	ok   = doctor.StatusOK
	warn = doctor.StatusWarn
	fail = doctor.StatusFail
	skip = doctor.StatusSkip
)

func envIn(kv ...string) func(*docWorld) doctor.Input {
	return func(*docWorld) doctor.Input { return doctor.Input{Env: envOf(kv...)} }
}

// keyIn puts the key with this id, wrapped by wrap, into GEMINI_API_KEY.
func keyIn(id string, wrap func(string) string) func(*docWorld) doctor.Input {
	return func(w *docWorld) doctor.Input {
		return doctor.Input{Env: envOf("GEMINI_API_KEY", wrap(w.key[id]))}
	}
}

func same(s string) string { return s }

func TestDoctor(t *testing.T) {
	w := newDocWorld(t)
	cases := []doctorCase{
		// ---- where the key comes from ----
		{name: "missing", in: envIn(),
			want: want{status: map[string]doctor.Status{"source": fail}, cause: "source", has: []string{"neither GEMINI_API_KEY nor GOOGLE_API_KEY is set"}, hasNot: []string{"lookup", "probe"}}},
		{name: "empty", in: envIn("GEMINI_API_KEY", ""),
			want: want{status: map[string]doctor.Status{"source": fail}, cause: "source", has: []string{"GEMINI_API_KEY is set but empty"}}},
		{name: "named var missing", in: func(*docWorld) doctor.Input { return doctor.Input{Env: envOf(), Var: "CHAT_KEY"} },
			want: want{status: map[string]doctor.Status{"source": fail}, cause: "source", has: []string{"CHAT_KEY is not set"}}},
		{name: "google only", in: func(w *docWorld) doctor.Input { return doctor.Input{Env: envOf("GOOGLE_API_KEY", w.key["good"])} },
			want: want{status: map[string]doctor.Status{"source": ok, "probe": ok}, healthy: true, has: []string{"GOOGLE_API_KEY is set (53 characters); GEMINI_API_KEY is not set"}, hasNot: []string{"source-both"}}},
		{name: "gemini empty google set", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf("GEMINI_API_KEY", "", "GOOGLE_API_KEY", w.key["good"])}
		}, want: want{status: map[string]doctor.Status{"source": ok}, healthy: true, has: []string{"GEMINI_API_KEY is set but empty"}}},
		{name: "both same", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf("GEMINI_API_KEY", w.key["good"], "GOOGLE_API_KEY", w.key["good"])}
		}, want: want{status: map[string]doctor.Status{"source-both": ok}, healthy: true}},
		{name: "both differ", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf("GEMINI_API_KEY", w.key["good"], "GOOGLE_API_KEY", w.key["other"])}
		}, want: want{status: map[string]doctor.Status{"source-both": fail, "probe": ok}, cause: "source-both",
			has:    []string{"use GOOGLE_API_KEY when both are set", "unset GOOGLE_API_KEY"},
			remedy: map[string]doctor.Remedy{"source-both": {Kind: doctor.RemedyCheckVar, Var: "GOOGLE_API_KEY"}}}},
		{name: "both differ checking google", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf("GEMINI_API_KEY", w.key["other"], "GOOGLE_API_KEY", w.key["good"]), Var: "GOOGLE_API_KEY"}
		}, want: want{status: map[string]doctor.Status{"source-both": warn, "probe": ok}, healthy: true, has: []string{"the one they use"}}},

		// ---- junk in the value ----
		{name: "clean", in: keyIn("good", same),
			want: want{status: map[string]doctor.Status{"value": ok, "format": ok}, healthy: true}},
		{name: "surrounding whitespace", in: keyIn("good", func(s string) string { return "  " + s + "\t" }),
			want: want{status: map[string]doctor.Status{"whitespace": warn, "probe": ok}, healthy: true,
				has: []string{"U+0020 SPACE at character 1 of 56", "U+0009 CHARACTER TABULATION (tab) at character 56 of 56", "after removing the surrounding whitespace, the Gemini API accepts the key"}}},
		{name: "trailing newline", in: keyIn("good", func(s string) string { return s + "\n" }),
			want: want{status: map[string]doctor.Status{"line-break": fail, "lookup": ok, "probe": ok}, cause: "line-break",
				has: []string{"U+000A LINE FEED at character 54 of 54", "after removing 1 line break, the Gemini API accepts the key"}}},
		{name: "crlf", in: keyIn("good", func(s string) string { return s + "\r\n" }),
			want: want{status: map[string]doctor.Status{"line-break": fail, "probe": ok}, cause: "line-break", has: []string{"U+000D CARRIAGE RETURN at character 54 of 55"}}},
		{name: "line break inside", in: keyIn("good", func(s string) string { return s[:26] + "\n" + s[26:] }),
			want: want{status: map[string]doctor.Status{"line-break": fail, "probe": ok}, cause: "line-break", has: []string{"LINE FEED at character 27 of 54"}}},
		{name: "zero width space", in: keyIn("good", func(s string) string { return s[:20] + "\u200b" + s[20:] }),
			want: want{status: map[string]doctor.Status{"invisible": fail, "lookup": ok, "probe": ok}, cause: "invisible",
				has: []string{"1 invisible character: U+200B ZERO WIDTH SPACE at character 21 of 54", "after removing the U+200B ZERO WIDTH SPACE, the Gemini API accepts the key"}}},
		{name: "byte order mark", in: keyIn("good", func(s string) string { return "\ufeff" + s }),
			want: want{status: map[string]doctor.Status{"invisible": fail, "probe": ok}, cause: "invisible",
				has: []string{"U+FEFF ZERO WIDTH NO-BREAK SPACE (byte order mark) at character 1 of 54"}}},
		{name: "joiners", in: keyIn("good", func(s string) string { return s[:3] + "\u200c" + s[3:10] + "\u200d" + s[10:] + "\u2060" }),
			want: want{status: map[string]doctor.Status{"invisible": fail, "probe": ok}, cause: "invisible",
				has: []string{"3 invisible characters", "U+200C ZERO WIDTH NON-JOINER at character 4 of 56", "U+200D ZERO WIDTH JOINER at character 12 of 56 (byte offset 13)", "U+2060 WORD JOINER at character 56 of 56 (byte offset 59)"}}},
		{name: "no-break space", in: keyIn("good", func(s string) string { return s + "\u00a0" }),
			want: want{status: map[string]doctor.Status{"invisible": fail, "probe": ok}, cause: "invisible", has: []string{"U+00A0 NO-BREAK SPACE at character 54 of 54"}}},
		{name: "invalid utf8", in: keyIn("good", func(s string) string { return s + "\xff" }),
			want: want{status: map[string]doctor.Status{"invisible": fail, "probe": ok}, cause: "invisible", has: []string{"byte 0xFF (not valid UTF-8) at character 54 of 54"}}},
		{name: "homoglyph", in: keyIn("good", func(s string) string { return s[:10] + "\u0410" + s[11:] }),
			want: want{status: map[string]doctor.Status{"non-ascii": fail, "format": fail}, cause: "format",
				has: []string{"U+0410 CYRILLIC CAPITAL LETTER A at character 11 of 53", "starts like an auth key", "remote checks skipped"}, hasNot: []string{"probe"}}},
		{name: "double quotes", in: keyIn("good", func(s string) string { return `"` + s + `"` }),
			want: want{status: map[string]doctor.Status{"quotes": fail, "probe": ok}, cause: "quotes", has: []string{"wrapped in double quotes", "after removing the double quotes"}}},
		{name: "single quotes and spaces", in: keyIn("good", func(s string) string { return ` '` + s + `' ` }),
			want: want{status: map[string]doctor.Status{"quotes": fail, "whitespace": warn, "probe": ok}, cause: "quotes"}},
		{name: "typographic quotes", in: keyIn("good", func(s string) string { return "\u201c" + s + "\u201d" }),
			want: want{status: map[string]doctor.Status{"quotes": fail, "probe": ok}, cause: "quotes", has: []string{"typographic quotes (U+201C LEFT DOUBLE QUOTATION MARK)"}, hasNot: []string{"non-ascii"}}},
		{name: "bearer", in: keyIn("good", func(s string) string { return "Bearer " + s }),
			want: want{status: map[string]doctor.Status{"prefix": fail, "probe": ok}, cause: "prefix", has: []string{"starts with `Bearer`"}}},
		{name: "key=", in: keyIn("good", func(s string) string { return "key=" + s }),
			want: want{status: map[string]doctor.Status{"prefix": fail, "probe": ok}, cause: "prefix", has: []string{"starts with `key=`"}}},
		{name: "header", in: keyIn("good", func(s string) string { return "x-goog-api-key: " + s }),
			want: want{status: map[string]doctor.Status{"prefix": fail, "probe": ok}, cause: "prefix", has: []string{"starts with `x-goog-api-key:`"}}},
		{name: "pasted assignment", in: keyIn("good", func(s string) string { return `export GEMINI_API_KEY="` + s + `"` }),
			want: want{status: map[string]doctor.Status{"prefix": fail, "quotes": fail, "probe": ok}, cause: "quotes",
				has: []string{"`export` and `GEMINI_API_KEY=`", "after removing the double quotes and `export` and `GEMINI_API_KEY=`"}}},

		// ---- format ----
		{name: "truncated standard", in: keyIn("standard", func(s string) string { return s[:30] }),
			want: want{status: map[string]doctor.Status{"length": fail, "lookup": fail, "probe": fail}, cause: "length", has: []string{"30 characters; a standard key has exactly 39"}}},
		{name: "standard too long", in: keyIn("standard", func(s string) string { return s + "Q" }),
			want: want{status: map[string]doctor.Status{"length": fail}, cause: "length", has: []string{"40 characters; a standard key has exactly 39"}}},
		{name: "truncated auth", in: keyIn("good", func(s string) string { return s[:30] }),
			want: want{status: map[string]doctor.Status{"length": warn, "lookup": fail, "probe": fail}, cause: "lookup", has: []string{"shorter than usual for an auth key"}}},
		{name: "not a key", in: envIn("GEMINI_API_KEY", "your-api-key-here"),
			want: want{status: map[string]doctor.Status{"format": fail, "lookup": skip}, cause: "format", has: []string{"starts with neither AIza"}, hasNot: []string{"probe"}}},
		{name: "oauth token", in: envIn("GEMINI_API_KEY", "ya29.a0AfH6SMBexampleexampleexample"),
			want: want{status: map[string]doctor.Status{"format": fail}, cause: "format", has: []string{"OAuth access token"}}},
		{name: "only junk", in: envIn("GEMINI_API_KEY", "\"\u200b\""),
			want: want{status: map[string]doctor.Status{"format": fail, "invisible": fail, "quotes": fail}, cause: "format", has: []string{"nothing is left"}}},

		// ---- standard input and .env ----
		{name: "stdin", in: func(w *docWorld) doctor.Input { return doctor.Input{Stdin: true, Value: w.key["good"]} },
			want: want{status: map[string]doctor.Status{"source": ok, "probe": ok}, healthy: true, has: []string{"read a value from standard input (53 characters)"}}},
		{name: "stdin empty", in: func(*docWorld) doctor.Input { return doctor.Input{Stdin: true} },
			want: want{status: map[string]doctor.Status{"source": fail}, cause: "source", remedy: map[string]doctor.Remedy{"source": {Kind: doctor.RemedyStdin}}}},
		{name: "stdin cr", in: func(w *docWorld) doctor.Input { return doctor.Input{Stdin: true, Value: w.key["good"] + "\r"} },
			want: want{status: map[string]doctor.Status{"line-break": fail, "probe": ok}, cause: "line-break"}},
		{name: "dotenv only", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf(), DotEnv: []byte("APP=x\nexport GEMINI_API_KEY=\"" + w.key["good"] + "\"\n"), DotEnvPath: "app/.env"}
		}, want: want{status: map[string]doctor.Status{"source": ok, "source-dotenv": ok, "value": ok, "probe": ok}, healthy: true,
			has: []string{"app/.env line 2 defines GEMINI_API_KEY (53 characters)", "not set in this environment"}}},
		{name: "dotenv same as env", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf("GEMINI_API_KEY", w.key["good"]), DotEnv: []byte("GEMINI_API_KEY=" + w.key["good"] + "\n"), DotEnvPath: ".env"}
		}, want: want{status: map[string]doctor.Status{"source-dotenv": ok}, healthy: true, has: []string{"holds the same value"}}},
		{name: "dotenv differs from env", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf("GEMINI_API_KEY", w.key["other"]), DotEnv: []byte("GEMINI_API_KEY=" + w.key["good"] + "\n"), DotEnvPath: ".env"}
		}, want: want{status: map[string]doctor.Status{"source-dotenv": warn, "probe": ok}, healthy: true, has: []string{"differs between .env (sha256:", "and the environment (sha256:"}}},
		{name: "dotenv lacks var env has it", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf("GEMINI_API_KEY", w.key["good"]), DotEnv: []byte("APP=x\n"), DotEnvPath: ".env"}
		}, want: want{status: map[string]doctor.Status{"source": fail}, cause: "source", has: []string{".env defines neither GEMINI_API_KEY nor GOOGLE_API_KEY; the environment has GEMINI_API_KEY (sha256:"}}},
		{name: "dotenv duplicate", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf(), DotEnv: []byte("GEMINI_API_KEY=" + w.key["good"] + "\nGEMINI_API_KEY=" + w.key["other"] + "\n"), DotEnvPath: ".env"}
		}, want: want{status: map[string]doctor.Status{"source": fail}, cause: "source", has: []string{"defines GEMINI_API_KEY 2 times (lines 1, 2)"}}},
		{name: "dotenv malformed", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf(), DotEnv: []byte("GEMINI_API_KEY=\"" + w.key["good"] + "\n"), DotEnvPath: ".env"}
		}, want: want{status: map[string]doctor.Status{"source": fail}, cause: "source", has: []string{"line 1 defines GEMINI_API_KEY with a value that cannot be parsed"}}},
		{name: "dotenv both differ", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf(), DotEnv: []byte("GEMINI_API_KEY=" + w.key["good"] + "\nGOOGLE_API_KEY=" + w.key["other"] + "\n"), DotEnvPath: ".env"}
		}, want: want{status: map[string]doctor.Status{"source-both": fail}, cause: "source-both", has: []string{"are both set in .env and differ"}}},
		{name: "dotenv loaders read otherwise", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf(), DotEnv: []byte("GEMINI_API_KEY=" + w.key["good"] + "\nGEMINI_API_KEY: " + w.key["other"] + "\n"), DotEnvPath: ".env"}
		}, want: want{status: map[string]doctor.Status{"source": warn, "probe": ok}, healthy: true,
			has: []string{".env line 1 defines GEMINI_API_KEY (53 characters), but on line 2 godotenv, docker compose and Node's dotenv read GEMINI_API_KEY: value as a definition", "line 2 of .env: keep one definition of GEMINI_API_KEY"}}},
		{name: "dotenv nested quotes", in: func(w *docWorld) doctor.Input {
			return doctor.Input{Env: envOf(), DotEnv: []byte("GEMINI_API_KEY=\"'" + w.key["good"] + "'\"\n"), DotEnvPath: ".env"}
		}, want: want{status: map[string]doctor.Status{"quotes": fail, "probe": ok}, cause: "quotes", has: []string{"single quotes"}}},

		// ---- what Google says ----
		{name: "healthy", in: keyIn("good", same),
			want: want{status: map[string]doctor.Status{"lookup": ok, "deleted": ok, "api-targets": ok, "client-restrictions": ok, "binding": ok, "probe": ok}, healthy: true,
				has: []string{"key projects/345678901234/locations/global/keys/good, in projects/345678901234", "created 2026-11-02 10:00 UTC", "bound to service account " + docSA}}},
		{name: "standard key rejected", in: keyIn("standard", same),
			want: want{status: map[string]doctor.Status{"format": warn, "binding": fail, "probe": fail}, cause: "probe",
				has: []string{"401 ACCESS_TOKEN_TYPE_UNSUPPORTED", "set service_account"},
				remedy: map[string]doctor.Remedy{"format": {Kind: doctor.RemedyMigrate}, "binding": {Kind: doctor.RemedyMigrate, KeyRead: true},
					"probe": {Kind: doctor.RemedyMigrate, KeyRead: true}}}},
		{name: "service blocked companion", in: keyIn("companion", same),
			want: want{status: map[string]doctor.Status{"api-targets": fail, "probe": fail}, cause: "probe",
				has: []string{"403 API_KEY_SERVICE_BLOCKED", "allow only cloudaicompanion.googleapis.com", "\"Gemini for Google Cloud\""}}},
		{name: "unrestricted", in: keyIn("unrestricted", same),
			want: want{status: map[string]doctor.Status{"api-targets": warn, "probe": ok}, healthy: true, has: []string{"no API restrictions"}}},
		{name: "browser key", in: keyIn("browser", same),
			want: want{status: map[string]doctor.Status{"client-restrictions": warn, "probe": warn}, healthy: true,
				has: []string{"https://chat.example.com/*", "403 API_KEY_HTTP_REFERRER_BLOCKED"}}},
		{name: "suspended", in: keyIn("suspended", same),
			want: want{status: map[string]doctor.Status{"probe": fail}, cause: "probe", has: []string{"403 CONSUMER_SUSPENDED", "replace it", "find where it leaked"},
				probeErr: verify.ErrSuspended}},
		{name: "reported leaked", in: keyIn("reported", same),
			want: want{status: map[string]doctor.Status{"lookup": ok, "deleted": ok, "probe": fail}, cause: "probe",
				has: []string{"403 PERMISSION_DENIED", "Google reported the key as leaked", "replace it", "find where it leaked"}}},
		{name: "deleted", in: keyIn("deleted", same),
			want: want{status: map[string]doctor.Status{"lookup": ok, "deleted": fail, "probe": fail}, cause: "deleted",
				has:    []string{"deleted on 2026-11-02 10:00 UTC; it can be undeleted until 2026-12-02 10:00 UTC", "gcloud services api-keys undelete deleted --project=345678901234", "the key is deleted"},
				remedy: map[string]doctor.Remedy{"probe": {Kind: doctor.RemedyRotate}}}},
		{name: "api disabled", in: keyIn("disabled", same),
			want: want{status: map[string]doctor.Status{"probe": fail}, cause: "probe",
				has: []string{"403 SERVICE_DISABLED", "not enabled in project " + offProjectNum, "gcloud services enable generativelanguage.googleapis.com --project=" + offProjectNum, "https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project=" + offProjectNum}}},
		{name: "throttled", in: keyIn("good", same),
			setup: func(t *testing.T, w *docWorld) {
				w.srv.Fail("gemini.CountTokens", fake.Next, fake.Fault{Code: codes.ResourceExhausted})
			},
			want: want{status: map[string]doctor.Status{"probe": warn}, healthy: true, has: []string{"429", "valid but rate limited"}}},
		{name: "not propagated", in: keyIn("fresh", same),
			want: want{status: map[string]doctor.Status{"lookup": ok, "deleted": ok, "probe": fail}, cause: "probe",
				has: []string{"400 API_KEY_INVALID", "has not propagated yet", "wait up to 10 minutes"}, remedy: map[string]doctor.Remedy{"probe": {}}}},
		{name: "unknown key", in: envIn("GEMINI_API_KEY", "AIzaSyUnknownUnknownUnknownUnknown12345"),
			want: want{status: map[string]doctor.Status{"format": warn, "lookup": fail, "probe": fail}, cause: "lookup", has: []string{"knows no key with this value"}}},
		{name: "project by id", in: keyIn("good", same), doctor: func(w *docWorld) *doctor.Doctor { return w.doctor(docProject) },
			want: want{status: map[string]doctor.Status{"project": ok}, healthy: true, has: []string{"belongs to project doc-project (number 345678901234)"}}},
		{name: "project by number", in: keyIn("good", same), doctor: func(w *docWorld) *doctor.Doctor { return w.doctor(docProjectNum) },
			want: want{status: map[string]doctor.Status{"project": ok}, healthy: true}},
		{name: "other project by id", in: keyIn("good", same), doctor: func(w *docWorld) *doctor.Doctor { return w.doctor(offProject) },
			want: want{status: map[string]doctor.Status{"project": fail, "probe": ok}, cause: "project", has: []string{"belongs to project 345678901234, not to project doc-off"}}},
		{name: "other project by number", in: keyIn("good", same), doctor: func(w *docWorld) *doctor.Doctor { return w.doctor(offProjectNum) },
			want: want{status: map[string]doctor.Status{"project": fail}, cause: "project"}},
		{name: "no credentials", in: keyIn("good", same),
			doctor: func(w *docWorld) *doctor.Doctor {
				return &doctor.Doctor{KeysErr: errors.New("no Google credentials: credentials: could not find default credentials"), Probe: w.doctor("").Probe}
			},
			want: want{status: map[string]doctor.Status{"credentials": skip, "probe": ok}, healthy: true,
				has: []string{"key lookup skipped", "could not find default credentials", "gcloud auth application-default login"}, hasNot: []string{"lookup", "binding"}}},
		{name: "local only", in: keyIn("good", func(s string) string { return s + "\u200b" }),
			doctor: func(*docWorld) *doctor.Doctor { return &doctor.Doctor{} },
			want:   want{status: map[string]doctor.Status{"invisible": fail, "credentials": skip, "probe": skip}, cause: "invisible"}},
		{name: "lookup denied", in: keyIn("good", same),
			setup: func(t *testing.T, w *docWorld) {
				w.srv.DenyPermission("apikeys.keys.lookup")
				t.Cleanup(func() { w.srv.AllowPermission("apikeys.keys.lookup") })
			},
			want: want{status: map[string]doctor.Status{"lookup": skip, "probe": ok}, healthy: true, has: []string{"roles/serviceusage.apiKeysViewer"}}},
		{name: "get key fails", in: keyIn("good", same),
			setup: func(t *testing.T, w *docWorld) {
				w.srv.Fail("apikeys.GetKey", fake.Next, fake.Fault{Code: codes.Internal})
			},
			want: want{status: map[string]doctor.Status{"lookup": ok, "deleted": skip, "probe": ok}, healthy: true}},
		{name: "api keys unreachable", in: keyIn("good", func(s string) string { return s + " " }),
			doctor: func(w *docWorld) *doctor.Doctor {
				d := w.doctor("")
				lookup, err := apikeysapi.NewClient(context.Background(), option.WithEndpoint(deadAddr(t)), option.WithoutAuthentication(),
					option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
				if err != nil {
					t.Fatal(err)
				}
				lookup.CallOptions = &apikeysapi.CallOptions{}
				t.Cleanup(func() { lookup.Close() })
				d.Lookup = lookup
				return d
			},
			// The lookup goes over gRPC: no URL, so no query to redact;
			// the transport's reason is kept.
			want: want{status: map[string]doctor.Status{"lookup": skip, "probe": ok}, healthy: true, has: []string{"key lookup failed", "connection refused"}}},
		{name: "gemini unreachable", in: keyIn("good", same),
			doctor: func(w *docWorld) *doctor.Doctor {
				d := w.doctor("")
				d.Probe = &verify.Gemini{BaseURL: "http://" + deadAddr(t)}
				return d
			},
			// The probe decides health: a lookup that passed proves the
			// key exists, not that it works. Incomplete, not healthy.
			want: want{status: map[string]doctor.Status{"lookup": ok, "probe": skip}, cause: doctor.CauseIncomplete, has: []string{"live probe not finished"}}},
		{name: "no credentials and gemini unreachable", in: keyIn("good", same),
			doctor: func(w *docWorld) *doctor.Doctor {
				d := w.doctor("")
				d.Keys, d.Lookup, d.KeysErr = nil, nil, errors.New("no Google credentials")
				d.Probe = &verify.Gemini{BaseURL: "http://" + deadAddr(t)}
				return d
			},
			want: want{status: map[string]doctor.Status{"credentials": skip, "probe": skip}, cause: doctor.CauseIncomplete,
				has: []string{"key lookup skipped", "live probe not finished"}}},
		// A model the API does not serve says nothing about the key: the
		// verdict is incomplete, not a failure of the key.
		{name: "probe model not served", in: keyIn("good", same),
			doctor: func(w *docWorld) *doctor.Doctor {
				d := w.doctor("")
				d.Probe = d.Probe.With(verify.ProbeGenerateContent, "gemini-0.1-nano")
				return d
			},
			want: want{status: map[string]doctor.Status{"lookup": ok, "probe": skip}, cause: doctor.CauseIncomplete,
				has: []string{"does not serve generateContent on gemini-0.1-nano", "--model"}}},
		{name: "listModels probe", in: keyIn("good", same),
			doctor: func(w *docWorld) *doctor.Doctor {
				d := w.doctor("")
				d.Probe = d.Probe.With(verify.ProbeListModels, "")
				return d
			},
			want: want{status: map[string]doctor.Status{"probe": ok}, healthy: true, has: []string{"accepts the key (listModels"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t, w)
			}
			d := w.doctor("")
			if tc.doctor != nil {
				d = tc.doctor(w)
			}
			in := tc.in(w)
			rep := d.Check(context.Background(), in)
			checkReport(t, rep, tc.want)
			checkCanary(t, rep, append(w.allKeys(), in.Value, inputValue(in)))
		})
	}
}

// TestDoctorPurged: a key deleted more than 30 days ago is purged and can no
// longer be undeleted; LookupKey still names its project.
func TestDoctorPurged(t *testing.T) {
	w := newDocWorld(t)
	w.clock.Advance(31 * 24 * time.Hour)
	in := doctor.Input{Env: envOf("GEMINI_API_KEY", w.key["deleted"])}
	rep := w.doctor("").Check(context.Background(), in)
	checkReport(t, rep, want{status: map[string]doctor.Status{"lookup": fail, "probe": fail}, cause: "lookup",
		has: []string{"belonged to projects/345678901234 but was deleted more than 30 days ago and purged"}})
	checkCanary(t, rep, append(w.allKeys(), w.key["deleted"]))
}

// TestDoctorLookupKeyStringNeverInURL: doctor looks the key string up over
// gRPC, the key string in the request body, never in a URL (the REST
// keys:lookupKey would put it in the query string, where proxies and
// access logs record it).
func TestDoctorLookupKeyStringNeverInURL(t *testing.T) {
	w := newDocWorld(t)
	in := doctor.Input{Env: envOf("GEMINI_API_KEY", w.key["good"])}
	rep := w.doctor("").Check(context.Background(), in)
	checkReport(t, rep, want{status: map[string]doctor.Status{"lookup": ok}, healthy: true})
	if got := w.srv.Calls("apikeys.LookupKey"); got == 0 {
		t.Fatalf("LookupKey calls = 0, want > 0")
	}
	if got := w.srv.KeyStringsInURLs(); got != 0 {
		t.Errorf("requests with a key string in the URL = %d, want 0", got)
	}
}

// inputValue returns the raw value the input holds, for the canary.
func inputValue(in doctor.Input) string {
	if in.Stdin {
		return in.Value
	}
	if in.Env != nil {
		for _, n := range []string{"GEMINI_API_KEY", "GOOGLE_API_KEY", in.Var} {
			if v, ok := in.Env(n); ok && v != "" {
				return v
			}
		}
	}
	return ""
}

// TestDoctorLeakedFacts: for a key Google reports as leaked the library
// says what happened and what to do in facts, names no keyrotate command
// (the CLI adds that), and hands the probe's error to the caller.
func TestDoctorLeakedFacts(t *testing.T) {
	w := newDocWorld(t)
	rep := w.doctor("").Check(context.Background(), keyIn("reported", same)(w))
	if !errors.Is(rep.ProbeError, verify.ErrLeaked) {
		t.Fatalf("Report.ProbeError = %v, want ErrLeaked", rep.ProbeError)
	}
	if text := render(rep); strings.Contains(text, "keyrotate ") || strings.Contains(rep.ProbeError.Hint(), "keyrotate ") {
		t.Errorf("the library names a command:\n%s\nhint: %s", text, rep.ProbeError.Hint())
	}
	checkCanary(t, rep, w.allKeys())
}

func checkReport(t *testing.T, rep *doctor.Report, w want) {
	t.Helper()
	got := map[string]doctor.Status{}
	for _, f := range rep.Findings {
		if _, dup := got[f.ID]; dup {
			t.Errorf("finding %s reported twice", f.ID)
		}
		got[f.ID] = f.Status
		if f.Status != ok && f.Status != skip && f.Fix == "" {
			t.Errorf("finding %s (%s) has no fix", f.ID, f.Status)
		}
	}
	for id, st := range w.status {
		if got[id] != st {
			t.Errorf("finding %s = %q, want %q", id, got[id], st)
		}
	}
	for _, id := range w.hasNot {
		if _, ok := got[id]; ok {
			t.Errorf("finding %s present, want none", id)
		}
	}
	if rep.Healthy != w.healthy {
		t.Errorf("healthy = %v, want %v", rep.Healthy, w.healthy)
	}
	if !w.healthy && rep.Summary.Cause != w.cause {
		t.Errorf("summary cause = %q, want %q", rep.Summary.Cause, w.cause)
	}
	if rep.Incomplete != (w.cause == doctor.CauseIncomplete) {
		t.Errorf("incomplete = %v, want %v", rep.Incomplete, w.cause == doctor.CauseIncomplete)
	}
	if !rep.Healthy && rep.Summary.Next == "" {
		t.Errorf("summary has no next step")
	}
	for id, r := range w.remedy {
		if f, _ := rep.Finding(id); f.Remedy != r {
			t.Errorf("finding %s remedy = %+v, want %+v", id, f.Remedy, r)
		}
	}
	if w.probeErr != nil && !errors.Is(rep.ProbeError, w.probeErr) {
		t.Errorf("Report.ProbeError = %v, want %v", rep.ProbeError, w.probeErr)
	}
	text := render(rep)
	// The library names no command of the program that runs it: the
	// caller words a Remedy.
	if strings.Contains(text, "`keyrotate ") {
		t.Errorf("the report names a keyrotate command")
	}
	for _, s := range w.has {
		if !strings.Contains(text, s) {
			t.Errorf("findings lack %q", s)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", text)
	}
}

func render(rep *doctor.Report) string {
	var b strings.Builder
	for _, f := range rep.Findings {
		b.WriteString(string(f.Status) + " " + f.ID + ": " + f.Message + "\n    fix: " + f.Fix + "\n")
	}
	b.WriteString("summary: " + rep.Summary.Cause + ": " + rep.Summary.Message + "\n    next: " + rep.Summary.Next + "\n")
	return b.String()
}

// checkCanary fails when any secret, or 12 consecutive characters of one,
// appears in the report's text or JSON.
func checkCanary(t *testing.T, rep *doctor.Report, secrets []string) {
	t.Helper()
	j, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	out := render(rep) + string(j)
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(out, s) {
			t.Fatalf("a key string appears in the report")
		}
		// Windows of the key itself: drop the junk the tests add.
		core := strings.Map(func(r rune) rune {
			if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				return r
			}
			return -1
		}, s)
		for _, pfx := range []string{"export", "GEMINI_API_KEY", "Bearer", "x-goog-api-key", "key"} {
			core = strings.TrimPrefix(core, pfx)
		}
		for i := 0; i+12 <= len(core); i++ {
			if strings.Contains(out, core[i:i+12]) {
				t.Fatalf("12 characters of a key string appear in the report")
			}
		}
	}
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string { return emutest.DeadAddr(t) }
