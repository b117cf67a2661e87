package logs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// retentionDays are the retentionInDays values CloudWatch Logs accepts.
var retentionDays = []int{1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}

// setRetention is PutRetentionPolicy (days > 0) and DeleteRetentionPolicy
// (days 0); the group's record is stored before it returns.
func (s *Store) setRetention(ctx context.Context, account, name string, days int) error {
	s.mu.Lock()
	g := s.accounts[account][name]
	if g == nil {
		s.mu.Unlock()
		return errGroupNotFound
	}
	g.Retention = days
	b, _ := json.Marshal(g)
	s.mu.Unlock()
	return s.putGroupRecord(ctx, account, g, b)
}

// retention is a group's retention in days: its policy, else the store's
// default; 0 is never expire. s.mu is held.
func (s *Store) retention(g *group) int {
	if g.Retention > 0 {
		return g.Retention
	}
	return s.cfg.RetentionDays
}

// expireLoop removes expired events at start and every ExpireInterval,
// until the store closes.
func (s *Store) expireLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	ticker := time.NewTicker(s.cfg.ExpireInterval)
	defer ticker.Stop()
	for {
		if err := s.expire(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("logs: removing expired events", "err", err)
		}
		select {
		case <-ticker.C:
		case <-s.stop:
			return
		}
	}
}

// expire removes, as of now, the events of every log group stored longer
// ago than its retention. Events go by the time they were stored, which
// PutLogEvents bounds to 14 days after their timestamps. Each log stream's
// subject is purged on its own.
func (s *Store) expire(ctx context.Context, now time.Time) error {
	type due struct {
		subject, group string
		cutoff         time.Time
	}
	var dues []due
	s.mu.Lock()
	for account, groups := range s.accounts {
		for name, g := range groups {
			days := s.retention(g)
			if days <= 0 {
				continue
			}
			cutoff := now.Add(-time.Duration(days) * 24 * time.Hour)
			for sn := range g.streams {
				dues = append(dues, due{streamSubject(account, name, sn), name, cutoff})
			}
		}
	}
	s.mu.Unlock()
	for _, d := range dues {
		bound, err := s.expiredBefore(ctx, d.subject, d.cutoff)
		if err != nil {
			return fmt.Errorf("log group %s: %w", d.group, err)
		}
		if bound == 0 {
			continue
		}
		if err := s.stream.Purge(ctx, jetstream.WithPurgeSubject(d.subject), jetstream.WithPurgeSequence(bound)); err != nil {
			return fmt.Errorf("log group %s: %w", d.group, err)
		}
	}
	return nil
}

// expiredBefore reads subject's messages from its oldest while they were
// stored before t, and returns the sequence before which they all were
// (0: none was). Purging up to it spares what is stored meanwhile.
func (s *Store) expiredBefore(ctx context.Context, subject string, t time.Time) (uint64, error) {
	var bound uint64
	for seq := uint64(1); ; {
		m, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && !m.Time.Before(t) {
			return bound, nil
		}
		if err != nil {
			return 0, err
		}
		bound = m.Sequence + 1
		seq = bound
	}
}

func validRetention(days int) bool { return slices.Contains(retentionDays, days) }
