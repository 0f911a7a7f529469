package fleet

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// Defaults of RegistryConfig and PickConfig.
const (
	DefaultDeadAfter  = 3 * time.Second
	DefaultMaxNodes   = 1024
	DefaultMargin     = 0.15
	DefaultPickKeys   = 1 << 16
	DefaultPickKeyTTL = time.Hour
)

var (
	// errFull: the registry holds MaxNodes nodes and a new id arrived.
	errFull = errors.New("fleet: registry full")
	// ErrNodeIDTaken: AddLocal was given an id already registered, or a
	// remote node tried to register the id of a local one.
	ErrNodeIDTaken = errors.New("fleet: node id taken")
)

// loadEpsilon absorbs float rounding when comparing loads against a margin.
const loadEpsilon = 1e-9

// NodeInfo is a snapshot of one registered node.
type NodeInfo struct {
	ID       string   `json:"id"`
	Region   string   `json:"region,omitempty"`
	Version  string   `json:"version,omitempty"`
	Addrs    Addrs    `json:"addrs"`
	Capacity Capacity `json:"capacity"`
	// Load is the node's last report (zero before its first).
	Load Load `json:"load"`
	// Remote is the address its control connection comes from.
	Remote string `json:"remote,omitempty"`
	// Core is the id of the signaling core the node registered with when
	// that is another core sharing the fleet (Share); "" for this core's
	// own nodes. Only its own core commands it; here it is only picked.
	Core string `json:"core,omitempty"`
	// Since is when it registered, LastSeen when its last report arrived
	// (Since until the first).
	Since    time.Time `json:"since"`
	LastSeen time.Time `json:"last_seen"`
}

// Draining reports whether the node announced drain.
func (n NodeInfo) Draining() bool { return n.Load.Draining }

// PickConfig tunes Registry.Pick.
type PickConfig struct {
	// Margin is the hysteresis: a key keeps a node it was given before
	// while that node is alive, not draining, in the best region class
	// available, and its load exceeds the best candidate's by at most
	// Margin. 0 means DefaultMargin; a negative value turns hysteresis off.
	Margin float64
	// Keys bounds how many keys' previous choices are remembered; the least
	// recently picked are forgotten first. 0 means DefaultPickKeys.
	Keys int
	// KeyTTL forgets a key's previous choice this long after its last
	// Pick. 0 means DefaultPickKeyTTL.
	KeyTTL time.Duration
}

// RegistryConfig configures a Registry. Zero values mean the defaults.
type RegistryConfig struct {
	// DeadAfter: a node whose last report is older than this is not
	// picked (the server also removes it then). Default DefaultDeadAfter.
	DeadAfter time.Duration
	// MaxNodes bounds the registry; a new node id beyond it is refused.
	// Default DefaultMaxNodes.
	MaxNodes int
	Pick     PickConfig
	// Clock is the registry's clock (report ages, pick hysteresis).
	// Default (nil): the real clock.
	Clock clockwork.Clock
}

