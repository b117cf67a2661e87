// Package metadata keeps functions, their versions and aliases in a JetStream
// KV bucket: one key per function, updated with compare-and-set so that
// concurrent control-plane calls never lose each other's writes.
package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/policy"
	"github.com/nats-io/nats.go/jetstream"
)

// Latest is the qualifier of a function's unpublished, editable version.
const Latest = "$LATEST"

var (
	ErrNotFound = errors.New("metadata: not found")
	ErrExists   = errors.New("metadata: already exists")
	ErrConflict = errors.New("metadata: changed concurrently")
)

// Target is an invoke's function reference resolved against the metadata:
// the function and the version that runs.
type Target struct {
	Account  string
	Ref      api.FunctionRef
	Function *Function
	Config   *api.FunctionConfiguration // the version that runs
	ARN      string                     // as invoked, qualified when a qualifier was given
}

// Function is everything Kiln keeps about one function.
type Function struct {
	Account  string                                `json:"account"`
	Name     string                                `json:"name"`
	Latest   api.FunctionConfiguration             `json:"latest"`
	Versions map[string]*api.FunctionConfiguration `json:"versions,omitempty"`
	// LastVersion is the highest version number ever published; numbers are
	// never reused, even after a version is deleted (as in Lambda).
	LastVersion int                                `json:"lastVersion"`
	Aliases     map[string]*api.AliasConfiguration `json:"aliases,omitempty"`
	// ReservedConcurrency is nil when the function draws from the unreserved pool.
	ReservedConcurrency *int `json:"reservedConcurrency,omitempty"`
	// Provisioned is provisioned concurrency by qualifier (version or alias).
	Provisioned map[string]*Provisioned `json:"provisioned,omitempty"`
	// Tags are the function's tags (CreateFunction's Tags).
	Tags map[string]string `json:"tags,omitempty"`
	// EventInvokeConfigs are the asynchronous-invocation settings by
	// qualifier ("$LATEST", a version number or an alias name).
	EventInvokeConfigs map[string]*api.FunctionEventInvokeConfig `json:"eventInvokeConfigs,omitempty"`
	// URLs are the function's URLs by qualifier ("$LATEST" or an alias).
	URLs map[string]*URL `json:"urls,omitempty"`
	// Policies are the resource-based policies' statements by qualifier
	// ("" for the function and $LATEST, a version number or an alias).
	Policies map[string][]policy.Statement `json:"policies,omitempty"`
	// PublishedFrom is the $LATEST RevisionId that version LastVersion was
	// published from: PublishVersion answers with that version again as long
	// as $LATEST has not changed since (as Lambda does).
	PublishedFrom string `json:"publishedFrom,omitempty"`
	// RecursiveLoop is PutFunctionRecursionConfig's setting: "Allow", or
	// "" for Lambda's default, Terminate.
	RecursiveLoop string `json:"recursiveLoop,omitempty"`
	// Import is the code import under way for $LATEST (its creation or a
	// code update: an image imported, or a zip unpacked), nil when there is
	// none. Its JSON name is from when only images had one.
	Import *CodeImport `json:"imageImport,omitempty"`

	// revision is the KV revision this copy was read at, for compare-and-set.
	revision uint64
}

// CodeImport is a code import under way, which any control plane can
// take over from an owner that stopped beating.
type CodeImport struct {
	Token string `json:"token"` // this import's; a later one replaces it
	// Zip: a deployment package, stored before the import began, being
	// unpacked (Digest is its CodeSha256, Size its CodeSize); else an image.
	Zip      bool   `json:"zip,omitempty"`
	Size     int64  `json:"size,omitempty"`
	URI      string `json:"uri,omitempty"`      // an image as the caller gave it
	Resolved string `json:"resolved,omitempty"` // by digest
	Digest   string `json:"digest"`
	// Architectures is the function's after the import.
	Architectures []string `json:"architectures"`
	// Creating: the function is Pending until it ends (else an update).
	Creating bool      `json:"creating,omitempty"`
	Owner    string    `json:"owner"`
	Beat     time.Time `json:"beat"` // the owner's last sign of life
}

// Provisioned is one provisioned-concurrency configuration and its state,
// as the assignment service last reported it.
type Provisioned struct {
	Requested    int    `json:"requested"`
	Allocated    int    `json:"allocated"`
	Status       string `json:"status"` // IN_PROGRESS, READY, FAILED
	StatusReason string `json:"statusReason,omitempty"`
	LastModified string `json:"lastModified"`
}

// Version returns the configuration of "$LATEST" or a published version number.
func (f *Function) Version(v string) (*api.FunctionConfiguration, bool) {
	if v == Latest || v == "" {
		return &f.Latest, true
	}
	c, ok := f.Versions[v]
	return c, ok
}

