package cluster

// RoleEnv is the environment `kiln cluster up` gives every role, for fault
// tests that start a role of their own.
func (f *File) RoleEnv() []string { return f.identity.env() }
