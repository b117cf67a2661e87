package logs

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
