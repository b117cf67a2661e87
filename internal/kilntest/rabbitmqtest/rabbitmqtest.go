// Package rabbitmqtest runs Debian's rabbitmq-server for a test: a real
// broker on free 127.0.0.1 ports, with its own Erlang port mapper, node
// name, data and log directories, stopped by PID when the test ends.
package rabbitmqtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Server is Debian's rabbitmq-server script (the broker in the foreground).
const Server = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// Broker is a running broker; URL reaches it as the guest user (which
// RabbitMQ admits from loopback only).
type Broker struct {
	URL  string // amqp://127.0.0.1:PORT
	Log  string // its log directory
	User string
	Pass string
}

// Start starts a broker, or skips the test when rabbitmq-server is not
// installed (scripts/deps installs it; CI runs these tests).
func Start(t testing.TB) *Broker {
	t.Helper()
	if _, err := os.Stat(Server); err != nil {
		t.Skipf("RabbitMQ tests need Debian's rabbitmq-server (%s absent; scripts/deps installs it)", Server)
	}
	dir := t.TempDir()
	epmdPort := port(t)
	// Its own port mapper, in the foreground, so that it is ours to stop
	// (the broker would otherwise start a machine-wide daemon).
	epmd := exec.Command("epmd", "-port", epmdPort)
	epmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := epmd.Start(); err != nil {
		t.Fatalf("epmd: %v", err)
	}
	t.Cleanup(func() { stop(epmd, 5*time.Second) })

	amqpPort := port(t)
	addr := "127.0.0.1:" + amqpPort
	plugins := filepath.Join(dir, "enabled_plugins")
	os.WriteFile(plugins, []byte("[].\n"), 0o644)
	node := fmt.Sprintf("kiln%d@localhost", time.Now().UnixNano())
	cmd := exec.Command(Server)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HOME="+dir, // the Erlang cookie
		"ERL_EPMD_PORT="+epmdPort,
		"RABBITMQ_NODENAME="+node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+amqpPort,
		"RABBITMQ_DIST_PORT="+port(t),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+plugins,
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "none"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(dir, "none.config"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(dir, "none.env"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"),
		"RABBITMQ_FEATURE_FLAGS_FILE="+filepath.Join(dir, "feature_flags"),
		"RABBITMQ_PLUGINS_EXPAND_DIR="+filepath.Join(dir, "plugins-expand"),
	)
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("rabbitmq-server: %v", err)
	}
	t.Cleanup(func() { stop(cmd, 30*time.Second); out.Close() })
	b := &Broker{URL: "amqp://" + addr, Log: filepath.Join(dir, "log"), User: "guest", Pass: "guest"}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		conn, err := amqp.Dial("amqp://guest:guest@" + addr)
		if err == nil {
			conn.Close()
			return b
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "stdout"))
			t.Fatalf("rabbitmq-server did not accept connections within 90 s: %v\n%s", err, log)
		}
	}
}

// Dial connects as the guest user.
func (b *Broker) Dial(t testing.TB) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(strings.Replace(b.URL, "amqp://", "amqp://guest:guest@", 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// port is a free 127.0.0.1 port (this package cannot use kilntest's,
// which imports the server and so the esm package whose tests use this).
func port(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

// stop ends the process group a test started: SIGTERM (the broker's
// script stops the node properly), then SIGKILL after grace.
func stop(cmd *exec.Cmd, grace time.Duration) {
	pgid := cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	syscall.Kill(-pgid, syscall.SIGKILL) // what it left in its group
}
