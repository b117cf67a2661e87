// Package roles assembles each role of Kiln from its components, once, for
// both ways of running it: `kiln up` (package server) passes in-process
// adapters (assignment.Service, the local code store), a cluster role
// (package cluster) passes NATS and HTTP ones (replica.Client, code fetched
// over NATS, a proxy to the control plane). A capability added here is in
// both modes, the way knative's sharedmain or etcd's embed serve the
// single binary and the tests alike.
package roles

import (
	"context"
	"fmt"
	"net/http"

	"github.com/kiln-dev/kiln/internal/accounts"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/frontend"
	"github.com/kiln-dev/kiln/internal/sandbox"
	"github.com/kiln-dev/kiln/internal/worker"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultRegion is the region of a Kiln not told otherwise.
const DefaultRegion = "us-east-1"

// Identity is the default account and its key pair, the secret that
// signs Code.Location download URLs and the key of environments'
// credentials.
type Identity struct {
	AccountID       string `json:"accountId"`
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	URLSecret       []byte `json:"urlSecret"`
	// SessionKey signs the temporary credentials of execution
	// environments (auth.Sessions); empty gives functions none.
	SessionKey []byte `json:"sessionKey,omitempty"`
}

// Sessions issues and verifies environments' credentials; nil without a
// SessionKey.
func (id Identity) Sessions() *auth.Sessions {
	if len(id.SessionKey) == 0 {
		return nil
	}
	return auth.NewSessions(id.SessionKey)
}

// Keyring verifies the default account's signatures, scoped to region and
// to the service a request is for: on POST /, CloudWatch Logs, Kinesis or
// SQS by X-Amz-Target (the query forms of SQS and STS have none), Lambda
// everywhere else.
func (id Identity) Keyring(region string) *auth.Keyring {
	k := auth.NewKeyring(auth.Credential{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, Account: id.AccountID})
	k.Region = region
	k.Sessions = id.Sessions()
	k.Services = func(r *http.Request) []string {
		if r.URL.Path == "/" {
			if s := postServices(r.Header.Get("X-Amz-Target")); s != nil {
				return s
			}
		}
		return lambdaService
	}
	return k
}

// FollowKeyring is Keyring(region) with the accounts bucket's keys, kept
// in step with it until ctx ends (a key added by `kiln accounts` works
// here at once), and the bucket, where the identity's account is the admin.
func (id Identity) FollowKeyring(ctx context.Context, js jetstream.JetStream, region string, replicas int) (*auth.Keyring, *accounts.Store, error) {
	store, err := id.OpenAccounts(ctx, js, replicas)
	if err != nil {
		return nil, nil, err
	}
	k := id.Keyring(region)
	return k, store, store.Follow(ctx, k)
}

// OpenAccounts opens the accounts bucket, where the identity's account is
// the admin.
func (id Identity) OpenAccounts(ctx context.Context, js jetstream.JetStream, replicas int) (*accounts.Store, error) {
	store, err := accounts.Open(ctx, js, accounts.Config{Replicas: replicas})
	if err != nil {
		return nil, err
	}
	if err := store.EnsureAdmin(ctx, id.AccountID); err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	return store, nil
}

// maxManagementBody is the limit of a direct zip upload: 50 MB zipped,
// base64 in JSON.
const maxManagementBody = 69905067

// BodyLimit is every role's body limit, for auth.Middleware: invokes get
// Lambda's payload limits, the rest the limit of a direct zip upload.
func BodyLimit(r *http.Request) (int64, *api.Error) {
	if limit, tooLarge, ok := frontend.BodyLimit(r); ok {
		return limit, tooLarge
	}
	return maxManagementBody, api.Errorf(api.RequestEntityTooLarge, "Request must be smaller than %d bytes for the operation", maxManagementBody)
}

// Sandbox is the isolation backend named by --sandbox: linux (namespaces,
// cgroups, seccomp) or process (plain child processes, for trusted code).
func Sandbox(name string) (worker.Sandbox, error) {
	switch name {
	case "linux":
		l, err := sandbox.New(sandbox.Config{})
		if err != nil {
			return nil, fmt.Errorf("--sandbox linux: %w (--sandbox process runs functions without isolation)", err)
		}
		return l, nil
	case "process":
		return worker.ProcessSandbox{}, nil
	}
	return nil, fmt.Errorf("--sandbox %q: want linux or process", name)
}

// SandboxUsage is the help of every --sandbox flag.
const SandboxUsage = "isolation backend: linux (namespaces, cgroups, seccomp) or process (plain child processes, for trusted code)"
