package sched

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// A child that lowers itself ends with every thread, including those its
// runtime started afterwards, at idle priority.
func TestIdleSelf(t *testing.T) {
	if os.Getenv("SCHED_TEST_CHILD") == "1" {
		if err := IdleSelf(); err != nil {
			t.Fatal(err)
		}
		done := make(chan bool)
		for range 8 { // new threads, started after
			go func() {
				s := 0
				for i := range 50_000_000 {
					s += i
				}
				done <- s > 0
			}()
		}
		for range 8 {
			<-done
		}
		out, err := exec.Command("ps", "-L", "-o", "cls=", "-p", strconvPid()).Output()
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.Write(out)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestIdleSelf$", "-test.v")
	cmd.Env = append(os.Environ(), "SCHED_TEST_CHILD=1", "GOMAXPROCS=4")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	classes := 0
	for _, l := range strings.Fields(string(out)) {
		switch l {
		case "IDL":
			classes++
		case "TS", "FF", "RR", "B":
			t.Fatalf("a thread is not at idle priority (%s):\n%s", l, out)
		}
	}
	if classes < 2 {
		t.Fatalf("want several threads at idle priority:\n%s", out)
	}
}

func strconvPid() string { return strconv.Itoa(os.Getpid()) }

// Pin keeps a process, and the threads it starts later, on the CPUs given.
func TestPin(t *testing.T) {
	cmd := exec.Command("sh", "-c", "read x; grep Cpus_allowed_list /proc/self/status")
	in, _ := cmd.StdinPipe()
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := Pin(cmd.Process.Pid, []int{0}); err != nil {
		t.Fatal(err)
	}
	in.Write([]byte("go\n")) // the grep is a child started after the pin
	in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(out.String()), " "); got != "Cpus_allowed_list: 0" {
		t.Fatalf("child sees %q", got)
	}
}
