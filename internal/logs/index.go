package logs

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

var (
	errGroupNotFound  = errf(resourceNotFound, "The specified log group does not exist.")
	errStreamNotFound = errf(resourceNotFound, "The specified log stream does not exist.")
)

// groupInfo is a log group as DescribeLogGroups shows it.
type groupInfo struct {
	Name      string
	Created   int64
	Bytes     int64
	Retention int // days, 0: never expire
}

// groups lists account's log groups by name.
func (s *Store) groups(account string) []groupInfo {
	s.mu.Lock()
	out := make([]groupInfo, 0, len(s.accounts[account]))
	for _, g := range s.accounts[account] {
		gi := groupInfo{Name: g.Name, Created: g.Created, Retention: s.retention(g)}
		for _, st := range g.streams {
			gi.Bytes += st.Bytes
		}
		out = append(out, gi)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b groupInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// streams copies a group's log streams (unsorted).
func (s *Store) streams(account, group string) ([]stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.accounts[account][group]
	if g == nil {
		return nil, errGroupNotFound
	}
	out := make([]stream, 0, len(g.streams))
	for _, st := range g.streams {
		out = append(out, *st)
	}
	return out, nil
}

func (s *Store) groupSkew(account, group string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.accounts[account][group]
	if g == nil {
		return 0, errGroupNotFound
	}
	return g.Skew, nil
}

func (s *Store) streamSkew(account, group, stream string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.accounts[account][group]
	if g == nil {
		return 0, errGroupNotFound
	}
	if g.streams[stream] == nil {
		return 0, errStreamNotFound
	}
	return g.Skew, nil
}

// createGroup is CreateLogGroup.
func (s *Store) createGroup(ctx context.Context, account, name string) error {
	now := time.Now().UnixMilli()
	s.mu.Lock()
	g, isNew := s.ensureGroupNew(account, name, now)
	var b []byte
	if isNew {
		b, _ = json.Marshal(g)
	}
	s.mu.Unlock()
	if !isNew {
		return errf(resourceAlreadyExists, "The specified log group already exists")
	}
	return s.putGroupRecord(ctx, account, g, b)
}

// putGroupRecord stores b as g's record now and notes its revision.
func (s *Store) putGroupRecord(ctx context.Context, account string, g *group, b []byte) error {
	rev, err := s.kv.Put(ctx, groupKey(account, g.Name), b)
	if err != nil {
		return fmt.Errorf("logs index: %w", err)
	}
	s.mu.Lock()
	g.rev = max(g.rev, rev)
	s.mu.Unlock()
	return nil
}

// createStream is CreateLogStream.
func (s *Store) createStream(ctx context.Context, account, group, name string) error {
	now := time.Now().UnixMilli()
	s.mu.Lock()
	g := s.accounts[account][group]
	if g == nil {
		s.mu.Unlock()
		return errGroupNotFound
	}
	if g.streams[name] != nil {
		s.mu.Unlock()
		return errf(resourceAlreadyExists, "The specified log stream already exists")
	}
	st := &stream{Name: name, Created: now}
	g.streams[name] = st
	b, _ := json.Marshal(st)
	s.mu.Unlock()
	rev, err := s.kv.Put(ctx, streamKey(account, group, name), b)
	if err != nil {
		return fmt.Errorf("logs index: %w", err)
	}
	s.mu.Lock()
	st.rev = max(st.rev, rev)
	s.mu.Unlock()
	return nil
}

// deleteGroup is DeleteLogGroup: the group, its streams and their events.
func (s *Store) deleteGroup(ctx context.Context, account, name string) error {
	s.mu.Lock()
	g := s.accounts[account][name]
	if g == nil {
		s.mu.Unlock()
		return errGroupNotFound
	}
	delete(s.accounts[account], name)
	keys := []string{groupKey(account, name)}
	delete(s.dirty, dirtyKey{account, name, ""})
	for sn := range g.streams {
		keys = append(keys, streamKey(account, name, sn))
		delete(s.dirty, dirtyKey{account, name, sn})
	}
	s.mu.Unlock()
	if err := s.stream.Purge(ctx, jetstream.WithPurgeSubject(groupSubjects(account, name))); err != nil {
		return fmt.Errorf("logs: purging %s: %w", name, err)
	}
	return s.deleteKeys(ctx, keys)
}

// deleteStream is DeleteLogStream.
func (s *Store) deleteStream(ctx context.Context, account, group, name string) error {
	s.mu.Lock()
	g := s.accounts[account][group]
	if g == nil {
		s.mu.Unlock()
		return errGroupNotFound
	}
	if g.streams[name] == nil {
		s.mu.Unlock()
		return errStreamNotFound
	}
	delete(g.streams, name)
	delete(s.dirty, dirtyKey{account, group, name})
	s.mu.Unlock()
	if err := s.stream.Purge(ctx, jetstream.WithPurgeSubject(streamSubject(account, group, name))); err != nil {
		return fmt.Errorf("logs: purging %s: %w", name, err)
	}
	return s.deleteKeys(ctx, []string{streamKey(account, group, name)})
}

func (s *Store) deleteKeys(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if err := s.kv.Delete(ctx, k); err != nil {
			return fmt.Errorf("logs index: %w", err)
		}
	}
	return nil
}

// loadIndex reads the bucket and keeps watching it for other processes'
// changes.
func (s *Store) loadIndex(ctx context.Context) error {
	w, err := s.kv.WatchAll(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("logs index: %w", err)
	}
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				s.watcher = w
				go s.watch(w)
				return nil
			}
			s.applyIndex(e)
		case <-ctx.Done():
			w.Stop()
			return ctx.Err()
		}
	}
}

