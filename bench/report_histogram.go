package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram bucket layout, HDR-style: values below 2^(histSubBits+1) are
// counted exactly; above that every power of two is split into
// 2^histSubBits linear sub-buckets, so a reported value is within
// 2^-histSubBits (0.8%) of the recorded one. Values are nanoseconds,
// clamped to histMax (about 73 minutes).
const (
	histSubBits  = 7
	histSub      = 1 << histSubBits
	histMaxShift = 34
	histMax      = 1<<(histMaxShift+histSubBits+1) - 1
	histBuckets  = (histMaxShift + 2) * histSub
)

// Histogram records durations in log-linear buckets. Record is safe for
// concurrent use and never allocates, so hot paths share one histogram
// (or a few shards) and percentiles are read at the end. The zero value
// is ready to use; it is about 36 KiB.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	min    atomic.Uint64 // stored as value+1, so 0 means "none yet"
	max    atomic.Uint64
}

func histIndex(v uint64) int {
	shift := max(bits.Len64(v)-histSubBits-1, 0)
	return shift*histSub + int(v>>uint(shift))
}

// histUpper is the highest value that lands in bucket i.
func histUpper(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	mant := uint64(i - shift*histSub)
	return (mant+1)<<uint(shift) - 1
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	v = min(v, histMax)
	h.counts[histIndex(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		cur := h.max.Load()
		if v <= cur || h.max.CompareAndSwap(cur, v) {
			break
		}
	}
	for {
		cur := h.min.Load()
		if (cur != 0 && v+1 >= cur) || h.min.CompareAndSwap(cur, v+1) {
			break
		}
	}
}

// Merge adds o's counts to h. o should be quiescent.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
	if m := o.min.Load(); m != 0 && (h.min.Load() == 0 || m < h.min.Load()) {
		h.min.Store(m)
	}
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Quantile returns the value at quantile q (0..1): the highest value
// equivalent to the q*Count-th smallest recorded one, clamped to the
// maximum recorded. It is 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := max(uint64(math.Ceil(q*float64(n))), 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return time.Duration(min(histUpper(i), h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

// Summary is what reports show of a histogram, in milliseconds.
type Summary struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Summary returns the histogram's count, min, mean, p50, p90, p99, p99.9
// and max.
func (h *Histogram) Summary() Summary {
	n := h.n.Load()
	if n == 0 {
		return Summary{}
	}
	minV := h.min.Load()
	if minV > 0 {
		minV--
	}
	return Summary{
		Count: n,
		Min:   ms(time.Duration(minV)),
		Mean:  ms(time.Duration(h.sum.Load() / n)),
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		P999:  ms(h.Quantile(0.999)),
		Max:   ms(time.Duration(h.max.Load())),
	}
}
