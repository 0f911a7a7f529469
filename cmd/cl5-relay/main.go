// Command cl5-relay is the CloudLink 5 relay and host-migration service:
// the signaling core, relay nodes and their benchmarks, in one binary.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "cl5-relay",
		Usage:   "CloudLink 5 signaling core, relay nodes and host migration",
		Version: versionString(),
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
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					_, err := fmt.Fprintln(c.App.Writer, "cl5-relay", versionString())
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
