package turncred

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxCredentialFile bounds the size of a secret or static users file, so a
// wrong path (a log, a device) fails clearly instead of filling memory.
const maxCredentialFile = 1 << 20

// ReadSecretFile reads TURN REST shared secrets, one per line; blank lines
// and lines starting with # are skipped. Every secret verifies and the
// first mints, so a secret rotates by adding a new first line. A file
// without any secret is an error.
func ReadSecretFile(path string) ([]string, error) {
	lines, err := readLines(path)
	if err != nil {
		return nil, fmt.Errorf("turn secret file: %w", err)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("turn secret file %s: no secret in the file", path)
	}
	return lines, nil
}

// ReadStaticUsersFile reads fixed TURN logins, one "user:password" per
// line (the password may contain colons); blank lines and # comments are
// skipped.
func ReadStaticUsersFile(path string) (map[string]string, error) {
	lines, err := readLines(path)
	if err != nil {
		return nil, fmt.Errorf("static users file: %w", err)
	}
	users := make(map[string]string, len(lines))
	for i, l := range lines {
		u, p, ok := strings.Cut(l, ":")
		if !ok || u == "" || p == "" {
			return nil, fmt.Errorf("static users file %s: entry %d is not user:password", path, i+1)
		}
		users[u] = p
	}
	return users, nil
}

// readLines returns a file's trimmed lines that are neither empty nor #
// comments.
func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxCredentialFile+1)); err != nil {
		return nil, err
	}
	if buf.Len() > maxCredentialFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxCredentialFile)
	}
	var out []string
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
