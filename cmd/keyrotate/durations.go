package main

import (
	"time"

	"github.com/urfave/cli/v2"
)

// durationFlag reads the duration flag name and refuses, as a usage error,
// a negative value, and zero unless zero is meaningful (zeroOK: "none",
// e.g. no propagation delay).
func durationFlag(c *cli.Context, name string, zeroOK bool) (time.Duration, error) {
	d := c.Duration(name)
	switch {
	case d < 0:
		return d, usagef("--%s must not be negative, not %s", name, d)
	case d == 0 && !zeroOK:
		return d, usagef("--%s must be positive, not %s", name, d)
	}
	return d, nil
}
