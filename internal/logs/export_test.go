package logs

import (
	"context"
	"time"
)

// Expire removes the events expired as of now, as the store does hourly.
func (s *Store) Expire(ctx context.Context, now time.Time) error { return s.expire(ctx, now) }
