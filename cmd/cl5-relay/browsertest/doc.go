// Package browsertest holds tests that drive real browsers (Debian's
// chromium, headless, through playwright-core) running the real peerjs
// client against cl5-relay's signaling server, its PeerJS broker and its
// in-process TURN node, and (relay lobbies, failover) against the built
// binary: `cl5-relay serve` as the core and `cl5-relay node` processes. It
// composes signaling and relaynode the way the cmd does, so it lives under
// cmd, beside the binary that composes them (signaling and relaynode must
// not depend on each other).
// It has no code of its own; see browser_test.go for how to run the tests.
package browsertest
