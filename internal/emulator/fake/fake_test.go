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
