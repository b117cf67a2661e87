package cluster

import "path/filepath"

// ConfigFile is the config file `kiln cluster up` wrote for a process, for
// fault tests that start a role of their own.
func (f *File) ConfigFile(name string) string {
	return filepath.Join(f.Dir, "roles", name, bundleConfig)
}
