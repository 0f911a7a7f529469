package relaynode

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// pion/turn v4's lifetimes: a channel binding lasts 10 minutes
// (ServerConfig.ChannelBindTimeout, which Start sets to this), a
// permission 5 (fixed in pion); both restart when the client asks again.
// pionpins_test.go checks both against the pion in go.mod.
const (
	channelBindLifetime = 10 * time.Minute
	permissionLifetime  = 5 * time.Minute
)

// maxFastChannels bounds the channels of one allocation the fast path
// follows; pion alone relays any more.
const maxFastChannels = 256

// channelBinding is a channel pion bound on an allocation, as the fast
// path knows it. Its deadlines count from when pion read the request
// that made or refreshed it, before pion started its own timers, so the
// fast path always gives a binding up no later than pion does.
type channelBinding struct {
	number uint16
	peer   netip.AddrPort // as the client names it
	until  atomic.Int64   // node clock (Node.clock)
	perm   *permission    // the peer IP's, shared by its channels
}

type permission struct {
	until atomic.Int64
}

// alive reports whether both the binding and its peer's permission are
// still in force at now. (pion itself relays on a bound channel whose
// permission lapsed; the fast path leaves that to pion.)
func (b *channelBinding) alive(now int64) bool {
	return now < b.until.Load() && now < b.perm.until.Load()
}

// channelTable is one allocation's bindings. A published table is never
// changed, except for the deadlines: a new binding publishes a new table
// (relayConn.bindChannel), so the packet paths read it with one atomic
// load and no lock.
type channelTable struct {
	byNumber map[uint16]*channelBinding
	byPeer   map[netip.AddrPort]*channelBinding
	perms    map[netip.Addr]*permission // the peers' IPs
}

func newChannelTable(size int) *channelTable {
	return &channelTable{
		byNumber: make(map[uint16]*channelBinding, size),
		byPeer:   make(map[netip.AddrPort]*channelBinding, size),
		perms:    make(map[netip.Addr]*permission, size),
	}
}

func (t *channelTable) add(b *channelBinding) {
	t.byNumber[b.number] = b
	t.byPeer[b.peer] = b
	t.perms[b.peer.Addr()] = b.perm
}

// bindChannel records that pion bound (or refreshed) channel number to
// peer on this allocation, for a request it read at `at`. A binding
// that replaces an older one for the same number or peer (pion allows
// that only once the older one is gone) removes it.
func (c *relayConn) bindChannel(number uint16, peer netip.AddrPort, at int64) {
	defer c.r.n.off.sync(c) // after bindMu is released
	// pion's PermissionHandler refused such a peer already; should the
	// parser and pion ever disagree on a peer, the fast path still never
	// reaches one the policy denies.
	if c.r.policy.check(peer.Addr()) == peerDenied {
		return
	}
	chanUntil := at + int64(channelBindLifetime)
	permUntil := at + int64(permissionLifetime)
	c.bindMu.Lock()
	defer c.bindMu.Unlock()
	if c.dead.Load() {
		return
	}
	old := c.chans.Load()
	if old != nil {
		if b := old.byNumber[number]; b != nil && b.peer == peer {
			b.until.Store(chanUntil)
			b.perm.until.Store(permUntil)
			return
		}
	}
	size := 1
	if old != nil {
		size += len(old.byNumber)
	}
	next := newChannelTable(size)
	if old != nil {
		for n, b := range old.byNumber {
			if n != number && b.peer != peer {
				next.add(b)
			}
		}
	}
	if len(next.byNumber) < maxFastChannels {
		perm := next.perms[peer.Addr()]
		if perm == nil {
			perm = new(permission)
		}
		perm.until.Store(permUntil)
		b := &channelBinding{number: number, peer: peer, perm: perm}
		b.until.Store(chanUntil)
		next.add(b)
	}
	c.chans.Store(next)
}

// refreshPermissions records that pion created or refreshed permissions
// for peers' IPs, for a request it read at `at`. Only IPs with a bound
// channel matter to the fast path.
func (c *relayConn) refreshPermissions(peers []netip.AddrPort, at int64) {
	defer c.r.n.off.sync(c)
	t := c.chans.Load()
	if t == nil {
		return
	}
	until := at + int64(permissionLifetime)
	for _, p := range peers {
		if perm := t.perms[p.Addr()]; perm != nil {
			perm.until.Store(until)
		}
	}
}

// channel returns the live binding of channel number, or nil.
func (c *relayConn) channel(number uint16, now int64) *channelBinding {
	t := c.chans.Load()
	if t == nil || c.dead.Load() {
		return nil
	}
	if b := t.byNumber[number]; b != nil && b.alive(now) {
		return b
	}
	return nil
}

// channelTo returns the live binding of peer, or nil.
func (c *relayConn) channelTo(peer netip.AddrPort, now int64) *channelBinding {
	t := c.chans.Load()
	if t == nil || c.dead.Load() {
		return nil
	}
	if b := t.byPeer[peer]; b != nil && b.alive(now) {
		return b
	}
	return nil
}