func (s *Store) watch(w jetstream.KeyWatcher) {
	for e := range w.Updates() {
		if e != nil {
			s.applyIndex(e)
		}
	}
}

// Index keys: <account>.g.<group> and <account>.s.<group>.<stream>.
func groupKey(account, g string) string { return escape(account) + ".g." + escape(g) }

func streamKey(account, g, st string) string {
	return escape(account) + ".s." + escape(g) + "." + escape(st)
}

// applyIndex merges one bucket entry into the in-memory index.
func (s *Store) applyIndex(e jetstream.KeyValueEntry) {
	parts := strings.Split(e.Key(), ".")
	if len(parts) < 3 {
		return
	}
	account, err := unescape(parts[0])
	if err != nil {
		return
	}
	gname, err := unescape(parts[2])
	if err != nil {
		return
	}
	del := e.Operation() != jetstream.KeyValuePut
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case parts[1] == "g" && len(parts) == 3:
		g := s.accounts[account][gname]
		if del {
			if g != nil && !g.dirty && g.rev <= e.Revision() {
				delete(s.accounts[account], gname)
			}
			return
		}
		var v group
		if json.Unmarshal(e.Value(), &v) != nil {
			return
		}
		if g == nil {
			g = s.ensureGroup(account, gname, v.Created)
		}
		g.Created = minNonZero(g.Created, v.Created)
		g.Skew = max(g.Skew, v.Skew)
		if e.Revision() >= g.rev {
			g.Retention = v.Retention // a policy is set, or removed, by the latest record
		}
		g.rev = max(g.rev, e.Revision())
	case parts[1] == "s" && len(parts) == 4:
		sname, err := unescape(parts[3])
		if err != nil {
			return
		}
		g := s.accounts[account][gname]
		if del {
			if g != nil {
				if st := g.streams[sname]; st != nil && !st.dirty && st.rev <= e.Revision() {
					delete(g.streams, sname)
				}
			}
			return
		}
		var v stream
		if json.Unmarshal(e.Value(), &v) != nil {
			return
		}
		if g == nil {
			g = s.ensureGroup(account, gname, v.Created)
		}
		st := g.streams[sname]
		if st == nil {
			st = &stream{Name: sname, Created: v.Created}
			g.streams[sname] = st
		}
		st.Created = minNonZero(st.Created, v.Created)
		st.First = minNonZero(st.First, v.First)
		st.Last = max(st.Last, v.Last)
		st.LastIngestion = max(st.LastIngestion, v.LastIngestion)
		st.Bytes = max(st.Bytes, v.Bytes)
		st.rev = max(st.rev, e.Revision())
	}
}

func minNonZero(a, b int64) int64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// ensureGroup returns the group, creating it in memory; s.mu is held.
func (s *Store) ensureGroup(account, name string, created int64) *group {
	g, _ := s.ensureGroupNew(account, name, created)
	return g
}

func (s *Store) ensureGroupNew(account, name string, created int64) (*group, bool) {
	gs := s.accounts[account]
	if gs == nil {
		gs = map[string]*group{}
		s.accounts[account] = gs
	}
	g := gs[name]
	if g != nil {
		return g, false
	}
	g = &group{Name: name, Created: created, streams: map[string]*stream{}}
	gs[name] = g
	return g, true
}

// markGroup queues g's record for writing; s.mu is held.
func (s *Store) markGroup(account string, g *group) {
	if !g.dirty {
		g.dirty = true
		s.dirty[dirtyKey{account, g.Name, ""}] = struct{}{}
	}
}

// writeIndex writes the records changed since the last call.
func (s *Store) writeIndex() {
	s.indexMu.Lock() // one writer at a time, so that puts land in order
	defer s.indexMu.Unlock()
	type rec struct {
		key string
		val []byte
		set func(rev uint64)
	}
	s.mu.Lock()
	recs := make([]rec, 0, len(s.dirty))
	for k := range s.dirty {
		g := s.accounts[k.account][k.group]
		if g == nil {
			continue
		}
		if k.stream == "" {
			g.dirty = false
			b, _ := json.Marshal(g)
			recs = append(recs, rec{groupKey(k.account, k.group), b, func(r uint64) { g.rev = max(g.rev, r) }})
			continue
		}
		st := g.streams[k.stream]
		if st == nil {
			continue
		}
		st.dirty = false
		b, _ := json.Marshal(st)
		recs = append(recs, rec{streamKey(k.account, k.group, k.stream), b, func(r uint64) { st.rev = max(st.rev, r) }})
	}
	clear(s.dirty)
	s.mu.Unlock()
	if len(recs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.ending, 10*time.Second)
	defer cancel()
	for _, r := range recs {
		rev, err := s.kv.Put(ctx, r.key, r.val)
		if err != nil {
			s.log.Error("logs: writing index failed", "key", r.key, "err", err)
			continue
		}
		s.mu.Lock()
		r.set(rev)
		s.mu.Unlock()
	}
}
