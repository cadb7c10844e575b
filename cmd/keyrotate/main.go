// Command keyrotate rotates Google Cloud API keys — Gemini API keys first of
// all — safely: it creates the new key, proves it works, puts it everywhere
// the old key was used, proves every place holds it, and only then retires
// the old key.
package main

import (
	"context"
	"os"
)

func main() {
	receiveSIGPIPE() // a closed stdout never kills a run: pipe.go
	stdout := &sink{w: os.Stdout}
	p := newProcess(os.Stderr, os.Exit) // signals and --timeout: stop.go
	app := newApp(stdout, os.Stderr)
	app.Metadata[processKey] = p
	err := runApp(p.listen(context.Background()), app, os.Args) // args.go
	p.finish()
	code := reportRun(app, os.Stderr, err) // prints a held JSON document
	stdout.warn(os.Stderr, "standard output")
	os.Exit(code)
}
