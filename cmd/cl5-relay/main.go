// Command cl5-relay is the CloudLink 5 relay and host-migration service:
// the signaling core, relay nodes and their benchmarks, in one binary.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func newApp() *cli.App {
	return &cli.App{
		Name:    "cl5-relay",
		Usage:   "CloudLink 5 signaling core, relay nodes and host migration",
		Version: versionLine(),
		Commands: []*cli.Command{
			{
				Name:   "serve",
				Usage:  "run the all-in-one server: signaling core, host migration and a TURN relay node",
				Flags:  serveFlags(),
				Action: serve,
			},
			{
				Name:   "node",
				Usage:  "run a TURN relay node alone (edge VPS), registered with a core's fleet by --core",
				Flags:  nodeFlags(),
				Action: node,
			},
			benchCommand(),
			healthCommand(),
			{
				Name:  "version",
				Usage: "print the version, commit and build date",
				Action: func(c *cli.Context) error {
					_, err := fmt.Fprintln(c.App.Writer, "cl5-relay", versionLine())
					return err
				},
			},
		},
	}
}

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "cl5-relay:", err)
		os.Exit(1)
	}
}
