package relaynode

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode/offload"
)

// Config.Offload's values.
const (
	OffloadOff  = "off"
	OffloadAuto = "auto"
	OffloadTC   = "tc"
)

// offloadSweepInterval is how often the node gives up offloaded
// bindings whose channel or permission lifetime ended: the kernel
// relays their packets without user space seeing them, so nothing else
// would notice.
const offloadSweepInterval = time.Second

// nodeOffload puts the channel bindings the fast path learns into the
// kernel offload (relaynode/offload) and takes them out again. The fast
// path's table (channels.go) stays the truth: sync makes the kernel's
// bindings of one allocation match its live bindings, and is called
// whenever those change (ChannelBind, CreatePermission, Close) and by a
// sweeper for the lifetimes that end on their own.
//
// What is offloaded: bindings of allocations made over UDP by an IPv4
// client, to an IPv4 peer that is not the node itself, when the node
// knows the address the client sends to (a specific listening address;
// on a wildcard listen, the destination of the client's Allocate,
// IP_PKTINFO, or the one IPv4 address of the offload's interfaces) and
// the relay sockets' local address. Everything else stays in user space.
// Bandwidth caps are checked each second on the kernel's counts: an
// allocation over its cap (or every one, over the node's) leaves the
// kernel for offloadCapHold, and the user-space limiter takes over.
type nodeOffload struct {
	n *Node
	o *offload.Offload
	// wildcardListen is the listening address to use for sockets bound
	// to a wildcard when the client's own is not known; invalid: none.
	wildcardListen netip.Addr
	// localAddrs are the IPv4 addresses of the offload's interfaces: a
	// client's destination on a wildcard socket must be one of them.
	localAddrs []netip.Addr
	// relayIP is the relay sockets' local address as packets from peers
	// reach it; invalid: nothing is offloaded.
	relayIP netip.Addr

	mu     sync.Mutex
	closed bool
	byConn map[*relayConn]map[*channelBinding]*offloaded
	// Bandwidth caps: an allocation (or, for the node's cap, every one)
	// that went over its cap in the kernel stays in user space, under the
	// limiter, until its hold ends.
	held        map[*relayConn]time.Time
	nodeHeld    time.Time
	lastHarvest time.Time

	stop chan struct{}
	done chan struct{}
}

// offloaded is a binding in the kernel and the part of its counts
// already added to the node's.
type offloaded struct {
	ob   offload.Binding
	seen offload.Counters
}

// startOffload loads the offload as cfg.Offload asks. It returns nil,
// nil when the node runs without it (off, or auto and it failed, which
// it logs once).
func (n *Node) startOffload(listen []netip.Addr, relayIP netip.Addr) (*nodeOffload, error) {
	mode := n.cfg.Offload
	if mode == "" || mode == OffloadOff {
		return nil, nil
	}
	m, err := n.loadOffload(listen, relayIP)
	if err != nil {
		if mode == OffloadTC {
			return nil, fmt.Errorf("relaynode: offload: %w", err)
		}
		n.log.Warn("eBPF offload unavailable; relaying in user space", "err", err)
		return nil, nil
	}
	return m, nil
}

