package peerclient

import (
	"fmt"
	"net"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// iceSocketBuffer is the kernel buffer asked for on the shared ICE
// socket: one socket carries every connection of a relay node.
const iceSocketBuffer = 4 << 20

// relayNominationWait is how long a relay peer's connections, as the
// controlling agent, give a better candidate pair to succeed before they
// nominate one through the remote's NAT or TURN server (a direct one is
// nominated at once).
const relayNominationWait = 200 * time.Millisecond

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
	if cfg.Relay {
		// A relay dials every callee of a splice, and every pair after a
		// failover, as the controlling ICE agent; pion would wait up to
		// 2 s before nominating a pair through the callee's TURN server
		// (1 s for a peer-reflexive candidate, 0.5 s for a server-
		// reflexive one) in case a better one succeeds: each connection
		// of a player who needs TURN would open that late.
		se.SetSrflxAcceptanceMinWait(relayNominationWait)
		se.SetPrflxAcceptanceMinWait(relayNominationWait)
		se.SetRelayAcceptanceMinWait(relayNominationWait)
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
