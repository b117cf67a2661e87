package controlplane

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/funcurl"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// Function URLs (the /2021-10-31/functions/{FunctionName}/url operations).
// A URL belongs to $LATEST (no qualifier) or to an alias; its configuration
// is kept with the function, and its id is indexed in the same bucket so a
// frontend finds the function a host name or path names (metadata.PutURL).

// urlRoutes are the function URL operations' routes.
func (s *Service) urlRoutes() []route {
	const u = "/2021-10-31/functions/{FunctionName}/url"
	return []route{
		{"POST " + u, "CreateFunctionUrlConfig", s.createFunctionURLConfig},
		{"GET " + u, "GetFunctionUrlConfig", s.getFunctionURLConfig},
		{"PUT " + u, "UpdateFunctionUrlConfig", s.updateFunctionURLConfig},
		{"DELETE " + u, "DeleteFunctionUrlConfig", s.deleteFunctionURLConfig},
		{"GET " + u + "s", "ListFunctionUrlConfigs", s.listFunctionURLConfigs},
	}
}

// urlInput is the body of CreateFunctionUrlConfig and UpdateFunctionUrlConfig.
type urlInput struct {
	AuthType   *string   `json:"AuthType"`
	Cors       *api.Cors `json:"Cors"`
	InvokeMode *string   `json:"InvokeMode"`
}

func (in *urlInput) validate(create bool) error {
	if in.AuthType == nil && create {
		return validation(nil, "authType", "Member must not be null")
	}
	if in.AuthType != nil && *in.AuthType != "NONE" && *in.AuthType != "AWS_IAM" {
		return validation(*in.AuthType, "authType", "Member must satisfy enum value set: [NONE, AWS_IAM]")
	}
	if in.InvokeMode != nil && *in.InvokeMode != "BUFFERED" && *in.InvokeMode != "RESPONSE_STREAM" {
		return validation(*in.InvokeMode, "invokeMode", "Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]")
	}
	if c := in.Cors; c != nil {
		lists := []struct {
			field        string
			items        []string
			maxN, maxLen int
			minLen       int
		}{
			{"cors.allowOrigins", c.AllowOrigins, 100, 253, 1},
			{"cors.allowMethods", c.AllowMethods, 6, 6, 0},
			{"cors.allowHeaders", c.AllowHeaders, 100, 1024, 0},
			{"cors.exposeHeaders", c.ExposeHeaders, 100, 1024, 0},
		}
		for _, l := range lists {
			if len(l.items) > l.maxN {
				return validation(l.items, l.field, fmt.Sprintf("Member must have length less than or equal to %d", l.maxN))
			}
			for _, it := range l.items {
				if len(it) > l.maxLen || len(it) < l.minLen {
					return validation(it, l.field+".member", fmt.Sprintf("Member must have length less than or equal to %d", l.maxLen))
				}
			}
		}
		if c.MaxAge != nil && (*c.MaxAge < 0 || *c.MaxAge > 86400) {
			return validation(*c.MaxAge, "cors.maxAge", "Member must have value less than or equal to 86400")
		}
	}
	return nil
}

// urlTarget parses the function and the URL's qualifier ("" for the
// function's own URL, else an alias) and checks the function and alias
// exist.
func (s *Service) urlTarget(c *call) (api.FunctionRef, *metadata.Function, error) {
	ref, err := api.ParseFunctionRef(c.r.PathValue("FunctionName"))
	if err != nil {
		return ref, nil, err
	}
	if q := c.r.URL.Query().Get("Qualifier"); q != "" {
		if !aliasRe.MatchString(q) || digitsRe.MatchString(q) {
			return ref, nil, validation(q, "qualifier", `Member must satisfy regular expression pattern: ((?!^\d+$)^[0-9a-zA-Z-_]+$)`)
		}
		if ref, err = ref.WithQualifier(q); err != nil {
			return ref, nil, err
		}
	}
	if err := s.checkOwner(c, ref); err != nil {
		return ref, nil, err
	}
	if ref.Qualifier == metadata.Latest {
		ref.Qualifier = ""
	}
	if digitsRe.MatchString(ref.Qualifier) {
		return ref, nil, api.Errorf(api.InvalidParameterValue, "Function URLs are supported on an alias or $LATEST only, not on version %s.", ref.Qualifier)
	}
	f, err := s.get(c, ref.Name, ref.Qualifier)
	if err != nil {
		return ref, nil, err
	}
	if _, ok := f.Aliases[ref.Qualifier]; ref.Qualifier != "" && !ok {
		return ref, nil, s.notFound(c.caller.Account, ref.Name, ref.Qualifier)
	}
	return ref, f, nil
}

