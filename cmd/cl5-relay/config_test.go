package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

func TestExampleConfigsLoadStrictly(t *testing.T) {
	paths, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no example configs found: %v", err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			cfg := defaultConfig()
			if err := loadConfigFile(p, &cfg); err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("example config does not validate: %v", err)
			}
		})
	}
}

func TestConfigFileErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "listen: ':1'\nlisten_addr: x\n", "field listen_addr not found"},
		{"unknown nested key", "limits:\n  max_frame: 5\n", "field max_frame not found"},
		{"wrong type", "limits:\n  peer_timeout: soon\n", "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			err := decodeConfigFile(strings.NewReader(tt.yaml), &cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := defaultConfig()
	cfg.Auth = "magic"
	cfg.LogFormat = "xml"
	cfg.Limits.PeerTimeout = 10 * time.Millisecond
	cfg.Migration.Policy = "random"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"auth", "log_format", "peer_timeout", "migration.policy"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// runResolve runs the serve flag set over args and env and returns the config.
func runResolve(t *testing.T, args []string) (Config, error) {
	t.Helper()
	var got Config
	var rerr error
	app := &cli.App{
		Name:   "cl5-relay",
		Writer: os.Stderr,
		Commands: []*cli.Command{{
			Name:  "serve",
			Flags: serveFlags(),
			Action: func(c *cli.Context) error {
				got, rerr = resolveConfig(c)
				return nil
			},
		}},
	}
	if err := app.Run(append([]string{"cl5-relay", "serve"}, args...)); err != nil {
		t.Fatal(err)
	}
	return got, rerr
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	yaml := "listen: 127.0.0.1:1111\nmetrics_listen: 127.0.0.1:2222\nlog_level: warn\nlimits:\n  peer_timeout: 3s\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CL5_METRICS_LISTEN", "127.0.0.1:3333") // env beats file
	t.Setenv("CL5_LOG_LEVEL", "debug")               // flag beats env
	t.Setenv("CL5_ALLOWED_ORIGINS", "https://a.example,https://b.example")

	cfg, err := runResolve(t, []string{"--config", file, "--log-level", "error"})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"listen (file)", cfg.Listen, "127.0.0.1:1111"},
		{"metrics_listen (env over file)", cfg.MetricsListen, "127.0.0.1:3333"},
		{"log_level (flag over env and file)", cfg.LogLevel, "error"},
		{"log_format (default)", cfg.LogFormat, "text"},
		{"peer_timeout (file)", cfg.Limits.PeerTimeout.String(), "3s"},
		{"allowed_origins (env list)", strings.Join(cfg.AllowedOrigins, " "), "https://a.example https://b.example"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestDefaultsWithoutConfig(t *testing.T) {
	cfg, err := runResolve(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":3000" || cfg.MetricsListen != "127.0.0.1:9090" || cfg.Auth != "open" {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func TestJWTModeNeedsSecretFile(t *testing.T) {
	if _, err := runResolve(t, []string{"--auth", "jwt"}); err == nil {
		t.Fatal("auth jwt without a secret file was accepted")
	}
}
