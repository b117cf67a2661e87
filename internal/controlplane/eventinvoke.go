package controlplane

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// Event-invoke configs: a function's (version's, alias's) settings for
// asynchronous invocation, kept in the function's metadata by qualifier.
// The pollers (package eventinvoke) read them when they run an event.

type eventInvokeConfigRequest struct {
	MaximumRetryAttempts     *int                   `json:"MaximumRetryAttempts"`
	MaximumEventAgeInSeconds *int                   `json:"MaximumEventAgeInSeconds"`
	DestinationConfig        *api.DestinationConfig `json:"DestinationConfig"`
}

var destinationRe = regexp.MustCompile(`^$|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:([a-z]{2}(-gov)?-[a-z]+-\d{1})?:(\d{12})?:(.*)`)

const destinationPattern = `^$|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:([a-z]{2}(-gov)?-[a-z]+-\d{1})?:(\d{12})?:(.*)`

// checkEventInvokeConfig is the model validation of Put and Update.
func checkEventInvokeConfig(req *eventInvokeConfigRequest) error {
	if n := req.MaximumRetryAttempts; n != nil {
		if err := between(*n, "maximumRetryAttempts", 0, 2); err != nil {
			return err
		}
	}
	if n := req.MaximumEventAgeInSeconds; n != nil {
		if err := between(*n, "maximumEventAgeInSeconds", 60, 21600); err != nil {
			return err
		}
	}
	if d := req.DestinationConfig; d != nil {
		for _, dest := range []struct {
			field string
			arn   *string
		}{{"destinationConfig.onSuccess.destination", successArn(d)}, {"destinationConfig.onFailure.destination", failureArn(d)}} {
			if dest.arn == nil {
				continue
			}
			if len(*dest.arn) > 350 {
				return validation(*dest.arn, dest.field, "Member must have length less than or equal to 350")
			}
			if !destinationRe.MatchString(*dest.arn) {
				return validation(*dest.arn, dest.field, "Member must satisfy regular expression pattern: "+destinationPattern)
			}
		}
	}
	if req.MaximumRetryAttempts == nil && req.MaximumEventAgeInSeconds == nil && req.DestinationConfig == nil {
		return api.Errorf(api.InvalidParameterValue, "You must specify at least one of error handling or destination setting.")
	}
	return nil
}

func successArn(d *api.DestinationConfig) *string {
	if d.OnSuccess == nil {
		return nil
	}
	return &d.OnSuccess.Destination
}

func failureArn(d *api.DestinationConfig) *string {
	if d.OnFailure == nil {
		return nil
	}
	return &d.OnFailure.Destination
}

// checkDestinations refuses destinations Kiln cannot deliver to, with
// Lambda's message plus the reason.
func (s *Service) checkDestinations(c *call, function string, d *api.DestinationConfig) error {
	if d == nil {
		return nil
	}
	for _, arn := range []*string{successArn(d), failureArn(d)} {
		if arn == nil || *arn == "" {
			continue
		}
		dest, err := api.ParseDestination(*arn)
		if err == nil && (dest.Region != s.cfg.Region || dest.Account != c.caller.Account) {
			err = fmt.Errorf("Kiln delivers only to destinations in the function's own account (%s) and region (%s)", c.caller.Account, s.cfg.Region)
		}
		if err == nil && dest.Kind == api.DestinationFunction {
			if dest.Name == function {
				return api.Errorf(api.InvalidParameterValue, "You can't specify the function as a destination for itself.")
			}
			if _, gerr := s.store.Get(c.ctx, c.caller.Account, dest.Name); errors.Is(gerr, metadata.ErrNotFound) {
				return api.Errorf(api.InvalidParameterValue, "The destination ARN %s is invalid.", *arn)
			} else if gerr != nil {
				return gerr
			}
		}
		if err != nil {
			return api.Errorf(api.InvalidParameterValue, "The provided destination config %s is invalid. %v.", destinationString(d), err)
		}
	}
	return nil
}

// destinationString is Lambda's rendering of a DestinationConfig in errors.
func destinationString(d *api.DestinationConfig) string {
	part := func(kind string, arn *string) string {
		if arn == nil || *arn == "" {
			return "null"
		}
		return kind + "(destination=" + *arn + ")"
	}
	return "DestinationConfig(onSuccess=" + part("OnSuccess", successArn(d)) + ", onFailure=" + part("OnFailure", failureArn(d)) + ")"
}

// checkDeadLetterTarget accepts a dead-letter queue Kiln can deliver to: a
// Kiln queue (arn:aws:sqs:REGION:ACCOUNT:NAME) of the function's account
// and region. Called by apply for DeadLetterConfig.TargetArn.
func checkDeadLetterTarget(cfg *api.FunctionConfiguration, arn string) error {
	if arn == "" {
		return nil
	}
	fn, _ := api.ParseFunctionRef(cfg.FunctionArn)
	dest, err := api.ParseDestination(arn)
	switch {
	case err != nil:
	case dest.Kind != api.DestinationQueue:
		err = fmt.Errorf("a dead-letter queue must be a Kiln queue (arn:aws:sqs:REGION:ACCOUNT:NAME), not a %s", dest.Kind)
	case fn.Account != "" && (dest.Account != fn.Account || dest.Region != fn.Region):
		err = fmt.Errorf("Kiln delivers only to queues in the function's own account (%s) and region (%s)", fn.Account, fn.Region)
	}
	if err != nil {
		return api.Errorf(api.InvalidParameterValue, "The provided target ARN %s is invalid: %v.", arn, err)
	}
	return nil
}

