package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease scripts. A lease's value is "<core>/<nonce>:<token>", the token an
// INCR of the game's fence counter taken with the lease: every value is
// unique, so comparing values is comparing fencing tokens.
var (
	// KEYS lease, fence, marker, settle; ARGV self, ttl ms, settle ms.
	// Returns {"1", value} when taken, {"0", holder's value} when held,
	// {"3", ""} while Redis settles after losing its data: the marker key,
	// set when the cluster starts, is gone, so the owners of the games
	// whose leases vanished get a window to take them back (their renewals
	// do) before any other core may take a free lease.
	scriptTake = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SET', KEYS[3], '1')
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[3])
  return {'3', ''}
end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'3', ''} end
local cur = redis.call('GET', KEYS[1])
if cur then return {'0', cur} end
local tok = redis.call('INCR', KEYS[2])
local val = ARGV[1] .. ':' .. tok
redis.call('SET', KEYS[1], val, 'PX', ARGV[2])
return {'1', val}`)

	// KEYS lease; ARGV value, ttl ms. 1: renewed; 2: the lease had vanished
	// (Redis restarted without its data) and is ours again; 0: another
	// core holds it.
	scriptRenew = `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0`

	// KEYS lease, state; ARGV value, state ("" deletes it), ttl ms. 1 when
	// written, 0 when refused (the lease is not ours: we are a stale
	// owner). A vanished lease (Redis restarted without its data) is taken
	// back first; the caller checked that ours had not run out.
	scriptWrite = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
elseif cur ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[2]) end
return 1`)

	// KEYS lease, state; ARGV value, keep state (1) or not (0). Gives a
	// lease back if it is still ours.
	scriptRelease = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '0' then redis.call('DEL', KEYS[2]) end
