package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestLinksNoTesting: neither the shipped kiln nor kiln-bench links the
// testing package (its flags, its init). A helper in kilntest or fntest
// that takes a testing.TB, rather than the packages' own TB, brings it in.
func TestLinksNoTesting(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".", "../kiln").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if slices.Contains(strings.Fields(string(out)), "testing") {
		why, _ := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}}{{if eq . "testing"}} imports testing{{end}}{{end}}`, "-deps", ".", "../kiln").Output()
		var culprits []string
		for _, l := range strings.Split(string(why), "\n") {
			if strings.HasSuffix(l, " imports testing") {
				culprits = append(culprits, l)
			}
		}
		t.Fatalf("kiln or kiln-bench links testing: %s", strings.Join(culprits, "; "))
	}
}
