package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzDecodeConfigFile: any file is a config or a list of problems in the
// user's words, never a panic or a Go type name.
func FuzzDecodeConfigFile(f *testing.F) {
	paths, _ := filepath.Glob("../../configs/*.yaml")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(b))
		}
	}
	f.Add("limits: {peer_timeout: [1]}\nturn: &a {listen: x}\nfleet: *a\n")
	f.Add("allowed_origins: !!binary aGVsbG8=\nice:\n  ttl: 1e9\n")
	f.Fuzz(func(t *testing.T, doc string) {
		cfg := defaultConfig()
		err := decodeConfigFile(strings.NewReader(doc), &cfg)
		if err != nil && (strings.Contains(err.Error(), "main.") || strings.Contains(err.Error(), "reflect")) {
			t.Fatalf("error names Go internals: %v", err)
		}
	})
}
