package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// buildInfo is what the binary knows of its own build, as `go version -m`
// shows it: the main module's version ("(devel)", or since Go 1.24 a
// pseudo-version derived from the checkout) and the VCS stamp.
type buildInfo struct {
	Version  string `json:"version"`
	Module   string `json:"module,omitempty"`
	Go       string `json:"go,omitempty"`
	Commit   string `json:"commit,omitempty"`
	Time     string `json:"commit_time,omitempty"`
	Modified *bool  `json:"modified,omitempty"`
}

func readBuildInfo() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return buildInfo{Version: "(unknown: built without module support)"}
	}
	out := buildInfo{Version: bi.Main.Version, Module: bi.Main.Path, Go: bi.GoVersion}
	if out.Version == "" {
		out.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			out.Commit = s.Value
		case "vcs.time":
			out.Time = s.Value
		case "vcs.modified":
			m := s.Value == "true"
			out.Modified = &m
		}
	}
	return out
}

func (b buildInfo) print(w io.Writer) {
	fmt.Fprintf(w, "keyrotate %s\n", b.Version)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-9s %s\n", k, v)
		}
	}
	row("module", b.Module)
	row("go", b.Go)
	row("commit", b.Commit)
	row("time", b.Time)
	if b.Modified != nil {
		row("modified", fmt.Sprint(*b.Modified))
	}
}

func init() {
	// --version (urfave/cli's flag, without its -v alias) prints what the
	// version command prints.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version and build of keyrotate"}
	cli.VersionPrinter = func(c *cli.Context) { readBuildInfo().print(c.App.Writer) }
}

// appHelpTemplate is urfave/cli's, without the VERSION section: the help
// text stays the same for every build (it is kept in a golden file and the
// README), and `keyrotate --version` says the version.
var appHelpTemplate = strings.Replace(cli.AppHelpTemplate,
	"{{if .Version}}{{if not .HideVersion}}\n\nVERSION:\n   {{.Version}}{{end}}{{end}}", "", 1)

// withVersionAndCompletion gives app the --version flag (with the build
// info as its version) and shell completion (--generate-bash-completion,
// which the scripts of the completion command call).
func withVersionAndCompletion(app *cli.App) *cli.App {
	app.Version = readBuildInfo().Version
	app.HideVersion = false
	app.CustomAppHelpTemplate = appHelpTemplate
	app.EnableBashCompletion = true
	return app
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version and build of keyrotate (module version, Go, VCS commit, time and modified)",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("version takes no arguments (got %q)", c.Args().First())
			}
			b := readBuildInfo()
			p := newPrinter(c)
			if p.json {
				return p.jsonDoc(struct {
					Command string `json:"command"`
					buildInfo
				}{"version", b})
			}
			b.print(c.App.Writer)
			return nil
		},
	}
}
