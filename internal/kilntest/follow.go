package kilntest

import (
	"bufio"
	"os/exec"
	"strings"
	"time"
)

// Follow starts cmd, a command that keeps printing lines (`aws logs tail
// --follow`), and returns a func that waits up to d for a line ending in
// " "+text. The command is killed (by its PID) when the test ends.
func Follow(t TB, cmd *exec.Cmd) func(text string, d time.Duration) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines, exited := make(chan string, 100), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	return func(text string, d time.Duration) {
		t.Helper()
		timeout := time.After(d)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("%s ended before %q: %s", cmd.Args[0], text, stderr.String())
				}
				if strings.HasSuffix(l, " "+text) {
					return
				}
			case <-timeout:
				t.Fatalf("%s: no %q after %s; stderr: %s", cmd.Args[0], text, d, stderr.String())
			}
		}
	}
}
