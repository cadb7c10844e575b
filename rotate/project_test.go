package rotate_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/api/apikeys/v2"

	"github.com/keyrotate/keyrotate/internal/errhint"
	"github.com/keyrotate/keyrotate/rotate"
)

// A second project: a central secrets project, or someone else's.
const (
	shared    = "acme-shared"
	sharedNum = 515151515151
)

// TestSlotProject: the key a slot rotates (and deletes) must belong to the
// slot's project, however the config names the project, the secret and the
// key — by id or by number, which the API's answers always use. A secret in
// another project is refused unless the slot says so (SecretProjectDiffers,
// a central secrets project). Every refusal comes from the preflight, before
// any write, as a configuration error with a hint.
func TestSlotProject(t *testing.T) {
	t.Parallel() // its own emulator(s); mostly waiting out per-secret write rates
	byID := map[string]string{"prod": project, "shared": shared}
	byNum := map[string]string{"prod": strconv.Itoa(projectNum), "shared": strconv.Itoa(sharedNum)}
	for _, tc := range []struct {
		name         string
		projectByNum bool   // the slot names its project by number
		secretIn     string // prod or shared: where the slot's secret lives
		secretByNum  bool   // the slot names the secret's project by number
		keyIn        string // prod or shared: the project of the key the secret holds
		keyIDClash   bool   // the shared key has the same key id as a key in prod
		differs      bool   // SecretProjectDiffers
		wantOK       bool
	}{
		{name: "all in the project, by id", secretIn: "prod", keyIn: "prod", wantOK: true},
		{name: "all in the project, project by number", projectByNum: true, secretIn: "prod", keyIn: "prod", wantOK: true},
		{name: "all in the project, secret by number", secretIn: "prod", secretByNum: true, keyIn: "prod", wantOK: true},
		{name: "secret in the project holds another project's key", secretIn: "prod", keyIn: "shared"},
		{name: "secret and key in another project, by id", secretIn: "shared", keyIn: "shared"},
		{name: "secret and key in another project, secret by number", secretIn: "shared", secretByNum: true, keyIn: "shared"},
		{name: "secret and key in another project, project by number", projectByNum: true, secretIn: "shared", keyIn: "shared"},
		{name: "secret elsewhere, not declared", secretIn: "shared", keyIn: "prod"},
		{name: "secret elsewhere by number, not declared", projectByNum: true, secretIn: "shared", secretByNum: true, keyIn: "prod"},
		{name: "central secret project", secretIn: "shared", keyIn: "prod", differs: true, wantOK: true},
		{name: "central secret project by number", secretIn: "shared", secretByNum: true, keyIn: "prod", differs: true, wantOK: true},
		{name: "central secret project, key elsewhere", secretIn: "shared", keyIn: "shared", differs: true},
		{name: "central secret project, key elsewhere with a key id the project has too", secretIn: "shared", secretByNum: true,
			keyIn: "shared", keyIDClash: true, differs: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.srv.AddProject(shared, sharedNum)
			keyName, keyString := w.oldName, w.oldKey
			if tc.keyIn == "shared" {
				id := "gemini-elsewhere"
				if tc.keyIDClash {
					id = keyIDOf(w.oldName)
				}
				var err error
				keyName, keyString, err = w.srv.SeedKey(shared, id, &apikeys.V2Key{
					DisplayName:  "Gemini (shared)",
					Restrictions: &apikeys.V2Restrictions{ApiTargets: []*apikeys.V2ApiTarget{{Service: "generativelanguage.googleapis.com"}}},
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			secretName := w.slot.Secret
			if tc.secretIn == "shared" {
				var err error
				if secretName, err = w.srv.SeedSecret(shared, "gemini-api-key", nil); err != nil {
					t.Fatal(err)
				}
			}
			if keyString != w.oldKey || tc.secretIn == "shared" {
				if _, err := w.srv.SeedSecretVersion(secretName, []byte(keyString)); err != nil {
					t.Fatal(err)
				}
			}
			w.putInEnv(keyString)
			names := byID
			if tc.secretByNum {
				names = byNum
			}
			w.slot.Secret = "projects/" + names[tc.secretIn] + "/secrets/gemini-api-key"
			if tc.projectByNum {
				w.slot.Project = byNum["prod"]
			}
			w.slot.SecretProjectDiffers = tc.differs
			w.srv.ResetCalls()

			res, err := w.rotate(rotate.Options{})
			if tc.wantOK {
				if err != nil || !res.Rotated {
					t.Fatalf("Rotate = %+v, %v; want rotated", res, err)
				}
				if want := "projects/" + byNum["prod"] + "/"; !strings.HasPrefix(res.NewKey.Name, want) {
					t.Errorf("new key %s, want it in the slot's project (%s…)", res.NewKey.Name, want)
				}
				return
			}
			if !errors.Is(err, rotate.ErrBadConfig) || errhint.Of(err) == "" {
				t.Fatalf("Rotate = %+v, %v; want ErrBadConfig with a hint", res, err)
			}
			if !strings.Contains(err.Error(), w.slot.Project) {
				t.Errorf("error %q does not name the slot's project %s", err, w.slot.Project)
			}
			if n := w.srv.MutatingCalls(); n != 0 {
				t.Errorf("mutating calls = %d, want 0: %v", n, w.srv.CallCounts())
			}
			if k, _ := w.srv.Key(keyName); k.DeleteTime != "" || !w.srv.KeyWorks(keyString) {
				t.Errorf("key %s was deleted by a refused run", keyName)
			}
		})
	}
}

func keyIDOf(name string) string { return name[strings.LastIndex(name, "/")+1:] }
