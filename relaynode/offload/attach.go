package offload

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AttachMode chooses how the program is attached to an interface's tc
// ingress hook.
type AttachMode string

const (
	// AttachAuto uses TCX where the kernel has it (Linux 6.6+) and a
	// clsact filter otherwise.
	AttachAuto AttachMode = "auto"
	// AttachTCX attaches with TCX: the attachment is owned by the
	// Offload's file descriptors, so even a crash detaches it, and
	// other tc programs keep running beside it.
	AttachTCX AttachMode = "tcx"
	// AttachClsact adds a direct-action bpf filter to the interface's
	// clsact qdisc (created if missing, and removed again on Close if
	// the Offload created it and nothing else uses it). A process that
	// dies without Close leaves the filter behind (it is named
	// cl5_offload, priority clsactPriority): the next New in clsact mode
	// on that interface replaces it, and tc filter del removes it.
	AttachClsact AttachMode = "clsact"
)

// clsactPriority is the priority (and the name says whose) of the clsact
// filter; adding it fails rather than replace a filter someone else
// installed there.
const clsactPriority = 0x3478

// clsactName is the filter's name (the kernel shows it with the object's
// section after it).
const clsactName = "cl5_offload"

type attachment interface {
	detach() error
}

type tcxAttachment struct{ l link.Link }

func (a tcxAttachment) detach() error { return a.l.Close() }

type clsactAttachment struct {
	h      *netlink.Handle // opened in the interface's namespace
	link   netlink.Link
	filter *netlink.BpfFilter
	qdisc  *netlink.GenericQdisc // nil when it existed before
}

func (a *clsactAttachment) detach() error {
	err := a.h.FilterDel(a.filter)
	if a.qdisc != nil {
		in, errIn := a.h.FilterList(a.link, netlink.HANDLE_MIN_INGRESS)
		out, errOut := a.h.FilterList(a.link, netlink.HANDLE_MIN_EGRESS)
		if errIn == nil && errOut == nil && len(in) == 0 && len(out) == 0 {
			err = errors.Join(err, a.h.QdiscDel(a.qdisc))
		}
	}
	return err
}

// attach attaches prog to ifi's ingress; h is the netlink handle of the
// calling thread's namespace (nil for TCX only).
func attach(mode AttachMode, ifi *net.Interface, prog *ebpf.Program, h *netlink.Handle) (attachment, error) {
	if mode == AttachAuto || mode == AttachTCX {
		l, err := link.AttachTCX(link.TCXOptions{
			Interface: ifi.Index,
			Program:   prog,
			Attach:    ebpf.AttachTCXIngress,
			Anchor:    link.Tail(),
		})
		if err == nil {
			return tcxAttachment{l}, nil
		}
		if mode == AttachTCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("tcx: %w", err)
		}
	}
	nl, err := h.LinkByIndex(ifi.Index)
	if err != nil {
		return nil, fmt.Errorf("clsact: %w", err)
	}
	a := &clsactAttachment{h: h, link: nl}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifi.Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	switch err := h.QdiscAdd(q); {
	case err == nil:
		a.qdisc = q
	case errors.Is(err, unix.EEXIST):
	default:
		return nil, fmt.Errorf("clsact qdisc: %w", err)
	}
	a.filter = &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifi.Index,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    netlink.MakeHandle(0, 1),
			Protocol:  unix.ETH_P_ALL,
			Priority:  clsactPriority,
		},
		Fd:           prog.FD(),
		Name:         clsactName,
		DirectAction: true,
	}
	err = h.FilterAdd(a.filter)
	if errors.Is(err, unix.EEXIST) && removeLeftover(h, nl) {
		// A process that died without Close left its filter behind, and
		// the qdisc it made: the qdisc goes on Close if nothing else
		// uses it by then.
		a.qdisc = q
		err = h.FilterAdd(a.filter)
	}
	if err != nil {
		if a.qdisc != nil {
			_ = h.QdiscDel(a.qdisc)
		}
		return nil, fmt.Errorf("clsact filter: %w", err)
	}
	return a, nil
}

// removeLeftover deletes an ingress filter of ours (by name and
// priority) from nl, one that a process that died without Close left
// behind, and reports whether there was one. A filter of anybody else at
// that priority stays.
func removeLeftover(h *netlink.Handle, nl netlink.Link) bool {
	fs, err := h.FilterList(nl, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return false
	}
	removed := false
	for _, f := range fs {
		bf, ok := f.(*netlink.BpfFilter)
		if !ok || bf.Priority != clsactPriority || !strings.HasPrefix(bf.Name, clsactName) {
			continue
		}
		if h.FilterDel(bf) == nil {
			removed = true
		}
	}
	return removed
}
