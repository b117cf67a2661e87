package worker_test

import (
	"testing"

	"github.com/kiln-dev/kiln/internal/worker"
	"github.com/kiln-dev/kiln/internal/worker/sandboxtest"
)

// The process backend isolates nothing: the lifecycle part of the suite.
func TestProcessSandboxConformance(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) worker.Sandbox { return worker.ProcessSandbox{} })
}