func (c RegistryConfig) withDefaults() RegistryConfig {
	if c.DeadAfter <= 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.MaxNodes <= 0 {
		c.MaxNodes = DefaultMaxNodes
	}
	switch {
	case c.Pick.Margin == 0:
		c.Pick.Margin = DefaultMargin
	case c.Pick.Margin < 0:
		c.Pick.Margin = -1
	}
	if c.Pick.Keys <= 0 {
		c.Pick.Keys = DefaultPickKeys
	}
	if c.Pick.KeyTTL <= 0 {
		c.Pick.KeyTTL = DefaultPickKeyTTL
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return c
}

// Registry is the core's view of its relay nodes and the policy that
// assigns them to players. It is safe for concurrent use; Pick and Nodes
// never block on the network.
type Registry struct {
	cfg RegistryConfig
	m   *metrics // nil when the registry has no server

	mu     sync.Mutex
	nodes  map[string]*entry
	gen    uint64
	sticky *stickyMap
	relays map[string]*entry // by relay peer id (relaypick.go)
	// goneRegion remembers the region of relay peers whose node left, so a
	// lobby moving off one prefers its region (bounded by MaxNodes).
	goneRegion  map[string]string
	onRelayGone func(relayID string)

	// shared counts the entries of other cores' nodes (Share), which
	// neither MaxNodes nor the cl5_fleet_nodes gauge count.
	shared int
	// changed is signalled (without blocking) when one of this core's
	// nodes comes, goes or drains, so a Share publishes at once.
	changed chan struct{}
	// sharing: a Share feeds this registry (at most one may).
	sharing bool
}

type entry struct {
	info NodeInfo
	// gen identifies the connection that registered this entry, so a
	// replaced connection's late reports and removal do not touch it.
	gen      uint64
	reported bool
	// local is the load source of a node added with AddLocal; nil for
	// nodes registered over the control plane.
	local func() Load
	// pending counts players given this node since its last report, an
	// estimate of load that the report has not caught up with yet, so a
	// burst of players within one report interval spreads out.
	pending int
	// relay is the node's relay peer grant (ID "" when it runs none).
	relay RelayGrant
	// core is the id of the other core that owns this node, "" for this
	// core's own (registry_shared.go). Its gen is 0, which no connection has.
	core string
}

// NewRegistry returns an empty registry. A Server makes its own; this is
// for tests and tools that drive a registry directly.
func NewRegistry(cfg RegistryConfig) *Registry {
	cfg = cfg.withDefaults()
	return &Registry{
		cfg:    cfg,
		nodes:  make(map[string]*entry),
		sticky: newStickyMap(cfg.Pick.Keys, cfg.Pick.KeyTTL),
		relays: make(map[string]*entry),

		goneRegion: make(map[string]string),
		changed:    make(chan struct{}, 1),
	}
}

// Nodes returns every registered node, draining and overdue ones included,
// sorted by id.
func (r *Registry) Nodes() []NodeInfo {
	r.refreshLocal()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]NodeInfo, 0, len(r.nodes))
	for _, e := range r.nodes {
		out = append(out, e.info)
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Node returns the node registered as id.
func (r *Registry) Node(id string) (NodeInfo, bool) {
	r.refreshLocal()
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.nodes[id]
	if !ok {
		return NodeInfo{}, false
	}
	return e.info, true
}

// Len is the number of listed nodes, other cores' shared ones included.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.nodes)
}

// AddLocal lists a relay node that runs in the core's own process, with
// no control connection: load is its report, pulled at most every
// min(DefaultInterval, DeadAfter/2) when the registry is read (never with
// the registry's lock held), so it must be fast and safe for concurrent
// use (relaynode's Node.Stats is). A draining load drains the node like a
// remote one. The node stays until remove is called (remove is idempotent);
// a remote node cannot take its id. Its NodeInfo.Remote is "local".
func (r *Registry) AddLocal(h Hello, load func() Load) (remove func(), err error) {
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("fleet: local node: %w", err)
	}
	if load == nil {
		load = func() Load { return Load{} }
	}
	now := r.cfg.Clock.Now()
	r.mu.Lock()
	old, ok := r.nodes[h.NodeID]
	if ok && old.core == "" {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrNodeIDTaken, h.NodeID)
	}
	if r.ownLocked() >= r.cfg.MaxNodes {
		r.mu.Unlock()
		return nil, errFull
	}
	// Another core's node of that id gives way: a core's own nodes win.
	gone := r.dropSharedLocked(old)
	r.gen++
	gen := r.gen
	e := &entry{
		gen:   gen,
		local: load,
		info: NodeInfo{
			ID: h.NodeID, Region: h.Region, Version: h.Version,
			Addrs: h.Addrs, Capacity: h.Capacity,
			Remote: "local", Since: now, LastSeen: now,
		},
	}
	if h.Relay {
		e.relay = newRelayGrant()
		r.relays[e.relay.ID] = e
	}
	r.nodes[h.NodeID] = e
	r.updateGaugesLocked()
	r.mu.Unlock()
	r.relayGone(gone)
	r.notifyChanged()
	r.refreshLocal()
	return func() { r.remove(h.NodeID, gen) }, nil
}

