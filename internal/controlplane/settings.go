package controlplane

import (
	"errors"
	"maps"
	"net/http"
	"strings"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// Function settings kept beside the configuration: tags, the recursion
// setting, and the runtime management setting (which has one value here).

func (s *Service) settingRoutes() []route {
	const tags = "/2017-03-31/tags/{Resource}"
	const rm = "/2021-07-20/functions/{FunctionName}/runtime-management-config"
	const rc = "/2024-08-31/functions/{FunctionName}/recursion-config"
	return []route{
		{"POST " + tags, "TagResource", s.tagResource},
		{"DELETE " + tags, "UntagResource", s.untagResource},
		{"GET " + tags, "ListTags", s.listTags},
		{"GET " + rc, "GetFunctionRecursionConfig", s.getRecursionConfig},
		{"PUT " + rc, "PutFunctionRecursionConfig", s.putRecursionConfig},
		{"GET " + rm, "GetRuntimeManagementConfig", s.getRuntimeManagementConfig},
		{"PUT " + rm, "PutRuntimeManagementConfig", s.putRuntimeManagementConfig},
	}
}

// taggedFunction parses the {Resource} of the tag calls: the ARN of a
// function. Lambda tags no versions or aliases, and no layers.
func (s *Service) taggedFunction(c *call) (api.FunctionRef, error) {
	arn := c.r.PathValue("Resource")
	ref, err := api.ParseFunctionRef(arn)
	if err != nil || !strings.HasPrefix(arn, "arn:") {
		return ref, api.Errorf(api.InvalidParameterValue, "The resource you requested %s is not a taggable resource: Lambda tags functions by their unqualified ARN.", arn)
	}
	if ref.Qualifier != "" {
		return ref, api.Errorf(api.InvalidParameterValue, "Tags are not supported on function versions or aliases: %s.", arn)
	}
	return ref, s.checkOwner(c, ref)
}

type tagResourceRequest struct {
	Tags map[string]string `json:"Tags"`
}

func (s *Service) tagResource(c *call) error {
	ref, err := s.taggedFunction(c)
	if err != nil {
		return err
	}
	var req tagResourceRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.Tags == nil {
		return validation(nil, "tags", "Member must not be null")
	}
	if err := checkTags(req.Tags); err != nil {
		return err
	}
	if _, err := s.modify(c, ref.Name, func(f *metadata.Function) error {
		merged := maps.Clone(f.Tags)
		if merged == nil {
			merged = map[string]string{}
		}
		maps.Copy(merged, req.Tags)
		if err := checkTags(merged); err != nil {
			return err
		}
		f.Tags = merged
		return nil
	}); err != nil {
		return err
	}
	return c.noContent()
}

func (s *Service) untagResource(c *call) error {
	ref, err := s.taggedFunction(c)
	if err != nil {
		return err
	}
	keys := c.r.URL.Query()["tagKeys"]
	if len(keys) == 0 {
		return validation(nil, "tagKeys", "Member must not be null")
	}
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		n := len(f.Tags)
		for _, k := range keys {
			delete(f.Tags, k)
		}
		if len(f.Tags) == n {
			return errUnchanged
		}
		return nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		return err
	}
	return c.noContent()
}

func (s *Service) listTags(c *call) error {
	ref, err := s.taggedFunction(c)
	if err != nil {
		return err
	}
	f, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	tags := f.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return c.reply(http.StatusOK, map[string]any{"Tags": tags})
}

// recursionConfig is Get/PutFunctionRecursionConfig's document.
type recursionConfig struct {
	RecursiveLoop *string `json:"RecursiveLoop"`
}

// recursiveLoop is a function's recursion setting, Terminate unless Allow
// was put.
func recursiveLoop(f *metadata.Function) string {
	if f.RecursiveLoop == "" {
		return "Terminate"
	}
	return f.RecursiveLoop
}

func (s *Service) getRecursionConfig(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	f, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	loop := recursiveLoop(f)
	return c.reply(http.StatusOK, recursionConfig{RecursiveLoop: &loop})
}

func (s *Service) putRecursionConfig(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	var req recursionConfig
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.RecursiveLoop == nil {
		return validation(nil, "recursiveLoop", "Member must not be null")
	}
	loop := *req.RecursiveLoop
	if loop != "Allow" && loop != "Terminate" {
		return validation(loop, "recursiveLoop", "Member must satisfy enum value set: [Allow, Terminate]")
	}
	if _, err := s.modify(c, ref.Name, func(f *metadata.Function) error {
		f.RecursiveLoop = ""
		if loop == "Allow" {
			f.RecursiveLoop = loop
		}
		return nil
	}); err != nil {
		return err
	}
	return c.reply(http.StatusOK, recursionConfig{RecursiveLoop: &loop})
}

// runtimeManagementConfig is Get/PutRuntimeManagementConfig's document.
type runtimeManagementConfig struct {
	UpdateRuntimeOn   string `json:"UpdateRuntimeOn"`
	FunctionArn       string `json:"FunctionArn,omitempty"`
	RuntimeVersionArn string `json:"RuntimeVersionArn,omitempty"`
}

// runtimeManaged resolves the function and qualifier of the runtime
// management calls ($LATEST or a version, as the model's qualifier says).
func (s *Service) runtimeManaged(c *call) (*metadata.Function, string, error) {
	ref, err := s.function(c, true)
	if err != nil {
		return nil, "", err
	}
	f, err := s.get(c, ref.Name, ref.Qualifier)
	if err != nil {
		return nil, "", err
	}
	q := ref.Qualifier
	if q == "" {
		q = metadata.Latest
	}
	if _, ok := f.Version(q); !ok {
		return nil, "", s.notFound(f.Account, f.Name, q)
	}
	return f, q, nil
}

// A function's runtime is the one installed with Kiln (see runtimes), so
// every function's runtime updates as Auto says: when Kiln's does.
func (s *Service) getRuntimeManagementConfig(c *call) error {
	f, q, err := s.runtimeManaged(c)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, runtimeManagementConfig{UpdateRuntimeOn: "Auto", FunctionArn: s.arn(f.Account, f.Name, q)})
}

func (s *Service) putRuntimeManagementConfig(c *call) error {
	var req runtimeManagementConfig
	if err := c.decode(&req); err != nil {
		return err
	}
	switch req.UpdateRuntimeOn {
	case "Auto":
	case "":
		return validation(nil, "updateRuntimeOn", "Member must not be null")
	case "FunctionUpdate", "Manual":
		return api.Errorf(api.InvalidParameterValue, "Kiln supports only Auto runtime updates: functions run the runtime installed with Kiln, which changes when Kiln is upgraded; UpdateRuntimeOn %s cannot be honoured.", req.UpdateRuntimeOn)
	default:
		return validation(req.UpdateRuntimeOn, "updateRuntimeOn", "Member must satisfy enum value set: [Auto, Manual, FunctionUpdate]")
	}
	if req.RuntimeVersionArn != "" {
		return api.Errorf(api.InvalidParameterValue, "RuntimeVersionArn can be given only with UpdateRuntimeOn Manual.")
	}
	f, q, err := s.runtimeManaged(c)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, runtimeManagementConfig{UpdateRuntimeOn: "Auto", FunctionArn: s.arn(f.Account, f.Name, q)})
}
