package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// rieModule is AWS's Lambda runtime interface emulator at the version the
// module proxy serves (it has no tagged release there).
const rieModule = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d"

// installPeer builds pkg (path@version) with `go install` from the module
// proxy into cache, unless it is there already, and returns the binary.
func installPeer(ctx context.Context, cache, pkg string) (string, error) {
	bin := filepath.Join(cache, pkgName(pkg))
	if isFile(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "go install %s ...\n", pkg)
	cmd := exec.CommandContext(ctx, "go", "install", pkg)
	cmd.Env = append(os.Environ(), "GOBIN="+cache, "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install %s: %w", pkg, err)
	}
	return bin, nil
}

// pkgName is the binary `go install` makes of path@version.
func pkgName(pkg string) string {
	path, _, _ := strings.Cut(pkg, "@")
	return filepath.Base(path)
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// emulators run the same aws-lambda-go function under AWS's runtime
// interface emulator, one emulator per client: it serves one invoke at a
// time (a second one waits or is refused), as one Lambda environment does.
type emulators struct {
	rie, bootstrap string
	payload        []byte
	running        []*emulator
}

type emulator struct {
	cmd *exec.Cmd
	c   *client
}

// newEmulators copies the function's runtime into dir as "bootstrap" (the
// command name the CPU split counts as the runtime).
func newEmulators(rie, dir, bare string, payload []byte) (*emulators, error) {
	bin, err := os.ReadFile(bare)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "rie"), 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "rie", runtimeComm)
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		return nil, err
	}
	return &emulators{rie: rie, bootstrap: path, payload: payload}, nil
}

func (e *emulators) target(ctx context.Context) target {
	return target{name: "aws-lambda-rie",
		prepare: func(clients int) error {
			return startUpTo(&e.running, clients, func() (*emulator, error) { return e.start(ctx) })
		},
		call: func(ctx context.Context, i int) (time.Duration, error) { return e.running[i].c.invoke(ctx) },
		cpu: func() cpuSplit {
			var all cpuSplit
			for _, em := range e.running {
				all = all.add(treeCPU(em.cmd.Process.Pid))
			}
			return all
		}}
}

// start runs one emulator on free loopback ports and waits until it
// listens; it starts the runtime on its first invoke (the warm-up's).
func (e *emulators) start(ctx context.Context) (*emulator, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	api, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, e.rie, "--log-level", "error",
		"--runtime-interface-emulator-address", addr, "--runtime-api-address", api, e.bootstrap)
	cmd.Dir = filepath.Dir(e.bootstrap)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr // its START/END/REPORT lines
	// Its own process group, so that stop ends the runtime it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	em := &emulator{cmd: cmd, c: &client{url: "http://" + addr + "/2015-03-31/functions/function/invocations", payload: e.payload}}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return em, nil
		}
		if time.Now().After(deadline) {
			em.stop()
			return nil, errors.New("aws-lambda-rie: not listening within 10 s")
		}
	}
}

func (em *emulator) stop() {
	syscall.Kill(-em.cmd.Process.Pid, syscall.SIGKILL)
	em.cmd.Wait()
}

func (e *emulators) stop() {
	for _, em := range e.running {
		em.stop()
	}
}
