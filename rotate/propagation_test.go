package rotate

import (
	"context"
	"testing"
	"time"
)

// TestPropagationLeader: the key of a project made first leads (keys made
// together: the first to wait); the lead passes on when it leaves; learning a shorter delay wakes the keys
// waiting, a change of leader wakes the new leader, and a key joining wakes
// the leader — and nothing else wakes anyone (thousands of keys of a
// project wait at once).
func TestPropagationLeader(t *testing.T) {
	t.Parallel()
	var p propagation
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	a, b, c := p.join("p1", t0), p.join("p1", t0), p.join("p2", t0.Add(time.Second))
	if !p.get("p1", a).leads || p.get("p1", b).leads || !p.get("p2", c).leads {
		t.Fatal("the first key of each project must lead, and only it")
	}
	if n := p.get("p1", a).waiting; n != 2 {
		t.Fatalf("p1 waiting = %d, want 2", n)
	}
	// sleeping registers a key's wake; woken reports whether it was called.
	sleeping := func(project string, w *waiter) func() bool {
		ctx, wake := context.WithCancel(context.Background())
		p.sleep(project, w, wake)
		return func() bool { return ctx.Err() != nil }
	}
	aWoken, bWoken, cWoken := sleeping("p1", a), sleeping("p1", b), sleeping("p2", c)
	d := p.join("p1", t0.Add(time.Second))
	if !aWoken() || bWoken() || cWoken() {
		t.Fatalf("a key joining woke leader %v, follower %v, other project %v; want only the leader", aWoken(), bWoken(), cWoken())
	}
	aWoken, dWoken := sleeping("p1", a), sleeping("p1", d)
	p.leave("p1", d)
	if aWoken() || bWoken() || dWoken() {
		t.Fatal("a follower leaving woke a key")
	}
	p.leave("p1", a)
	if !bWoken() {
		t.Fatal("the leader leaving did not wake the next")
	}
	if !p.get("p1", b).leads {
		t.Fatal("the lead did not pass on")
	}
	e := p.join("p1", t0.Add(2*time.Second))
	g := p.join("p2", t0.Add(3*time.Second)) // follows c
	bWoken, eWoken := sleeping("p1", b), sleeping("p1", e)
	gWoken := sleeping("p2", g)
	p.observe("p1", 50*time.Second)
	if d := p.get("p1", b).delay; d != 50*time.Second {
		t.Fatalf("delay = %s", d)
	}
	if !bWoken() || !eWoken() {
		t.Fatal("a learned delay did not wake the project's waiters")
	}
	// The run's shortest delay changed: the other project's leader is
	// told (probeAt: it probes when its key is that old), not its
	// followers, who wait for their leader.
	if !cWoken() || gWoken() {
		t.Fatalf("a shorter delay than any project's woke the other project's leader %v (want true), follower %v (want false)", cWoken(), gWoken())
	}
	if pw := p.get("p2", c); pw.fleet != 50*time.Second || pw.delay != 0 {
		t.Fatalf("the other project sees delay %s, fleet %s; want 0 and 50s", pw.delay, pw.fleet)
	}
	bWoken, cWoken = sleeping("p1", b), sleeping("p2", c)
	p.observe("p1", 70*time.Second) // longer: not news
	if bWoken() || cWoken() {
		t.Fatal("a longer delay woke a key")
	}
	p.leave("p2", g)
	// A key made before the leader, slower to start waiting, takes the
	// lead, and the leader it demotes is told.
	cWoken = sleeping("p2", c)
	f := p.join("p2", t0)
	if !cWoken() || !p.get("p2", f).leads || p.get("p2", c).leads {
		t.Fatalf("a key made first did not take the lead (old leader woken: %v)", cWoken())
	}
}