func (n *Node) loadOffload(listen []netip.Addr, relayBind netip.Addr) (*nodeOffload, error) {
	if !n.fastPath() {
		return nil, errors.New("the offload learns bindings through the user-space fast path, which is off")
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	type ifAddrs struct {
		ifi   net.Interface
		addrs []netip.Addr // IPv4
	}
	var all []ifAddrs
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		ia := ifAddrs{ifi: ifi}
		if as, err := ifi.Addrs(); err == nil {
			for _, a := range as {
				if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap().Is4() {
					ia.addrs = append(ia.addrs, p.Addr().Unmap())
				}
			}
		}
		all = append(all, ia)
	}
	var names []string
	var wildcard bool
	for _, a := range append(slices.Clone(listen), relayBind) {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() {
			wildcard = true
			continue
		}
		found := false
		for _, ia := range all {
			if slices.Contains(ia.addrs, a) {
				found = true
				if !slices.Contains(names, ia.ifi.Name) {
					names = append(names, ia.ifi.Name)
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("no up, non-loopback interface has address %s", a)
		}
	}
	// Addresses the kernel delivers on the chosen interfaces: the
	// candidates for a wildcard listening or relay address.
	var local []netip.Addr
	if wildcard {
		for _, ia := range all {
			// The program parses Ethernet frames; other links are left
			// to user space rather than fail the load.
			if len(ia.ifi.HardwareAddr) == 6 && !slices.Contains(names, ia.ifi.Name) {
				names = append(names, ia.ifi.Name)
			}
		}
	}
	for _, ia := range all {
		if slices.Contains(names, ia.ifi.Name) {
			local = append(local, ia.addrs...)
		}
	}
	// Packets to the node's addresses may arrive on any interface (a
	// peer behind another one than the client's): the program goes on
	// every Ethernet interface, not only those that hold the addresses.
	for _, ia := range all {
		if len(ia.ifi.HardwareAddr) == 6 && !slices.Contains(names, ia.ifi.Name) {
			names = append(names, ia.ifi.Name)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("no up, non-loopback Ethernet interface to attach to")
	}
	m := &nodeOffload{
		n:      n,
		byConn: make(map[*relayConn]map[*channelBinding]*offloaded),
		held:   make(map[*relayConn]time.Time),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if len(local) == 1 {
		m.wildcardListen = local[0]
	}
	m.localAddrs = local
	switch rb := relayBind.Unmap(); {
	case rb.IsValid() && !rb.IsUnspecified():
		m.relayIP = rb
	case slices.Contains(local, n.addrs.Relay):
		m.relayIP = n.addrs.Relay
	default:
		m.relayIP = m.wildcardListen
	}
	for _, name := range names {
		if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + name + "/forwarding"); err == nil && strings.TrimSpace(string(b)) == "0" {
			n.log.Warn("IPv4 forwarding is off on an offload interface: the kernel cannot route relayed packets there, "+
				"so they stay in user space (sysctl net.ipv4.conf.<if>.forwarding=1, and drop forwarded traffic in the firewall)",
				"interface", name)
		}
	}
	o, err := offload.New(offload.Config{Interfaces: names, Logger: n.log})
	if err != nil {
		return nil, err
	}
	m.o = o
	n.log.Info("eBPF offload active", "interfaces", strings.Join(names, ","),
		"relay_ip", addrOrNone(m.relayIP), "wildcard_listen", addrOrNone(m.wildcardListen))
	return m, nil
}

func addrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

// run sweeps expired bindings until close. Node.close waits for it.
func (m *nodeOffload) run() {
	defer close(m.done)
	t := m.n.clk.NewTicker(offloadSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.Chan():
			m.sweep()
		}
	}
}

// sweep re-syncs every allocation with offloaded bindings, removing
// those whose lifetimes ended, and adds what the kernel relayed since
// the last sweep to the node's counts (metrics, load reports).
func (m *nodeOffload) sweep() {
	m.mu.Lock()
	conns := make([]*relayConn, 0, len(m.byConn)+len(m.held))
	for c := range m.byConn {
		conns = append(conns, c)
	}
	for c := range m.held { // back in when their hold ends
		if _, ok := m.byConn[c]; !ok {
			conns = append(conns, c)
		}
	}
	m.mu.Unlock()
	for _, c := range conns {
		m.sync(c)
	}
	m.harvest()
}

// harvest counts what the kernel relayed for each live binding since
// it was last counted, and takes allocations that went over a bandwidth
// cap out of the kernel.
func (m *nodeOffload) harvest() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	now := m.n.clk.Now()
	elapsed := now.Sub(m.lastHarvest).Seconds()
	m.lastHarvest = now
	var total uint64
	for c, bs := range m.byConn {
		var bytes uint64
		for _, ob := range bs {
			cnt, err := m.o.Counters(ob.ob)
			if err != nil {
				continue
			}
			d := m.countLocked(ob, cnt)
			bytes += d.ToPeerBytes + d.ToClientBytes
		}
		total += bytes
		if c.bw != nil && elapsed > 0 && float64(bytes)/elapsed > float64(c.bw.Limit()) {
			m.holdLocked(c, now)
		}
	}
	if bw := m.n.nodeBW; bw != nil && elapsed > 0 && float64(total)/elapsed > float64(bw.Limit()) {
		m.nodeHeld = now.Add(offloadCapHold)
		for c := range m.byConn {
			m.holdLocked(c, now)
		}
	}
}

// offloadCapHold is how long an allocation that went over its bandwidth
// cap in the kernel stays with the user-space limiter.
const offloadCapHold = 10 * time.Second

// holdLocked takes c's bindings out of the kernel for offloadCapHold.
func (m *nodeOffload) holdLocked(c *relayConn, now time.Time) {
	m.held[c] = now.Add(offloadCapHold)
	for b, ob := range m.byConn[c] {
		m.removeLocked(c, b, ob)
	}
}

// sync makes c's bindings in the kernel the live ones of its table. A
// nil m does nothing.
func (m *nodeOffload) sync(c *relayConn) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	now := m.n.clock()
	t := c.chans.Load()
	dead := c.dead.Load() || t == nil
	cur := m.byConn[c]
	for b, ob := range cur {
		if dead || t.byNumber[b.number] != b || !b.alive(now) {
			m.removeLocked(c, b, ob)
		}
	}
	if dead {
		delete(m.held, c)
		return
	}
	if until, ok := m.held[c]; ok {
		if m.n.clk.Now().Before(until) {
			return
		}
		delete(m.held, c)
	}
	if !m.eligible(c) || m.n.clk.Now().Before(m.nodeHeld) {
		return
	}
	owner := c.owner.Load()
	for _, b := range t.byNumber {
		if _, ok := m.byConn[c][b]; ok || !b.alive(now) {
			continue
		}
		ob, ok := m.binding(owner, c, b)
		if !ok {
			continue
		}
		if err := m.o.AddBinding(ob); err != nil {
			m.n.log.Debug("binding not offloaded", "client", ob.Client.String(), "peer", ob.Peer.String(), "err", err)
			continue
		}
		if m.byConn[c] == nil {
			m.byConn[c] = make(map[*channelBinding]*offloaded)
		}
		m.byConn[c][b] = &offloaded{ob: ob}
	}
}

