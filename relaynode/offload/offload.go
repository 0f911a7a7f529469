package offload

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Errors.
var (
	// ErrClosed is returned by an Offload's methods after Close.
	ErrClosed = errors.New("offload: closed")
	// ErrUnsupported wraps why this kernel or process cannot run the
	// offload (no CAP_BPF, no TCX, a verifier rejection).
	ErrUnsupported = errors.New("offload: not supported")
	// ErrBadBinding wraps why a Binding cannot be offloaded.
	ErrBadBinding = errors.New("offload: bad binding")
	// ErrConflict is returned by AddBinding for a binding whose client
	// side (client, listen, channel) or peer side (peer, relay) is
	// already installed for another binding.
	ErrConflict = errors.New("offload: conflicting binding")
	// ErrFull is returned by AddBinding when MaxBindings are installed.
	ErrFull = errors.New("offload: too many bindings")
	// ErrUnknownBinding is returned for a binding that is not installed.
	ErrUnknownBinding = errors.New("offload: unknown binding")
)

// DefaultMaxBindings is Config.MaxBindings' default.
const DefaultMaxBindings = 65536

// Config configures an Offload. Zero values mean the defaults.
type Config struct {
	// Interfaces are the names of the interfaces whose ingress the
	// program is attached to: those clients' and peers' packets arrive
	// on (often one). At least one is required.
	Interfaces []string
	// MaxBindings bounds the installed bindings (the kernel maps'
	// sizes). The per-CPU counters take 32 bytes per binding and CPU,
	// allocated up front: 2 MiB per CPU at the default,
	// DefaultMaxBindings.
	MaxBindings int
	// Attach chooses how the program is attached (AttachTCX,
	// AttachClsact). Default AttachAuto.
	Attach AttachMode
	// Logger receives a line per attachment and detachment. Default
	// slog.Default().
	Logger *slog.Logger
}

// Offload is the loaded program, attached to its interfaces, and the
// bindings user space installed in it. Its methods are safe for
// concurrent use.
type Offload struct {
	log *slog.Logger

	mu       sync.Mutex
	closed   bool
	objs     offloadObjects
	nl       *netlink.Handle // the interfaces' namespace; nil until needed
	attached []attachment
	bindings map[Binding]uint32 // binding -> counter slot
	free     []uint32           // unused counter slots
	next     uint32             // slots below next have been handed out
	max      uint32
	ncpu     int
}

// Supported reports whether this process can load the offload's program
// (privileges, helpers, verifier), and why not. Attaching needs
// CAP_NET_ADMIN besides, which New reports.
func Supported() error {
	var objs offloadObjects
	if err := load(&objs, 1); err != nil {
		return err
	}
	return objs.Close()
}

func load(objs *offloadObjects, maxBindings int) error {
	// Before Linux 5.11 BPF memory counts against RLIMIT_MEMLOCK; an
	// error here shows again, clearer, as a load failure.
	_ = rlimit.RemoveMemlock()
	spec, err := loadOffload()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	for _, name := range []string{"c2p", "p2c", "stats"} {
		spec.Maps[name].MaxEntries = uint32(maxBindings)
	}
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w: loading the program needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or root): %w", ErrUnsupported, err)
		}
		return fmt.Errorf("%w: loading the program: %w", ErrUnsupported, err)
	}
	return nil
}

// New loads the program and attaches it to the ingress of each of
// cfg.Interfaces. Interface names are resolved in the calling thread's
// network namespace. On error nothing stays loaded or attached.
func New(cfg Config) (*Offload, error) {
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("offload: no interfaces")
	}
	if cfg.MaxBindings == 0 {
		cfg.MaxBindings = DefaultMaxBindings
	}
	if cfg.MaxBindings < 1 || cfg.MaxBindings > 1<<24 {
		return nil, fmt.Errorf("offload: MaxBindings %d out of range", cfg.MaxBindings)
	}
	switch cfg.Attach {
	case "":
		cfg.Attach = AttachAuto
	case AttachAuto, AttachTCX, AttachClsact:
	default:
		return nil, fmt.Errorf("offload: unknown attach mode %q", cfg.Attach)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ifaces := make([]*net.Interface, 0, len(cfg.Interfaces))
	for _, name := range cfg.Interfaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("offload: interface %q: %w", name, err)
		}
		// The program parses an Ethernet header.
		if len(ifi.HardwareAddr) != 6 {
			return nil, fmt.Errorf("offload: interface %q is not Ethernet", name)
		}
		ifaces = append(ifaces, ifi)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("offload: %w", err)
	}
	o := &Offload{
		log:      cfg.Logger.With("component", "offload"),
		bindings: make(map[Binding]uint32),
		max:      uint32(cfg.MaxBindings),
		ncpu:     ncpu,
	}
	if err := load(&o.objs, cfg.MaxBindings); err != nil {
		return nil, err
	}
	if cfg.Attach != AttachTCX {
		// Opened here, its sockets stay in this namespace, so Close
		// finds the filters from any thread.
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			o.detach()
			return nil, fmt.Errorf("offload: netlink: %w", err)
		}
		o.nl = h
	}
	for _, ifi := range ifaces {
		a, err := attach(cfg.Attach, ifi, o.objs.Cl5Offload, o.nl)
		if err != nil {
			o.detach()
			return nil, fmt.Errorf("%w: attaching to %s ingress: %w", ErrUnsupported, ifi.Name, err)
		}
		o.attached = append(o.attached, a)
		mode := "clsact"
		if _, ok := a.(tcxAttachment); ok {
			mode = "tcx"
		}
		o.log.Info("offload attached", "interface", ifi.Name, "mode", mode)
	}
	return o, nil
}

// Close detaches the program from every interface and frees it and its
// maps. It is idempotent.
func (o *Offload) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	err := o.detach()
	o.log.Info("offload detached")
	return err
}

func (o *Offload) detach() error {
	var errs []error
	for _, a := range o.attached {
		errs = append(errs, a.detach())
	}
	o.attached = nil
	if o.nl != nil {
		o.nl.Close()
		o.nl = nil
	}
	errs = append(errs, o.objs.Close())
	return errors.Join(errs...)
}

// Stats are program-wide event counts, summed over CPUs.
type Stats struct {
	// ToPeer and ToClient count the datagrams relayed in each
	// direction.
	ToPeer, ToClient uint64
	// PassedNoRoute counts datagrams of a binding handed to the stack
	// because the FIB gave no usable route (see the package comment).
	PassedNoRoute uint64
	// PassedPacket counts datagrams of a binding handed to the stack
	// because of their shape (non-zero padding, a length that does not
	// add up, no UDP checksum from a peer).
	PassedPacket uint64
	// Dropped counts datagrams dropped because a helper failed after
	// the packet was changed.
	Dropped uint64
}

// Stats returns the program-wide counts.
func (o *Offload) Stats() (Stats, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return Stats{}, ErrClosed
	}
	var sums [5]uint64
	for i := range sums {
		var per []uint64
		if err := o.objs.Events.Lookup(uint32(i), &per); err != nil {
			return Stats{}, fmt.Errorf("offload: reading events: %w", err)
		}
		for _, v := range per {
			sums[i] += v
		}
	}
	return Stats{ToPeer: sums[0], ToClient: sums[1], PassedNoRoute: sums[2], PassedPacket: sums[3], Dropped: sums[4]}, nil
}
