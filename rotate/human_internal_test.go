package rotate

import (
	"testing"
	"time"
)

func TestHuman(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{90 * 24 * time.Hour, "90d"}, {15 * time.Minute, "15m"}, {2 * time.Hour, "2h"},
		{90 * time.Minute, "1h30m"}, {1500 * time.Millisecond, "1.5s"}, {0, "0s"},
	} {
		if got := human(tc.d); got != tc.want {
			t.Errorf("human(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