// eligible reports whether c's bindings may be offloaded at all.
func (m *nodeOffload) eligible(c *relayConn) bool {
	return m.relayIP.IsValid() && c.owner.Load() != nil
}

// binding is b as the kernel sees it, if it can be offloaded.
func (m *nodeOffload) binding(owner *fastOwner, c *relayConn, b *channelBinding) (offload.Binding, bool) {
	client := netip.AddrPortFrom(owner.client.Addr().Unmap(), owner.client.Port())
	peer := netip.AddrPortFrom(b.peer.Addr().Unmap(), b.peer.Port())
	if !client.Addr().Is4() || !peer.Addr().Is4() || peer.Addr().IsLoopback() ||
		peer.Addr() == c.r.relayIP || peer.Addr() == m.relayIP {
		return offload.Binding{}, false
	}
	la := addrPort(owner.l.conn.LocalAddr())
	listen := la.Addr().Unmap()
	if listen.IsUnspecified() {
		listen = m.wildcardListen
		if slices.Contains(m.localAddrs, owner.local) {
			listen = owner.local // the address the client's Allocate went to
		}
	}
	if !listen.Is4() {
		return offload.Binding{}, false
	}
	return offload.Binding{
		Client:  client,
		Listen:  netip.AddrPortFrom(listen, la.Port()),
		Relay:   netip.AddrPortFrom(m.relayIP, c.port),
		Peer:    peer,
		Channel: b.number,
	}, true
}

// removeLocked takes b out of the kernel and counts what the kernel
// relayed for it; m.mu is held.
func (m *nodeOffload) removeLocked(c *relayConn, b *channelBinding, ob *offloaded) {
	cnt, err := m.o.RemoveBinding(ob.ob)
	if err != nil {
		m.n.log.Debug("removing an offloaded binding", "client", ob.ob.Client.String(), "peer", ob.ob.Peer.String(), "err", err)
	}
	m.countLocked(ob, cnt)
	delete(m.byConn[c], b)
	if len(m.byConn[c]) == 0 {
		delete(m.byConn, c)
	}
}

