package main

import (
	"strconv"
	"strings"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/rogpeppe/go-internal/testscript"
	"google.golang.org/api/apikeys/v2"
)

// vaultProject is a second project, for secretmanager targets outside the
// slot's own project.
const (
	vaultProject       = "vault-project"
	vaultProjectNumber = 555555555555
)

// addVault makes vaultProject known to the emulator, once: adding it again
// would make a new project and orphan what the first one holds.
func addVault(sw *scriptWorld) {
	if !sw.vault {
		sw.srv.AddProject(vaultProject, vaultProjectNumber)
		sw.vault = true
	}
}

// cmdSM steers and inspects further Secret Manager secrets, global
// (projects/P/secrets/S) or regional (projects/P/locations/L/secrets/S):
//
//	sm seed NAME              the secret, made in the emulator, holds the slot's current key
//	sm holds NAME current|seeded   its latest version holds the slot secret's latest key, or the seeded (old) one
//	sm newest-enabled NAME    its newest version is enabled (keyrotate never disables it)
//	sm versions NAME N        it has N versions
//	sm seed-foreign NAME      the secret, in vault-project, holds a key of vault-project
//	sm foreign-intact NAME    it still has one version, holding a live key of vault-project
func cmdSM(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: sm VERB NAME ...")
	}
	sw := world(ts)
	srv := sw.srv
	verb, name := args[0], args[1]
	switch verb {
	case "seed":
		parts := strings.Split(name, "/")
		if parts[1] == vaultProject {
			addVault(sw)
		}
		var err error
		var canon string
		if len(parts) == 6 {
			canon, err = srv.SeedRegionalSecret(parts[1], parts[3], parts[5], nil)
		} else {
			canon, err = srv.SeedSecret(parts[1], parts[3], nil)
		}
		ts.Check(err)
		_, err = srv.SeedSecretVersion(canon, []byte(latestPayload(sw)))
		ts.Check(err)
	case "seed-foreign":
		addVault(sw)
		_, k, err := srv.SeedKey(vaultProject, "vault-key", &apikeys.V2Key{
			DisplayName:         "vault's own",
			Restrictions:        &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}}},
			ServiceAccountEmail: "gemini@" + vaultProject + ".iam.gserviceaccount.com",
		})
		ts.Check(err)
		canon, err := srv.SeedSecret(vaultProject, strings.Split(name, "/")[3], nil)
		ts.Check(err)
		_, err = srv.SeedSecretVersion(canon, []byte(k))
		ts.Check(err)
	case "foreign-intact":
		vs := srv.SecretVersions(name)
		got, _ := srv.SecretPayload(name + "/versions/latest")
		var live bool
		for _, k := range srv.Keys(vaultProject, true) {
			live = live || k.KeyString == string(got) && k.DeleteTime == "" && srv.KeyWorks(k.KeyString)
		}
		if (len(vs) == 1 && live) == neg {
			ts.Fatalf("%s: %d versions, holding a live key of %s: %t", name, len(vs), vaultProject, live)
		}
	case "holds":
		want := sw.w.key.Reveal()
		if args[2] == "current" {
			want = latestPayload(sw)
		}
		got, ok := srv.SecretPayload(name + "/versions/latest")
		if (ok && string(got) == want) == neg {
			ts.Fatalf("%s latest holds the %s key: %v, want %v", name, args[2], !neg, neg)
		}
		if !srv.KeyWorks(string(got)) {
			ts.Fatalf("%s latest holds a key that does not work", name)
		}
	case "newest-enabled":
		vs := srv.SecretVersions(name)
		if len(vs) == 0 {
			ts.Fatalf("%s: no versions", name)
		}
		if (vs[len(vs)-1].GetState() == secretmanagerpb.SecretVersion_ENABLED) == neg {
			ts.Fatalf("%s newest version is %v", name, vs[len(vs)-1].GetState())
		}
	case "versions":
		n, _ := strconv.Atoi(args[2])
		if got := len(srv.SecretVersions(name)); (got == n) == neg {
			ts.Fatalf("%s has %d versions, want %d", name, got, n)
		}
	default:
		ts.Fatalf("sm: unknown verb %q", verb)
	}
}
