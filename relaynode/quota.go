package relaynode

import (
	"net"
	"sync"
)

// allocTracker follows live allocations through pion's events: who owns
// each (for per-user quotas), how many there are (for quotas, Drain and
// Stats). The quota check and the count update are not one atomic step
// (pion checks the quota, then allocates, then reports), so concurrent
// Allocates of one user on different sockets can overshoot the per-user
// limit by the number of UDP sockets at most; the node-wide MaxAllocations
// is also enforced exactly where relay sockets are opened.
type allocTracker struct {
	mu      sync.Mutex
	owners  map[string]string // five-tuple -> user
	perUser map[string]int
	changed chan struct{} // closed and replaced whenever the count drops
	// onCount gets the live count after every change, under mu, so that
	// a gauge set from it follows the changes in order and is up to date
	// when changed is closed. Nil: nothing to tell.
	onCount func(total int)
}

func newAllocTracker(onCount func(total int)) *allocTracker {
	if onCount == nil {
		onCount = func(int) {}
	}
	return &allocTracker{
		owners:  make(map[string]string),
		perUser: make(map[string]int),
		changed: make(chan struct{}),
		onCount: onCount,
	}
}

// tupleKey names an allocation by its five-tuple. pion reports every
// allocation as UDP, so the transport comes from the address type: a UDP
// and a TCP allocation may share both host:port pairs.
func tupleKey(src, dst net.Addr) string {
	return src.Network() + "|" + src.String() + "|" + dst.String()
}

func (t *allocTracker) add(src, dst net.Addr, user string) (total int) {
	k := tupleKey(src, dst)
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.owners[k]; ok {
		t.perUser[old]--
	}
	t.owners[k] = user
	t.perUser[user]++
	t.onCount(len(t.owners))
	return len(t.owners)
}

func (t *allocTracker) remove(src, dst net.Addr) (total int, ok bool) {
	k := tupleKey(src, dst)
	t.mu.Lock()
	defer t.mu.Unlock()
	user, ok := t.owners[k]
	if !ok {
		return len(t.owners), false
	}
	delete(t.owners, k)
	if t.perUser[user]--; t.perUser[user] <= 0 {
		delete(t.perUser, user)
	}
	t.onCount(len(t.owners))
	close(t.changed)
	t.changed = make(chan struct{})
	return len(t.owners), true
}

// reset forgets everything (at Close, when pion closes allocations
// without reporting each).
func (t *allocTracker) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.owners)
	clear(t.perUser)
	t.onCount(0)
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *allocTracker) counts(user string) (forUser, total int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.perUser[user], len(t.owners)
}

// watch returns the live count and a channel closed at the next drop.
func (t *allocTracker) watch() (int, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.owners), t.changed
}

func (t *allocTracker) users() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.perUser)
}

// quotaHandler is pion's QuotaHandler; false makes pion answer 486
// Allocation Quota Reached. Draining nodes refuse here too.
func (n *Node) quotaHandler(username, _ string, _ net.Addr) bool {
	if n.draining.Load() {
		n.m.allocationsRefused.WithLabelValues(refuseDraining).Inc()
		return false
	}
	forUser, total := n.allocs.counts(n.auth.userOf(username))
	if limit := n.cfg.MaxAllocationsPerUser; limit > 0 && forUser >= limit {
		n.m.allocationsRefused.WithLabelValues(refuseUserQuota).Inc()
		n.log.Debug("allocation refused: user quota", "username", username, "live", forUser)
		return false
	}
	if limit := n.cfg.MaxAllocations; limit > 0 && total >= limit {
		n.m.allocationsRefused.WithLabelValues(refuseNodeQuota).Inc()
		return false
	}
	return true
}
