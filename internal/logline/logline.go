// Package logline holds what a function's log is made of on its way from
// the worker to the log store: a Line and the Sink that takes them. It is a
// leaf, so that the log store need not link the worker.
package logline

import "time"

// Line is one log event.
type Line struct {
	Time    time.Time
	Message string
}

// Sink receives every line of every environment's log: the runtime's
// output and the platform's START, END and REPORT lines. Append is called on
// the invoke path, so it must queue, not wait for storage.
type Sink interface {
	Append(account, group, stream string, lines []Line)
}
