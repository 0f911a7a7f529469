//go:build !linux

package relaynode

import "net"

// setSocketBuffers asks for size-byte receive and send buffers on c; the
// kernel may grant less, which is not reported here (0).
func setSocketBuffers(c *net.UDPConn, size int) (rcv, snd int, err error) {
	if size <= 0 {
		return 0, 0, nil
	}
	if err := c.SetReadBuffer(size); err != nil {
		return 0, 0, err
	}
	return 0, 0, c.SetWriteBuffer(size)
}

// socketBuffers cannot tell here.
func socketBuffers(net.PacketConn) (rcv, snd int, ok bool) { return 0, 0, false }
