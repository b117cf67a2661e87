package sandbox

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A tree shown to an environment must not tell where it is on the host:
// /proc/self/mountinfo prints, for each mount, the path of its root within
// its file system, and a clone of a directory of the host's file system
// would print the data directory's path (e.g. .../code/trees/HASH). So the
// trees are read-only overlays, whose root is their own, with the
// directory as their layer named by a /proc/self/fd path: that name is
// all mountinfo shows of it.

// hider makes such overlays. Without the overlay file system on the host
// it clones the directories instead, and mountinfo shows them.
type hider struct {
	empty int // the second, empty layer (overlay needs two without an upper one); -1: none
}

// newHider makes the empty layer in dir, and tries an overlay of probe.
func newHider(dir, probe string) (*hider, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	h := &hider{empty: fd}
	tree, err := h.overlay(probe, readOnly)
	if err != nil {
		unix.Close(fd)
		return &hider{empty: -1}, nil
	}
	unix.Close(tree)
	return h, nil
}

// tree is a detached read-only mount of dir with attributes attr: an
// overlay, or a clone where overlay cannot have dir as a layer (a file
// system it does not stack on), which only shows the path.
func (h *hider) tree(dir string, attr uint64) (int, error) {
	if h.empty >= 0 {
		if fd, err := h.overlay(dir, attr); err == nil {
			return fd, nil
		}
	}
	return cloneTree(dir, true, attr)
}

func (h *hider) overlay(dir string, attr uint64) (int, error) {
	src, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(src)
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("overlay: %w", err)
	}
	defer unix.Close(fsfd)
	layers := fmt.Sprintf("/proc/self/fd/%d:/proc/self/fd/%d", src, h.empty)
	if err := unix.FsconfigSetString(fsfd, "lowerdir", layers); err != nil {
		return -1, fmt.Errorf("overlay of %s: %w", dir, err)
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("overlay of %s: %w", dir, err)
	}
	fd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(attr))
	if err != nil {
		return -1, fmt.Errorf("overlay of %s: %w", dir, err)
	}
	return fd, nil
}

// cloneTree makes a detached read-only clone of the tree at path.
func cloneTree(path string, recursive bool, attr uint64) (int, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, filepath.Clean(path), flags)
	if err != nil {
		return -1, err
	}
	setFlags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		setFlags |= unix.AT_RECURSIVE
	}
	if err := unix.MountSetattr(fd, "", setFlags, &unix.MountAttr{Attr_set: attr}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}
