package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
)

// zoneNetns is the network of a local cluster whose zones are separate hosts:
// one network namespace per zone with its own address, all on a bridge in
// a hub namespace, which a veth joins to this host (the only interface the
// host gains, on a /24 of its own), so clients here reach the frontends
// and every role-to-role byte crosses a real network stack. Cutting a
// zone's link to the bridge partitions it silently.
type zoneNetns struct {
	Hub    string   `json:"hub"`     // the hub namespace
	Zones  []string `json:"zones"`   // zone i's namespace
	Addrs  []string `json:"addrs"`   // zone i's address
	Links  []string `json:"links"`   // zone i's link on the bridge (in the hub)
	HostIf string   `json:"host_if"` // this host's end
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetns makes the namespaces of n zones (as root, with iproute2). On
// error it removes what it made.
func newNetns(zoneNames []string) (nn *zoneNetns, err error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("--netns needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("--netns needs iproute2: %w", err)
	}
	var b [3]byte
	rand.Read(b[:])
	sfx := hex.EncodeToString(b[:])
	subnet := fmt.Sprintf("10.%d.%d.", 200+int(b[0])%50, b[1])
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if strings.HasPrefix(a.String(), subnet) {
				return nil, fmt.Errorf("--netns: %s0/24 is in use here; try again", subnet)
			}
		}
	}
	nn = &zoneNetns{Hub: "kiln-" + sfx + "-hub", HostIf: "kln" + sfx}
	defer func() {
		if err != nil {
			nn.Remove()
		}
	}()
	steps := [][]string{
		{"netns", "add", nn.Hub},
		{"-n", nn.Hub, "link", "set", "lo", "up"},
		{"-n", nn.Hub, "link", "add", "br0", "type", "bridge"},
		{"-n", nn.Hub, "link", "set", "br0", "up"},
		{"link", "add", nn.HostIf, "type", "veth", "peer", "name", "host", "netns", nn.Hub},
		{"addr", "add", subnet + "1/24", "dev", nn.HostIf},
		{"link", "set", nn.HostIf, "up"},
		{"-n", nn.Hub, "link", "set", "host", "master", "br0"},
		{"-n", nn.Hub, "link", "set", "host", "up"},
	}
	for i, z := range zoneNames {
		ns, link, addr := "kiln-"+sfx+"-"+z, "zone-"+z, fmt.Sprintf("%s%d", subnet, 11+i)
		nn.Zones, nn.Addrs, nn.Links = append(nn.Zones, ns), append(nn.Addrs, addr), append(nn.Links, link)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", nn.Hub, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
			[]string{"-n", nn.Hub, "link", "set", link, "master", "br0"},
			[]string{"-n", nn.Hub, "link", "set", link, "up"})
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return nn, err
		}
	}
	return nn, nil
}

// command runs argv in zone i's namespace.
func (nn *zoneNetns) command(zone int, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", nn.Zones[zone]}, argv...)...)
}

// SetLink takes zone i's link to the others down (a silent partition:
// packets are dropped, connections stall) or up again.
func (nn *zoneNetns) SetLink(zone int, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ipCmd("-n", nn.Hub, "link", "set", nn.Links[zone], state)
}

// Remove deletes the namespaces (their links go with them, the host's end
// of the hub's veth too).
func (nn *zoneNetns) Remove() {
	for _, ns := range append(nn.Zones, nn.Hub) {
		ipCmd("netns", "del", ns)
	}
}
