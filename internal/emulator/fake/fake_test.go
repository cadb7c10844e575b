package fake

import (
	"testing"
	"time"
)

func TestFaultsSchedule(t *testing.T) {
	var fs Faults
	fs.Add("m", 2, 0, Fault{Status: 500})
	fs.Add("m", Next, 3, Fault{Status: 502, Times: 2}) // calls 4 and 5
	fs.Add("outage", Next, 0, Fault{Status: 503, Times: Always})
	want := map[int]int{1: 0, 2: 500, 3: 0, 4: 502, 5: 502, 6: 0}
	for n := 1; n <= 6; n++ {
		f, ok := fs.Take("m", n)
		if got := f.Status; got != want[n] || ok != (want[n] != 0) {
			t.Errorf("call %d: Take = %d, %v; want %d", n, got, ok, want[n])
		}
	}
	if _, ok := fs.Take("m", 2); ok {
		t.Error("a fault for one call was taken twice")
	}
	for n := 1; n <= 100; n += 33 {
		if f, ok := fs.Take("outage", n); !ok || f.Status != 503 {
			t.Errorf("outage call %d: Take = %v, %v", n, f, ok)
		}
	}
	fs.Clear()
	if _, ok := fs.Take("outage", 101); ok {
		t.Error("Clear left the outage")
	}
}

func TestManualClock(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 10, 0, 0, 0, time.FixedZone("x", 3600))
	c := NewManualClock(t0)
	c.Advance(time.Minute)
	if got := c.Now(); !got.Equal(t0.Add(time.Minute)) || got.Location() != time.UTC {
		t.Errorf("Now = %v, want %v in UTC", got, t0.Add(time.Minute))
	}
}

func TestHTTPCalls(t *testing.T) {
	var c HTTPCalls
	c.Name = "test"
	c.Enter("Get")
	c.Fail("Get", Next, Fault{Status: 503})        // call 2
	c.Fail("Put", 1, Fault{Status: 409, Times: 2}) // calls 1 and 2
	if f, ok := c.Take("Get", c.Enter("Get")); !ok || f.Status != 503 {
		t.Errorf("Get call 2: fault %v %v, want 503", f, ok)
	}
	if _, ok := c.Take("Get", c.Enter("Get")); ok {
		t.Error("Get call 3 failed: the fault was for call 2 only")
	}
	c.ResetCalls()
	for n := 1; n <= 3; n++ {
		_, ok := c.Take("Put", c.Enter("Put"))
		if ok != (n <= 2) {
			t.Errorf("Put call %d after ResetCalls: failed %v", n, ok)
		}
	}
	if got := c.Calls(""); got != 3 {
		t.Errorf("Calls(\"\") = %d, want 3 since ResetCalls", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("a Fault without a Status did not panic")
		}
	}()
	c.Fail("Get", 1, Fault{})
}
