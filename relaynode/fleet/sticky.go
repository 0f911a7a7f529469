package fleet

import (
	"container/list"
	"time"
)

// stickyMap remembers each key's last Pick, bounded two ways: at most max
// keys (the least recently picked go first) and each for ttl after its
// last Pick. Its owner locks it.
type stickyMap struct {
	max int
	ttl time.Duration
	ll  *list.List // of *stickyEntry, most recent at the front
	idx map[string]*list.Element
}

type stickyEntry struct {
	key string
	ids []string
	at  time.Time
}

func newStickyMap(max int, ttl time.Duration) *stickyMap {
	return &stickyMap{max: max, ttl: ttl, ll: list.New(), idx: make(map[string]*list.Element)}
}

// get returns key's remembered ids, or nil when unknown or expired.
func (s *stickyMap) get(key string, now time.Time) []string {
	el, ok := s.idx[key]
	if !ok {
		return nil
	}
	se := el.Value.(*stickyEntry)
	if now.Sub(se.at) > s.ttl {
		s.ll.Remove(el)
		delete(s.idx, key)
		return nil
	}
	return se.ids
}

// put remembers ids for key, then forgets expired and excess keys.
func (s *stickyMap) put(key string, ids []string, now time.Time) {
	if el, ok := s.idx[key]; ok {
		se := el.Value.(*stickyEntry)
		se.ids, se.at = ids, now
		s.ll.MoveToFront(el)
	} else {
		s.idx[key] = s.ll.PushFront(&stickyEntry{key: key, ids: ids, at: now})
	}
	// The list is in order of last put, so expired entries are at the
	// back; each pass removes one, so this ends within len passes.
	for el := s.ll.Back(); el != nil; el = s.ll.Back() {
		se := el.Value.(*stickyEntry)
		if s.ll.Len() <= s.max && now.Sub(se.at) <= s.ttl {
			break
		}
		s.ll.Remove(el)
		delete(s.idx, se.key)
	}
}

func (s *stickyMap) len() int { return s.ll.Len() }
