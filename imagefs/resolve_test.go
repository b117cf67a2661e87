package imagefs

import (
	"testing"

	"github.com/kiln-dev/kiln/flatten"
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
