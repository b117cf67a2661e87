package sandbox

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The root of every sandbox is a small directory tree prepared once per
// process (the skeleton): mount points for the host's /usr (and /bin, /lib*,
// /sbin where they are not symbolic links into it), a curated /etc, /var/task,
// /var/runtime, /opt, /tmp, /proc and a minimal /dev with its device nodes.
// Each environment gets a read-only clone of it as its root, with the pieces
// attached: nothing is copied per environment.

// hostDirs are the host's directories of programs and libraries the
// sandbox sees read-only.
var hostDirs = []string{"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"}

// etcFiles are copied from the host's /etc (what is missing is skipped);
// etcTrees are copied whole (files and symbolic links).
var (
	etcFiles = []string{"resolv.conf", "ld.so.cache", "protocols", "services", "mime.types", "host.conf", "gai.conf"}
	etcTrees = []string{"ssl/certs", "pki/tls/certs", "pki/ca-trust/extracted", "alternatives"}
	etcLinks = []string{"localtime", "os-release"} // symbolic links are kept as links, files copied
)

// devices are the nodes of /dev: character devices (major, minor).
var devices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// skeleton is a prepared root.
type skeleton struct {
	dir string
	// binds are host paths (absolute) that get a read-only clone at the
	// target under the root, for each environment.
	binds []bind
}

type bind struct {
	src, target string
	dev         bool // a device node (no nodev)
}

// The identity of the function's processes, as Lambda's sbx_user1051.
const (
	sandboxUID = 993
	sandboxGID = 990
)

// buildSkeleton prepares a root under dir.
func buildSkeleton(dir string) (*skeleton, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sweepSkeletons(dir)
	root, err := os.MkdirTemp(dir, "root-"+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, err
	}
	sk := &skeleton{dir: root}
	if err := sk.populate(); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("sandbox root: %w", err)
	}
	return sk, nil
}

func (sk *skeleton) populate() error {
	r := sk.dir
	if err := os.Chmod(r, 0o755); err != nil {
		return err
	}
	for _, d := range hostDirs {
		fi, err := os.Lstat("/" + d)
		switch {
		case err != nil:
			continue
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink("/" + d)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, filepath.Join(r, d)); err != nil {
				return err
			}
		case fi.IsDir():
			if err := os.Mkdir(filepath.Join(r, d), 0o755); err != nil {
				return err
			}
			sk.binds = append(sk.binds, bind{src: "/" + d, target: d})
		}
	}
	for _, d := range []string{"etc", "var/task", "var/runtime", "opt", "tmp", "proc", "dev/shm"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(r, "tmp"), 0o1777); err != nil {
		return err
	}
	if err := sk.populateEtc(filepath.Join(r, "etc")); err != nil {
		return err
	}
	return sk.populateDev(filepath.Join(r, "dev"))
}

func (sk *skeleton) populateEtc(etc string) error {
	files := map[string]string{
		"passwd": "root:x:0:0:root:/root:/sbin/nologin\n" +
			"sbx_user1051:x:993:990::/home/sbx_user1051:/sbin/nologin\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
		"group": "root:x:0:\nsbx_user1051:x:990:\nnobody:x:65534:\n",
		"hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		// Files only: no NSS modules of the host (systemd, sss, ldap, ...).
		"nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, name := range etcFiles {
		if err := copyFile("/etc/"+name, filepath.Join(etc, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, name := range etcLinks {
		src := "/etc/" + name
		fi, err := os.Lstat(src)
		if err != nil {
			continue
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, filepath.Join(etc, name)); err != nil {
				return err
			}
		} else if err := copyFile(src, filepath.Join(etc, name)); err != nil {
			return err
		}
	}
	if _, err := os.Lstat(filepath.Join(etc, "localtime")); err != nil {
		os.Symlink("/usr/share/zoneinfo/Etc/UTC", filepath.Join(etc, "localtime"))
	}
	for _, tree := range etcTrees {
		if err := copyTree("/etc/"+tree, filepath.Join(etc, tree)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, f := range []string{"ssl/openssl.cnf"} {
		if err := copyFile("/etc/"+f, filepath.Join(etc, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (sk *skeleton) populateDev(dev string) error {
	for _, l := range [][2]string{{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
		{"stderr", "/proc/self/fd/2"}} {
		if err := os.Symlink(l[1], filepath.Join(dev, l[0])); err != nil {
			return err
		}
	}
	for _, d := range devices {
		p := filepath.Join(dev, d.name)
		err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor)))
		if err == nil {
			err = os.Chmod(p, 0o666) // past the umask
		}
		if err != nil {
			// No mknod here (e.g. in a container): bind the host's node.
			if werr := os.WriteFile(p, nil, 0o666); werr != nil {
				return werr
			}
			sk.binds = append(sk.binds, bind{src: "/dev/" + d.name, target: "dev/" + d.name, dev: true})
		}
	}
	return nil
}

// sweepSkeletons removes the roots of processes that are gone.
func sweepSkeletons(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "root-")
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if n, err := strconv.Atoi(pid); err == nil && n != os.Getpid() && !processAlive(n) {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// copyTree copies regular files and symbolic links (as links) under src.
func copyTree(src, dst string) error {
	if _, err := os.Lstat(src); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case d.Type().IsRegular():
			return copyFile(p, target)
		}
		return nil
	})
}
