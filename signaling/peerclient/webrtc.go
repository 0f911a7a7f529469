package peerclient

import (
	"fmt"
	"net"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// iceSocketBuffer is the kernel buffer asked for on the shared ICE
// socket: one socket carries every connection of a relay node.
const iceSocketBuffer = 4 << 20

// newAPI builds the pion API for a Peer's connections, and the shared ICE
// UDP socket (nil without Config.ICEUDPListen), which the Peer closes.
func newAPI(cfg Config) (*webrtc.API, ice.UDPMux, error) {
	var se webrtc.SettingEngine
	loopback := func(ip net.IP) bool { return ip.IsLoopback() }
	if cfg.LoopbackOnly {
		se.SetIncludeLoopbackCandidate(true)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		se.SetIPFilter(loopback)
		se.SetRemoteIPFilter(loopback)
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	}
	if len(cfg.PublicIPs) > 0 {
		// 1:1 NAT: the host candidates carry the public addresses instead
		// of the local ones (mDNS would hide them, so it only queries).
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
		err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        cfg.PublicIPs,
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("%w: PublicIPs: %w", ErrConfig, err)
		}
	}
	var mux ice.UDPMux
	if cfg.ICEUDPListen != "" {
		addr, err := net.ResolveUDPAddr("udp", cfg.ICEUDPListen)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: ICEUDPListen: %w", ErrConfig, err)
		}
		if addr.IP == nil || addr.IP.IsUnspecified() {
			// One socket per local address, all on the one port.
			opts := []ice.UDPMuxFromPortOption{
				ice.UDPMuxFromPortWithReadBufferSize(iceSocketBuffer),
				ice.UDPMuxFromPortWithWriteBufferSize(iceSocketBuffer),
			}
			if cfg.LoopbackOnly {
				opts = append(opts, ice.UDPMuxFromPortWithLoopback(), ice.UDPMuxFromPortWithIPFilter(loopback),
					ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4))
			}
			m, err := ice.NewMultiUDPMuxFromPort(addr.Port, opts...)
			if err != nil {
				return nil, nil, fmt.Errorf("peerclient: ICE UDP listen on port %d: %w", addr.Port, err)
			}
			mux = m
		} else {
			conn, err := net.ListenUDP("udp", addr)
			if err != nil {
				return nil, nil, fmt.Errorf("peerclient: ICE UDP listen: %w", err)
			}
			_ = conn.SetReadBuffer(iceSocketBuffer) // best effort: the kernel caps it
			_ = conn.SetWriteBuffer(iceSocketBuffer)
			mux = webrtc.NewICEUDPMux(nil, conn)
		}
		se.SetICEUDPMux(mux)
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se)), mux, nil
}

// iceListenAddrs lists the addresses of the shared ICE socket(s).
func iceListenAddrs(mux ice.UDPMux) []string {
	if mux == nil {
		return nil
	}
	var out []string
	for _, a := range mux.GetListenAddresses() {
		out = append(out, a.String())
	}
	return out
}

func pionICEServers(in []ICEServer) []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, 0, len(in))
	for _, s := range in {
		out = append(out, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out
}
