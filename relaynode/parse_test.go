package relaynode

import "testing"

func TestParsePortRange(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi int
		ok     bool
	}{
		{"", 0, 0, true}, {"49152-65535", 49152, 65535, true}, {"5000 - 5000", 5000, 5000, true},
		{"0-10", 0, 0, false}, {"10-70000", 0, 0, false}, {"9-8", 0, 0, false},
		{"abc", 0, 0, false}, {"1-", 0, 0, false}, {"-5", 0, 0, false}, {"1-2-3", 0, 0, false},
	} {
		lo, hi, err := ParsePortRange(tc.in)
		if (err == nil) != tc.ok || lo != tc.lo || hi != tc.hi {
			t.Errorf("ParsePortRange(%q) = %d, %d, %v", tc.in, lo, hi, err)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.1.2.3/8", " 192.0.2.7", "2001:db8::1/32", "::1"})
	want := []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"}
	if err != nil || len(got) != len(want) {
		t.Fatalf("ParsePrefixes = %v, %v", got, err)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("prefix %d = %s, want %s", i, got[i], want[i])
		}
	}
	for _, bad := range [][]string{{"10.0.0.0/8", "nope"}, {"10.0.0.0/33"}, {""}} {
		if _, err := ParsePrefixes(bad); err == nil {
			t.Errorf("ParsePrefixes(%q) accepted", bad)
		}
	}
	if got, err := ParsePrefixes(nil); err != nil || got != nil {
		t.Errorf("ParsePrefixes(nil) = %v, %v", got, err)
	}
}