func (s *Service) putFunctionEventInvokeConfig(c *call) error {
	return s.writeEventInvokeConfig(c, false)
}

func (s *Service) updateFunctionEventInvokeConfig(c *call) error {
	return s.writeEventInvokeConfig(c, true)
}

// writeEventInvokeConfig is Put (replace: what is not sent is removed) and
// Update (change what is sent; the config must exist).
func (s *Service) writeEventInvokeConfig(c *call, update bool) error {
	ref, err := s.function(c, true)
	if err != nil {
		return err
	}
	var req eventInvokeConfigRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := checkEventInvokeConfig(&req); err != nil {
		return err
	}
	q := orLatest(ref.Qualifier)
	f, err := s.get(c, ref.Name, ref.Qualifier)
	if err != nil {
		return err
	}
	if _, err := s.resolve(f, q); err != nil {
		return err
	}
	if err := s.checkDestinations(c, ref.Name, req.DestinationConfig); err != nil {
		return err
	}
	var out *api.FunctionEventInvokeConfig
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		if _, err := s.resolve(f, q); err != nil {
			return err
		}
		cur := f.EventInvokeConfigs[q]
		next := &api.FunctionEventInvokeConfig{}
		if update {
			if cur == nil {
				return s.noEventInvokeConfig(c.caller.Account, ref.Name, q)
			}
			*next = *cur
		}
		next.FunctionArn = s.arn(c.caller.Account, ref.Name, q)
		next.LastModified = float64(s.cfg.Now().UnixMilli()) / 1000
		if req.MaximumRetryAttempts != nil || !update {
			next.MaximumRetryAttempts = req.MaximumRetryAttempts
		}
		if req.MaximumEventAgeInSeconds != nil || !update {
			next.MaximumEventAgeInSeconds = req.MaximumEventAgeInSeconds
		}
		if req.DestinationConfig != nil || !update {
			next.DestinationConfig = normalizeDestinations(req.DestinationConfig)
		}
		if f.EventInvokeConfigs == nil {
			f.EventInvokeConfigs = map[string]*api.FunctionEventInvokeConfig{}
		}
		f.EventInvokeConfigs[q] = next
		out = next
		return nil
	})
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, out)
}

// normalizeDestinations is a DestinationConfig as Lambda answers it: both
// members present, empty when unset.
func normalizeDestinations(d *api.DestinationConfig) *api.DestinationConfig {
	out := &api.DestinationConfig{OnSuccess: &api.OnSuccess{}, OnFailure: &api.OnFailure{}}
	if d != nil && d.OnSuccess != nil {
		out.OnSuccess.Destination = d.OnSuccess.Destination
	}
	if d != nil && d.OnFailure != nil {
		out.OnFailure.Destination = d.OnFailure.Destination
	}
	return out
}

func orLatest(q string) string {
	if q == "" {
		return metadata.Latest
	}
	return q
}

func (s *Service) noEventInvokeConfig(account, name, qualifier string) *api.Error {
	return api.Errorf(api.ResourceNotFound, "The function %s doesn't have an EventInvokeConfig", s.arn(account, name, qualifier))
}

// eventInvokeConfig reads the config of the qualifier asked for; a config
// left behind by a deleted version or alias does not count.
func (s *Service) eventInvokeConfig(c *call) (*metadata.Function, string, error) {
	ref, err := s.function(c, true)
	if err != nil {
		return nil, "", err
	}
	q := orLatest(ref.Qualifier)
	f, err := s.store.Get(c.ctx, c.caller.Account, ref.Name)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, "", s.noEventInvokeConfig(c.caller.Account, ref.Name, q)
	}
	if err != nil {
		return nil, "", err
	}
	if _, err := s.resolve(f, q); err != nil || f.EventInvokeConfigs[q] == nil {
		return nil, "", s.noEventInvokeConfig(c.caller.Account, ref.Name, q)
	}
	return f, q, nil
}

func (s *Service) getFunctionEventInvokeConfig(c *call) error {
	f, q, err := s.eventInvokeConfig(c)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, f.EventInvokeConfigs[q])
}

func (s *Service) deleteFunctionEventInvokeConfig(c *call) error {
	f, q, err := s.eventInvokeConfig(c)
	if err != nil {
		return err
	}
	_, err = s.modify(c, f.Name, func(f *metadata.Function) error {
		if f.EventInvokeConfigs[q] == nil {
			return errUnchanged
		}
		delete(f.EventInvokeConfigs, q)
		return nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		return err
	}
	return c.noContent()
}

func (s *Service) listFunctionEventInvokeConfigs(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	page, err := listQueryUpTo(c.r, 50)
	if err != nil {
		return err
	}
	f, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	configs := make([]*api.FunctionEventInvokeConfig, 0, len(f.EventInvokeConfigs))
	for q, cfg := range f.EventInvokeConfigs {
		if _, err := s.resolve(f, q); err == nil {
			configs = append(configs, cfg)
		}
	}
	sort.Slice(configs, func(i, j int) bool { return configs[i].FunctionArn < configs[j].FunctionArn })
	items, next, err := paginate(configs, func(c *api.FunctionEventInvokeConfig) string { return c.FunctionArn }, page)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, api.ListFunctionEventInvokeConfigsResponse{FunctionEventInvokeConfigs: items, NextMarker: next})
}