// SortedVersions lists published version numbers in ascending order.
func (f *Function) SortedVersions() []string {
	out := make([]string, 0, len(f.Versions))
	for v := range f.Versions {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := strconv.Atoi(out[i])
		b, _ := strconv.Atoi(out[j])
		return a < b
	})
	return out
}

// Resolve maps a qualifier ("", "$LATEST", a version number or an alias) to
// the configuration that runs. For an alias with weighted routing, pick is a
// number in [0,1) that chooses between the alias's two versions; pass
// rand.Float64() on the invoke path.
func (f *Function) Resolve(qualifier string, pick float64) (*api.FunctionConfiguration, error) {
	if c, ok := f.Version(qualifier); ok {
		return c, nil
	}
	a, ok := f.Aliases[qualifier]
	if !ok {
		return nil, fmt.Errorf("%w: %s:%s", ErrNotFound, f.Name, qualifier)
	}
	version := a.FunctionVersion
	if a.RoutingConfig != nil {
		for v, w := range a.RoutingConfig.AdditionalVersionWeights {
			if pick < w {
				version = v
			}
			break // Lambda allows exactly one additional version
		}
	}
	c, ok := f.Version(version)
	if !ok {
		return nil, fmt.Errorf("%w: alias %s points to missing version %s", ErrNotFound, qualifier, version)
	}
	return c, nil
}

// Pick is the random draw Resolve takes for weighted aliases.
func Pick() float64 { return rand.Float64() }

// Store keeps Functions in a JetStream KV bucket.
type Store struct {
	kv     *natsd.KV
	bucket string

	js       jetstream.JetStream
	replicas int
	mu       sync.Mutex
	layers   *Layers // opened on first use (see Layers)
}

// Config configures the store. The zero value uses bucket "kiln-functions"
// with one replica.
type Config struct {
	Bucket   string
	Replicas int
}

// Open creates the bucket if needed.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = "kiln-functions"
	}
	kv, err := natsd.OpenKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:   cfg.Bucket,
		History:  1,
		Replicas: max(cfg.Replicas, 1),
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	return &Store{kv: kv, bucket: cfg.Bucket, js: js, replicas: cfg.Replicas}, nil
}

func key(account, name string) string { return account + "." + name }

// Get reads one function.
func (s *Store) Get(ctx context.Context, account, name string) (*Function, error) {
	f, err := s.read(ctx, key(account, name)) // through an election too (natsd.KV.Read)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: function %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("metadata get %s: %w", name, err)
	}
	return f, nil
}

// read returns the function stored under k, or jetstream.ErrKeyNotFound.
// It sees every write acknowledged before it (natsd.KV.Read): else a
// control plane would not read its own writes (a version just deleted
// still listed).
func (s *Store) read(ctx context.Context, k string) (*Function, error) {
	value, revision, err := s.kv.Read(ctx, k)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			err = fmt.Errorf("metadata read: %w", err)
		}
		return nil, err
	}
	return decode(k, value, revision)
}

// keys lists the keys matching filter ("" every key), deleted ones
// included (read each), seeing every write acknowledged before it
// (natsd.KV.ReadKeys): the KV API's listing runs a consumer any replica may
// host, and a function created a moment before, by this process or
// another, could be missing from it.
func (s *Store) keys(ctx context.Context, filter string) ([]string, error) {
	return s.kv.ReadKeys(ctx, filter)
}

func decode(k string, value []byte, revision uint64) (*Function, error) {
	var f Function
	if err := json.Unmarshal(value, &f); err != nil {
		return nil, fmt.Errorf("metadata decode %s: %w", k, err)
	}
	f.revision = revision
	return &f, nil
}

// Create stores a new function; ErrExists if the name is taken.
func (s *Store) Create(ctx context.Context, f *Function) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	rev, err := s.kv.Create(ctx, key(f.Account, f.Name), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%w: function %s", ErrExists, f.Name)
	}
	if err != nil {
		return fmt.Errorf("metadata create %s: %w", f.Name, err)
	}
	f.revision = rev
	return nil
}

// Update writes f back if nobody changed it since it was read; otherwise
// ErrConflict, and the caller re-reads and retries (see Modify).
func (s *Store) Update(ctx context.Context, f *Function) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	rev, err := s.kv.Update(ctx, key(f.Account, f.Name), b, f.revision)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return fmt.Errorf("%w: function %s", ErrConflict, f.Name)
		}
		return fmt.Errorf("metadata update %s: %w", f.Name, err)
	}
	f.revision = rev
	return nil
}

// Modify reads a function, applies change and writes it back, retrying on
// concurrent writes. change may return an error to abort without writing.
func (s *Store) Modify(ctx context.Context, account, name string, change func(*Function) error) (*Function, error) {
	for {
		f, err := s.Get(ctx, account, name)
		if err != nil {
			return nil, err
		}
		if err := change(f); err != nil {
			return nil, err
		}
		err = s.Update(ctx, f)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return f, nil
	}
}

