package controlplane

import (
	"errors"
	"net/http"
	"sort"
	"strconv"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// publish makes the next version of f from $LATEST and returns it.
// description, when not nil, overrides $LATEST's description.
func (s *Service) publish(f *metadata.Function, description *string) *api.FunctionConfiguration {
	f.LastVersion++
	n := strconv.Itoa(f.LastVersion)
	v := clone(&f.Latest)
	v.Version = n
	v.FunctionArn = s.arn(f.Account, f.Name, n)
	v.RevisionId = api.NewUUID()
	v.LastModified = s.timestamp()
	// A version is made whole: its last update (its publication) succeeded,
	// which boto3's function_updated waiter on a version reads.
	v.LastUpdateStatus, v.LastUpdateStatusReason, v.LastUpdateStatusReasonCode = "Successful", "", ""
	if description != nil {
		v.Description = *description
	}
	if v.SnapStart != nil && v.SnapStart.ApplyOn == "PublishedVersions" {
		v.SnapStart.OptimizationStatus = "On"
	}
	if f.Versions == nil {
		f.Versions = map[string]*api.FunctionConfiguration{}
	}
	f.Versions[n] = v
	// Publishing is a change of $LATEST too (Lambda gives it a new
	// RevisionId), from which the next PublishVersion knows nothing else changed.
	f.Latest.RevisionId = api.NewUUID()
	f.PublishedFrom = f.Latest.RevisionId
	return v
}

type publishVersionRequest struct {
	CodeSha256  string  `json:"CodeSha256"`
	Description *string `json:"Description"`
	RevisionId  string  `json:"RevisionId"`
}

func (s *Service) publishVersion(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	var req publishVersionRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.Description != nil {
		if err := checkDescription(*req.Description); err != nil {
			return err
		}
	}
	var version *api.FunctionConfiguration
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		if req.RevisionId != "" && req.RevisionId != f.Latest.RevisionId {
			return revisionMismatch()
		}
		if f.Import != nil {
			return s.importInProgress(f)
		}
		if req.CodeSha256 != "" && req.CodeSha256 != f.Latest.CodeSha256 {
			return api.Errorf(api.InvalidParameterValue, "CodeSHA256 (%s) is different from current CodeSHA256 in $LATEST (%s). Please try again with the CodeSHA256 in $LATEST.",
				req.CodeSha256, f.Latest.CodeSha256)
		}
		// Nothing changed since the last version was published from $LATEST:
		// Lambda answers with that version and publishes nothing.
		if last, ok := f.Versions[strconv.Itoa(f.LastVersion)]; ok && f.PublishedFrom == f.Latest.RevisionId {
			version = last
			return errUnchanged
		}
		version = s.publish(f, req.Description)
		return nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		return err
	}
	return c.reply(http.StatusCreated, version)
}

func (s *Service) listVersionsByFunction(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	p, err := listQuery(c.r, 50)
	if err != nil {
		return err
	}
	f, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	page, next, err := paginate(s.allVersions(f), func(cfg *api.FunctionConfiguration) string {
		return versionKey(cfg.FunctionName, cfg.Version)
	}, p)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, api.ListVersionsByFunctionResponse{Versions: page, NextMarker: next})
}

