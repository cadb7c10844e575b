package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestAllowWorldReadable: dotenv and compose targets take an optional
// allow_world_readable: true (the errors: TestParseBad, TestComposeTargetInvalid).
func TestAllowWorldReadable(t *testing.T) {
	targets := func(lines string) string { return head + slotYAML + "    targets:\n" + lines }
	t.Run("valid", func(t *testing.T) {
		in := targets("      - {type: dotenv, path: a.env, var: K, allow_world_readable: true}\n" +
			"      - {type: dotenv, path: b.env, var: K, allow_world_readable: false}\n" +
			"      - {type: dotenv, path: c.env, var: K}\n" +
			"      - {type: compose, path: c.yml, services: [api], var: K, allow_world_readable: true}\n")
		c, err := Parse("keyrotate.yaml", []byte(in))
		if err != nil {
			t.Fatalf("Parse:\n%s\nerror: %v", in, dump(err))
		}
		var got []bool
		for _, tg := range c.Slots[0].Targets {
			got = append(got, tg.AllowWorldReadable)
		}
		if diff := cmp.Diff([]bool{true, false, false, true}, got); diff != "" {
			t.Errorf("AllowWorldReadable of the targets mismatch (-want +got):\n%s", diff)
		}
	})
}
