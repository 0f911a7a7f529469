//go:build !linux

package signaling

import "net"

// sendQueueProbe would read a socket's send queue; elsewhere than on Linux
// it never knows, so replies are always written by a writer goroutine.
type sendQueueProbe struct{}

func newSendQueueProbe(net.Conn) *sendQueueProbe { return nil }

func (*sendQueueProbe) queued() (int, bool) { return 0, false }
