package signaling

import "testing"

func TestOriginPolicy(t *testing.T) {
	cases := []struct {
		allowed []string
		origin  string
		want    bool
	}{
		{nil, "https://anything.example", true},
		{[]string{"*"}, "chrome-extension://x", true},

		{[]string{"https://turbowarp.org"}, "https://turbowarp.org", true},
		{[]string{"https://turbowarp.org/"}, "https://TurboWarp.org", true},
		{[]string{"https://turbowarp.org"}, "http://turbowarp.org", false},
		{[]string{"https://turbowarp.org"}, "https://turbowarp.org:8443", false},

		{[]string{"*.turbowarp.org"}, "https://a.turbowarp.org", true},
		{[]string{"*.turbowarp.org"}, "http://a.turbowarp.org", true},
		{[]string{"*.turbowarp.org"}, "https://a.turbowarp.org:8443", true},
		{[]string{"*.turbowarp.org"}, "https://a.b.turbowarp.org", true},
		{[]string{"*.turbowarp.org"}, "https://.turbowarp.org", false}, // empty label
		{[]string{"*.turbowarp.org"}, "https://a..turbowarp.org", false},
		{[]string{"*.turbowarp.org"}, "https://turbowarp.org", false},
		{[]string{"*.turbowarp.org"}, "https://evilturbowarp.org", false},
		{[]string{"*.turbowarp.org"}, "ftp://a.turbowarp.org", false},
		{[]string{"*.turbowarp.org"}, "chrome-extension://a.turbowarp.org", false},
		{[]string{"*.turbowarp.org"}, "null", false},

		{[]string{"https://*.turbowarp.org"}, "https://a.turbowarp.org", true},
		{[]string{"https://*.turbowarp.org"}, "http://a.turbowarp.org", false},
		{[]string{"https://*.turbowarp.org"}, "https://.turbowarp.org", false},
		{[]string{"app://*.example.com"}, "app://x.example.com", true},
		{[]string{"app://*.example.com"}, "https://x.example.com", false},
	}
	for _, tc := range cases {
		if got := newOriginPolicy(tc.allowed).allows(tc.origin); got != tc.want {
			t.Errorf("allowed %q, origin %q: %v, want %v", tc.allowed, tc.origin, got, tc.want)
		}
	}
}
