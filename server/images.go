package server

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/kiln-dev/kiln/imagefs"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/keys"
	"github.com/kiln-dev/kiln/metrics"
	"github.com/kiln-dev/kiln/registry"
	"github.com/kiln-dev/kiln/tier"
	"github.com/kiln-dev/kiln/worker"
)

// imageStack is what image functions need in `kiln up`: the key service,
// the chunk store (memory LRU in front of the directory DATA/chunks; a disk
// cache would only copy the same local disk), and the FUSE mounts of the
// images environments run.
type imageStack struct {
	store    *images.Store
	registry *registry.Registry // Kiln's own, at /v2/ on the endpoint
	mounter  *imagefs.Mounter   // nil when environments cannot run images
	hits     [2]atomic.Int64    // reads served by memory, by the directory
}

// openImages opens the stack in dir. Environments run images only with a
// backend that gives them a root of their own (not the process backend) and
// with /dev/fuse.
func openImages(dir, archives string, sb worker.Sandbox, users registry.Authenticator, host string) (*imageStack, error) {
	ks, err := keys.Open(filepath.Join(dir, "keys", "master.key"))
	if err != nil {
		return nil, err
	}
	chunks, err := tier.OpenDir(filepath.Join(dir, "chunks"))
	if err != nil {
		return nil, err
	}
	if archives == "" {
		archives = filepath.Join(dir, "image-archives")
	}
	scratch := filepath.Join(dir, "images-scratch")
	os.RemoveAll(scratch) // what an interrupted import left
	for _, d := range []string{archives, scratch} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	reg, err := registry.Open(filepath.Join(dir, "registry"), users)
	if err != nil {
		return nil, err
	}
	st := &imageStack{registry: reg}
	st.store = &images.Store{Keys: ks, Archives: archives, Scratch: scratch, Local: reg, LocalHosts: []string{host}, Tiers: &tier.Tiers{
		Caches: []tier.Store{tier.NewMemory(256 << 20)},
		Store:  chunks,
		Hit:    func(i int) { st.hits[i].Add(1) },
	}}
	mounts := filepath.Join(dir, "images")
	sweepMounts(mounts)
	if _, process := sb.(worker.ProcessSandbox); sb == nil || process {
		return st, nil
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err == nil {
		f.Close()
		st.mounter = &imagefs.Mounter{Store: st.store, Dir: filepath.Join(mounts, strconv.Itoa(os.Getpid()))}
	}
	return st, nil
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

// register adds the chunk reads per tier and the bytes environments'
// images fetched to the metrics.
func (st *imageStack) register(m *metrics.Set) {
	for i, name := range []string{"memory", "store"} {
		m.Register(metrics.CounterFunc("kiln_image_chunk_reads_total", "Image chunks and manifests read, by the tier that served them.",
			prometheus.Labels{"tier": name}, func() float64 { return float64(st.hits[i].Load()) }))
	}
	if st.mounter != nil {
		m.Register(metrics.CounterFunc("kiln_image_bytes_fetched_total", "Bytes of image chunks the mounted images fetched on read (plaintext).",
			nil, func() float64 { return float64(st.mounter.BytesFetched()) }))
	}
}

func (st *imageStack) close() {
	if st.mounter != nil {
		st.mounter.Close()
	}
}
