package worker

import (
	"context"
	"os"
	"time"
)

// Sandbox is an isolation backend: it starts the agent of one execution
// environment. Backends differ in what the agent can see and use; the
// worker drives every one of them the same way. A backend that prepares
// environments ahead of time may implement io.Closer: the worker's Close
// calls it to end what it prepared.
type Sandbox interface {
	// Layout says where the function's code and Kiln's runtime files appear
	// to the runtime, given where they are on the host.
	Layout(codeDir, runtimeDir string) (taskRoot, runtimeRoot string)
	// Start runs the agent with the runtime command spec.Argv. The agent
	// speaks agentproto over spec.Conn, which Start passes on as fd 3.
	Start(ctx context.Context, spec SandboxSpec) (Process, error)
}

// SandboxSpec describes one execution environment to start.
type SandboxSpec struct {
	ID         string
	Argv       []string // the runtime's command, in the sandbox's paths
	Env        []string // the runtime's environment
	CodeDir    string   // host directory of the function's code
	RuntimeDir string   // host directory of Kiln's runtime bootstraps
	// OptDir is the host directory shown at /opt (the function's layers;
	// external extensions in OptDir/extensions); empty for none.
	OptDir string
	// ImageDir is the host directory of a container image's root file
	// system (a read-only mount), which becomes the environment's root;
	// empty for a zip function. WorkDir is the runtime's working directory.
	ImageDir string
	WorkDir  string
	MemoryMB int
	TmpMB    int
	Conn     *os.File // the agent's end of the worker socket
	// KilnAPI asks for the socket inside the sandbox where the function
	// reaches Kiln's API (agentproto.EnvAPIListen).
	KilnAPI bool
}

// Process is a started sandbox.
type Process interface {
	// Kill ends every process of the sandbox and releases what it holds.
	Kill() error
	// Wait blocks until the agent has exited.
	Wait() error
	// MaxMemoryUsed is the high-water mark of the environment's memory in bytes.
	MaxMemoryUsed() int64
}

// InitNotifier is implemented by Processes that want to know when the
// function's init phase ended well (e.g. to end a CPU boost given to init).
type InitNotifier interface {
	InitDone()
}

// AgentWaiter is implemented by Processes whose backend keeps agents
// prepared ahead of time: AgentWait is how long Start waited for one (0
// when one was ready), the cold start's pool phase.
type AgentWaiter interface {
	AgentWait() time.Duration
}

// Prioritizer is implemented by Processes whose CPU priority can change.
// The worker lowers it while the environment runs queued (asynchronous)
// events, so that they take the CPU synchronous invokes leave idle
// instead of competing with them.
type Prioritizer interface {
	SetBackground(background bool) error
}

// OOMReporter is implemented by Processes that know whether the kernel
// killed a process of the environment for exceeding its memory limit; the
// worker then reports Runtime.OutOfMemory instead of Runtime.ExitError.
type OOMReporter interface {
	OOMKilled() bool
}
