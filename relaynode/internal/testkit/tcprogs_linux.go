//go:build linux

package testkit

import (
	"bytes"
	"net"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// NoTCPrograms checks that nothing is left on the ingress of the named
// interfaces of namespace ns: no TCX program, no tc filter, no clsact
// qdisc (which the offload adds only where there was none).
func NoTCPrograms(t testing.TB, ns string, devs ...string) {
	t.Helper()
	InNetns(t, ns, func() {
		for _, dev := range devs {
			ifi, err := net.InterfaceByName(dev)
			if err != nil {
				t.Errorf("%s: %v", dev, err)
				continue
			}
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifi.Index, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				t.Errorf("query %s: %v", dev, err)
			} else if len(res.Programs) != 0 {
				t.Errorf("%s: %d TCX programs still attached to ingress", dev, len(res.Programs))
			}
			nl, err := netlink.LinkByIndex(ifi.Index)
			if err != nil {
				t.Errorf("%s: %v", dev, err)
				continue
			}
			if fs, err := netlink.FilterList(nl, netlink.HANDLE_MIN_INGRESS); err == nil && len(fs) != 0 {
				t.Errorf("%s: %d tc ingress filters left: %v", dev, len(fs), fs)
			}
			qs, err := netlink.QdiscList(nl)
			if err != nil {
				t.Errorf("%s: qdiscs: %v", dev, err)
			}
			for _, q := range qs {
				if q.Type() == "clsact" {
					t.Errorf("%s: clsact qdisc left", dev)
				}
			}
		}
	})
	// And as an operator would look.
	for _, dev := range devs {
		out, err := exec.Command("ip", "netns", "exec", ns, "tc", "filter", "show", "dev", dev, "ingress").CombinedOutput()
		if err == nil && len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("tc filter show dev %s ingress: %s", dev, out)
		}
	}
}
