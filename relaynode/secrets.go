package relaynode

import (
	"errors"
	"fmt"
)

// SetSecrets replaces the TURN REST secrets the node accepts (the
// rotation of Config.Secrets without a restart, as on SIGHUP). Live
// allocations keep relaying: relayed data carries no credentials. Every
// request from now on (new allocations, and the refreshes, permissions
// and channel binds of live ones) is checked against the new set, so an
// allocation made with a secret that is no longer listed ends at its next
// refresh: keep an old secret listed for the longest credential lifetime
// (the core's ice.ttl) after minting moved to a new one. On an error the
// secrets are unchanged.
func (n *Node) SetSecrets(secrets []string) error {
	if len(secrets) == 0 && len(n.auth.static) == 0 {
		return errors.New("relaynode: no secrets and no static users: every allocation would be refused")
	}
	raw := make([][]byte, len(secrets))
	for i, s := range secrets {
		if len(s) < minSecretLen {
			return fmt.Errorf("relaynode: secret %d is %d bytes: want at least %d", i+1, len(s), minSecretLen)
		}
		raw[i] = []byte(s)
	}
	n.auth.rest.SetSecrets(raw...)
	n.log.Info("TURN secrets replaced", "secrets", len(secrets))
	return nil
}
