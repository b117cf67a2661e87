package cluster

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/console"
	"github.com/nats-io/nats.go"
)

// fleetCache is how long a frontend's console reuses what it gathered: a
// gather waits for every assignment member's answer, and each open page
// asks every second.
const fleetCache = 500 * time.Millisecond

// consoleFleet is a cluster frontend's view of the fleet for the console:
// placement's workers and bookings, the partitions' leases and members,
// and the environments as their partition leaders hold them.
type consoleFleet struct {
	nc         *nats.Conn
	partitions int

	mu   sync.Mutex
	at   time.Time
	last *console.Fleet
}

func (f *consoleFleet) Fleet(ctx context.Context) (*console.Fleet, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last != nil && time.Since(f.at) < fleetCache {
		out := *f.last
		return &out, nil
	}
	st, err := gatherStatus(ctx, f.nc, f.partitions, true)
	if err != nil {
		return nil, err
	}
	out := &console.Fleet{Mode: "cluster"}
	for _, w := range st.Workers {
		out.Workers = append(out.Workers, console.Worker{ID: w.ID, Zone: w.Zone, MemoryMB: w.MemoryMB, CPUMillis: w.CPUMillis,
			BookedMB: w.BookedMB, BookedCPU: w.BookedCPU, LoadMillis: w.LoadMillis, Envs: w.Envs, Draining: w.Draining, Healthy: w.Healthy})
	}
	slices.SortFunc(out.Workers, func(a, b console.Worker) int { return cmp.Or(cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.ID, b.ID)) })
	for _, p := range st.Partitions {
		cp := console.Partition{ID: p.Partition, Leader: p.Leader, LeaderZone: p.Zone, Epoch: p.Epoch, Members: map[string][]string{}, Envs: p.Envs}
		for _, m := range p.Members { // member@zone
			i := strings.LastIndexByte(m, '@')
			cp.Members[m[i+1:]] = append(cp.Members[m[i+1:]], m[:i])
		}
		out.Partitions = append(out.Partitions, cp)
	}
	for _, m := range st.Members {
		for _, p := range m.Partitions {
			if !p.Leading {
				continue
			}
			for _, e := range p.EnvList {
				out.Environments = append(out.Environments, console.Environment{ID: e.ID, Account: e.Key.Account, Function: e.Key.Function,
					Version: e.Key.Version, State: e.Status.String(), Worker: e.Worker, Zone: e.Zone, Provisioned: e.Provisioned})
			}
		}
	}
	f.at, f.last = time.Now(), out
	copied := *out
	return &copied, nil
}

// subjConsole is where frontends ask each other for their consoles' series.
const subjConsole = "kiln.console.series"

// peerWait is how long a frontend's console waits for the others' answers
// (it does not know how many there are; answers are cached briefly).
const peerWait = 150 * time.Millisecond

// consolePeers are the other frontends, over NATS. A question carries its
// asker's name, so that a frontend does not answer itself.
type consolePeers struct {
	nc   *nats.Conn
	name string
}

// answer serves the other frontends' questions until the subscription ends.
func (p consolePeers) answer(con *console.Console) (*nats.Subscription, error) {
	return p.nc.Subscribe(subjConsole, func(m *nats.Msg) {
		if m.Header.Get(hdrAsker) != p.name {
			m.Respond(con.Answer(m.Data))
		}
	})
}

const hdrAsker = "Kiln-Console-Asker"

func (p consolePeers) Ask(ctx context.Context, q []byte) [][]byte {
	inbox := p.nc.NewInbox()
	sub, err := p.nc.SubscribeSync(inbox)
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	msg := &nats.Msg{Subject: subjConsole, Reply: inbox, Data: q, Header: nats.Header{}}
	msg.Header.Set(hdrAsker, p.name)
	if p.nc.PublishMsg(msg) != nil {
		return nil
	}
	var out [][]byte
	for end := time.Now().Add(peerWait); ctx.Err() == nil; {
		m, err := sub.NextMsg(time.Until(end))
		if err != nil {
			break
		}
		out = append(out, m.Data)
	}
	return out
}
