package script

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	Run(t, "testdata/*.txt", newTestScript)
}

// newTestScript runs commands that show what a Line holds.
func newTestScript() func(Line) string {
	return func(l Line) string {
		switch l.Cmd {
		case "echo":
			return strings.Join(l.Args, " ")
		case "lines":
			return strings.Join(l.Args, "\n")
		case "nop":
		case "want":
			if got := strings.Join(l.Args, " "); got != l.Want {
				l.Fatalf("args %q, want %q", got, l.Want)
			}
		case "sum":
			if got := l.Int(l.Args[0]) + l.Int(l.Args[1]); strconv.Itoa(got) != l.Want {
				l.Fatalf("sum %d, want %s", got, l.Want)
			}
		case "where":
			if !strings.HasPrefix(l.Where, l.Want+" where") {
				l.Fatalf("Where does not start with %q", l.Want)
			}
		default:
			l.Fatalf("unknown command")
		}
		return ""
	}
}

// TestChild is the test process TestFailureAndRewrite starts.
func TestChild(t *testing.T) {
	dir := os.Getenv("SCRIPT_CHILD_DIR")
	if dir == "" {
		t.Skip("run by TestFailureAndRewrite")
	}
	Run(t, filepath.Join(dir, "*.txt"), newTestScript)
}

// TestFailureAndRewrite checks, in a child test process, that a wrong ----
// block fails naming its file and line, and that -rewrite corrects it.
func TestFailureAndRewrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(path, []byte("# wrong\necho a\n----\nb\n\nnop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	child := func(args ...string) (string, error) {
		cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestChild$"}, args...)...)
		cmd.Env = append(os.Environ(), "SCRIPT_CHILD_DIR="+dir)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := child(); err == nil || !strings.Contains(out, path+":2: echo a") {
		t.Fatalf("wrong block: err %v, output:\n%s", err, out)
	}
	if out, err := child("-rewrite"); err != nil {
		t.Fatalf("-rewrite: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(path); string(b) != "# wrong\necho a\n----\na\n\nnop\n" {
		t.Fatalf("rewritten to:\n%s", b)
	}
	if out, err := child(); err != nil {
		t.Fatalf("after -rewrite: %v\n%s", err, out)
	}
}
