package imagefs

import (
	"context"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/chunk"
	"github.com/kiln-dev/kiln/internal/flatten"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
)

// TestReadAheadNeedsARun: reads of a file through its node, as the kernel
// sends them: a single read of up to maxRead fetches only the chunks it
// covers, however large; a sequential run past maxRead reads ahead.
func TestReadAheadNeedsARun(t *testing.T) {
	st, e := chunkedFile(t, 32)
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
			n := &node{e: e, c: NewCache(st, 64).c, readAhead: 4}
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

// chunkedFile imports an image of one file of n default-size chunks, chunk
// i all byte i (no two alike), and returns its store and entry.
func chunkedFile(t *testing.T, n int) (*images.Store, *flatten.Entry) {
	t.Helper()
	body := make([]byte, n*chunk.DefaultSize)
	for i := range body {
		body[i] = byte(i / chunk.DefaultSize)
	}
	st := imagestest.NewStore(t)
	imp, err := st.ImportImage(context.Background(), "111111111111", imagestest.Image(t, "amd64", v1.Config{},
		imagestest.Layer(t, imagestest.File{Name: "big", Body: body})), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	return st.Store, &imp.Manifest.Entries[len(imp.Manifest.Entries)-1]
}
