package turncred

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadSecretFile(t *testing.T) {
	s, err := ReadSecretFile(writeFile(t, "# rotated 2026-01\n new-secret-0123456789 \n\nold-secret-0123456789\n"))
	if err != nil || len(s) != 2 || s[0] != "new-secret-0123456789" || s[1] != "old-secret-0123456789" {
		t.Fatalf("ReadSecretFile = %q, %v", s, err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"only comments", writeFile(t, "# nothing\n\n"), "no secret in the file"},
		{"missing", filepath.Join(t.TempDir(), "nope"), "no such file"},
		{"too large", writeFile(t, strings.Repeat("x", maxCredentialFile+1)), "larger than"},
	} {
		if _, err := ReadSecretFile(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestReadStaticUsersFile(t *testing.T) {
	m, err := ReadStaticUsersFile(writeFile(t, "# ops\nalice:pw1\n\nbob:pw:with:colons\n"))
	if err != nil || len(m) != 2 || m["alice"] != "pw1" || m["bob"] != "pw:with:colons" {
		t.Fatalf("ReadStaticUsersFile = %v, %v", m, err)
	}
	for _, bad := range []string{"alice\n", ":pw\n", "alice:\n"} {
		if _, err := ReadStaticUsersFile(writeFile(t, bad)); err == nil || !strings.Contains(err.Error(), "entry 1") {
			t.Errorf("ReadStaticUsersFile(%q) = %v", bad, err)
		}
	}
	if _, err := ReadStaticUsersFile(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("a missing file was accepted")
	}
}
