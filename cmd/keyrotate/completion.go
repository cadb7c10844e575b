package main

import (
	_ "embed"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts are urfave/cli v2.27.7's own
// (autocomplete/bash_autocomplete and autocomplete/zsh_autocomplete, MIT
// licence), copied verbatim: the module ships them as files, not as Go. They
// ask the binary for the words with --generate-bash-completion, which the
// App answers (EnableBashCompletion). Fish gets the App's
// ToFishCompletion, generated from the command and flag definitions.
var (
	//go:embed completion/bash_autocomplete
	bashCompletion string
	//go:embed completion/zsh_autocomplete
	zshCompletion string
)

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for SHELL: bash, zsh or fish",
		ArgsUsage: "SHELL",
		Description: "bash:  source <(keyrotate completion bash)   (or save it in /etc/bash_completion.d/keyrotate)\n" +
			"zsh:   keyrotate completion zsh > \"${fpath[1]}/_keyrotate\"   (then restart zsh)\n" +
			"fish:  keyrotate completion fish > ~/.config/fish/completions/keyrotate.fish",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("completion takes one SHELL: bash, zsh or fish (got %d arguments)", c.NArg())
			}
			var script string
			switch sh := c.Args().First(); sh {
			case "bash":
				// The script names the program after its own file, which
				// is /dev/fd/N when sourced from a process substitution.
				script = "PROG=keyrotate\n" + bashCompletion
			case "zsh":
				script = strings.ReplaceAll(zshCompletion, "$PROG", "keyrotate")
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("fish completion: %w", err)
				}
				script = s
			default:
				return usagef("completion: unknown shell %q: want bash, zsh or fish", sh)
			}
			_, err := fmt.Fprint(c.App.Writer, script)
			return err
		},
	}
}
