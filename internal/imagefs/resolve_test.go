package imagefs

import (
	"testing"

	"github.com/kiln-dev/kiln/internal/chunk"
	"github.com/kiln-dev/kiln/internal/flatten"
)

func TestResolve(t *testing.T) {
	entries := []flatten.Entry{
		{Path: ".", Type: flatten.Dir},
		{Path: "usr", Type: flatten.Dir},
		{Path: "usr/bin", Type: flatten.Dir},
		{Path: "usr/bin/python3.11", Type: flatten.File},
		{Path: "usr/bin/python3", Type: flatten.Symlink, Target: "python3.11"},
		{Path: "bin", Type: flatten.Symlink, Target: "usr/bin"},
		{Path: "up", Type: flatten.Symlink, Target: "/usr/bin/../bin/python3"},
		{Path: "escape", Type: flatten.Symlink, Target: "../../../usr/bin/python3"},
		{Path: "loop", Type: flatten.Symlink, Target: "loop"},
	}
	byPath := map[string]*flatten.Entry{}
	for i := range entries {
		byPath[entries[i].Path] = &entries[i]
	}
	for p, want := range map[string]string{
		"/usr/bin/python3.11":   "usr/bin/python3.11",
		"/usr/bin/python3":      "usr/bin/python3.11", // relative link
		"/bin/python3":          "usr/bin/python3.11", // a directory that is a link
		"/up":                   "usr/bin/python3.11", // absolute, with ..
		"/escape":               "usr/bin/python3.11", // .. stops at the image's root
		"/loop":                 "",
		"/nothing":              "",
		"/usr/bin/python3.11/x": "",
	} {
		got := ""
		if e := resolve(byPath, p); e != nil {
			got = e.Path
		}
		if got != want {
			t.Errorf("resolve(%s) = %q, want %q", p, got, want)
		}
	}
}

// TestRefsIgnoresWhatIsNotTheImages: a working set names chunks by place in
// the manifest; a place that is not a chunk of one of its files is dropped.
func TestRefsIgnoresWhatIsNotTheImages(t *testing.T) {
	a, b := chunk.Ref{Len: 1}, chunk.Ref{Len: 2}
	a.ID[0], b.ID[0] = 1, 2
	entries := []flatten.Entry{
		{Path: ".", Type: flatten.Dir},
		{Path: "f", Type: flatten.File, Chunks: []chunk.Ref{a, b}},
		{Path: "l", Type: flatten.Symlink, Target: "f"},
	}
	got := refs(entries, []Touch{{1, 1}, {1, 2}, {1, -1}, {0, 0}, {2, 0}, {3, 0}, {-1, 0}, {1, 0}})
	if len(got) != 2 || got[0].ID != b.ID || got[1].ID != a.ID {
		t.Fatalf("refs = %+v, want chunks 1 then 0 of f", got)
	}
}