// aliasesOf names the aliases that route to version (primary or weighted).
func aliasesOf(f *metadata.Function, version string) []string {
	var out []string
	for name, a := range f.Aliases {
		if routesTo(a, version) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func routesTo(a *api.AliasConfiguration, version string) bool {
	if a.FunctionVersion == version {
		return true
	}
	if a.RoutingConfig != nil {
		_, ok := a.RoutingConfig.AdditionalVersionWeights[version]
		return ok
	}
	return false
}

type routingConfig struct {
	AdditionalVersionWeights map[string]float64 `json:"AdditionalVersionWeights"`
}

// aliasChange is what CreateAlias and UpdateAlias both set; a nil member
// is left as it is.
type aliasChange struct {
	FunctionVersion *string        `json:"FunctionVersion"`
	Description     *string        `json:"Description"`
	RoutingConfig   *routingConfig `json:"RoutingConfig"`
}

type createAliasRequest struct {
	Name string `json:"Name"`
	aliasChange
}

type updateAliasRequest struct {
	aliasChange
	RevisionId string `json:"RevisionId"`
}

// check validates the members given.
func (ch *aliasChange) check() error {
	if ch.FunctionVersion != nil {
		if err := checkVersionParam(ch.FunctionVersion, "functionVersion"); err != nil {
			return err
		}
	}
	if ch.Description != nil {
		return checkDescription(*ch.Description)
	}
	return nil
}

// applyAlias makes the change to a, an alias of f, under a new revision:
// the version must exist, and the routing (the one given, or a's) must
// suit it.
func (s *Service) applyAlias(f *metadata.Function, a *api.AliasConfiguration, ch aliasChange) error {
	if v := ch.FunctionVersion; v != nil {
		if _, ok := f.Version(*v); !ok {
			return s.notFound(f.Account, f.Name, *v)
		}
		a.FunctionVersion = *v
	}
	if ch.Description != nil {
		a.Description = *ch.Description
	}
	var weights map[string]float64
	if ch.RoutingConfig != nil {
		weights = ch.RoutingConfig.AdditionalVersionWeights
	} else if a.RoutingConfig != nil {
		weights = a.RoutingConfig.AdditionalVersionWeights
	}
	rc, err := s.routing(f, a.FunctionVersion, weights)
	if err != nil {
		return err
	}
	a.RoutingConfig, a.RevisionId = rc, api.NewUUID()
	return nil
}

func checkAliasName(name string) error {
	if len(name) > 128 {
		return validation(name, "name", "Member must have length less than or equal to 128")
	}
	if !aliasRe.MatchString(name) || digitsRe.MatchString(name) {
		return validation(name, "name", "Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)")
	}
	return nil
}

func checkVersionParam(v *string, field string) error {
	if v == nil {
		return validation(nil, field, "Member must not be null")
	}
	if !versionRe.MatchString(*v) {
		return validation(*v, field, `Member must satisfy regular expression pattern: (\$LATEST|[0-9]+)`)
	}
	return nil
}

// routing validates an alias's routing configuration against its primary
// version and f's versions; empty weights mean no routing.
func (s *Service) routing(f *metadata.Function, primary string, weights map[string]float64) (*api.AliasRoutingConfiguration, error) {
	if len(weights) == 0 {
		return nil, nil
	}
	if len(weights) > 1 {
		return nil, api.Errorf(api.InvalidParameterValue, "Number of items in AdditionalVersionWeights cannot be greater than 1")
	}
	for v, w := range weights {
		if w < 0 || w > 1 {
			return nil, api.Errorf(api.InvalidParameterValue, "1 validation error detected: Value '{%s=%v}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0, Member must not be null]", v, w)
		}
		if !digitsRe.MatchString(v) || len(v) > 1024 {
			return nil, api.Errorf(api.InvalidParameterValue, "1 validation error detected: Value '{%s=%v}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 1024, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: [0-9]+, Member must not be null]", v, w)
		}
		if v == primary {
			return nil, api.Errorf(api.InvalidParameterValue, "Invalid function version %s. Function version %s is already included in routing configuration.", v, v)
		}
		if primary == metadata.Latest {
			return nil, api.Errorf(api.InvalidParameterValue, "$LATEST is not supported for an alias pointing to more than 1 version")
		}
		if _, ok := f.Versions[v]; !ok {
			return nil, s.notFound(f.Account, f.Name, v)
		}
	}
	out := make(map[string]float64, len(weights))
	for v, w := range weights {
		out[v] = w
	}
	return &api.AliasRoutingConfiguration{AdditionalVersionWeights: out}, nil
}

func (s *Service) aliasNotFound(account, function, alias string) *api.Error {
	return api.Errorf(api.ResourceNotFound, "Cannot find alias arn: %s", s.arn(account, function, alias))
}

func (s *Service) createAlias(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	var req createAliasRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.Name == "" {
		return validation(nil, "name", "Member must not be null")
	}
	if err := checkAliasName(req.Name); err != nil {
		return err
	}
	if req.FunctionVersion == nil {
		return validation(nil, "functionVersion", "Member must not be null")
	}
	if err := req.check(); err != nil {
		return err
	}
	var alias *api.AliasConfiguration
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		if _, ok := f.Aliases[req.Name]; ok {
			return api.Errorf(api.ResourceConflict, "Alias already exists: %s", s.arn(f.Account, f.Name, req.Name))
		}
		alias = &api.AliasConfiguration{AliasArn: s.arn(f.Account, f.Name, req.Name), Name: req.Name}
		if err := s.applyAlias(f, alias, req.aliasChange); err != nil {
			return err
		}
		if f.Aliases == nil {
			f.Aliases = map[string]*api.AliasConfiguration{}
		}
		f.Aliases[req.Name] = alias
		return nil
	})
	if err != nil {
		return err
	}
	return c.reply(http.StatusCreated, alias)
}

