// Command kiln-agent is Kiln's in-sandbox agent, and the Linux backend's
// spawner of agents, as a small binary of its own: a sandboxed environment
// then costs the agent's few hundred KiB instead of a re-executed `kiln`
// (whose package initializations alone hold megabytes). The Linux backend
// uses it when it lies next to the kiln binary (or Linux.AgentPath names
// it); without it, kiln re-executes itself.
//
//	CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$(dirname "$(which kiln)")/kiln-agent" ./internal/sandbox/kiln-agent
package main

import (
	"fmt"
	"os"

	"github.com/kiln-dev/kiln/internal/agent"
	"github.com/kiln-dev/kiln/internal/agentproto"
)

func main() {
	agent.Reexec() // runs the agent or the spawner, by argv[0]
	fmt.Fprintf(os.Stderr, "kiln-agent: run by Kiln (as %s or %s), not by hand\n", agentproto.ExecName, agentproto.SpawnerName)
	os.Exit(2)
}