func urlKey(qualifier string) string {
	if qualifier == "" {
		return metadata.Latest
	}
	return qualifier
}

// urlConfig is u as the API shows it, its URL on the host c came to.
func (s *Service) urlConfig(c *call, account, name, qualifier string, u *metadata.URL, withModified bool) *api.FunctionURLConfig {
	scheme := "http"
	if c.r.TLS != nil {
		scheme = "https"
	}
	if p := c.r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		scheme = p
	}
	if qualifier == metadata.Latest {
		qualifier = ""
	}
	out := &api.FunctionURLConfig{
		FunctionUrl: scheme + "://" + funcurl.URLHost(u.ID, s.cfg.Region, c.r.Host) + "/",
		FunctionArn: s.arn(account, name, qualifier), AuthType: u.AuthType, Cors: u.Cors,
		CreationTime: u.CreationTime, InvokeMode: u.InvokeMode,
	}
	if withModified {
		out.LastModifiedTime = u.LastModifiedTime
	}
	return out
}

// newURLID is a URL id as Lambda's: 32 lowercase letters and digits.
func newURLID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [32]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)] // 256 % 36 skews a few letters slightly; ids need not be uniform, only unguessable enough not to collide
	}
	return string(b[:])
}

func (s *Service) createFunctionURLConfig(c *call) error {
	var in urlInput
	if err := c.decode(&in); err != nil {
		return err
	}
	if err := in.validate(true); err != nil {
		return err
	}
	ref, _, err := s.urlTarget(c)
	if err != nil {
		return err
	}
	now := s.timestamp()
	u := &metadata.URL{ID: newURLID(), AuthType: *in.AuthType, InvokeMode: "BUFFERED", Cors: in.Cors,
		CreationTime: now, LastModifiedTime: now}
	if in.InvokeMode != nil {
		u.InvokeMode = *in.InvokeMode
	}
	// The index entry first: a URL the function lists is always found by
	// its id. An entry whose write to the function then fails names a URL
	// the function does not have, which a frontend treats as unknown.
	if err := s.store.PutURL(c.ctx, u.ID, metadata.URLRef{Account: c.caller.Account, Name: ref.Name, Qualifier: urlKey(ref.Qualifier)}); err != nil {
		return err
	}
	arn := s.arn(c.caller.Account, ref.Name, ref.Qualifier)
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		if _, ok := f.Aliases[ref.Qualifier]; ref.Qualifier != "" && !ok {
			return s.notFound(c.caller.Account, ref.Name, ref.Qualifier)
		}
		if _, ok := f.URLs[urlKey(ref.Qualifier)]; ok {
			return api.Errorf(api.ResourceConflict, "Failed to create function url config for [functionArn = %s]. Error message:  FunctionUrlConfig exists for this Lambda function", arn)
		}
		if f.URLs == nil {
			f.URLs = map[string]*metadata.URL{}
		}
		f.URLs[urlKey(ref.Qualifier)] = u
		return nil
	})
	if err != nil {
		s.store.DeleteURL(c.ctx, u.ID)
		return err
	}
	return c.reply(http.StatusCreated, s.urlConfig(c, c.caller.Account, ref.Name, ref.Qualifier, u, false))
}

func urlNotFound() *api.Error {
	return api.Errorf(api.ResourceNotFound, "The resource you requested does not exist.")
}

