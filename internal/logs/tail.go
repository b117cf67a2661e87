package logs

import (
	"context"
	"errors"
	"strings"
)

// ErrBadCursor is Tail's error for a cursor it did not make.
var ErrBadCursor = errors.New("logs: not a cursor of Tail")

// Event is one log event as Tail reads it.
type Event struct {
	Stream    string `json:"stream"`
	Timestamp int64  `json:"timestamp"` // Unix milliseconds
	Message   string `json:"message"`
}

// Tail reads a log group's events after cursor (a cursor Tail returned) or,
// with cursor "", from start (Unix milliseconds) on, at most limit of them
// in the order they were stored, and the cursor to read on from. The
// console follows a function's logs with it. A group that does not exist
// yet (a function that never ran) has no events.
func (s *Store) Tail(ctx context.Context, account, group, cursor string, start int64, limit int) ([]Event, string, error) {
	q := filterQuery{account: account, group: group, limit: limit}
	if _, ok := parsePos(strings.TrimPrefix(cursor, filterTokenPrefix)); cursor != "" && (!ok || !strings.HasPrefix(cursor, filterTokenPrefix)) {
		return nil, "", ErrBadCursor
	}
	if cursor != "" {
		q.token = cursor
	} else {
		q.start = &start
	}
	res, err := s.filterEvents(ctx, q)
	if errors.Is(err, errGroupNotFound) {
		return nil, cursor, nil
	}
	if err != nil {
		return nil, cursor, err
	}
	out := make([]Event, len(res.events))
	for i, e := range res.events {
		out[i] = Event{Stream: e.stream, Timestamp: e.timestamp, Message: e.message}
	}
	switch {
	case res.next != "":
		cursor = res.next
	case len(res.events) > 0:
		cursor = filterTokenPrefix + res.events[len(res.events)-1].pos.next().String()
	case cursor == "":
		// Nothing yet: read on from the end, so that older events written
		// late are not read again and again.
		last, err := s.lastSeq(ctx)
		if err != nil {
			return nil, "", err
		}
		cursor = filterTokenPrefix + pos{last + 1, 0}.String()
	}
	return out, cursor, nil
}
