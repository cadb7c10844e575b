package main

import (
	"flag"
	"io"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/google/go-cmp/cmp"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/gcp"
)

// TestQuotasFromConfig: the documented quotas, raised where the config
// says, shared among the shards of a job.
func TestQuotasFromConfig(t *testing.T) {
	cfg := &config.Config{Defaults: config.Defaults{Quotas: map[string]config.Quota{"apikeys": {Writes: 600}, "monitoring": {Reads: 12000}}}}
	got := quotas(cfg, shard{0, 1, ""})
	want := map[string]gcp.Quota{"apikeys": {Reads: 240, Writes: 600}, "secretmanager": {Reads: 600, Writes: 600}, "monitoring": {Reads: 12000}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("one process (-want +got):\n%s", diff)
	}
	got = quotas(cfg, shard{1, 4, "--shard"})
	want = map[string]gcp.Quota{"apikeys": {Reads: 60, Writes: 150}, "secretmanager": {Reads: 150, Writes: 150}, "monitoring": {Reads: 3000}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("one of 4 shards (-want +got):\n%s", diff)
	}
	if gcp.DefaultQuotas["apikeys"].Writes != 120 {
		t.Errorf("quotas changed the package defaults: %+v", gcp.DefaultQuotas)
	}
}

// TestRotatorKnowsItsShards: a shard's Rotator knows how many processes
// share its projects (rotate.Rotator.Shards), to space its probes of their
// new keys; one process alone is 1.
func TestRotatorKnowsItsShards(t *testing.T) {
	for _, sh := range []shard{{0, 1, ""}, {1, 4, "--shard"}} {
		c := cli.NewContext(&cli.App{ErrWriter: io.Discard}, flag.NewFlagSet("rotate", flag.ContinueOnError), nil)
		j := &job{cfg: &config.Config{}, shard: sh, clients: &clients{}, out: &printer{}, meter: &gcp.Meter{}}
		if got := j.rotator(c).Shards; got != sh.count {
			t.Errorf("shard %s: Rotator.Shards = %d, want %d", sh, got, sh.count)
		}
	}
}

func TestParseShard(t *testing.T) {
	for _, c := range []struct {
		in   string
		i, n int
		ok   bool
	}{{"0/1", 0, 1, true}, {"2/3", 2, 3, true}, {"3/3", 0, 0, false}, {"-1/2", 0, 0, false}, {"1/0", 0, 0, false}, {"abc", 0, 0, false}, {"1/2/3", 0, 0, false}, {" 1/2", 0, 0, false}} {
		i, n, ok := parseShard(c.in)
		if ok != c.ok || i != c.i || n != c.n {
			t.Errorf("parseShard(%q) = %d, %d, %v; want %d, %d, %v", c.in, i, n, ok, c.i, c.n, c.ok)
		}
	}
}
