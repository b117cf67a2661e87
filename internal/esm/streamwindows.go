package esm

import (
	"encoding/json"
	"time"
)

// maxWindowState is the most state a tumbling window keeps; past it the
// window ends early, as Lambda's.
const maxWindowState = 1 << 20

// windowOf is the tumbling window records fall in, with its state so far;
// nil without tumbling windows. A window the shard moved past first gets
// its final invoke.
func (sr *shardRun) windowOf(recs []StreamRecord) *windowInvoke {
	size := sr.r.m.window()
	if size == 0 {
		return nil
	}
	start := recs[0].Arrival.Truncate(size)
	w := &windowInvoke{start: start, end: start.Add(size), state: json.RawMessage("{}")}
	if cur := sr.cp.Window; cur != nil && cur.Start.Equal(start) && len(cur.State) > 0 {
		w.state = cur.State
	}
	return w
}

// windowInvoke is a tumbling window's part of an invoke.
type windowInvoke struct {
	start, end time.Time
	state      json.RawMessage
}

// fields adds the window's fields to an event.
func (w *windowInvoke) fields(ev map[string]any, shard, arn string, final, early bool) {
	ev["window"] = map[string]string{"start": w.start.UTC().Format(time.RFC3339), "end": w.end.UTC().Format(time.RFC3339)}
	ev["state"], ev["shardId"], ev["eventSourceARN"] = w.state, shard, arn
	ev["isFinalInvokeForWindow"], ev["isWindowTerminatedEarly"] = final, early
}

// keepState keeps the state a window's invoke returned, with the shard's
// checkpoint; a state past 1 MB ends the window early.
func (sr *shardRun) keepState(payload []byte, recs []StreamRecord) error {
	var doc struct {
		State json.RawMessage `json:"state"`
	}
	json.Unmarshal(payload, &doc)
	start := recs[0].Arrival.Truncate(sr.r.m.window())
	sr.mu.Lock()
	defer sr.mu.Unlock()
	cp := sr.cp
	cp.Window = &window{Start: start, State: doc.State}
	if len(doc.State) > maxWindowState {
		cp.Window.State = nil
		if err := sr.final(&windowInvoke{start: start, end: start.Add(sr.r.m.window()), state: doc.State}, true); err != nil {
			return err
		}
	}
	return sr.save(cp)
}

// closeWindow gives a window whose end has passed its final invoke (no
// records: the shard has none past it yet) and forgets its state; false
// when the shard was lost.
func (sr *shardRun) closeWindow(now time.Time) bool {
	size := sr.r.m.window()
	w := sr.cp.Window
	if size == 0 || w == nil || now.Before(w.Start.Add(size)) {
		return true
	}
	if err := sr.final(&windowInvoke{start: w.Start, end: w.Start.Add(size), state: w.State}, false); err != nil {
		return false
	}
	sr.mu.Lock()
	defer sr.mu.Unlock()
	cp := sr.cp
	cp.Window = nil
	return sr.save(cp) == nil
}

// final is a window's final invoke, retried until the function succeeds.
func (sr *shardRun) final(w *windowInvoke, early bool) error {
	ev := sr.r.src.Event(sr.shard, nil)
	w.fields(ev, sr.shard, sr.r.m.EventSourceArn, true, early)
	payload, _ := json.Marshal(ev)
	for {
		resp, err := sr.call(payload)
		if err != nil {
			return err
		}
		if resp.FunctionError == "" {
			return nil
		}
		sr.r.report("PROBLEM: Function call failed")
		pause(sr.ctx, retryPause)
	}
}
