// Command keyrotate rotates Google Cloud API keys — Gemini API keys first of
// all — safely: it creates the new key, proves it works, puts it everywhere
// the old key was used, proves every place holds it, and only then retires
// the old key.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := newApp(os.Stdout, os.Stderr)
	err := app.RunContext(ctx, os.Args)
	stop()
	os.Exit(reportRun(app, os.Stderr, err))
}
