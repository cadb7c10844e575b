package rotate

import (
	"testing"
	"time"
)

// TestPropagationLeader: the first key of a project to wait leads; the
// lead passes on when it leaves; learning a shorter delay, and a change of
// leader, wake the waiters.
func TestPropagationLeader(t *testing.T) {
	t.Parallel()
	var p propagation
	a, b, c := p.join("p1"), p.join("p1"), p.join("p2")
	if !p.leads("p1", a) || p.leads("p1", b) || !p.leads("p2", c) {
		t.Fatal("the first key of each project must lead, and only it")
	}
	_, _, changed := p.get("p1", b)
	p.leave("p1", a)
	select {
	case <-changed:
	default:
		t.Fatal("the leader leaving did not wake the others")
	}
	if !p.leads("p1", b) {
		t.Fatal("the lead did not pass on")
	}
	_, _, changed = p.get("p1", b)
	p.observe("p1", 50*time.Second)
	d, _, _ := p.get("p1", b)
	if d != 50*time.Second {
		t.Fatalf("delay = %s", d)
	}
	select {
	case <-changed:
	default:
		t.Fatal("a learned delay did not wake the waiters")
	}
	_, _, changed = p.get("p1", b)
	p.observe("p1", 70*time.Second) // longer: not news
	select {
	case <-changed:
		t.Fatal("a longer delay woke the waiters")
	default:
	}
	if d, _, _ := p.get("p2", c); d != 0 {
		t.Fatalf("projects share what they learned: %s", d)
	}
}
