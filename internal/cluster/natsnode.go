// Package cluster runs Kiln's roles as separate processes that find each
// other through a NATS JetStream cluster: `kiln nats`, `kiln assignment`,
// `kiln placement`, `kiln worker`, `kiln controlplane`, `kiln frontend`
// and `kiln pollers`, and `kiln cluster up|status|drain|down` to run a
// local cluster of them on 127.0.0.1 (`kiln cluster certs` issues a
// process's bundle for a real host).
package cluster

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/kiln-dev/kiln/internal/keys"
	"github.com/kiln-dev/kiln/internal/roles"
)

// natsConfig is one node of a NATS JetStream cluster.
type natsConfig struct {
	Name    string
	Dir     string
	Listen  string   // client host:port
	Cluster string   // route host:port
	Routes  []string // other nodes' route host:port
	// TLS, when set, is required of clients and routes alike, each
	// presenting a certificate of the cluster's CA.
	TLS *tls.Config
	// Users may connect as clients (password: a bcrypt hash); none means anyone.
	Users []natsUser
	// Route is the user and password nodes give each other.
	Route natsUser
}

// natsUser is one client (or route) credential.
type natsUser struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// tlsTimeout is generous: a slow or loaded host must not fail handshakes.
const tlsTimeout = 5

// startNATS runs a clustered JetStream node and waits until it accepts clients.
func startNATS(cfg natsConfig) (*server.Server, error) {
	host, port, err := splitHostPort(cfg.Listen)
	if err != nil {
		return nil, err
	}
	chost, cport, err := splitHostPort(cfg.Cluster)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: cfg.Name, Host: host, Port: port, JetStream: true, StoreDir: cfg.Dir,
		NoSigs: true, NoLog: true, MaxPayload: 64 << 20,
		Cluster: server.ClusterOpts{Name: "kiln", Host: chost, Port: cport,
			Username: cfg.Route.User, Password: cfg.Route.Password},
	}
	if cfg.TLS != nil {
		opts.TLSConfig, opts.TLSVerify, opts.TLSTimeout = cfg.TLS, true, tlsTimeout
		opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = cfg.TLS.Clone(), tlsTimeout
	}
	for _, u := range cfg.Users {
		opts.Users = append(opts.Users, &server.User{Username: u.User, Password: u.Password, Permissions: natsPermissions(u.User)})
	}
	for _, r := range cfg.Routes {
		u, err := url.Parse("nats-route://" + r)
		if err != nil {
			return nil, err
		}
		if cfg.Route.User != "" {
			u.User = url.UserPassword(cfg.Route.User, cfg.Route.Password)
		}
		opts.Routes = append(opts.Routes, u)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats %s: not ready", cfg.Name)
	}
	return s, nil
}

// inboxPrefix is where role's replies come (request/reply answers,
// JetStream API answers and KV values, consumers' deliveries): the only
// inboxes its NATS user may subscribe to.
func inboxPrefix(role string) string { return "_INBOX_" + role }

// serviceSubjects hold every subject Kiln's roles serve or announce on.
const serviceSubjects = "kiln.>"

// natsPermissions are what a role's NATS user may subscribe to and publish:
//   - it subscribes to Kiln's service subjects and its own inboxes only.
//     Not the default inboxes nor another role's, so it reads no replies
//     meant for another (KV values a control plane reads hold accounts'
//     keys); not $JS, whose API audit advisories carry every API answer;
//     and no wildcard spanning these (`>`): a deny list would not do, as
//     the server filters a wildcard subscription's JetStream deliveries by
//     their stream subject, not the inbox they go to.
//   - the key service's subject: only control planes answer it, and only
//     workers ask on it (a request is also signed by the asker's
//     certificate, which the service checks; this keeps the other roles
//     off the subject altogether).
//   - the collection's: only control planes answer it, and only they and
//     the operator ask on it (a worker's request with no grace could sweep
//     an upload under way).
//
// Publishing stays open, to another role's inbox too: responders must.
func natsPermissions(role string) *server.Permissions {
	p := &server.Permissions{Subscribe: &server.SubjectPermission{Allow: []string{serviceSubjects, inboxPrefix(role) + ".>"}}}
	if role != "controlplane" {
		p.Subscribe.Deny = []string{keys.Subject, roles.CollectSubject}
	}
	switch role {
	case "controlplane":
	case "worker":
		p.Publish = &server.SubjectPermission{Deny: []string{roles.CollectSubject}}
	case adminName:
		p.Publish = &server.SubjectPermission{Deny: []string{keys.Subject}}
	default:
		p.Publish = &server.SubjectPermission{Deny: []string{keys.Subject, roles.CollectSubject}}
	}
	return p
}

func splitHostPort(a string) (string, int, error) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	return h, n, err
}
