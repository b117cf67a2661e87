package agentproto

import "time"

// How a worker starts the agent: the agent is the worker's own binary run
// under another argv[0] (a re-execution of /proc/self/exe, or the small
// kiln-agent binary), configured through its environment. These live here,
// not in package agent, so that the worker need not link the agent.

// ExecName is the argv[0] under which a binary runs as the agent instead of
// its own main (see agent.Reexec).
const ExecName = "kiln-agent"

// SpawnerName is the argv[0] under which a binary runs as the spawner of
// sandboxed agents (see agent.Spawner).
const SpawnerName = "kiln-spawner"

// Environment variables the worker sets for the agent; they are removed from
// the runtime's environment.
const (
	EnvListen = "KILN_AGENT_LISTEN" // Runtime API address, default 127.0.0.1:9001
	// EnvAPIListen is the address inside the environment where the
	// function reaches Kiln's own API (AWS_ENDPOINT_URL); unset means none.
	EnvAPIListen = "KILN_AGENT_API_LISTEN"
	EnvConnFD    = "KILN_AGENT_FD" // the worker socket's descriptor, default 3
	// EnvSandbox holds a JSON agent.SandboxConfig: set the sandbox up first.
	EnvSandbox = "KILN_AGENT_SANDBOX"
	// EnvExtensions is the directory of external extensions; unset means
	// /opt/extensions in a sandbox and none otherwise.
	EnvExtensions = "KILN_AGENT_EXTENSIONS"
	// EnvDir is the runtime's working directory (a container image's);
	// unset means LAMBDA_TASK_ROOT.
	EnvDir = "KILN_AGENT_DIR"
)

// ShutdownGrace is how long the runtime and the extensions have between the
// shutdown request (SIGTERM, SHUTDOWN event) and SIGKILL, as Lambda's.
const ShutdownGrace = 2 * time.Second