// countLocked adds ob's counts now, less what was counted before, to
// the node's counts, and returns that difference.
func (m *nodeOffload) countLocked(ob *offloaded, now offload.Counters) offload.Counters {
	n := m.n
	// A failed read gives zeros: nothing to add, and seen stays.
	since := func(now, seen uint64) uint64 { return now - min(now, seen) }
	cnt := offload.Counters{
		ToPeerPackets:   since(now.ToPeerPackets, ob.seen.ToPeerPackets),
		ToPeerBytes:     since(now.ToPeerBytes, ob.seen.ToPeerBytes),
		ToClientPackets: since(now.ToClientPackets, ob.seen.ToClientPackets),
		ToClientBytes:   since(now.ToClientBytes, ob.seen.ToClientBytes),
	}
	ob.seen.ToPeerPackets = max(ob.seen.ToPeerPackets, now.ToPeerPackets)
	ob.seen.ToPeerBytes = max(ob.seen.ToPeerBytes, now.ToPeerBytes)
	ob.seen.ToClientPackets = max(ob.seen.ToClientPackets, now.ToClientPackets)
	ob.seen.ToClientBytes = max(ob.seen.ToClientBytes, now.ToClientBytes)
	if cnt.ToPeerPackets > 0 {
		n.m.packetsC2P.Add(float64(cnt.ToPeerPackets))
		n.m.bytesC2P.Add(float64(cnt.ToPeerBytes))
	}
	if cnt.ToClientPackets > 0 {
		n.m.packetsP2C.Add(float64(cnt.ToClientPackets))
		n.m.bytesP2C.Add(float64(cnt.ToClientBytes))
	}
	n.relayedPackets.Add(cnt.ToPeerPackets + cnt.ToClientPackets)
	n.relayedBytes.Add(cnt.ToPeerBytes + cnt.ToClientBytes)
	return cnt
}

// installed returns how many bindings are offloaded.
func (m *nodeOffload) installed() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := 0
	for _, bs := range m.byConn {
		k += len(bs)
	}
	return k
}

// close stops the sweeper, removes (and counts) every binding left and
// unloads the program. Node.close calls it once, after the relay
// sockets are closed.
func (m *nodeOffload) close() error {
	if m == nil {
		return nil
	}
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	for c, bs := range m.byConn {
		for b, ob := range bs {
			m.removeLocked(c, b, ob)
		}
	}
	m.closed = true
	return m.o.Close()
}

// stats returns the program's counts (zero when closed).
func (m *nodeOffload) stats() offload.Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return offload.Stats{}
	}
	s, err := m.o.Stats()
	if err != nil {
		return offload.Stats{}
	}
	return s
}

// offloadCollector exports cl5_turn_offload_active and
// cl5_turn_offload_packets_total, read from the offload on scrape.
type offloadCollector struct {
	mu  sync.Mutex
	off *nodeOffload
	// last is what the program had counted when it was closed, so the
	// counter does not go back.
	last offload.Stats
}

var (
	offloadActiveDesc = prometheus.NewDesc("cl5_turn_offload_active",
		"1 while the eBPF offload relays ChannelData in the kernel (turn.offload), else 0.", nil, nil)
	offloadPacketsDesc = prometheus.NewDesc("cl5_turn_offload_packets_total",
		"Packets the eBPF offload relayed in the kernel, by direction (part of cl5_turn_relay_packets_total, which counts them within a second).",
		[]string{"direction"}, nil)
)

func (oc *offloadCollector) set(m *nodeOffload) {
	oc.mu.Lock()
	oc.off = m
	oc.mu.Unlock()
}

// closing records the final counts before the offload goes.
func (oc *offloadCollector) closing() {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if oc.off != nil {
		oc.last = oc.off.stats()
		oc.off = nil
	}
}

func (oc *offloadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- offloadActiveDesc
	ch <- offloadPacketsDesc
}

func (oc *offloadCollector) Collect(ch chan<- prometheus.Metric) {
	oc.mu.Lock()
	off, s := oc.off, oc.last
	oc.mu.Unlock()
	active := 0.0
	if off != nil {
		active = 1
		s = off.stats()
	}
	ch <- prometheus.MustNewConstMetric(offloadActiveDesc, prometheus.GaugeValue, active)
	ch <- prometheus.MustNewConstMetric(offloadPacketsDesc, prometheus.CounterValue, float64(s.ToPeer), dirClientToPeer)
	ch <- prometheus.MustNewConstMetric(offloadPacketsDesc, prometheus.CounterValue, float64(s.ToClient), dirPeerToClient)
}