// refreshLocal pulls the load of local nodes whose last pull is older than
// the refresh period, calling their load functions without the lock.
func (r *Registry) refreshLocal() {
	type due struct {
		id   string
		gen  uint64
		load func() Load
	}
	period := min(DefaultInterval, r.cfg.DeadAfter/2)
	now := r.cfg.Clock.Now()
	var todo []due
	r.mu.Lock()
	for id, e := range r.nodes {
		if e.local != nil && (!e.reported || now.Sub(e.info.LastSeen) >= period) {
			todo = append(todo, due{id, e.gen, e.local})
		}
	}
	r.mu.Unlock()
	for _, d := range todo {
		r.report(d.id, d.gen, sanitizeLoad(d.load()))
	}
}

// register adds or replaces h.NodeID for a new connection and returns the
// connection's generation. replaced reports that an entry existed.
func (r *Registry) register(h Hello, remote string) (gen uint64, replaced bool, grant RelayGrant, err error) {
	now := r.cfg.Clock.Now()
	r.mu.Lock()
	old, replaced := r.nodes[h.NodeID]
	// Another core's node of that id gives way to this registration (most
	// likely the same node, moved here): no connection is replaced.
	shadow := replaced && old.core != ""
	replaced = replaced && !shadow
	if replaced && old.local != nil {
		r.mu.Unlock()
		return 0, false, RelayGrant{}, fmt.Errorf("%w: %q is the core's own relay", ErrNodeIDTaken, h.NodeID)
	}
	if !replaced && r.ownLocked() >= r.cfg.MaxNodes {
		r.mu.Unlock()
		return 0, false, RelayGrant{}, errFull
	}
	var gone string
	if shadow {
		gone = r.dropSharedLocked(old)
	}
	if replaced {
		gone = r.forgetRelayLocked(old)
	}
	r.gen++
	e := &entry{
		gen: r.gen,
		info: NodeInfo{
			ID: h.NodeID, Region: h.Region, Version: h.Version,
			Addrs: h.Addrs, Capacity: h.Capacity,
			Remote: remote, Since: now, LastSeen: now,
		},
	}
	if h.Relay {
		e.relay = newRelayGrant()
		r.relays[e.relay.ID] = e
	}
	r.nodes[h.NodeID] = e
	r.updateGaugesLocked()
	r.mu.Unlock()
	r.relayGone(gone)
	r.notifyChanged()
	return e.gen, replaced, e.relay, nil
}

// report records a Load from connection gen of id. Draining is sticky on
// a connection. drained reports that this report announced drain; ok is
// false when gen no longer owns id.
func (r *Registry) report(id string, gen uint64, l Load) (drained, ok bool) {
	now := r.cfg.Clock.Now()
	r.mu.Lock()
	e := r.nodes[id]
	if e == nil || e.gen != gen {
		r.mu.Unlock()
		return false, false
	}
	was := e.info.Load.Draining
	l.Draining = l.Draining || was
	e.info.Load = l
	e.info.LastSeen = now
	e.reported = true
	e.pending = 0
	drained = l.Draining && !was
	var relay string
	if drained {
		r.updateGaugesLocked()
		// A draining node's relay peer keeps its socket (and its grant)
		// while its lobbies move away.
		relay = e.relay.ID
	}
	r.mu.Unlock()
	r.relayGone(relay)
	if drained {
		r.notifyChanged()
	}
	return drained, true
}

// remove drops id if connection gen still owns it.
func (r *Registry) remove(id string, gen uint64) (NodeInfo, bool) {
	r.mu.Lock()
	e := r.nodes[id]
	if e == nil || e.gen != gen {
		r.mu.Unlock()
		return NodeInfo{}, false
	}
	delete(r.nodes, id)
	gone := r.forgetRelayLocked(e)
	r.updateGaugesLocked()
	r.mu.Unlock()
	r.relayGone(gone)
	r.notifyChanged()
	return e.info, true
}

