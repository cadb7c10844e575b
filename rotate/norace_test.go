//go:build !race

package rotate_test

// raceBuild is whether the race detector is on: its instrumentation makes
// every frame larger (TestFleetStackDepth).
const raceBuild = false
