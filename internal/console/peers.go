package console

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/counting"
)

// Peers reaches the other frontends of a cluster, so that each one's
// console shows the invokes of all: Ask sends a question to every other
// frontend and returns the answers that came in time (each made by that
// frontend's Console.Answer). Nil in kiln up.
type Peers interface {
	Ask(ctx context.Context, question []byte) [][]byte
}

// question asks a frontend for its share of a view.
type question struct {
	Keys     []counting.Key `json:"keys,omitempty"`     // these functions' summaries
	Function *counting.Key  `json:"function,omitempty"` // this function's minutes
	Cold     bool           `json:"cold,omitempty"`     // the fleet's cold starts
}

type answer struct {
	Summaries []keyedSummary `json:"summaries,omitempty"`
	Minutes   []minute       `json:"minutes,omitempty"`
}

type keyedSummary struct {
	Key counting.Key `json:"key"`
	Summary
}

// Answer answers another frontend's question with this one's series.
func (c *Console) Answer(q []byte) []byte {
	var in question
	var out answer
	if json.Unmarshal(q, &in) == nil {
		for k, sum := range c.cfg.Series.summaries(in.Keys) {
			out.Summaries = append(out.Summaries, keyedSummary{k, sum})
		}
		switch {
		case in.Function != nil:
			out.Minutes = c.cfg.Series.minutes(*in.Function)
		case in.Cold:
			out.Minutes = c.cfg.Series.coldMinutes()
		}
	}
	b, _ := json.Marshal(out)
	return b
}

// peerCache keeps what the peers answered for a moment: every open page
// asks every second, and a question waits for the slowest peer.
type peerCache struct {
	mu  sync.Mutex
	got map[string]cachedAnswers
}

type cachedAnswers struct {
	at      time.Time
	answers []answer
}

// ask puts q to the peers (none: nil), through the cache.
func (c *Console) ask(ctx context.Context, q question) []answer {
	if c.cfg.Peers == nil {
		return nil
	}
	b, _ := json.Marshal(q)
	ttl := c.cfg.Every / 2
	c.peers.mu.Lock()
	defer c.peers.mu.Unlock()
	now := time.Now()
	if hit, ok := c.peers.got[string(b)]; ok && now.Sub(hit.at) < ttl {
		return hit.answers
	}
	for k, v := range c.peers.got {
		if now.Sub(v.at) >= ttl {
			delete(c.peers.got, k)
		}
	}
	var out []answer
	for _, raw := range c.cfg.Peers.Ask(ctx, b) {
		var a answer
		if json.Unmarshal(raw, &a) == nil {
			out = append(out, a)
		}
	}
	if c.peers.got == nil {
		c.peers.got = map[string]cachedAnswers{}
	}
	c.peers.got[string(b)] = cachedAnswers{at: now, answers: out}
	return out
}

// summaries are the functions' last hour on every frontend reached.
func (c *Console) summaries(ctx context.Context, keys []counting.Key) map[counting.Key]Summary {
	out := c.cfg.Series.summaries(keys)
	for _, a := range c.ask(ctx, question{Keys: keys}) {
		for _, ks := range a.Summaries {
			sum := out[ks.Key]
			sum.merge(ks.Summary)
			out[ks.Key] = sum
		}
	}
	return out
}

// hour is a function's last hour on every frontend reached.
func (c *Console) hour(ctx context.Context, k counting.Key) []Point {
	rings := [][]minute{c.cfg.Series.minutes(k)}
	for _, a := range c.ask(ctx, question{Function: &k}) {
		rings = append(rings, a.Minutes)
	}
	return hour(c.cfg.Series.now(), rings...)
}

// coldStarts are the fleet's cold starts on every frontend reached.
func (c *Console) coldStarts(ctx context.Context) []Point {
	rings := [][]minute{c.cfg.Series.coldMinutes()}
	for _, a := range c.ask(ctx, question{Cold: true}) {
		rings = append(rings, a.Minutes)
	}
	return hour(c.cfg.Series.now(), rings...)
}
