package controlplane

import (
	"math"
	"net/http"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/metadata"
)

type putConcurrencyRequest struct {
	ReservedConcurrentExecutions *int `json:"ReservedConcurrentExecutions"`
}

// minUnreserved is what Lambda keeps out of reach of reservations: 100 of
// the account's concurrency, or all of it when the limit is smaller.
func (s *Service) minUnreserved() int { return min(100, s.cfg.AccountConcurrency) }

func (s *Service) putFunctionConcurrency(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	var req putConcurrencyRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	n := req.ReservedConcurrentExecutions
	others, found, unlock, err := s.reservation(c, ref.Name, n, "reservedConcurrentExecutions", 0)
	if err != nil {
		return err
	}
	defer unlock()
	if !found {
		return s.notFound(c.caller.Account, ref.Name, "")
	}
	if others+*n > s.cfg.AccountConcurrency-s.minUnreserved() {
		return api.Errorf(api.InvalidParameterValue, "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [%d].", s.minUnreserved())
	}
	value := *n
	if _, err := s.modify(c, ref.Name, func(f *metadata.Function) error {
		provisioned := 0
		for _, p := range f.Provisioned {
			provisioned += p.Requested
		}
		if value < provisioned {
			return api.Errorf(api.InvalidParameterValue, "ReservedConcurrentExecutions %d should not be lower than function's total provisioned concurrency [%d].", value, provisioned)
		}
		f.ReservedConcurrency = &value
		return nil
	}); err != nil {
		return err
	}
	return c.reply(http.StatusOK, api.Concurrency{ReservedConcurrentExecutions: &value})
}

func (s *Service) getFunctionConcurrency(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	f, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, api.Concurrency{ReservedConcurrentExecutions: f.ReservedConcurrency})
}

func (s *Service) deleteFunctionConcurrency(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	unlock, err := s.lockConcurrency(c)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.modify(c, ref.Name, func(f *metadata.Function) error {
		f.ReservedConcurrency = nil
		return nil
	}); err != nil {
		return err
	}
	return c.noContent()
}

// lockConcurrency takes the account's concurrency lock, which serializes
// reservations (reserved and provisioned) across every control plane.
func (s *Service) lockConcurrency(c *call) (func(), error) {
	return s.store.Lock(c.ctx, "concurrency-"+c.caller.Account, 10*time.Second)
}

// reservation checks a reservation's count n (member names it in Lambda's
// messages; it must be at least least), takes the account's concurrency
// lock and sums what the account's functions other than name reserve,
// saying whether name exists. The caller unlocks after its write: the sum
// reads every function of the account, and holding the lock until the
// write keeps two concurrent reservations from both passing the check.
func (s *Service) reservation(c *call, name string, n *int, member string, least int) (others int, found bool, unlock func(), err error) {
	if n == nil {
		return 0, false, nil, validation(nil, member, "Member must not be null")
	}
	if err := between(*n, member, least, math.MaxInt); err != nil {
		return 0, false, nil, err
	}
	if unlock, err = s.lockConcurrency(c); err != nil {
		return 0, false, nil, err
	}
	if others, found, err = s.reservedByOthers(c, name); err != nil {
		unlock()
		return 0, false, nil, err
	}
	return others, found, unlock, nil
}

// reservedByOthers sums the reserved concurrency of the account's functions
// other than name, and says whether name exists.
func (s *Service) reservedByOthers(c *call, name string) (sum int, found bool, err error) {
	fns, err := s.store.List(c.ctx, c.caller.Account)
	if err != nil {
		return 0, false, err
	}
	for _, f := range fns {
		if f.Name == name {
			found = true
		} else if f.ReservedConcurrency != nil {
			sum += *f.ReservedConcurrency
		}
	}
	return sum, found, nil
}
