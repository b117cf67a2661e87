package sandbox

import (
	"reflect"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []mount
	}{
		{"root", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n",
			[]mount{{Root: "/", MountPoint: "/", FSType: "ext4", Source: "/dev/sda1", SuperOptions: []string{"rw", "errors=remount-ro"}}}},
		{"no optional fields", "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n",
			[]mount{{Root: "/", MountPoint: "/sys/fs/cgroup/cpuset", FSType: "cgroup", Source: "cgroup", SuperOptions: []string{"rw", "cpuset"}}}},
		{"several optional fields", "40 22 0:35 /sub /mnt/x rw shared:5 master:2 propagate_from:1 - tmpfs tmpfs rw\n",
			[]mount{{Root: "/sub", MountPoint: "/mnt/x", FSType: "tmpfs", Source: "tmpfs", SuperOptions: []string{"rw"}}}},
		{"escaped paths", `50 22 0:40 /a\040b /mnt/with\040space\011tab\134 rw - tmpfs none rw` + "\n",
			[]mount{{Root: "/a b", MountPoint: "/mnt/with space\ttab\\", FSType: "tmpfs", Source: "none", SuperOptions: []string{"rw"}}}},
		{"bad escape kept", `51 22 0:41 / /mnt/a\09 rw - tmpfs none rw` + "\n",
			[]mount{{Root: "/", MountPoint: `/mnt/a\09`, FSType: "tmpfs", Source: "none", SuperOptions: []string{"rw"}}}},
		{"no super options", "52 22 0:42 / /m rw - fuse\n",
			[]mount{{Root: "/", MountPoint: "/m", FSType: "fuse"}}},
		{"malformed lines skipped", "garbage\n\n1 2 3 4 5 6 7\n53 22 0:43 / /ok rw - proc proc rw\n54 22 0:44 / /nofs rw -\n",
			[]mount{{Root: "/", MountPoint: "/ok", FSType: "proc", Source: "proc", SuperOptions: []string{"rw"}}}},
		{"a hyphen as mount point is not the separator", "55 22 0:45 / - rw - tmpfs none rw\n",
			[]mount{{Root: "/", MountPoint: "-", FSType: "tmpfs", Source: "none", SuperOptions: []string{"rw"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseMountinfo([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestCgroupMounts(t *testing.T) {
	hybrid := `31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
90 35 0:32 / /mnt/memory-again rw - cgroup cgroup rw,memory
`
	v1, unified := cgroupMounts(parseMountinfo([]byte(hybrid)), controllers)
	want := map[string]string{"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuset": "/sys/fs/cgroup/cpuset",
		"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}
	if !reflect.DeepEqual(v1, want) || unified != "/sys/fs/cgroup/unified" {
		t.Errorf("hybrid: %v %q", v1, unified)
	}
	v1, unified = cgroupMounts(parseMountinfo([]byte("30 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")), controllers)
	if len(v1) != 0 || unified != "/sys/fs/cgroup" {
		t.Errorf("unified: %v %q", v1, unified)
	}
}
