// Package ratelimit implements per-client token-bucket rate limiting for HTTP services.
//
// Each client (identified by a key such as an API token or remote address) gets its own bucket.
// Buckets refill continuously at a fixed rate and are evicted after a period of inactivity, so
// memory stays bounded even when many short-lived clients appear.
package ratelimit

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrInvalidConfig is returned by New when the configuration cannot work.
var ErrInvalidConfig = errors.New("ratelimit: invalid configuration")

// Config describes the limits applied to every client.
type Config struct {
	Rate     float64       // tokens added per second
	Burst    int           // bucket capacity
	IdleTTL  time.Duration // buckets unused for this long are dropped
	KeyFunc  func(*http.Request) string
	NowFunc  func() time.Time
	OnReject func(key string, retryAfter time.Duration)
}

type bucket struct {
	tokens   float64
	last     time.Time
	lastSeen time.Time
}

// Limiter hands out tokens to clients.
type Limiter struct {
	cfg     Config
	mu      sync.Mutex
	buckets map[string]*bucket
	stats   Stats
}

// Stats counts decisions since the limiter was created.
type Stats struct {
	Allowed  uint64
	Rejected uint64
	Evicted  uint64
	Clients  int
}

// New checks the configuration and returns a ready limiter.
func New(cfg Config) (*Limiter, error) {
	if cfg.Rate <= 0 || cfg.Burst < 1 {
		return nil, fmt.Errorf("%w: rate %v and burst %d must be positive", ErrInvalidConfig, cfg.Rate, cfg.Burst)
	}
	if cfg.IdleTTL <= 0 {
		cfg.IdleTTL = 10 * time.Minute
	}
	if cfg.KeyFunc == nil {
		cfg.KeyFunc = RemoteIP
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	return &Limiter{cfg: cfg, buckets: make(map[string]*bucket)}, nil
}

// RemoteIP keys requests by the client's address, without the port.
func RemoteIP(r *http.Request) string {
	if forwarded := r.Header.Get("X-Forwarded-For"); forwarded != "" {
		first := strings.TrimSpace(strings.Split(forwarded, ",")[0])
		if first != "" {
			return first
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Allow takes one token from the client's bucket. When the bucket is empty it reports how long
// the client has to wait for the next token.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	return l.AllowN(key, 1)
}

// AllowN takes n tokens at once, or none.
func (l *Limiter) AllowN(key string, n int) (bool, time.Duration) {
	if n <= 0 {
		return true, 0
	}
	now := l.cfg.NowFunc()
	l.mu.Lock()
	defer l.mu.Unlock()

	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: float64(l.cfg.Burst), last: now}
		l.buckets[key] = b
	}
	b.refill(now, l.cfg.Rate, float64(l.cfg.Burst))
	b.lastSeen = now

	need := float64(n)
	if b.tokens >= need {
		b.tokens -= need
		l.stats.Allowed++
		return true, 0
	}
	l.stats.Rejected++
	missing := need - b.tokens
	wait := time.Duration(missing / l.cfg.Rate * float64(time.Second))
	return false, wait
}

func (b *bucket) refill(now time.Time, rate, capacity float64) {
	elapsed := now.Sub(b.last).Seconds()
	if elapsed <= 0 {
		return
	}
	b.tokens += elapsed * rate
	if b.tokens > capacity {
		b.tokens = capacity
	}
	b.last = now
}

// Sweep drops buckets that have been idle longer than the configured TTL and returns how many.
func (l *Limiter) Sweep() int {
	now := l.cfg.NowFunc()
	l.mu.Lock()
	defer l.mu.Unlock()
	dropped := 0
	for key, b := range l.buckets {
		if now.Sub(b.lastSeen) > l.cfg.IdleTTL {
			delete(l.buckets, key)
			dropped++
		}
	}
	l.stats.Evicted += uint64(dropped)
	return dropped
}

// RunSweeper sweeps every interval until stop is closed.
func (l *Limiter) RunSweeper(interval time.Duration, stop <-chan struct{}) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			l.Sweep()
		case <-stop:
			return
		}
	}
}

// Stats returns a snapshot of the counters.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Clients = len(l.buckets)
	return s
}

// Middleware rejects requests over the limit with 429 and a Retry-After header.
func (l *Limiter) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := l.cfg.KeyFunc(r)
		ok, wait := l.Allow(key)
		if !ok {
			seconds := int(wait.Seconds())
			if wait%time.Second != 0 {
				seconds++
			}
			w.Header().Set("Retry-After", strconv.Itoa(seconds))
			if l.cfg.OnReject != nil {
				l.cfg.OnReject(key, wait)
			}
			http.Error(w, "too many requests", http.StatusTooManyRequests)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// StatsHandler serves the counters as plain text, one per line.
func (l *Limiter) StatsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		s := l.Stats()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "allowed %d\n", s.Allowed)
		fmt.Fprintf(w, "rejected %d\n", s.Rejected)
		fmt.Fprintf(w, "evicted %d\n", s.Evicted)
		fmt.Fprintf(w, "clients %d\n", s.Clients)
	})
}

// ParseRate reads limits written as "10/s", "600/m" or "5000/h".
func ParseRate(spec string) (float64, error) {
	count, unit, found := strings.Cut(strings.TrimSpace(spec), "/")
	if !found {
		return 0, fmt.Errorf("%w: rate %q needs a unit, like 10/s", ErrInvalidConfig, spec)
	}
	n, err := strconv.ParseFloat(count, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: rate %q: bad count", ErrInvalidConfig, spec)
	}
	switch unit {
	case "s":
		return n, nil
	case "m":
		return n / 60, nil
	case "h":
		return n / 3600, nil
	default:
		return 0, fmt.Errorf("%w: rate %q: unit must be s, m or h", ErrInvalidConfig, spec)
	}
}
