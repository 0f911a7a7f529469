package signaling

import (
	"net/url"
	"path"
	"strings"
)

// originPolicy matches Origin headers against the configured allow-list.
type originPolicy struct {
	any   bool
	exact map[string]bool // "scheme://host[:port]", lower case
	hosts []string        // path.Match patterns on the host name
}

func newOriginPolicy(allowed []string) originPolicy {
	p := originPolicy{any: len(allowed) == 0, exact: make(map[string]bool)}
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSpace(a))
		switch {
		case a == "*":
			p.any = true
		case strings.Contains(a, "://"):
			p.exact[strings.TrimSuffix(a, "/")] = true
		case a != "":
			p.hosts = append(p.hosts, a)
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
	for _, pat := range p.hosts {
		if ok, _ := path.Match(pat, host); ok {
			return true
		}
	}
	return false
}
