package main

import (
	"io"
	"net"
)

// probeListen opens addr on each of nets ("tcp", "udp") and closes it
// again at once. Once one listener of a run has failed nothing may start,
// yet the user should hear of every other taken port in the same run:
// the remaining addresses are probed instead of served.
func probeListen(addr string, nets ...string) error {
	for _, network := range nets {
		var c io.Closer
		var err error
		if network == "udp" {
			c, err = net.ListenPacket(network, addr)
		} else {
			c, err = net.Listen(network, addr)
		}
		if err != nil {
			return err
		}
		_ = c.Close()
	}
	return nil
}
