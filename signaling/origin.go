package signaling

import (
	"net/url"
	"path"
	"strings"
)

// originPolicy matches Origin headers against the configured allow-list.
//
// Entries: "*" (any origin); an exact origin ("https://turbowarp.org");
// or a host pattern, path.Match syntax on the host name, with or without
// a scheme ("*.turbowarp.org", "https://*.turbowarp.org"). A pattern with
// a scheme matches that scheme only; one without matches https and http
// only (not chrome-extension:, file: or any other scheme a page could be
// served from). A matched host must be a well-formed name: no empty label,
// so "*.turbowarp.org" matches "a.turbowarp.org" and "a.b.turbowarp.org"
// but not ".turbowarp.org" or "turbowarp.org" itself.
type originPolicy struct {
	any      bool
	exact    map[string]bool // "scheme://host[:port]", lower case
	patterns []originPattern
}

type originPattern struct {
	scheme string // "": https or http
	host   string // path.Match pattern on the host name
}

func newOriginPolicy(allowed []string) originPolicy {
	p := originPolicy{any: len(allowed) == 0, exact: make(map[string]bool)}
	for _, a := range allowed {
		a = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(a)), "/")
		scheme, host, hasScheme := strings.Cut(a, "://")
		switch {
		case a == "*":
			p.any = true
		case a == "":
		case !hasScheme:
			p.patterns = append(p.patterns, originPattern{host: a})
		case strings.ContainsAny(host, "*?["):
			p.patterns = append(p.patterns, originPattern{scheme: scheme, host: host})
		default:
			p.exact[a] = true
		}
	}
	return p
}

// allows reports whether a non-empty Origin header may connect.
func (p originPolicy) allows(origin string) bool {
	if p.any {
		return true
	}
	origin = strings.ToLower(origin)
	if p.exact[origin] {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	host := u.Hostname()
	if host == "" || strings.HasPrefix(host, ".") || strings.HasSuffix(host, ".") || strings.Contains(host, "..") {
		return false
	}
	for _, pat := range p.patterns {
		if pat.scheme == "" && u.Scheme != "https" && u.Scheme != "http" || pat.scheme != "" && u.Scheme != pat.scheme {
			continue
		}
		if ok, _ := path.Match(pat.host, host); ok {
			return true
		}
	}
	return false
}
