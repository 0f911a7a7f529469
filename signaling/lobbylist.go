package signaling

import (
	"math"
	"slices"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// lobbyList is what the lobby-less players of a game are told about its
// lobbies (NEW_LOBBY, LOBBY_CLOSED), under a per-game budget.
//
// Each lobby opening or closing reaches every lobby-less player of the
// game, so a client that creates and closes lobbies in a loop, well within
// its message rate, makes the server write (rate x idle players) frames:
// 48 msg/s into a game of 2,000 idle players was ~96k frames/s, and slowed
// every other game. So the list changes lobby-less players are told of are
// paid for from a token bucket per game (Config.LobbyListFrames frames per
// second). Within it they are told at once, as v1.0 does. Beyond it the
// changes wait and are sent together when the budget allows, as the
// difference between what those players were last told (announced) and the
// lobbies that exist then: a lobby created and closed in between costs
// nothing, and nothing is sent twice.
//
// The guarantee a v1.0 client relies on holds: LIST_ACK answers with the
// announced list, so a lobby-less player that applies NEW_LOBBY and
// LOBBY_CLOSED to its last LIST_ACK always holds exactly the announced
// list, and that list catches up with the real one within a budget period
// of the last change. (FIND_LOBBY, JOIN_LOBBY and CREATE_LOBBY always see
// the real lobbies.) Players of a closing lobby are told LOBBY_CLOSED at
// once, after their TRANSITION "", and not again by the batch.
type lobbyList struct {
	announced []string        // names lobby-less players know, in the order they learnt them
	known     map[string]bool // set of announced
	// told holds the players of a closed lobby that got its LOBBY_CLOSED
	// directly, so the next batch does not repeat it. Cleared by every
	// batch; an entry goes when its player leaves the idle set.
	told    map[*player]string
	limiter *rate.Limiter   // nil: unlimited
	timer   clockwork.Timer // the pending batch, if any
	ackMsg  []byte          // LIST_ACK of announced, encoded; nil when announced changed since
}

func newLobbyList(framesPerSecond float64) lobbyList {
	l := lobbyList{known: make(map[string]bool), told: make(map[*player]string)}
	if framesPerSecond > 0 {
		l.limiter = rate.NewLimiter(rate.Limit(framesPerSecond), max(int(framesPerSecond), 1))
	}
	return l
}

// names is the LIST_ACK payload: never null (the v1.0 client breaks on it).
func (l *lobbyList) names() []string { return append([]string{}, l.announced...) }

// ack is the LIST_ACK frame, encoded once per change of the announced list.
func (l *lobbyList) ack() []byte {
	if l.ackMsg == nil {
		l.ackMsg = wire.Encode(wire.OpListAck, l.names())
	}
	return l.ackMsg
}

// lobbyListChangedLocked tells lobby-less players of g about lobbies that
// opened or closed, now if the budget allows, else in one batch later.
func (h *Hub) lobbyListChangedLocked(g *game) {
	if g.list.timer != nil {
		return // the pending batch will carry this change too
	}
	h.flushLobbyListLocked(g)
}

// flushLobbyListLocked sends every lobby-less player the difference between
// the announced list and g's lobbies, if the budget has the frames it
// takes; else it schedules itself for when the budget will have them. (A
// batch larger than the whole bucket waits for a full bucket and goes into
// debt, which delays the next one.)
func (h *Hub) flushLobbyListLocked(g *game) {
	l := &g.list
	var closed, opened []string
	var frames [][]byte
	for _, name := range l.announced {
		if g.lobbies[name] == nil {
			closed = append(closed, name)
			frames = append(frames, wire.Encode(wire.OpLobbyClosed, name))
		}
	}
	for _, lb := range g.order {
		if !l.known[lb.name] {
			opened = append(opened, lb.name)
			frames = append(frames, wire.Encode(wire.OpNewLobby, lb.name))
		}
	}
	if len(frames) == 0 {
		return
	}
	cost := 0
	for p := range g.idle {
		cost += len(frames)
		if slices.Contains(closed, l.told[p]) {
			cost--
		}
	}
	if lim := l.limiter; lim != nil && cost > 0 {
		now := h.clock.Now()
		need := float64(min(cost, lim.Burst()))
		if have := lim.TokensAt(now); have < need {
			wait := time.Duration(math.Ceil((need - have) / float64(lim.Limit()) * float64(time.Second)))
			h.metrics.lobbyListDeferred.Inc()
			l.timer = h.clock.AfterFunc(max(wait, time.Millisecond), func() {
				g.mu.Lock()
				defer g.mu.Unlock()
				l.timer = nil
				h.flushLobbyListLocked(g)
			})
			return
		}
		for left := cost; left > 0; {
			n := min(left, lim.Burst())
			left -= n
			lim.ReserveN(now, n)
		}
	}
	for p := range g.idle {
		told := l.told[p]
		for i, f := range frames {
			if i < len(closed) && closed[i] == told {
				continue
			}
			p.send(f)
		}
	}
	clear(l.told)
	l.announced = slices.DeleteFunc(l.announced, func(name string) bool { return g.lobbies[name] == nil })
	for _, name := range closed {
		delete(l.known, name)
	}
	for _, name := range opened {
		l.known[name] = true
	}
	l.announced = append(l.announced, opened...)
	l.ackMsg = nil
	h.metrics.lobbyListFrames.Add(float64(cost))
}

// stopLobbyListLocked cancels the pending batch (the game is going away).
func (g *game) stopLobbyListLocked() {
	if g.list.timer != nil {
		g.list.timer.Stop()
		g.list.timer = nil
	}
}
