package server

import (
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-dev/kiln/imagefs"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/keys"
	"github.com/kiln-dev/kiln/metrics"
	"github.com/kiln-dev/kiln/tier"
)

// imageStack is what image functions need in `kiln up`: the key service,
// the chunk store (memory LRU in front of the directory DATA/chunks; a disk
// cache would only copy the same local disk), and the FUSE mounts of the
// images environments run.
type imageStack struct {
	store   *images.Store
	mounter *imagefs.Mounter // nil without /dev/fuse
	hits    [2]atomic.Int64  // reads served by memory, by the directory
}

func openImages(dir string) (*imageStack, error) {
	ks, err := keys.Open(filepath.Join(dir, "keys", "master.key"))
	if err != nil {
		return nil, err
	}
	chunks, err := tier.OpenDir(filepath.Join(dir, "chunks"))
	if err != nil {
		return nil, err
	}
	st := &imageStack{}
	st.store = &images.Store{Keys: ks, Tiers: &tier.Tiers{
		Caches: []tier.Store{tier.NewMemory(256 << 20)},
		Store:  chunks,
		Hit:    func(i int) { st.hits[i].Add(1) },
	}}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err == nil {
		f.Close()
		mnt := filepath.Join(dir, "images", strconv.Itoa(os.Getpid()))
		st.mounter = &imagefs.Mounter{Store: st.store, Dir: mnt}
	}
	return st, nil
}

// register adds the chunk reads per tier to the metrics.
func (st *imageStack) register(m *metrics.Set) {
	for i, name := range []string{"memory", "store"} {
		m.Register(metrics.GaugeFunc("kiln_image_chunk_reads", "Image chunks and manifests read, by the tier that served them.",
			prometheus.Labels{"tier": name}, func() float64 { return float64(st.hits[i].Load()) }))
	}
}

func (st *imageStack) close() {
	if st.mounter != nil {
		st.mounter.Close()
	}
}
