package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/logs"
)

// keepAlive is how often a stream with nothing new sends a comment, so
// that proxies keep it open.
const keepAlive = 15 * time.Second

// stream serves a view as server-sent events: "view" with the view's JSON
// (the same as its endpoint's) whenever it changed, checked every
// Config.Every; on a function's view also "logs" with its new log events
// (its id is the logs' cursor, which a reconnecting EventSource sends back).
// ?view=functions | fleet | function&account=A&name=N.
func (c *Console) stream(w http.ResponseWriter, r *http.Request, v viewer) {
	q := r.URL.Query()
	account, name := q.Get("account"), q.Get("name")
	var build func(ctx context.Context) (any, error)
	switch q.Get("view") {
	case "functions":
		build = func(ctx context.Context) (any, error) { return c.functions(ctx, v) }
	case "fleet":
		build = func(ctx context.Context) (any, error) { return c.fleet(ctx, v) }
	case "function":
		build = func(ctx context.Context) (any, error) { return c.function(ctx, v, account, name) }
	default:
		api.WriteError(w, api.Errorf(api.InvalidParameterValue, "view must be functions, function or fleet"))
		return
	}
	view := build
	build = func(ctx context.Context) (any, error) {
		// The session was checked when the stream opened; a key removed
		// since (kiln accounts keys remove) ends it on the next tick.
		if cred, ok := c.cfg.Keyring.Lookup(v.AccessKeyID); !ok || cred != v.Credential {
			return nil, api.Errorf(api.AccessDenied, "The access key %s was removed: sign in again.", v.AccessKeyID)
		}
		return view(ctx)
	}
	ctx := r.Context()
	first, err := build(ctx)
	if err != nil { // refused (not found, not the admin) before the stream starts
		c.writeError(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	rc := http.NewResponseController(w)
	var last []byte
	// A reconnecting EventSource sends the id of the last event it got:
	// the logs' cursor, so that no line is shown twice.
	cursor := r.Header.Get("Last-Event-ID")
	sent := time.Now()
	t := time.NewTicker(c.cfg.Every)
	defer t.Stop()
	for out := first; ; {
		if b, _ := json.Marshal(out); !bytes.Equal(b, last) {
			fmt.Fprintf(w, "event: view\ndata: %s\n\n", b)
			last, sent = b, time.Now()
		}
		if q.Get("view") == "function" {
			page, err := c.readLogs(ctx, v, account, name, cursor)
			switch {
			case err == nil:
				cursor = page.Cursor
				if len(page.Events) > 0 {
					b, _ := json.Marshal(page.Events)
					fmt.Fprintf(w, "id: %s\nevent: logs\ndata: %s\n\n", cursor, b)
					sent = time.Now()
				}
			case errors.Is(err, logs.ErrBadCursor):
				cursor = "" // a Last-Event-ID the logs did not make: from the last minutes
			}
		}
		if time.Since(sent) > keepAlive {
			fmt.Fprint(w, ": keep-alive\n\n")
			sent = time.Now()
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-c.closed:
			return
		case <-t.C:
		}
		next, err := build(ctx)
		var ae *api.Error
		switch {
		case errors.As(err, &ae): // the function was deleted, or the key removed
			b, _ := json.Marshal(map[string]string{"type": ae.Type, "message": ae.Message})
			fmt.Fprintf(w, "event: failure\ndata: %s\n\n", b)
			rc.Flush()
			return
		case err == nil:
			out = next
		} // else a passing failure (NATS): the view stays, and is read again on the next tick
	}
}
