package imagefs

import (
	"context"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/chunk"
	"github.com/kiln-dev/kiln/images/imagestest"
)

// TestReadAheadNeedsARun: reads of a file through its node, as the kernel
// sends them: a single read of up to maxRead fetches only the chunks it
// covers, however large; a sequential run past maxRead reads ahead.
func TestReadAheadNeedsARun(t *testing.T) {
	body := make([]byte, 32*chunk.DefaultSize)
	for i := range body {
		body[i] = byte(i / chunk.DefaultSize) // no two chunks alike
	}
	st := imagestest.NewStore(t)
	imp, err := st.ImportImage(context.Background(), "111111111111", imagestest.Image(t, "amd64", v1.Config{},
		imagestest.Layer(t, imagestest.File{Name: "big", Body: body})), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	e := &imp.Manifest.Entries[len(imp.Manifest.Entries)-1]
	for _, tc := range []struct {
		name  string
		reads [][2]int64 // offset, length
		want  int64      // chunks fetched
	}{
		{"one 1 MiB read, not aligned", [][2]int64{{5*chunk.DefaultSize + 100, maxRead}}, 3},
		{"1 MiB reads here and there", [][2]int64{{0, maxRead}, {20 * chunk.DefaultSize, maxRead}}, 4},
		{"a sequential run", [][2]int64{{0, maxRead}, {maxRead, maxRead}, {2 * maxRead, maxRead}}, 6 + 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &node{e: e, c: NewCache(st.Store, 64).c, readAhead: 4}
			for _, r := range tc.reads {
				if _, errno := n.Read(context.Background(), nil, make([]byte, r[1]), r[0]); errno != 0 {
					t.Fatal(errno)
				}
			}
			time.Sleep(100 * time.Millisecond) // what it read ahead, in the background
			for deadline := time.Now().Add(10 * time.Second); n.c.stats.ChunksFetched.Load() < tc.want && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if got := n.c.stats.ChunksFetched.Load(); got != tc.want {
				t.Fatalf("fetched %d chunks, want %d", got, tc.want)
			}
		})
	}
}
