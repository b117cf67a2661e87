// Package netns cuts a test's process or sockets off the network: two
// network namespaces joined by a veth pair, relays from one to the host's
// loopback, and the link taken down and up again (Linux, as root).
package netns
