package signaling

import (
	"sync"
	"time"
)

// tokenBucket is a plain token bucket. It is not safe for concurrent use; the
// owner serialises access (a session's reader goroutine, or keyedLimiter).
type tokenBucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate, burst float64, now time.Time) tokenBucket {
	return tokenBucket{rate: rate, burst: burst, tokens: burst, last: now}
}

// allow takes one token if there is one.
func (b *tokenBucket) allow(now time.Time) bool {
	if b.rate <= 0 {
		return true // unlimited
	}
	if d := now.Sub(b.last).Seconds(); d > 0 {
		b.tokens = min(b.burst, b.tokens+d*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// full reports whether the bucket would be full at now, i.e. it has forgotten
// every past event and can be discarded.
func (b *tokenBucket) full(now time.Time) bool {
	return b.tokens+now.Sub(b.last).Seconds()*b.rate >= b.burst
}

// keyedLimiter is a token bucket per key (a client IP), bounded in memory:
// buckets that have refilled are swept, and past maxKeys new keys are refused
// rather than letting a spoofing flood grow the map.
type keyedLimiter struct {
	rate, burst float64
	maxKeys     int

	mu        sync.Mutex
	buckets   map[string]*tokenBucket
	lastSweep time.Time
}

func newKeyedLimiter(perMinute, burst int, maxKeys int) *keyedLimiter {
	return &keyedLimiter{
		rate:    float64(perMinute) / 60,
		burst:   float64(burst),
		maxKeys: maxKeys,
		buckets: make(map[string]*tokenBucket),
	}
}

func (l *keyedLimiter) allow(key string, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute || len(l.buckets) >= l.maxKeys {
		for k, b := range l.buckets {
			if b.full(now) {
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
		nb := newTokenBucket(l.rate, l.burst, now)
		b = &nb
		l.buckets[key] = b
	}
	return b.allow(now)
}
