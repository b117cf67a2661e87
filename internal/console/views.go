package console

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/logs"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// FunctionRow is a function in the functions list.
type FunctionRow struct {
	Account     string             `json:"account"`
	Name        string             `json:"name"`
	Runtime     string             `json:"runtime"`
	PackageType string             `json:"packageType"`
	MemoryMB    int                `json:"memoryMB"`
	Timeout     int                `json:"timeout"`
	State       string             `json:"state"`
	Versions    []string           `json:"versions"`
	Aliases     []Alias            `json:"aliases"`
	Reserved    *int               `json:"reservedConcurrency,omitempty"`
	Provisioned []ProvisionedState `json:"provisioned"`
	Summary
}

// Alias is an alias and its traffic: Version gets what the weights leave.
type Alias struct {
	Name    string             `json:"name"`
	Version string             `json:"version"`
	Weights map[string]float64 `json:"weights,omitempty"`
}

// ProvisionedState is one qualifier's provisioned concurrency.
type ProvisionedState struct {
	Qualifier string `json:"qualifier"`
	Requested int    `json:"requested"`
	Allocated int    `json:"allocated"`
	Status    string `json:"status"`
}

// FunctionView is a function's page.
type FunctionView struct {
	Function     FunctionRow   `json:"function"`
	Series       []Point       `json:"series"` // the last hour, a point per minute
	Environments []Environment `json:"environments"`
	Async        AsyncState    `json:"async"`
	Mappings     []Mapping     `json:"mappings"`
}

// AsyncState is a function's asynchronous invokes: its queued events and
// its settings per qualifier.
type AsyncState struct {
	QueueDepth *uint64       `json:"queueDepth,omitempty"` // nil: unknown
	Configs    []AsyncConfig `json:"configs"`
}

// AsyncConfig is one qualifier's retries, event age and destinations.
type AsyncConfig struct {
	Qualifier         string `json:"qualifier"`
	MaxRetryAttempts  *int   `json:"maxRetryAttempts,omitempty"`
	MaxEventAgeSecond *int   `json:"maxEventAgeSeconds,omitempty"`
	OnSuccess         string `json:"onSuccess,omitempty"`
	OnFailure         string `json:"onFailure,omitempty"`
}

// Mapping is an event source mapping of the function.
type Mapping struct {
	UUID       string `json:"uuid"`
	Source     string `json:"source"`
	State      string `json:"state"`
	BatchSize  int    `json:"batchSize"`
	LastResult string `json:"lastProcessingResult"`
}

// Fleet is the fleet page: workers by zone with what placement booked on
// them, environments, assignment partitions and cold starts by cause.
type Fleet struct {
	Mode         string        `json:"mode"` // "kiln up" or "cluster"
	Workers      []Worker      `json:"workers"`
	Partitions   []Partition   `json:"partitions"`
	Environments []Environment `json:"environments"`
	// ColdStarts is this frontend's last hour of cold starts by cause.
	ColdStarts []Point `json:"coldStarts"`
}

// Worker is one worker as placement sees it.
type Worker struct {
	ID         string `json:"id"`
	Zone       string `json:"zone"`
	MemoryMB   int    `json:"memoryMB"`  // capacity; 0: unbounded
	CPUMillis  int    `json:"cpuMillis"` // capacity; 0: unbounded
	BookedMB   int    `json:"bookedMB"`
	BookedCPU  int    `json:"bookedCpuMillis"`
	LoadMillis int    `json:"loadMillis"`
	Envs       int    `json:"environments"`
	Draining   bool   `json:"draining"`
	Healthy    bool   `json:"healthy"`
}

// Partition is one assignment partition.
type Partition struct {
	ID         int                 `json:"id"`
	Leader     string              `json:"leader"`
	LeaderZone string              `json:"leaderZone"`
	Epoch      uint64              `json:"epoch"`
	Members    map[string][]string `json:"members"` // by zone
	Envs       map[string]int      `json:"environments,omitempty"`
}

// Environment is one execution environment.
type Environment struct {
	ID          string `json:"id"`
	Account     string `json:"account"`
	Function    string `json:"function"`
	Version     string `json:"version"`
	State       string `json:"state"`
	Worker      string `json:"worker"`
	Zone        string `json:"zone,omitempty"`
	Provisioned bool   `json:"provisioned,omitempty"`
}

func (c *Console) row(f *metadata.Function, sum Summary) FunctionRow {
	l := f.Latest
	row := FunctionRow{Account: f.Account, Name: f.Name, Runtime: l.Runtime, PackageType: cmp.Or(l.PackageType, "Zip"),
		MemoryMB: l.MemorySize, Timeout: l.Timeout, State: l.State, Versions: f.SortedVersions(), Aliases: []Alias{},
		Reserved: f.ReservedConcurrency, Provisioned: []ProvisionedState{}, Summary: sum}
	for _, a := range f.Aliases {
		al := Alias{Name: a.Name, Version: a.FunctionVersion}
		if a.RoutingConfig != nil {
			al.Weights = a.RoutingConfig.AdditionalVersionWeights
		}
		row.Aliases = append(row.Aliases, al)
	}
	slices.SortFunc(row.Aliases, func(a, b Alias) int { return cmp.Compare(a.Name, b.Name) })
	for q, p := range f.Provisioned {
		row.Provisioned = append(row.Provisioned, ProvisionedState{Qualifier: q, Requested: p.Requested, Allocated: p.Allocated, Status: p.Status})
	}
	slices.SortFunc(row.Provisioned, func(a, b ProvisionedState) int { return cmp.Compare(a.Qualifier, b.Qualifier) })
	return row
}

