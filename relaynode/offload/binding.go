package offload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Binding is one TURN channel binding to relay in the kernel: the client
// (its address as the node sees it), the listening address it sends to,
// the allocation's relay address, the peer, and the channel number. All
// addresses are IPv4 (IPv4-mapped IPv6 ones are accepted) with a port.
type Binding struct {
	Client, Listen, Relay, Peer netip.AddrPort
	Channel                     uint16
}

// Counters are a binding's relayed traffic: datagrams and payload bytes
// (the application data, without ChannelData, UDP or IP headers).
type Counters struct {
	ToPeerPackets, ToPeerBytes     uint64
	ToClientPackets, ToClientBytes uint64
}

func (b Binding) normalize() (Binding, error) {
	fields := []struct {
		name string
		ap   *netip.AddrPort
	}{{"client", &b.Client}, {"listen", &b.Listen}, {"relay", &b.Relay}, {"peer", &b.Peer}}
	for _, f := range fields {
		a := f.ap.Addr().Unmap()
		if !a.Is4() {
			return b, fmt.Errorf("%w: %s address %v is not IPv4", ErrBadBinding, f.name, *f.ap)
		}
		if f.ap.Port() == 0 {
			return b, fmt.Errorf("%w: %s address %v has no port", ErrBadBinding, f.name, *f.ap)
		}
		*f.ap = netip.AddrPortFrom(a, f.ap.Port())
	}
	if b.Channel < 0x4000 || b.Channel > 0x7fff {
		return b, fmt.Errorf("%w: channel %#x is outside 0x4000-0x7FFF", ErrBadBinding, b.Channel)
	}
	return b, nil
}

// be32 and be16 give the value whose in-memory bytes (this machine's
// order) are the address or port in network order, as the maps hold
// them.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func be16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func (b Binding) keys(slot uint32) (offloadC2pKey, offloadC2pVal, offloadP2cKey, offloadP2cVal) {
	ck := offloadC2pKey{
		ClientIp: be32(b.Client.Addr()), ListenIp: be32(b.Listen.Addr()),
		ClientPort: be16(b.Client.Port()), ListenPort: be16(b.Listen.Port()),
		Channel: be16(b.Channel),
	}
	cv := offloadC2pVal{
		RelayIp: be32(b.Relay.Addr()), PeerIp: be32(b.Peer.Addr()),
		RelayPort: be16(b.Relay.Port()), PeerPort: be16(b.Peer.Port()),
		Slot: slot,
	}
	pk := offloadP2cKey{
		PeerIp: be32(b.Peer.Addr()), RelayIp: be32(b.Relay.Addr()),
		PeerPort: be16(b.Peer.Port()), RelayPort: be16(b.Relay.Port()),
	}
	pv := offloadP2cVal{
		ClientIp: be32(b.Client.Addr()), ListenIp: be32(b.Listen.Addr()),
		ClientPort: be16(b.Client.Port()), ListenPort: be16(b.Listen.Port()),
		Channel: be16(b.Channel), Slot: slot,
	}
	return ck, cv, pk, pv
}

// AddBinding installs b: from now on its datagrams in both directions
// are relayed in the kernel, with fresh counters. Adding an installed
// binding again does nothing.
func (o *Offload) AddBinding(b Binding) error {
	b, err := b.normalize()
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	if _, ok := o.bindings[b]; ok {
		return nil
	}
	var slot uint32
	switch {
	case len(o.free) > 0:
		slot = o.free[len(o.free)-1]
	case o.next < o.max:
		slot = o.next
	default:
		return ErrFull
	}
	ck, cv, pk, pv := b.keys(slot)
	// Counters first, so the first packet counts from zero.
	if err := o.objs.Stats.Put(slot, make([]offloadCounters, o.ncpu)); err != nil {
		return fmt.Errorf("offload: resetting counters: %w", err)
	}
	if err := o.objs.C2p.Update(&ck, &cv, ebpf.UpdateNoExist); err != nil {
		if errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("%w: client %v to %v on channel %#x", ErrConflict, b.Client, b.Listen, b.Channel)
		}
		return fmt.Errorf("offload: installing %v: %w", b, err)
	}
	if err := o.objs.P2c.Update(&pk, &pv, ebpf.UpdateNoExist); err != nil {
		_ = o.objs.C2p.Delete(&ck)
		if errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("%w: peer %v to relay %v", ErrConflict, b.Peer, b.Relay)
		}
		return fmt.Errorf("offload: installing %v: %w", b, err)
	}
	if len(o.free) > 0 && o.free[len(o.free)-1] == slot {
		o.free = o.free[:len(o.free)-1]
	} else {
		o.next++
	}
	o.bindings[b] = slot
	return nil
}

// RemoveBinding uninstalls b: its datagrams reach the stack again (a
// packet the program is handling at that moment may still be relayed).
// It returns the binding's final counters.
func (o *Offload) RemoveBinding(b Binding) (Counters, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	b, slot, err := o.slotLocked(b)
	if err != nil {
		return Counters{}, err
	}
	ck, _, pk, _ := b.keys(slot)
	errC := o.objs.C2p.Delete(&ck)
	errP := o.objs.P2c.Delete(&pk)
	delete(o.bindings, b)
	c, errS := o.counters(slot)
	o.free = append(o.free, slot)
	if err := errors.Join(errC, errP, errS); err != nil {
		return c, fmt.Errorf("offload: removing %v: %w", b, err)
	}
	return c, nil
}

// Counters returns what the kernel relayed for an installed binding.
func (o *Offload) Counters(b Binding) (Counters, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, slot, err := o.slotLocked(b)
	if err != nil {
		return Counters{}, err
	}
	return o.counters(slot)
}

// slotLocked returns b normalized and the slot of its installed binding;
// o.mu is held.
func (o *Offload) slotLocked(b Binding) (Binding, uint32, error) {
	b, err := b.normalize()
	if err != nil {
		return b, 0, err
	}
	if o.closed {
		return b, 0, ErrClosed
	}
	slot, ok := o.bindings[b]
	if !ok {
		return b, 0, ErrUnknownBinding
	}
	return b, slot, nil
}

func (o *Offload) counters(slot uint32) (Counters, error) {
	var per []offloadCounters
	if err := o.objs.Stats.Lookup(slot, &per); err != nil {
		return Counters{}, fmt.Errorf("offload: reading counters: %w", err)
	}
	var c Counters
	for _, p := range per {
		c.ToPeerPackets += p.C2pPackets
		c.ToPeerBytes += p.C2pBytes
		c.ToClientPackets += p.P2cPackets
		c.ToClientBytes += p.P2cBytes
	}
	return c, nil
}

// Len returns how many bindings are installed.
func (o *Offload) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.bindings)
}