// Lock takes the lock called name, shared by every process using the
// bucket (control planes: checks that read many functions before writing
// one), waiting while another holds it. A holder that died is overtaken
// once ttl has passed since it took the lock (by the clocks of the hosts,
// which must agree to well within ttl). Unlock releases it unless it was
// overtaken meanwhile.
func (s *Store) Lock(ctx context.Context, name string, ttl time.Duration) (unlock func(), err error) {
	k := "lock-" + name // no dot: never read as an account's function (List, All)
	for wait := 2 * time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		until := []byte(strconv.FormatInt(time.Now().Add(ttl).UnixNano(), 10))
		rev, err := s.kv.Create(ctx, k, until)
		if errors.Is(err, jetstream.ErrKeyExists) {
			var e jetstream.KeyValueEntry
			if e, err = s.kv.Get(ctx, k); err == nil {
				err = jetstream.ErrKeyExists
				if held, _ := strconv.ParseInt(string(e.Value()), 10, 64); time.Now().UnixNano() > held {
					rev, err = s.kv.Update(ctx, k, until, e.Revision())
				}
			}
		}
		if err == nil {
			return func() { s.kv.Delete(context.WithoutCancel(ctx), k, jetstream.LastRevision(rev)) }, nil
		}
		var apiErr *jetstream.APIError
		lost := errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) ||
			errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
		if !lost && !natsd.Transient(err) {
			return nil, fmt.Errorf("metadata lock %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("metadata lock %s: %w", name, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// Delete removes a function and all its versions and aliases.
func (s *Store) Delete(ctx context.Context, account, name string) error {
	if _, err := s.Get(ctx, account, name); err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, key(account, name)); err != nil {
		return fmt.Errorf("metadata delete %s: %w", name, err)
	}
	return nil
}

// List returns the account's functions sorted by name.
func (s *Store) List(ctx context.Context, account string) ([]*Function, error) {
	keys, err := s.keys(ctx, account+".>")
	if err != nil {
		return nil, fmt.Errorf("metadata list: %w", err)
	}
	var out []*Function
	for _, k := range keys {
		f, err := s.read(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted since listed
		}
		if err != nil {
			return nil, fmt.Errorf("metadata list: %w", err)
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Follow calls fn with every function as it is now, and returns once
// they are all in; then with each write (f is nil once the function is
// deleted), in the bucket's order, until ctx ends. It reads the watch's own
// values, never a Get that a lagging replica could answer with an older
// version, nor a listing that could cross a write the watch has already
// delivered: a follower built on it converges on the last write.
func (s *Store) Follow(ctx context.Context, fn func(account, name string, f *Function)) error {
	return s.watch(ctx, fn, true)
}

// Watch calls changed with every function written (its new value) or
// deleted (nil) from now on, until ctx ends. Caches use it to replace or
// drop their entries.
func (s *Store) Watch(ctx context.Context, changed func(account, name string, f *Function)) error {
	return s.watch(ctx, changed, false)
}

// watch runs fn on the bucket's writes; with current, on its current
// values first, returning once they are in.
func (s *Store) watch(ctx context.Context, fn func(account, name string, f *Function), current bool) error {
	var opts []jetstream.WatchOpt
	if !current {
		opts = append(opts, jetstream.UpdatesOnly())
	}
	w, err := s.kv.WatchAll(ctx, opts...)
	if err != nil {
		return fmt.Errorf("metadata watch: %w", err)
	}
	in := make(chan struct{})
	if !current {
		close(in)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		defer w.Stop()
		for e := range w.Updates() {
			if e == nil { // the current values are all in (said once)
				close(in)
				continue
			}
			account, name, ok := strings.Cut(e.Key(), ".")
			if !ok {
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				fn(account, name, nil)
				continue
			}
			if f, err := decode(e.Key(), e.Value(), e.Revision()); err == nil {
				fn(account, name, f)
			}
		}
	}()
	select {
	case <-in:
		return nil
	case <-ended:
		return errors.New("metadata watch: ended before the current values were in")
	case <-ctx.Done():
		return fmt.Errorf("metadata watch: %w", ctx.Err())
	}
}

// All returns every account's functions (for maintenance such as code
// garbage collection), in no particular order.
func (s *Store) All(ctx context.Context) ([]*Function, error) {
	keys, err := s.keys(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("metadata list: %w", err)
	}
	var out []*Function
	for _, k := range keys {
		if !strings.Contains(k, ".") {
			continue
		}
		f, err := s.read(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("metadata list: %w", err)
		}
		out = append(out, f)
	}
	return out, nil
}
