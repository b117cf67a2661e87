package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// trusted says whether the binary at p may be run as root: Kiln runs
// kiln-agent as the spawner and agent of every environment, so a binary
// that anyone but root (or Kiln's own user) could replace, or that lies in
// a directory where they could swap it, would run their code as root. As
// sshd's StrictModes: p must be a regular executable file, it and every
// directory up to / owned by root or this user, none writable by group
// or others (a sticky directory, like /tmp, is fine: only an entry's owner
// may replace it). A hash built into kiln is not possible with plain `go
// build`, and a hash file beside the binary is as writable as the binary.
func trusted(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable regular file", p)
	}
	for {
		if err := safeOwner(p, fi); err != nil {
			return err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
		if fi, err = os.Stat(p); err != nil {
			return err
		}
	}
}

func safeOwner(p string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner", p)
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d", p, st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 && !(fi.IsDir() && fi.Mode()&os.ModeSticky != 0) {
		return fmt.Errorf("%s is writable by group or others (%v)", p, fi.Mode().Perm())
	}
	return nil
}
