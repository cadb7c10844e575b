package main

import (
	"github.com/rogpeppe/go-internal/testscript"
)

// cmdEmuQuotaProject: "emu quota-project require" makes the emulator stand
// for user credentials without a quota project (every API Keys and Secret
// Manager call without x-goog-user-project is refused with Google's
// SERVICE_DISABLED naming its shared client project); "off" undoes it.
func cmdEmuQuotaProject(ts *testscript.TestScript, sw *scriptWorld, args []string) {
	if len(args) != 1 || args[0] != "require" && args[0] != "off" {
		ts.Fatalf("usage: emu quota-project require|off")
	}
	sw.srv.RequireQuotaProject(args[0] == "require")
}
