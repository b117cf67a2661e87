package roles

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/kiln-dev/kiln/internal/tier"
	"github.com/kiln-dev/kiln/internal/worker"
)

// TestImageMountsOfGoneProcessesAreSwept: what a crashed kiln left under
// DATA/images/PID goes at the next start; a live process's mounts stay.
func TestImageMountsOfGoneProcessesAreSwept(t *testing.T) {
	dir := t.TempDir()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	live := exec.Command("sleep", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { live.Process.Kill(); live.Wait() }()
	for _, pid := range []int{gone.Process.Pid, live.Process.Pid} {
		if err := os.MkdirAll(filepath.Join(dir, "images", strconv.Itoa(pid), "abc"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	st := NewImages(ImagesConfig{Store: Tier{Name: "memory", Store: tier.NewMemory(1 << 20)},
		MountDir: filepath.Join(dir, "images"), Sandbox: worker.ProcessSandbox{}})
	if st.Mounter != nil {
		t.Error("the process backend got an image mounter: it cannot run images")
	}
	if _, err := os.Stat(filepath.Join(dir, "images", strconv.Itoa(gone.Process.Pid))); !os.IsNotExist(err) {
		t.Errorf("mounts of a gone process kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "images", strconv.Itoa(live.Process.Pid), "abc")); err != nil {
		t.Errorf("mounts of a live process removed: %v", err)
	}
}
