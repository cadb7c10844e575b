package main

import (
	"testing"
)

// TestHappyPathMeetsPublishedDefinitions runs plan, rotate, status and
// doctor against the emulator: not one request breaks the API Keys
// discovery document or a gRPC proto's field behaviours, and no write is
// refused for Secret Manager's per-secret rate. (Every test that starts the
// emulator through internal/emutest checks the first; this one says so
// for the whole product path, and that the path did reach each API.)
func TestHappyPathMeetsPublishedDefinitions(t *testing.T) {
	t.Parallel()
	cw := newCrashWorld(t)
	cfg := []string{"--config", cw.w.config}
	for _, args := range [][]string{
		append(cfg, "plan"),
		cw.rotateArgs(false),
		append(cfg, "status"),
	} {
		if c := cw.run(args...); c.code != 0 {
			t.Fatalf("keyrotate %v: exit %d\n%s", args, c.code, c.output())
		}
	}
	key, err := cw.dotenvValue()
	if err != nil {
		t.Fatal(err)
	}
	cw.env = append(cw.env, "GEMINI_API_KEY="+key)
	if c := cw.run("doctor", "--project", demoProject); c.code != 0 {
		t.Fatalf("keyrotate doctor: exit %d\n%s", c.code, c.output())
	}
	for _, m := range []string{"apikeys.CreateKey", "apikeys.GetKey", "apikeys.DeleteKey", "apikeys.GetOperation", "apikeys.LookupKey",
		"secretmanager.UpdateSecret", "secretmanager.AddSecretVersion", "secretmanager.AccessSecretVersion", "secretmanager.DisableSecretVersion"} {
		if cw.srv.Calls(m) == 0 {
			t.Errorf("the happy path made no %s call: the check saw none of them", m)
		}
	}
	if vs := cw.srv.SchemaViolations(); len(vs) != 0 {
		t.Errorf("requests broke the published API definitions: %v", vs)
	}
	if n := cw.srv.Throttled(); n != 0 {
		t.Errorf("the emulator refused %d calls for rate, want 0", n)
	}
}
