package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
)

// The operator's files under configs/ that these tests check.
var (
	opsDashboard = filepath.Join("..", "..", "configs", "grafana", "cl5-relay.json")
	opsAlerts    = filepath.Join("..", "..", "configs", "prometheus", "alerts.yml")
	opsAlertTest = filepath.Join("..", "..", "configs", "prometheus", "alerts_test.yml")
	opsUnits     = filepath.Join("..", "..", "configs", "systemd")
)

// opsTool finds an operator's tool (promtool, systemd-analyze). Without
// it the test skips, unless CL5_REQUIRE_OPS=1 (CI installs them).
func opsTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CL5_REQUIRE_OPS") == "1" {
			t.Fatalf("%s missing (Debian package %s): %v", name, pkg, err)
		}
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
	return p
}

// TestOpsPrometheusRules: the alert rules load in Prometheus's own checker
// and its unit tests of them pass.
func TestOpsPrometheusRules(t *testing.T) {
	promtool := opsTool(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", opsAlerts}, {"test", "rules", opsAlertTest}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// metricNameRe finds the metric names a query uses: cl5-relay's own and
// the Go and process collectors' (Prometheus's `up` and functions do not
// match).
var metricNameRe = regexp.MustCompile(`\b(?:cl5|process|go)_[a-zA-Z0-9_]+\b`)

// opsQueries returns every query of the dashboard (panel targets and
// template variables) and of the alert rules, by where it is.
func opsQueries(t *testing.T) map[string]string {
	t.Helper()
	q := map[string]string{}
	b, err := os.ReadFile(opsDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name       string
				Definition string
			}
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", opsDashboard, err)
	}
	for _, p := range dash.Panels {
		for i, tg := range p.Targets {
			q[p.Title+" #"+string(rune('A'+i))] = tg.Expr
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" { // the data source picker has none
			q["variable "+v.Name] = v.Definition
		}
	}
	b, err = os.ReadFile(opsAlerts)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("%s: %v", opsAlerts, err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			q["alert "+r.Alert] = r.Expr
		}
	}
	return q
}

// scrapeFamilies returns the metric families a /metrics page lists.
func scrapeFamilies(t *testing.T, url string) map[string]bool {
	t.Helper()
	code, body := httpGet(t, url)
	if code != 200 {
		t.Fatalf("GET %s = %d", url, code)
	}
	out := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
		}
	}
	return out
}

var fqNameRe = regexp.MustCompile(`fqName: "([^"]+)"`)

// describedFamilies returns the family of every metric reg describes:
// also the vectors no event has given a series yet.
func describedFamilies(reg *prometheus.Registry) map[string]bool {
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	out := map[string]bool{}
	for d := range ch {
		if m := fqNameRe.FindStringSubmatch(d.String()); m != nil {
			out[m[1]] = true
		}
	}
	return out
}

// exported reports whether name is one of families, directly or as a
// histogram's or summary's series.
func exported(name string, families map[string]bool) bool {
	if families[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && families[base] {
			return true
		}
	}
	return false
}

// TestOpsMetricNames: every metric the Grafana dashboard and the alert
// rules query is one cl5-relay exports. A core (serve, with its own relay
// node, fleet listener and relay peer) and an edge node registered with
// it run in-process; a player INITs and makes a TURN allocation on the
// edge with the credentials the core minted; both /metrics pages are
// scraped. A vector that no event has touched yet is not on a scrape,
// so the processes' registries are also asked what they describe; the
// test says which names only that found.
func TestOpsMetricNames(t *testing.T) {
	var mu sync.Mutex
	var regs []*prometheus.Registry
	hook := func(r *prometheus.Registry) {
		mu.Lock()
		regs = append(regs, r)
		mu.Unlock()
	}
	registryCreated.Store(&hook)
	t.Cleanup(func() { registryCreated.Store(nil) })

	key := filepath.Join(t.TempDir(), "cluster.key")
	core := runInProcess(t, "serve", "--log-format", "json", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--turn-listen", "127.0.0.1:0", "--fleet-listen", "127.0.0.1:0", "--cluster-key-file", key, "--region", "eu",
		"--allowed-origins", "http://localhost:8000", "--relay-peer-listen", freeUDP(t))
	core.waitLog(t, "cl5-relay started")
	a := core.addrs()
	edge := runInProcess(t, "node", "--log-format", "json", "--core", a["fleet"], "--cluster-key-file", key,
		"--turn-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--node-id", "edge", "--region", "eu",
		"--relay-peer-listen", freeUDP(t), "--broker-url", "ws://"+a["signaling"]+"/", "--drain-timeout", "1s")
	edge.waitLog(t, "cl5-relay node started")
	core.waitLog(t, "node up", "node", "edge")
	e := edge.addrs()
	var creds *iceServer
	for _, s := range initICE(t, a["signaling"]) {
		if s.Username != "" {
			creds = &s
			break
		}
	}
	if creds == nil {
		t.Fatal("INIT_OK gave no TURN credentials")
	}
	allocate(t, e["turn-udp"], creds.Username, creds.Credential)

	scraped := scrapeFamilies(t, "http://"+a["metrics"]+"/metrics")
	for f := range scrapeFamilies(t, "http://"+e["metrics"]+"/metrics") {
		scraped[f] = true
	}
	described := map[string]bool{}
	mu.Lock()
	if len(regs) != 2 {
		t.Errorf("%d registries made, want 2 (serve's and node's)", len(regs))
	}
	for _, r := range regs {
		for f := range describedFamilies(r) {
			described[f] = true
		}
	}
	mu.Unlock()
	for f := range scraped {
		if !described[f] {
			t.Errorf("%s is scraped but no registry describes it: the described list is not the whole truth", f)
		}
	}

	queries := opsQueries(t)
	var names []string
	for where, expr := range queries {
		found := metricNameRe.FindAllString(expr, -1)
		if len(found) == 0 && !strings.Contains(expr, "up{") {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range found {
			switch {
			case exported(n, scraped):
			case exported(n, described):
				names = append(names, n)
			default:
				t.Errorf("%s uses %s, which cl5-relay does not export", where, n)
			}
		}
	}
	slices.Sort(names)
	t.Logf("%d queries checked; registered but without a series in this run: %v", len(queries), slices.Compact(names))
	for _, p := range []*inProcess{edge, core} {
		if err := p.stop(t); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpsSystemdUnits: systemd's own checker accepts the units and the
// offload drop-in: no unknown key, no bad value, every command there.
// It warns rather than fails on most mistakes, so any output fails the
// test. ExecStart points at this test's build of cl5-relay instead of
// /usr/local/bin.
func TestOpsSystemdUnits(t *testing.T) {
	analyze := opsTool(t, "systemd-analyze", "systemd")
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	var units []string
	err := filepath.WalkDir(opsUnits, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(opsUnits, path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		text := string(b)
		if strings.HasSuffix(rel, ".service") {
			if !strings.Contains(text, "ExecStart=/usr/local/bin/cl5-relay ") {
				t.Errorf("%s: ExecStart is not /usr/local/bin/cl5-relay", rel)
			}
			text = strings.ReplaceAll(text, "/usr/local/bin/cl5-relay", bin)
			units = append(units, rel)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), []byte(text), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(units) != 2 {
		t.Fatalf("units %v, want the serve and node units", units)
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, units...)...)
	cmd.Dir = dir // the drop-in directories beside the units are read too
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify %v: %v\n%s", units, err, out)
	}
}
