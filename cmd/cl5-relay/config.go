package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/cl5-relay/cl5-relay/migration"
)

// Config is everything `cl5-relay serve` can be told. Precedence: flag, then
// env (CL5_<NAME>), then the YAML file (--config), then these defaults.
type Config struct {
	Listen         string   `yaml:"listen"`
	MetricsListen  string   `yaml:"metrics_listen"`
	AllowedOrigins []string `yaml:"allowed_origins"`
	Auth           string   `yaml:"auth"`
	JWTSecretFile  string   `yaml:"jwt_secret_file"`
	LogLevel       string   `yaml:"log_level"`
	LogFormat      string   `yaml:"log_format"`

	Limits    LimitsConfig    `yaml:"limits"`
	Migration MigrationConfig `yaml:"migration"`
}

// LimitsConfig bounds what one client can cost the server.
type LimitsConfig struct {
	MaxFrameBytes     int           `yaml:"max_frame_bytes"`
	UpgradesPerMinute int           `yaml:"upgrades_per_minute"`
	UpgradeBurst      int           `yaml:"upgrade_burst"`
	MessagesPerSecond float64       `yaml:"messages_per_second"`
	MessageBurst      int           `yaml:"message_burst"`
	SendQueue         int           `yaml:"send_queue"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	PeerTimeout       time.Duration `yaml:"peer_timeout"`
}

// MigrationConfig sets how lobbies pick a new host.
type MigrationConfig struct {
	Policy      string        `yaml:"policy"`
	ResumeGrace time.Duration `yaml:"resume_grace"`
}

// defaultConfig is the embedded default: a working server on a fresh machine.
func defaultConfig() Config {
	return Config{
		Listen:        ":3000",
		MetricsListen: "127.0.0.1:9090",
		Auth:          "open",
		LogLevel:      "info",
		LogFormat:     "text",
		Limits: LimitsConfig{
			MaxFrameBytes:     64 << 10,
			UpgradesPerMinute: 60,
			UpgradeBurst:      30,
			MessagesPerSecond: 50,
			MessageBurst:      100,
			SendQueue:         256,
			WriteTimeout:      10 * time.Second,
			PeerTimeout:       5 * time.Second,
		},
		Migration: MigrationConfig{Policy: string(migration.DefaultPolicy), ResumeGrace: 10 * time.Second},
	}
}

// decodeConfigFile overlays a YAML document on cfg. Unknown keys are errors.
func decodeConfigFile(r io.Reader, cfg *Config) error {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func loadConfigFile(path string, cfg *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := decodeConfigFile(bytes.NewReader(b), cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Listen == "" {
		bad("listen: must not be empty")
	}
	switch c.Auth {
	case "open":
	case "jwt":
		if c.JWTSecretFile == "" {
			bad("auth jwt needs jwt_secret_file (--jwt-secret-file)")
		}
	default:
		bad("auth: %q is not open or jwt", c.Auth)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("log_level: %v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log_format: %q is not text or json", c.LogFormat)
	}
	if _, err := migration.ParsePolicy(c.Migration.Policy); err != nil {
		bad("migration.policy: %v", err)
	}
	if c.Migration.ResumeGrace < 0 || c.Migration.ResumeGrace > 10*time.Minute {
		bad("migration.resume_grace: %v is not between 0 and 10m", c.Migration.ResumeGrace)
	}
	l := c.Limits
	if l.MaxFrameBytes < 1024 {
		bad("limits.max_frame_bytes: %d is below 1024", l.MaxFrameBytes)
	}
	if l.SendQueue < 16 {
		bad("limits.send_queue: %d is below 16", l.SendQueue)
	}
	if l.PeerTimeout < time.Second {
		bad("limits.peer_timeout: %v is below 1s", l.PeerTimeout)
	}
	if l.WriteTimeout < 100*time.Millisecond {
		bad("limits.write_timeout: %v is below 100ms", l.WriteTimeout)
	}
	if l.MessageBurst < 1 || l.UpgradeBurst < 1 {
		bad("limits: bursts must be at least 1")
	}
	return errors.Join(errs...)
}

// serveFlags are serve's flags; each also reads CL5_<NAME>.
func serveFlags() []cli.Flag {
	env := func(name string) []string {
		return []string{"CL5_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
	}
	d := defaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML config file (unknown keys are errors)", EnvVars: env("config")},
		&cli.StringFlag{Name: "listen", Usage: "signaling HTTP/WebSocket address", Value: d.Listen, EnvVars: env("listen")},
		&cli.StringFlag{Name: "metrics-listen", Usage: "address of /metrics, /healthz, /readyz (empty: off)", Value: d.MetricsListen, EnvVars: env("metrics-listen")},
		&cli.StringSliceFlag{Name: "allowed-origins", Usage: "origins allowed to connect (default: all, with a warning)", EnvVars: env("allowed-origins")},
		&cli.StringFlag{Name: "auth", Usage: "INIT authentication: open or jwt", Value: d.Auth, EnvVars: env("auth")},
		&cli.StringFlag{Name: "jwt-secret-file", Usage: "file holding the HS256/HS512 secret for --auth jwt", EnvVars: env("jwt-secret-file")},
		&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error", Value: d.LogLevel, EnvVars: env("log-level")},
		&cli.StringFlag{Name: "log-format", Usage: "text or json", Value: d.LogFormat, EnvVars: env("log-format")},
		&cli.StringFlag{Name: "migration-policy", Usage: "default host election: oldest, best or none", Value: d.Migration.Policy, EnvVars: env("migration-policy")},
		&cli.DurationFlag{Name: "resume-grace", Usage: "how long a client that opted in to resume is held after its connection drops (0: off)", Value: d.Migration.ResumeGrace, EnvVars: env("resume-grace")},
		&cli.DurationFlag{Name: "peer-timeout", Usage: "declare a silent connection dead after this (min 1s)", Value: d.Limits.PeerTimeout, EnvVars: env("peer-timeout")},
		&cli.IntFlag{Name: "max-frame-bytes", Usage: "largest WebSocket message accepted", Value: d.Limits.MaxFrameBytes, EnvVars: env("max-frame-bytes")},
	}
}

// resolveConfig applies default < file < env < flag.
func resolveConfig(c *cli.Context) (Config, error) {
	cfg := defaultConfig()
	if path := c.String("config"); path != "" {
		if err := loadConfigFile(path, &cfg); err != nil {
			return cfg, err
		}
	}
	// IsSet is true for a flag given on the command line or through its env var.
	set := func(name string, apply func()) {
		if c.IsSet(name) {
			apply()
		}
	}
	set("listen", func() { cfg.Listen = c.String("listen") })
	set("metrics-listen", func() { cfg.MetricsListen = c.String("metrics-listen") })
	set("allowed-origins", func() { cfg.AllowedOrigins = splitList(c.StringSlice("allowed-origins")) })
	set("auth", func() { cfg.Auth = c.String("auth") })
	set("jwt-secret-file", func() { cfg.JWTSecretFile = c.String("jwt-secret-file") })
	set("log-level", func() { cfg.LogLevel = c.String("log-level") })
	set("log-format", func() { cfg.LogFormat = c.String("log-format") })
	set("migration-policy", func() { cfg.Migration.Policy = c.String("migration-policy") })
	set("resume-grace", func() { cfg.Migration.ResumeGrace = c.Duration("resume-grace") })
	set("peer-timeout", func() { cfg.Limits.PeerTimeout = c.Duration("peer-timeout") })
	set("max-frame-bytes", func() { cfg.Limits.MaxFrameBytes = c.Int("max-frame-bytes") })
	return cfg, cfg.Validate()
}

// splitList accepts both repeated flags and comma-separated values.
func splitList(in []string) []string {
	var out []string
	for _, v := range in {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
