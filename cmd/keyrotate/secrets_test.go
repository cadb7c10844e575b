package main

import (
	"strconv"
	"strings"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/rogpeppe/go-internal/testscript"
)

// vaultProject is a second project, for secretmanager targets outside the
// slot's own project.
const (
	vaultProject       = "vault-project"
	vaultProjectNumber = 555555555555
)

// cmdSM steers and inspects further Secret Manager secrets, global
// (projects/P/secrets/S) or regional (projects/P/locations/L/secrets/S):
//
//	sm seed NAME              the secret, made in the emulator, holds the slot's current key
//	sm holds NAME current|seeded   its latest version holds the slot secret's latest key, or the seeded (old) one
//	sm newest-enabled NAME    its newest version is enabled (keyrotate never disables it)
//	sm versions NAME N        it has N versions
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
			srv.AddProject(vaultProject, vaultProjectNumber)
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