// alias is the function and alias name of an alias's path.
func (s *Service) alias(c *call) (api.FunctionRef, string, error) {
	ref, err := s.function(c, false)
	if err != nil {
		return ref, "", err
	}
	name := c.r.PathValue("Name")
	return ref, name, checkAliasName(name)
}

func (s *Service) getAlias(c *call) error {
	ref, name, err := s.alias(c)
	if err != nil {
		return err
	}
	f, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	a, ok := f.Aliases[name]
	if !ok {
		return s.aliasNotFound(f.Account, f.Name, name)
	}
	return c.reply(http.StatusOK, a)
}

func (s *Service) updateAlias(c *call) error {
	ref, name, err := s.alias(c)
	if err != nil {
		return err
	}
	var req updateAliasRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	var alias *api.AliasConfiguration
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		old, ok := f.Aliases[name]
		if !ok {
			return s.aliasNotFound(f.Account, f.Name, name)
		}
		if req.RevisionId != "" && req.RevisionId != old.RevisionId {
			return revisionMismatch()
		}
		a := *old
		if err := s.applyAlias(f, &a, req.aliasChange); err != nil {
			return err
		}
		f.Aliases[name] = &a
		alias = &a
		return nil
	})
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, alias)
}

// deleteAlias removes an alias; deleting one that does not exist succeeds
// (the model lists no ResourceNotFoundException for DeleteAlias).
func (s *Service) deleteAlias(c *call) error {
	ref, name, err := s.alias(c)
	if err != nil {
		return err
	}
	var gone metadata.Function // the alias's URL, deleted with it as in Lambda
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		if _, ok := f.Aliases[name]; !ok {
			return errUnchanged
		}
		delete(f.Aliases, name)
		delete(f.Provisioned, name)
		// An alias made again under this name starts without them.
		delete(f.EventInvokeConfigs, name)
		gone.URLs = map[string]*metadata.URL{}
		if u, ok := f.URLs[name]; ok {
			gone.URLs[name] = u
			delete(f.URLs, name)
		}
		delete(f.Policies, name)
		return nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		return err
	}
	s.dropURLs(c, &gone, name)
	return c.noContent()
}

func (s *Service) listAliases(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	version := c.r.URL.Query().Get("FunctionVersion")
	if version != "" && !versionRe.MatchString(version) {
		return validation(version, "functionVersion", `Member must satisfy regular expression pattern: (\$LATEST|[0-9]+)`)
	}
	p, err := listQuery(c.r, 10000)
	if err != nil {
		return err
	}
	if c.r.URL.Query().Get("MaxItems") == "" {
		p.maxItems = 50
	}
	f, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	names := make([]string, 0, len(f.Aliases))
	for n, a := range f.Aliases {
		if version == "" || routesTo(a, version) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	aliases := make([]*api.AliasConfiguration, len(names))
	for i, n := range names {
		aliases[i] = f.Aliases[n]
	}
	page, next, err := paginate(aliases, func(a *api.AliasConfiguration) string { return a.Name }, p)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, api.ListAliasesResponse{Aliases: page, NextMarker: next})
}
