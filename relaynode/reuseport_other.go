//go:build !unix

package relaynode

import "syscall"

// Without SO_REUSEPORT the node binds a single UDP socket.
const reusePortSupported = false

func reusePort(_, _ string, _ syscall.RawConn) error { return nil }