func (s *Service) getFunctionURLConfig(c *call) error {
	ref, f, err := s.urlTarget(c)
	if err != nil {
		return err
	}
	u, ok := f.URLs[urlKey(ref.Qualifier)]
	if !ok {
		return urlNotFound()
	}
	return c.reply(http.StatusOK, s.urlConfig(c, c.caller.Account, ref.Name, ref.Qualifier, u, true))
}

func (s *Service) updateFunctionURLConfig(c *call) error {
	var in urlInput
	if err := c.decode(&in); err != nil {
		return err
	}
	if err := in.validate(false); err != nil {
		return err
	}
	ref, _, err := s.urlTarget(c)
	if err != nil {
		return err
	}
	var out metadata.URL
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		u, ok := f.URLs[urlKey(ref.Qualifier)]
		if !ok {
			return urlNotFound()
		}
		if in.AuthType != nil {
			u.AuthType = *in.AuthType
		}
		if in.InvokeMode != nil {
			u.InvokeMode = *in.InvokeMode
		}
		if in.Cors != nil {
			u.Cors = in.Cors
		}
		u.LastModifiedTime = s.timestamp()
		out = *u
		return nil
	})
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, s.urlConfig(c, c.caller.Account, ref.Name, ref.Qualifier, &out, true))
}

func (s *Service) deleteFunctionURLConfig(c *call) error {
	ref, _, err := s.urlTarget(c)
	if err != nil {
		return err
	}
	var id string
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		u, ok := f.URLs[urlKey(ref.Qualifier)]
		if !ok {
			return urlNotFound()
		}
		id = u.ID
		delete(f.URLs, urlKey(ref.Qualifier))
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.store.DeleteURL(c.ctx, id); err != nil {
		s.log.Warn("function url index entry left behind", "id", id, "err", err) // harmless: the function no longer has it
	}
	return c.noContent()
}

// listQueryUpTo is listQuery for an operation whose model caps MaxItems
// at most (50 for ListFunctionUrlConfigs and ListFunctionEventInvokeConfigs).
func listQueryUpTo(r *http.Request, most int) (pageQuery, error) {
	if v := r.URL.Query().Get("MaxItems"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > most {
			return pageQuery{}, validation(n, "maxItems", fmt.Sprintf("Member must have value less than or equal to %d", most))
		}
	}
	return listQuery(r, most)
}

func (s *Service) listFunctionURLConfigs(c *call) error {
	page, err := listQueryUpTo(c.r, 50)
	if err != nil {
		return err
	}
	ref, err := api.ParseFunctionRef(c.r.PathValue("FunctionName"))
	if err != nil {
		return err
	}
	if ref.Qualifier != "" {
		return api.Errorf(api.InvalidParameterValue, "Unsupported qualifier %s for %s: the operation takes an unqualified function name or ARN.", ref.Qualifier, c.op)
	}
	if err := s.checkOwner(c, ref); err != nil {
		return err
	}
	f, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(f.URLs))
	for q := range f.URLs {
		keys = append(keys, q)
	}
	sort.Strings(keys)
	keys, next, err := paginate(keys, func(k string) string { return k }, page)
	if err != nil {
		return err
	}
	out := api.ListFunctionURLConfigsResponse{FunctionUrlConfigs: []*api.FunctionURLConfig{}}
	for _, q := range keys {
		out.FunctionUrlConfigs = append(out.FunctionUrlConfigs, s.urlConfig(c, f.Account, f.Name, q, f.URLs[q], true))
	}
	if next != "" {
		out.NextMarker = &next
	}
	return c.reply(http.StatusOK, out)
}

// dropURLs removes the index entries of a function's URLs (qualifier ""
// for all of them) once the function or alias is gone.
func (s *Service) dropURLs(c *call, f *metadata.Function, qualifier string) {
	for q, u := range f.URLs {
		if qualifier != "" && q != qualifier {
			continue
		}
		if err := s.store.DeleteURL(c.ctx, u.ID); err != nil && !errors.Is(err, metadata.ErrNotFound) {
			s.log.Warn("function url index entry left behind", "id", u.ID, "err", err)
		}
	}
}
