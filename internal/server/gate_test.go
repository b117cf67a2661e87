package server

import (
	"testing"
	"time"
)

func TestEventFrontendGate(t *testing.T) {
	for _, tc := range []struct {
		name               string
		invoke             bool
		typ                string
		active, frontendUp bool
		want               route
	}{
		{"not an invoke", false, "", true, true, serveHere},
		{"sync invoke", true, "RequestResponse", true, true, serveSync},
		{"sync invoke, quiet", true, "", false, true, serveSync},
		{"dry run", true, "DryRun", true, true, serveSync},
		{"event while sync invokes run", true, "Event", true, true, passOn},
		{"event, sync quiet", true, "Event", false, true, serveHere},
		{"event, frontend down", true, "Event", true, false, serveHere},
	} {
		if got := upRoute(tc.invoke, tc.typ, tc.active, tc.frontendUp); got != tc.want {
			t.Errorf("kiln up, %s: %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name          string
		event, active bool
		want          route
	}{
		{"event while sync invokes run", true, true, serveHere},
		{"event, sync quiet", true, false, passOn},
		{"anything else", false, true, passOn},
		{"anything else, quiet", false, false, passOn},
	} {
		if got := frontendRoute(tc.event, tc.active); got != tc.want {
			t.Errorf("event frontend, %s: %v, want %v", tc.name, got, tc.want)
		}
	}
	now := time.Unix(1700000000, 0).UnixNano()
	for _, tc := range []struct {
		name              string
		syncing, lastSync int64
		want              bool
	}{
		{"one running", 1, now - int64(time.Hour), false},
		{"ended just now", 0, now, false},
		{"ended syncQuiet ago", 0, now - int64(syncQuiet), false},
		{"ended longer ago", 0, now - int64(syncQuiet) - 1, true},
	} {
		if got := quiet(tc.syncing, tc.lastSync, now); got != tc.want {
			t.Errorf("quiet, %s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
