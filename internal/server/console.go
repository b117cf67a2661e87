package server

import (
	"context"

	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/console"
	"github.com/kiln-dev/kiln/internal/placement"
)

// fleet is kiln up's fleet for the console: its one worker, as placement
// booked it, and assignment's environments; no partitions (one assignment
// service decides everything).
type fleet struct {
	place *placement.Service
	envs  *assignment.Service
}

func (f fleet) Fleet(context.Context) (*console.Fleet, error) {
	out := &console.Fleet{Mode: "kiln up"}
	for _, b := range f.place.Bookings() {
		out.Workers = append(out.Workers, console.Worker{ID: b.ID, Zone: b.Zone, MemoryMB: b.MemoryMB, CPUMillis: b.CPUMillis,
			BookedMB: b.BookedMB, BookedCPU: b.BookedCPU, LoadMillis: b.LoadMillis, Envs: b.Envs, Draining: b.Draining, Healthy: true})
	}
	for _, e := range f.envs.Environments() {
		out.Environments = append(out.Environments, console.Environment{ID: e.ID, Account: e.Account, Function: e.Function,
			Version: e.Version, State: e.State, Worker: e.Worker, Provisioned: e.Provisioned})
	}
	return out, nil
}