return 1`)
)

// renewLoop renews this core's leases and its liveness key, drops games
// whose leases it could not renew in time, releases leases of games that
// ended, and checks the other ends of tunnels.
func (c *Cluster) renewLoop() {
	defer c.wg.Done()
	t := c.clock.NewTicker(c.cfg.RenewEvery)
	defer t.Stop()
	for {
		c.renew()
		select {
		case <-c.ctx.Done():
			return
		case <-t.Chan():
		}
	}
}

// dropAfter is how long a lease may go unrenewed before its game is
// dropped: renewals are sent every RenewEvery and each waits at most half
// of it, so the drop happens at latest half a RenewEvery before the lease
// can expire in Redis (counted from when its last renewal was sent).
func (c *Cluster) dropAfter() time.Duration { return c.cfg.LeaseTTL - 2*c.cfg.RenewEvery }

func (c *Cluster) renew() {
	now := c.clock.Now()
	type item struct {
		ugi string
		val string
	}
	var items []item
	var expired, idle []string
	c.mu.Lock()
	for ugi, l := range c.owned {
		if now.Sub(l.renewedAt) >= c.dropAfter() {
			expired = append(expired, ugi)
			continue
		}
		items = append(items, item{ugi, l.val})
	}
	c.mu.Unlock()
	for _, ugi := range expired {
		c.metrics.leasesLost.WithLabelValues("unrenewed").Inc()
		c.dropGame(ugi, "game moved: this core lost touch with the cluster")
	}

	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RenewEvery/2)
	defer cancel()
	pipe := c.rdb.Pipeline()
	ttl := c.cfg.LeaseTTL.Milliseconds()
	alive := pipe.Set(ctx, c.aliveKey(c.self), "1", 3*c.cfg.LeaseTTL)
	cmds := make([]*redis.Cmd, len(items))
	for i, it := range items {
		cmds[i] = pipe.Eval(ctx, scriptRenew, []string{c.leaseKey(it.ugi)}, it.val, ttl)
	}
	_, _ = pipe.Exec(ctx)
	if alive.Err() != nil {
		c.metrics.redisErrors.WithLabelValues("renew").Inc()
	}
	for i, it := range items {
		n, err := cmds[i].Int()
		switch {
		case err != nil:
			// Not renewed: retried next tick, dropped at dropAfter.
		case n == 0:
			c.metrics.leasesLost.WithLabelValues("taken").Inc()
			c.dropGame(it.ugi, "game moved to another core")
		default:
			has := c.hub.HasGame(it.ugi) // not under c.mu: the hub calls Changed under its locks
			c.mu.Lock()
			if l := c.owned[it.ugi]; l != nil && l.val == it.val {
				l.renewedAt = now
				if has {
					l.idleSince = time.Time{}
				} else if l.idleSince.IsZero() {
					l.idleSince = now
				} else if now.Sub(l.idleSince) >= 2*c.cfg.RenewEvery {
					idle = append(idle, it.ugi)
				}
			}
			c.mu.Unlock()
			if n == 2 {
				c.Changed(it.ugi) // Redis lost the state with the lease
			}
		}
	}
	for _, ugi := range idle {
		c.release(ctx, ugi)
	}
	c.checkTunnels(ctx)
}

// release gives back the lease of a game that ended here, with its state.
func (c *Cluster) release(ctx context.Context, ugi string) {
	c.claimMu.Lock()
	defer c.claimMu.Unlock()
	c.mu.Lock()
	l := c.owned[ugi]
	idle := l != nil && !l.idleSince.IsZero()
	c.mu.Unlock()
	// The hub is called without c.mu: it calls Changed under its locks.
	if !idle || !c.hub.Disown(ugi) {
		return
	}
	c.mu.Lock()
	if c.owned[ugi] != l {
		c.mu.Unlock()
		return
	}
	delete(c.owned, ugi)
	delete(c.dirty, ugi)
	c.mu.Unlock()
	c.metrics.leases.Dec()
	if err := scriptRelease.Run(ctx, c.rdb, []string{c.leaseKey(ugi), c.stateKey(ugi)}, l.val, 0).Err(); err != nil {
		c.metrics.redisErrors.WithLabelValues("release").Inc()
	}
	if c.cfg.OnOwnership != nil {
		c.cfg.OnOwnership(ugi, false)
	}
}

// writeCoalesce is how long the state writer waits after a change for
// more: what a crash can lose on top of the write itself.
const writeCoalesce = 10 * time.Millisecond

// writeLoop writes the state of changed games, fenced by their leases.
// Bursts coalesce: each round writes each changed game once, as it is then.
func (c *Cluster) writeLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.dirtyC:
		}
		// A short pause gathers a burst of changes (a lobby filling up)
		// into one write per game.
		select {
		case <-c.ctx.Done():
			return
		case <-c.clock.After(writeCoalesce):
		}
		c.mu.Lock()
		batch := make(map[string]string, len(c.dirty))
		now := c.clock.Now()
		for ugi := range c.dirty {
			// A lease not renewed for long is about to be dropped: no write
			// may take it back.
			if l := c.owned[ugi]; l != nil && now.Sub(l.renewedAt) < c.dropAfter() {
				batch[ugi] = l.val
			}
		}
		clear(c.dirty)
		c.mu.Unlock()
		failed := false
		for ugi, val := range batch {
			if !c.writeState(ugi, val) {
				failed = true
			}
		}
		if failed {
			// Redis is unreachable: try again shortly (the renewer drops
			// the games if it stays so).
			select {
			case <-c.ctx.Done():
				return
			case <-c.clock.After(c.cfg.RenewEvery / 2):
			}
		}
	}
}

// writeState writes one game's state; false when it must be tried again.
func (c *Cluster) writeState(ugi, val string) bool {
	state, _ := c.hub.Snapshot(ugi) // nil: the game ended, its state goes
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RenewEvery)
	defer cancel()
	n, err := scriptWrite.Run(ctx, c.rdb, []string{c.leaseKey(ugi), c.stateKey(ugi)}, val, string(state),
		c.cfg.LeaseTTL.Milliseconds()).Int()
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		c.metrics.redisErrors.WithLabelValues("write").Inc()
		c.Changed(ugi)
		return false
	case err == nil && n == 0:
		c.metrics.fencedRefused.Inc()
		c.log.Warn("state write refused: the lease is no longer ours", "ugi", ugi)
		c.metrics.leasesLost.WithLabelValues("taken").Inc()
		c.dropGame(ugi, "game moved to another core")
	case err == nil:
		c.metrics.stateWrites.Inc()
	}
	return true
}
