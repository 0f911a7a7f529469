package main

import (
	"debug/elf"
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

// TestHealthCommand: `cl5-relay health` (the container's HEALTHCHECK)
// passes against a running node and fails clearly when nothing answers.
func TestHealthCommand(t *testing.T) {
	users := writeFile(t, "users", "ops:a-password\n")
	p := runInProcess(t, "node", "--log-format", "json", "--turn-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--config", writeFile(t, "n.yaml", "turn:\n  static_users_file: "+users+"\n"))
	p.waitLog(t, "cl5-relay node started")
	_, port, _ := strings.Cut(p.addrs()["metrics"], ":")
	for _, args := range [][]string{
		{"--metrics-listen", "127.0.0.1:" + port},
		{"--metrics-listen", ":" + port, "--path", "/readyz"}, // a wildcard is asked on loopback
		{"--config", writeFile(t, "h.yaml", "metrics_listen: \"0.0.0.0:"+port+"\"\n")},
	} {
		if err, out := runCLI(t, append([]string{"health"}, args...)...); err != nil {
			t.Errorf("health %v: %v %s", args, err, out)
		}
	}
	closed := freePort(t)
	for _, tc := range []struct{ addr, want string }{
		{closed, "connection refused"},
		{"nohost", `"nohost" is not host:port`},
		{"127.0.0.1:0", "is not host:port of a running server"},
	} {
		if err, _ := runCLI(t, "health", "--metrics-listen", tc.addr); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("health --metrics-listen %s: %v, want %q", tc.addr, err, tc.want)
		}
	}
	if err, _ := runCLI(t, "health", "--metrics-listen", "127.0.0.1:"+port, "--path", "/nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("health on a missing path: %v", err)
	}
	if err, _ := runCLI(t, "health", "--config", writeFile(t, "bad.yaml", "metrics_lisen: x\n")); err == nil || !strings.Contains(err.Error(), "unknown key metrics_lisen") {
		t.Errorf("health with a bad config: %v", err)
	}
}

// dockerInstr is one Dockerfile instruction.
type dockerInstr struct {
	cmd, args string
	line      int
}

// parseDockerfile splits a Dockerfile into instructions (comments and
// line continuations handled) and stages (each starting at a FROM).
func parseDockerfile(t *testing.T, text string) [][]dockerInstr {
	t.Helper()
	var stages [][]dockerInstr
	var pending string
	start := 0
	for i, l := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(l)
		if pending == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if pending == "" {
			start = i + 1
		}
		if c, ok := strings.CutSuffix(trimmed, "\\"); ok {
			pending += c + " "
			continue
		}
		full := pending + trimmed
		pending = ""
		cmd, args, _ := strings.Cut(full, " ")
		in := dockerInstr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		switch {
		case in.cmd == "FROM":
			stages = append(stages, []dockerInstr{in})
		case len(stages) == 0 && in.cmd != "ARG":
			t.Fatalf("line %d: %s before the first FROM", in.line, in.cmd)
		case len(stages) > 0:
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
	}
	return stages
}

// TestOpsDockerfile: the image's Dockerfile is a multi-stage build whose
// final stage is an empty base with only the binary (no shell), run as
// a non-root user, with a HEALTHCHECK on /healthz and the ports
// documented; its builder's go build command, run here with the same
// environment and flags, gives a static binary that reports the version,
// commit and date given as build arguments. With buildah installed, the
// final stage is also built (on top of that binary: the golang base image
// is not pulled) and the image's config checked. The golang builder stage
// itself needs a registry, so it is not run here.
func TestOpsDockerfile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dockerfile := filepath.Join("..", "..", "configs", "Dockerfile")
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	stages := parseDockerfile(t, string(b))
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a builder and the image", len(stages))
	}
	final := stages[len(stages)-1]
	if final[0].args != "scratch" {
		t.Errorf("the image's base is %q, want scratch (no shell)", final[0].args)
	}
	has := map[string]string{}
	for _, in := range final {
		has[in.cmd] = in.args
		if in.cmd == "RUN" {
			t.Errorf("line %d: RUN in the final stage: it has no shell", in.line)
		}
	}
	if u := has["USER"]; u == "" || strings.HasPrefix(u, "0") || strings.HasPrefix(u, "root") {
		t.Errorf("USER %q: want a non-root user", u)
	}
	if hc := has["HEALTHCHECK"]; !strings.Contains(hc, `CMD ["/cl5-relay", "health"]`) {
		t.Errorf("HEALTHCHECK %q: want the exec form of cl5-relay health", hc)
	}
	for _, p := range []string{"3000/tcp", "3478/udp", "3478/tcp", "3479/udp", "49152-65535/udp"} {
		if !slices.Contains(strings.Fields(has["EXPOSE"]), p) {
			t.Errorf("EXPOSE %q lacks %s", has["EXPOSE"], p)
		}
	}
	if !strings.HasPrefix(has["ENTRYPOINT"], `["`) {
		t.Errorf("ENTRYPOINT %q: want the exec form (there is no shell)", has["ENTRYPOINT"])
	}

	// The builder's go build, as the Dockerfile runs it.
	var build string
	for _, in := range stages[0] {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = in.args
		}
	}
	if build == "" {
		t.Fatal("no RUN ... go build in the builder stage")
	}
	out := filepath.Join(t.TempDir(), "cl5-relay")
	build = strings.NewReplacer("${VERSION}", "v9.8.7", "${COMMIT}", "0123456789abcdef0123456789abcdef01234567",
		"${BUILD_DATE}", "2026-12-05T00:00:00Z", "-o /out/cl5-relay", "-o "+out).Replace(build)
	if strings.Contains(build, "$") || !strings.Contains(build, out) {
		t.Fatalf("cannot run the Dockerfile's build here: %s", build)
	}
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = filepath.Join("..", "..")
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, o)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked: it would not run on scratch")
		}
	}
	f.Close()
	v, err := exec.Command(out, "version").CombinedOutput()
	if want := "cl5-relay v9.8.7 (commit 0123456789abcdef0123456789abcdef01234567, built 2026-12-05T00:00:00Z,"; err != nil || !strings.HasPrefix(string(v), want) {
		t.Errorf("version: %q, %v; want %q...", v, err, want)
	}

	buildah, err := exec.LookPath("buildah")
	if err != nil {
		t.Log("buildah not installed: the final stage was not built")
		return
	}
	buildahFinalStage(t, buildah, string(b), out)
}

