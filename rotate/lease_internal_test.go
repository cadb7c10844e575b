package rotate

import (
	"fmt"
	"io/fs"
	"testing"
	"time"
)

// TestCanTakeOver is the takeover decision alone: a live lease is taken
// over early only when this process can be sure that the holder's process
// is gone — same host, boot and pid and time namespaces, and the pid gone
// or reused. Every doubt keeps the lease until it expires.
func TestCanTakeOver(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	future, past := now.Add(time.Minute), now.Add(-time.Second)
	me := Holder{Host: "vm", PID: 100, ProcStart: "5000", BootID: "boot-a", PIDNS: "pid:[1]", TimeNS: "time:[2]"}
	// peer is another process on this host, as seen by me.
	peer := func(edit func(*Holder)) Holder {
		h := Holder{Host: "vm", PID: 200, ProcStart: "6000", Run: "r-other", BootID: "boot-a", PIDNS: "pid:[1]", TimeNS: "time:[2]"}
		if edit != nil {
			edit(&h)
		}
		return h
	}
	// What /proc/200/stat answers.
	alive := func(int) (string, error) { return "6000", nil }
	reused := func(int) (string, error) { return "7000", nil }
	gone := func(pid int) (string, error) {
		return "", &fs.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", pid), Err: fs.ErrNotExist}
	}
	denied := func(pid int) (string, error) {
		return "", &fs.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", pid), Err: fs.ErrPermission}
	}
	garbled := func(int) (string, error) { return "", errNoStart }

	for _, tc := range []struct {
		name    string
		holder  Holder
		me      Holder
		expires time.Time
		start   func(int) (string, error)
		want    bool
	}{
		{"released", Holder{}, me, future, alive, true},
		{"expired, other host", Holder{Host: "other", PID: 7, ProcStart: "1", Run: "x"}, me, past, alive, true},
		{"expired, live process", peer(nil), me, past, alive, true},
		{"live process", peer(nil), me, future, alive, false},
		{"pid gone", peer(nil), me, future, gone, true},
		{"pid reused by a later process", peer(nil), me, future, reused, true},
		{"other host, pid gone", peer(func(h *Holder) { h.Host = "other" }), me, future, gone, false},
		{"other pid namespace, pid gone", peer(func(h *Holder) { h.PIDNS = "pid:[9]" }), me, future, gone, false},
		{"other pid namespace, pid reused", peer(func(h *Holder) { h.PIDNS = "pid:[9]" }), me, future, reused, false},
		{"other time namespace, start differs", peer(func(h *Holder) { h.TimeNS = "time:[9]" }), me, future, reused, false},
		{"other boot, pid gone", peer(func(h *Holder) { h.BootID = "boot-b" }), me, future, gone, false},
		{"old record without namespace and boot id, pid gone", peer(func(h *Holder) { h.BootID, h.PIDNS, h.TimeNS = "", "", "" }), me, future, gone, false},
		{"old record without namespace, pid reused", peer(func(h *Holder) { h.PIDNS = "" }), me, future, reused, false},
		{"old record without boot id, pid gone", peer(func(h *Holder) { h.BootID = "" }), me, future, gone, false},
		{"holder start time unknown, pid gone", peer(func(h *Holder) { h.ProcStart = "" }), me, future, gone, false},
		{"holder pid unknown", peer(func(h *Holder) { h.PID = 0 }), me, future, gone, false},
		{"my /proc is not my namespace's", peer(func(h *Holder) { h.BootID, h.PIDNS, h.TimeNS = "", "", "" }),
			Holder{Host: "vm", PID: 100}, future, gone, false},
		{"my start time unknown", peer(nil), func() Holder { m := me; m.ProcStart = ""; return m }(), future, gone, false},
		{"proc stat unreadable", peer(nil), me, future, denied, false},
		{"proc stat garbled", peer(nil), me, future, garbled, false},
		{"no time namespaces on either side, pid gone", peer(func(h *Holder) { h.TimeNS = "" }),
			func() Holder { m := me; m.TimeNS = ""; return m }(), future, gone, true},
		{"this process, run not in flight", peer(func(h *Holder) { h.PID, h.ProcStart = me.PID, me.ProcStart }), me, future, alive, true},
		{"own run in flight", peer(func(h *Holder) { h.Run = "r-mine-live" }), me, future, gone, false},
		{"own run finished, no /proc at all", Holder{Host: "vm", PID: 100, Run: "r-mine-done"}, Holder{Host: "vm", PID: 100}, future, denied, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			own := func(run string) (mine, inFlight bool) {
				switch run {
				case "r-mine-live":
					return true, true
				case "r-mine-done":
					return true, false
				}
				return false, false
			}
			if got := canTakeOver(tc.holder, tc.me, tc.expires, now, own, tc.start); got != tc.want {
				t.Errorf("canTakeOver(%+v, me %+v) = %t, want %t", tc.holder, tc.me, got, tc.want)
			}
		})
	}
}

// TestSelfIdentity: on Linux with /proc, this process records everything
// another run needs to judge it.
func TestSelfIdentity(t *testing.T) {
	if _, err := procStart(1); err != nil && self.ProcStart == "" {
		t.Skipf("no usable /proc here: %v", err)
	}
	if self.ProcStart == "" || self.BootID == "" || self.PIDNS == "" {
		t.Errorf("self = %+v, want start time, boot id and pid namespace", self)
	}
	if mine, inFlight := ownRun("never-made"); mine || inFlight {
		t.Errorf("ownRun(never made) = %t, %t; want false, false", mine, inFlight)
	}
}