func (c *Console) functions(ctx context.Context, v viewer) ([]FunctionRow, error) {
	var fns []*metadata.Function
	var err error
	if v.admin {
		fns, err = c.cfg.Functions.All(ctx)
	} else {
		fns, err = c.cfg.Functions.List(ctx, v.Account)
	}
	if err != nil {
		return nil, err
	}
	keys := make([]counting.Key, len(fns))
	for i, f := range fns {
		keys[i] = counting.Key{Account: f.Account, Function: f.Name}
	}
	sums := c.summaries(ctx, keys)
	out := make([]FunctionRow, 0, len(fns))
	for i, f := range fns {
		out = append(out, c.row(f, sums[keys[i]]))
	}
	slices.SortFunc(out, func(a, b FunctionRow) int {
		return cmp.Or(cmp.Compare(a.Account, b.Account), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

// get reads a function the viewer may see; one of another account is
// answered as not found, as if it did not exist.
func (c *Console) get(ctx context.Context, v viewer, account, name string) (*metadata.Function, error) {
	notFound := api.Errorf(api.ResourceNotFound, "Function not found: %s", api.FunctionARN(c.cfg.Region, account, name))
	if !v.sees(account) {
		return nil, notFound
	}
	f, err := c.cfg.Functions.Get(ctx, account, name)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, notFound
	}
	return f, err
}

func (c *Console) function(ctx context.Context, v viewer, account, name string) (*FunctionView, error) {
	f, err := c.get(ctx, v, account, name)
	if err != nil {
		return nil, err
	}
	k := counting.Key{Account: account, Function: name}
	out := &FunctionView{Function: c.row(f, c.summaries(ctx, []counting.Key{k})[k]), Series: c.hour(ctx, k),
		Environments: []Environment{}, Mappings: []Mapping{}, Async: AsyncState{Configs: []AsyncConfig{}}}
	fleet, err := c.cfg.Fleet.Fleet(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range fleet.Environments {
		if e.Account == account && e.Function == name {
			out.Environments = append(out.Environments, e)
		}
	}
	if c.cfg.Async != nil {
		if n, err := c.cfg.Async.Depth(ctx, account, name); err == nil {
			out.Async.QueueDepth = &n
		}
	}
	for q, ec := range f.EventInvokeConfigs {
		ac := AsyncConfig{Qualifier: q, MaxRetryAttempts: ec.MaximumRetryAttempts, MaxEventAgeSecond: ec.MaximumEventAgeInSeconds}
		if d := ec.DestinationConfig; d != nil {
			if d.OnSuccess != nil {
				ac.OnSuccess = d.OnSuccess.Destination
			}
			if d.OnFailure != nil {
				ac.OnFailure = d.OnFailure.Destination
			}
		}
		out.Async.Configs = append(out.Async.Configs, ac)
	}
	slices.SortFunc(out.Async.Configs, func(a, b AsyncConfig) int { return cmp.Compare(a.Qualifier, b.Qualifier) })
	if c.cfg.Mappings != nil {
		ms, err := c.cfg.Mappings.List(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			ref, err := api.ParseFunctionRef(m.FunctionArn)
			if err != nil || m.Account != account || ref.Name != name {
				continue
			}
			out.Mappings = append(out.Mappings, Mapping{UUID: m.UUID, Source: m.EventSourceArn, State: m.State,
				BatchSize: m.BatchSize, LastResult: m.LastProcessingResult})
		}
	}
	return out, nil
}

// fleet is the admin's: it shows every account's environments.
func (c *Console) fleet(ctx context.Context, v viewer) (*Fleet, error) {
	if !v.admin {
		return nil, api.Errorf(api.AccessDenied, "The fleet is shown to the admin key only.")
	}
	f, err := c.cfg.Fleet.Fleet(ctx)
	if err != nil {
		return nil, err
	}
	f.ColdStarts = c.coldStarts(ctx)
	// The page reads lists, never null.
	f.Workers, f.Partitions, f.Environments = orEmpty(f.Workers), orEmpty(f.Partitions), orEmpty(f.Environments)
	return f, nil
}

// LogPage is a read of a function's logs.
type LogPage struct {
	Events []logs.Event `json:"events"`
	Cursor string       `json:"cursor"` // pass it back to read on
}

// maxLogEvents bounds one read of logs.
const maxLogEvents = 500

func (c *Console) readLogs(ctx context.Context, v viewer, account, name, cursor string) (*LogPage, error) {
	if _, err := c.get(ctx, v, account, name); err != nil {
		return nil, err
	}
	if c.cfg.Logs == nil {
		return &LogPage{Events: []logs.Event{}}, nil
	}
	evs, next, err := c.cfg.Logs.Tail(ctx, account, "/aws/lambda/"+name, cursor, time.Now().Add(-15*time.Minute).UnixMilli(), maxLogEvents)
	if err != nil {
		return nil, err
	}
	if evs == nil {
		evs = []logs.Event{}
	}
	return &LogPage{Events: evs, Cursor: next}, nil
}

func (c *Console) logs(w http.ResponseWriter, r *http.Request, v viewer) {
	c.view(func(ctx context.Context, r *http.Request, v viewer) (any, error) {
		return c.readLogs(ctx, v, r.PathValue("account"), r.PathValue("name"), r.URL.Query().Get("cursor"))
	})(w, r, v)
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