// buildahFinalStage builds the Dockerfile's final stage with buildah, its
// builder replaced by one holding bin, and checks the image's config.
func buildahFinalStage(t *testing.T, buildah, dockerfile, bin string) {
	t.Helper()
	ctx := t.TempDir()
	for name, from := range map[string]string{"cl5-relay": bin, "ca-certificates.crt": "/etc/ssl/certs/ca-certificates.crt"} {
		b, err := os.ReadFile(from)
		if err != nil && name == "ca-certificates.crt" {
			b, err = nil, nil // only copied
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ctx, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	last := strings.LastIndex(dockerfile, "\nFROM ")
	stub := "FROM scratch AS build\nCOPY cl5-relay /out/cl5-relay\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
	if err := os.WriteFile(filepath.Join(ctx, "Containerfile"), []byte(stub+dockerfile[last+1:]), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := "localhost/cl5-relay-test:" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")) + "-" + filepath.Base(ctx)
	if o, err := exec.Command(buildah, "bud", "--format", "docker", "-f", filepath.Join(ctx, "Containerfile"), "-t", tag, ctx).CombinedOutput(); err != nil {
		t.Fatalf("buildah bud: %v\n%s", err, o)
	}
	t.Cleanup(func() { _ = exec.Command(buildah, "rmi", tag).Run() })
	o, err := exec.Command(buildah, "inspect", "--type", "image", tag).Output()
	if err != nil {
		t.Fatalf("buildah inspect: %v", err)
	}
	var img struct {
		Docker struct {
			Config struct {
				User         string
				ExposedPorts map[string]any
				Entrypoint   []string
				Healthcheck  struct{ Test []string }
			} `json:"config"`
		}
	}
	if err := json.Unmarshal(o, &img); err != nil {
		t.Fatal(err)
	}
	c := img.Docker.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/cl5-relay"}) ||
		!slices.Equal(c.Healthcheck.Test, []string{"CMD", "/cl5-relay", "health"}) || c.ExposedPorts["49152-65535/udp"] == nil {
		t.Errorf("image config: %+v", c)
	}
}

// TestOpsGuideConfigs: the YAML configs of the operator's guide
// (configs/README.md) load strictly and, the two whole ones, validate
// for their command, with the cluster key file the unit's
// CL5_CLUSTER_KEY_FILE gives.
func TestOpsGuideConfigs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "configs", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	whole := map[string]bool{}
	for _, m := range blocks {
		text := m[1]
		if strings.Contains(text, "scrape_configs:") {
			continue // Prometheus's
		}
		cfg := defaultConfig()
		if err := decodeConfigFile(strings.NewReader(text), &cfg); err != nil {
			t.Errorf("a config of the guide does not load: %v\n%s", err, text)
			continue
		}
		command := ""
		switch {
		case cfg.Fleet.Listen != "":
			command = "serve"
		case cfg.Fleet.Core != "":
			command = "node"
		default:
			continue // a fragment
		}
		whole[command] = true
		cfg.Fleet.ClusterKeyFile = "/run/credentials/cl5-relay-" + command + ".service/cluster.key"
		if err := cfg.validate(command); err != nil {
			t.Errorf("the guide's %s config: %v", command, err)
		}
	}
	if !whole["serve"] || !whole["node"] {
		t.Errorf("found whole configs for %v, want serve and node", whole)
	}
}
