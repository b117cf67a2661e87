package server

// The event frontend's gate, apart from processes and sockets: where a
// request is served, and when sync invokes count as quiet.

// route is where a request that arrived on a process's listener is served.
type route int

const (
	serveHere route = iota // by the process it arrived at
	serveSync              // by kiln up, as a sync invoke: it keeps Event invokes going to the event frontend
	passOn                 // by the other process, with its connection
)

// upRoute is kiln up's gate: an Event invoke goes to the event frontend
// process while sync invokes are being served (active) and the process is
// up; everything else is served here.
func upRoute(isInvoke bool, invocationType string, active, frontendUp bool) route {
	switch {
	case !isInvoke:
		return serveHere
	case invocationType != "Event":
		return serveSync
	case active && frontendUp:
		return passOn
	}
	return serveHere
}

// frontendRoute is the event frontend process's gate: it keeps Event
// invokes while kiln up serves sync ones (active) and passes everything
// else back.
func frontendRoute(isEventInvoke, active bool) route {
	if isEventInvoke && active {
		return serveHere
	}
	return passOn
}

// quiet reports whether, at now, sync invokes have been quiet for
// syncQuiet: syncing are under way, the last ended at lastSync (unix
// nanoseconds, as now).
func quiet(syncing, lastSync, now int64) bool {
	return syncing == 0 && now-lastSync > int64(syncQuiet)
}
