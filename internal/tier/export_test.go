package tier

// Knows reports whether p has heard of a peer holding name.
func (p *Peer) Knows(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holders[name] != nil
}
