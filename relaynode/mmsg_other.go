//go:build !linux

package relaynode

import (
	"errors"
	"net/netip"
	"syscall"
)

// Without recvmmsg/sendmmsg the node relays every packet through pion
// (the fast path is off); these stubs only keep the package building.
const batchIOSupported = false

var errNoBatchIO = errors.New("relaynode: batched socket I/O needs Linux")

type msgBatch struct{ n int }

func newMsgBatch(size int) *msgBatch { return &msgBatch{n: size} }

func (b *msgBatch) size() int                              { return b.n }
func (b *msgBatch) setBuf(int, []byte)                     {}
func (b *msgBatch) setAddr(int, netip.AddrPort, bool)      {}
func (b *msgBatch) recv(syscall.RawConn, int) (int, error) { return 0, errNoBatchIO }

func (b *msgBatch) tryRecv(uintptr, int) (int, bool, error) { return 0, false, errNoBatchIO }

func (b *msgBatch) received(int) (int, bool, netip.AddrPort, uint32) {
	return 0, false, netip.AddrPort{}, 0
}

func (b *msgBatch) send(syscall.RawConn, int, int) (int, error) { return 0, errNoBatchIO }

func socketFamilyV6(syscall.RawConn) (bool, error) { return false, errNoBatchIO }

func (b *msgBatch) withDst() *msgBatch      { return b }
func (b *msgBatch) dst(int) netip.Addr      { return netip.Addr{} }
func enableDst(syscall.RawConn, bool) error { return errNoBatchIO }
