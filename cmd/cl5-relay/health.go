package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"
)

// healthTimeout bounds one health check.
const healthTimeout = 5 * time.Second

// healthCommand asks a running serve or node whether it is up, through
// its /healthz: for a container's HEALTHCHECK, which has no shell or curl
// to do it with.
func healthCommand() *cli.Command {
	d := defaultConfig()
	return &cli.Command{
		Name:  "health",
		Usage: "exit 0 if the cl5-relay at --metrics-listen answers /healthz (for HEALTHCHECK)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "the server's YAML config: its metrics_listen is asked", EnvVars: envVars("config")},
			&cli.StringFlag{Name: "metrics-listen", Usage: "the server's metrics address (a wildcard host is asked on loopback)", Value: d.MetricsListen, EnvVars: envVars("metrics-listen")},
			&cli.StringFlag{Name: "path", Usage: "/healthz (up) or /readyz (accepting players)", Value: "/healthz"},
		},
		Action: func(c *cli.Context) error {
			// As for serve and node: flag or env, then the file, then the default.
			cfg := defaultConfig()
			if path := c.String("config"); path != "" {
				if err := loadConfigFile(path, &cfg); err != nil {
					return fmt.Errorf("health: %w", err)
				}
			}
			if c.IsSet("metrics-listen") {
				cfg.MetricsListen = c.String("metrics-listen")
			}
			url, err := healthURL(cfg.MetricsListen, c.String("path"))
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context, healthTimeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return fmt.Errorf("health: %w", err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("health: %w", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("health: %s: %s", url, resp.Status)
			}
			return nil
		},
	}
}

// healthURL is the URL of path on the metrics listener addr.
func healthURL(addr, path string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" || port == "0" {
		return "", fmt.Errorf("health: metrics_listen (--metrics-listen) %q is not host:port of a running server", addr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}
