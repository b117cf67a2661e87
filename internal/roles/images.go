package roles

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/kiln-dev/kiln/internal/imagefs"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/metrics"
	"github.com/kiln-dev/kiln/internal/tier"
	"github.com/kiln-dev/kiln/internal/worker"
)

// DiskCacheBytes bounds a disk cache of chunks (DATA/chunk-cache) in front
// of a remote store.
const DiskCacheBytes = 4 << 30

// S3Tier opens the S3 bucket the file (0600, a tier.S3Config) names: the
// authoritative chunk store where the operator chose one.
func S3Tier(ctx context.Context, file string) (Tier, error) {
	cfg, err := tier.LoadS3Config(file)
	if err != nil {
		return Tier{}, err
	}
	s, err := tier.OpenS3(ctx, cfg)
	return Tier{Name: "s3", Store: s}, err
}

// Tier is one tier of the image chunk store, named for the metrics.
type Tier struct {
	Name  string
	Store tier.Store
}

// Images is the image stack of a process that imports images (a control
// plane) or runs them (a worker), in both modes: the chunk store through
// its tiers, and a worker's FUSE mounts.
type Images struct {
	Store   *images.Store
	Mounter *imagefs.Mounter // nil: this process's environments run no images
	names   []string
	hits    []atomic.Int64 // reads served, per tier
}

// ImagesConfig is what the image stack is built from.
type ImagesConfig struct {
	Keys images.KeyService
	// Caches are read nearest first, before Store, the authoritative one.
	Caches []Tier
	Store  Tier
	// MountDir is where a worker mounts images (DATA/images); empty, or a
	// Sandbox that cannot run them, mounts none.
	MountDir string
	Sandbox  worker.Sandbox
}

// NewImages builds the stack; the caller sets the import sources on Store.
func NewImages(cfg ImagesConfig) *Images {
	st := &Images{}
	var caches []tier.Store
	for _, c := range cfg.Caches {
		caches = append(caches, c.Store)
		st.names = append(st.names, c.Name)
	}
	st.names = append(st.names, cfg.Store.Name)
	st.hits = make([]atomic.Int64, len(st.names))
	st.Store = &images.Store{Keys: cfg.Keys, Tiers: &tier.Tiers{Caches: caches, Store: cfg.Store.Store,
		Hit: func(i int) { st.hits[i].Add(1) }}}
	if cfg.MountDir == "" {
		return st
	}
	sweepMounts(cfg.MountDir)
	if _, process := cfg.Sandbox.(worker.ProcessSandbox); cfg.Sandbox == nil || process {
		return st // environments run images only in a root of their own
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err == nil {
		f.Close()
		st.Mounter = &imagefs.Mounter{Store: st.Store, Dir: filepath.Join(cfg.MountDir, strconv.Itoa(os.Getpid()))}
	}
	return st
}

// Source is what the worker presents image functions' code with: nil (no
// images) when it has no mounter.
func (st *Images) Source() worker.ImageSource {
	if st == nil || st.Mounter == nil {
		return nil
	}
	return st.Mounter
}

// sweepMounts detaches and removes the image mounts of kiln processes that
// are gone (a crash leaves their FUSE mounts behind, disconnected).
func sweepMounts(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); err == nil || errors.Is(err, unix.EPERM) {
			continue // still running
		}
		sub := filepath.Join(dir, e.Name())
		mnts, _ := os.ReadDir(sub)
		for _, m := range mnts {
			unix.Unmount(filepath.Join(sub, m.Name()), unix.MNT_DETACH)
			os.Remove(filepath.Join(sub, m.Name()))
		}
		os.Remove(sub)
	}
}

// Register adds the chunk reads per tier and the bytes environments'
// images fetched to the metrics.
func (st *Images) Register(m *metrics.Set) {
	for i, name := range st.names {
		m.Register(metrics.CounterFunc("kiln_image_chunk_reads_total", "Image chunks and manifests read, by the tier that served them.",
			prometheus.Labels{"tier": name}, func() float64 { return float64(st.hits[i].Load()) }))
	}
	if st.Mounter != nil {
		m.Register(metrics.CounterFunc("kiln_image_bytes_fetched_total", "Bytes of image chunks the mounted images fetched on read (plaintext).",
			nil, func() float64 { return float64(st.Mounter.BytesFetched()) }))
	}
}

// Close unmounts the images; after the environments that used them.
func (st *Images) Close() {
	if st.Mounter != nil {
		st.Mounter.Close()
	}
}

// importStats is what a control plane tells of its image imports.
type importStats interface {
	ImportStats() (running int, bytes int64)
}

// RegisterImports adds a control plane's image imports to the metrics:
// how many run, and the bytes of file content they stored (its rate is
// their progress).
func RegisterImports(m *metrics.Set, cp importStats) {
	m.Register(metrics.GaugeFunc("kiln_image_imports", "Image imports running in this control plane.", nil,
		func() float64 { n, _ := cp.ImportStats(); return float64(n) }))
	m.Register(metrics.CounterFunc("kiln_image_import_bytes_total", "Bytes of image file content imports stored (chunked, encrypted, written).", nil,
		func() float64 { _, b := cp.ImportStats(); return float64(b) }))
}
