package cluster

import (
	"context"
	"path/filepath"
)

// What the black-box tests (package cluster_test) use beyond the package's
// API: starting a cluster in process and the secrets it is given.
type (
	UpConfig = upConfig
	Identity = clusterIdentity
	NATSUser = natsUser
)

// Up is `kiln cluster up`.
var Up = upCluster

// NATSConnect connects to NATS as a role's processes do.
var NATSConnect = natsConnect

// ConfigFile is the config file `kiln cluster up` wrote for a process, for
// fault tests that start a role of their own.
func (f *File) ConfigFile(name string) string {
	return filepath.Join(f.Dir, "roles", name, bundleConfig)
}

// StatusWithEnvs is Status with every environment (members' view).
func (f *File) StatusWithEnvs(ctx context.Context) (*Status, error) { return f.status(ctx, "", true) }

// Running reports whether p still runs (a process up started, not a
// recycled PID).
func Running(p Proc) bool { return ours(p) }
