package fntest

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestFunctionModuleInStep: the functions' module requires aws-lambda-go
// and aws-sdk-go-v2 at the versions Kiln's go.mod does, with go.sum's
// hashes for them.
func TestFunctionModuleInStep(t *testing.T) {
	goMod, err := os.ReadFile("../../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goSum, err := os.ReadFile("../../../go.sum")
	if err != nil {
		t.Fatal(err)
	}
	reqs := regexp.MustCompile(`(?m)^\s*(?:require\s+)?(github\.com/aws/\S+) (v\S+)`).FindAllStringSubmatch(fnMod, -1)
	if len(reqs) == 0 {
		t.Fatal("fn.mod requires nothing")
	}
	for _, r := range reqs {
		if !regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(r[1]+" "+r[2]) + `\b`).Match(goMod) {
			t.Errorf("fn.mod requires %s %s, Kiln's go.mod does not", r[1], r[2])
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(fnSum), "\n") {
		if !bytes.Contains(goSum, []byte(line+"\n")) {
			t.Errorf("fn.sum line %q is not in Kiln's go.sum", line)
		}
	}
}

// TestBuildOutsideTheTree: functions build from anywhere (kiln-bench runs
// far from Kiln's source tree); only building Kiln itself needs the tree.
func TestBuildOutsideTheTree(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("TMPDIR", t.TempDir()) // an empty cache of builds: this one compiles
	b, err := BuildGo(EchoGo)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		t.Fatalf("not an ELF binary: % x", b[:min(len(b), 8)])
	}
	if _, err := BuildKiln(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no Kiln source tree") {
		t.Fatalf("BuildKiln outside the tree: %v", err)
	}
}
