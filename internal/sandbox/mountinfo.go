package sandbox

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// mount is one line of /proc/PID/mountinfo (see proc(5)).
type mount struct {
	Root, MountPoint string
	FSType, Source   string
	// SuperOptions are the file system's options (for cgroup v1, its
	// controllers).
	SuperOptions []string
}

// parseMountinfo reads /proc/PID/mountinfo. Lines it cannot read are
// skipped: the kernel writes this file, and a format it does not know must
// not stop the cgroups it does know from being found.
func parseMountinfo(b []byte) []mount {
	var out []mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(f) {
			continue
		}
		m := mount{Root: unescapeOctal(f[3]), MountPoint: unescapeOctal(f[4]), FSType: f[sep+1]}
		if sep+2 < len(f) {
			m.Source = unescapeOctal(f[sep+2])
		}
		if sep+3 < len(f) {
			m.SuperOptions = strings.Split(f[sep+3], ",")
		}
		out = append(out, m)
	}
	return out
}

// unescapeOctal undoes the kernel's escapes of space, tab, newline and
// backslash in paths (\040 and so on).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupMounts finds the cgroup hierarchies among mounts: the v1 hierarchy
// of each controller in want (the first mount of each) and the first
// unified (v2) hierarchy.
func cgroupMounts(mounts []mount, want []string) (v1 map[string]string, unified string) {
	v1 = map[string]string{}
	for _, m := range mounts {
		switch m.FSType {
		case "cgroup2":
			if unified == "" {
				unified = m.MountPoint
			}
		case "cgroup":
			for _, o := range m.SuperOptions {
				for _, c := range want {
					if o == c && v1[c] == "" {
						v1[c] = m.MountPoint
					}
				}
			}
		}
	}
	return v1, unified
}