func (r *Registry) updateGaugesLocked() {
	if r.m == nil {
		return
	}
	draining := 0
	for _, e := range r.nodes {
		if e.info.Load.Draining && e.core == "" {
			draining++
		}
	}
	r.m.nodes.WithLabelValues("ready").Set(float64(r.ownLocked() - draining))
	r.m.nodes.WithLabelValues("draining").Set(float64(draining))
}

// candidate is a pickable node with its rank.
type candidate struct {
	e      *entry
	remote bool    // not in the wanted region
	load   float64 // reported load plus the pending estimate
	allocs int     // reported allocations plus pending
}

// before is the ranking: wanted region first, then least loaded, then
// fewest allocations (nodes without configured capacity all report load
// 0), then id, so equal nodes are ordered the same way every time.
func (a candidate) before(b candidate) bool {
	if a.remote != b.remote {
		return !a.remote
	}
	if a.load != b.load {
		return a.load < b.load
	}
	if a.allocs != b.allocs {
		return a.allocs < b.allocs
	}
	return a.e.info.ID < b.e.info.ID
}

// Pick returns up to n nodes for key (a player), best first, from nodes
// that have reported, are not draining and reported within DeadAfter:
// nodes in region first (region "" has no preference), then the least
// loaded. With hysteresis, key keeps the nodes it was given last time
// while each is still pickable, in the region class of the best candidate
// for its slot, and at most Margin more loaded than it; so small load
// changes do not bounce players between nodes. key "" is not remembered.
// With no pickable node Pick returns nil.
func (r *Registry) Pick(key, region string, n int) []NodeInfo {
	if n <= 0 {
		return nil
	}
	r.refreshLocal()
	now := r.cfg.Clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()

	cands := make([]candidate, 0, len(r.nodes))
	for _, e := range r.nodes {
		if !e.reported || e.info.Load.Draining || now.Sub(e.info.LastSeen) > r.cfg.DeadAfter {
			continue
		}
		c := candidate{
			e:      e,
			remote: region != "" && e.info.Region != region,
			load:   e.info.Load.Load,
			allocs: e.info.Load.Allocations + e.pending,
		}
		if limit := e.info.Capacity.MaxAllocations; limit > 0 {
			c.load += float64(e.pending) / float64(limit)
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		r.countPick("none")
		return nil
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if a.before(b) {
			return -1
		}
		if b.before(a) {
			return 1
		}
		return 0
	})

	var previous []string
	if key != "" {
		previous = r.sticky.get(key, now)
	}
	n = min(n, len(cands))
	used := make([]bool, len(cands))
	chosen := make([]*entry, 0, n)
	kept := 0
	for len(chosen) < n {
		best := slices.Index(used, false) // cands is sorted: the best left
		pick := best
		if r.cfg.Pick.Margin >= 0 {
			for _, id := range previous {
				j := slices.IndexFunc(cands, func(c candidate) bool { return c.e.info.ID == id })
				if j < 0 || used[j] {
					continue
				}
				if cands[j].remote == cands[best].remote && cands[j].load <= cands[best].load+r.cfg.Pick.Margin+loadEpsilon {
					pick = j
					break
				}
			}
		}
		used[pick] = true
		chosen = append(chosen, cands[pick].e)
		if slices.Contains(previous, cands[pick].e.info.ID) {
			kept++
		}
	}

	out := make([]NodeInfo, len(chosen))
	ids := make([]string, len(chosen))
	for i, e := range chosen {
		out[i] = e.info
		ids[i] = e.info.ID
		if !slices.Contains(previous, ids[i]) {
			e.pending++
		}
	}
	if key != "" {
		r.sticky.put(key, ids, now)
	}
	switch {
	case len(previous) == 0:
		r.countPick("new")
	case kept == len(chosen) && kept == len(previous):
		r.countPick("kept")
	default:
		r.countPick("changed")
	}
	return out
}

func (r *Registry) countPick(result string) {
	if r.m != nil {
		r.m.picks.WithLabelValues(result).Inc()
	}
}
