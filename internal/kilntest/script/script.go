// Package script runs table tests written as text files (testdata/*.txt),
// so that the cases read as a script rather than Go. It is a much smaller
// cousin of etcd's datadriven, shared by the packages' script tests.
//
// A script is command lines, one command a line; blank lines and lines
// starting with "#" are skipped. A command line may end in "=> TEXT": the
// runner decides what TEXT expects (an error, say), as one-line
// expectations differ by package. A "----" line after one or more
// commands is followed by the output they must give together, up to the
// next blank line; go test -rewrite writes the actual output there instead.
package script

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the ---- blocks of testdata scripts with the output the code gives")

// Line is one command line of a script.
type Line struct {
	Where string   // "file:line: text", to begin a failure message with
	Cmd   string   // the first word
	Args  []string // the other words before "=>"
	Want  string   // the text after "=>", trimmed; "" if none
	t     *testing.T
}

// Fatalf stops the script, naming the line.
func (l Line) Fatalf(format string, args ...any) {
	l.t.Helper()
	l.t.Fatalf("%s: %s", l.Where, fmt.Sprintf(format, args...))
}

// Int parses s, a number from the line (a count, size or sequence number:
// never negative), and stops the script if it is not one.
func (l Line) Int(s string) int {
	l.t.Helper()
	n, err := strconv.Atoi(s)
	if err == nil && n < 0 {
		err = fmt.Errorf("%d is negative", n)
	}
	if err != nil {
		l.Fatalf("%v", err)
	}
	return n
}

// Run runs each file matching glob as a subtest. newScript is called once
// a file, so that each script starts from fresh state; the function it
// returns runs one command and returns its output ("" for none).
func Run(t *testing.T, glob string, newScript func() func(Line) string) {
	t.Helper()
	files, _ := filepath.Glob(glob)
	if len(files) == 0 {
		t.Fatalf("no scripts match %s", glob)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runFile(t, f, newScript()) })
	}
}

func runFile(t *testing.T, path string, do func(Line) string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var (
		out   []string // the file as -rewrite writes it
		cmds  []string // the commands since the last ---- block
		first string   // where the first of them is
		got   []string // their output
	)
	for i := 0; i < len(lines); i++ {
		out = append(out, lines[i])
		text := strings.TrimSpace(lines[i])
		switch {
		case text == "" || strings.HasPrefix(text, "#"):
		case text == "----":
			if len(cmds) == 0 {
				t.Fatalf("%s:%d: ---- without a command", path, i+1)
			}
			var want []string
			for i+1 < len(lines) && strings.TrimSpace(lines[i+1]) != "" {
				i++
				want = append(want, lines[i])
			}
			if !*rewrite && !slices.Equal(got, want) {
				t.Errorf("%s: %s\ngot:\n%s\nwant:\n%s", first, strings.Join(cmds, "; "),
					strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			out = append(out, got...)
			cmds, got = nil, nil
		default:
			if len(cmds) == 0 {
				first = fmt.Sprintf("%s:%d", path, i+1)
			}
			cmds = append(cmds, text)
			l := Line{Where: fmt.Sprintf("%s:%d: %s", path, i+1, text), t: t}
			cmd, want, _ := strings.Cut(text, "=>")
			l.Want = strings.TrimSpace(want)
			if f := strings.Fields(cmd); len(f) > 0 {
				l.Cmd, l.Args = f[0], f[1:]
			}
			if o := do(l); o != "" {
				got = append(got, strings.Split(o, "\n")...)
			}
		}
	}
	// Output no ---- block checks is a forgotten block, not a pass.
	if len(got) > 0 {
		t.Errorf("%s: %s: output without a ---- block:\n%s", first, strings.Join(cmds, "; "), strings.Join(got, "\n"))
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
