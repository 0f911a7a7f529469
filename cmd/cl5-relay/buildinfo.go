package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Set at build time (configs/Dockerfile does) with
//
//	-ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD) -X main.buildDate=$(date -u +%FT%TZ)"
//
// Whatever is left empty comes from the binary's build info: the module
// version (go install ...@v1.2.3), and the VCS revision and commit time
// that `go build` stamps in a git checkout.
var version, commit, buildDate string

// buildInfo is what `cl5-relay version`, --version and cl5_build_info say.
type buildInfo struct {
	Version   string // v1.2.3, or devel
	Commit    string // full VCS revision, "+dirty" when the tree was modified; "" unknown
	Date      string // RFC 3339; the commit's time unless -X main.buildDate; "" unknown
	GoVersion string
}

// readBuildInfo combines the -X values with debug.ReadBuildInfo.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: buildDate, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if ok && b.Version == "" {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			b.Version = v
		}
	}
	var modified bool
	if ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	if modified && commit == "" && b.Commit != "" {
		b.Commit += "+dirty"
	}
	return b
}

// versionString is the short version a node reports to its core and logs
// at start: the version, or devel-<12 digits of the commit>.
func versionString() string {
	b := readBuildInfo()
	if b.Version == "devel" && len(b.Commit) >= 12 {
		return "devel-" + b.Commit[:12]
	}
	return b.Version
}

// versionLine is the one line `cl5-relay version` and --version print
// after the program's name.
func versionLine() string {
	b := readBuildInfo()
	unknown := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return s
	}
	return fmt.Sprintf("%s (commit %s, built %s, %s)", b.Version, unknown(b.Commit), unknown(b.Date), b.GoVersion)
}

// newBuildInfoCollector is cl5_build_info: always 1, the build in its
// labels (one value per process, so the labels stay bounded).
func newBuildInfoCollector() prometheus.Collector {
	b := readBuildInfo()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "cl5_build_info",
		Help:        "The running cl5-relay build; always 1.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "date": b.Date, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}
