package signaling

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// newLimiter is a token bucket of burst tokens refilled at perSecond; a
// negative or zero rate means no limit.
func newLimiter(perSecond float64, burst int) *rate.Limiter {
	if perSecond <= 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))
}

// keyedLimiter is a token bucket per key (a client IP), bounded in memory:
// buckets that have refilled are swept, and past maxKeys new keys are refused
// rather than letting a spoofing flood grow the map.
type keyedLimiter struct {
	limit   rate.Limit
	burst   int
	maxKeys int

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

// newKeyedLimiter allows burst events at once and perMinute after that, per
// key. A negative or zero rate means no limit.
func newKeyedLimiter(perMinute, burst int, maxKeys int) *keyedLimiter {
	l := &keyedLimiter{limit: rate.Inf, burst: max(burst, 1), maxKeys: maxKeys, buckets: make(map[string]*rate.Limiter)}
	if perMinute > 0 {
		l.limit = rate.Limit(float64(perMinute) / 60)
	}
	return l
}

func (l *keyedLimiter) allow(key string, now time.Time) bool {
	if l.limit == rate.Inf {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute || len(l.buckets) >= l.maxKeys {
		// A full bucket has forgotten every past event: dropping it changes
		// nothing.
		for k, b := range l.buckets {
			if b.TokensAt(now) >= float64(l.burst) {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			return false
		}
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[key] = b
	}
	return b.AllowN(now, 1)
}
