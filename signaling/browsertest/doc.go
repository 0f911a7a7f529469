// Package browsertest holds tests that drive real browsers (Debian's
// chromium, headless, through playwright-core) running the real peerjs
// client against cl5-relay's signaling server and PeerJS broker. It has no
// code of its own; see browser_test.go for how to run them.
package browsertest
