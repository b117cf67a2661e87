package controlplane

import (
	"net/http"
	"slices"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/policy"
)

// policyRoutes serve AddPermission, RemovePermission and GetPolicy. A
// function, each version and each alias has a policy of its own (keyed
// by qualifier; the function's also covers $LATEST); its RevisionId is
// that of the function, version or alias it belongs to.
func (s *Service) policyRoutes() []route {
	const p = "/2015-03-31/functions/{FunctionName}/policy"
	return []route{
		{"POST " + p, "AddPermission", s.addPermission},
		{"GET " + p, "GetPolicy", s.getPolicy},
		{"DELETE " + p + "/{StatementId}", "RemovePermission", s.removePermission},
	}
}

// policyTarget resolves the function and qualifier a policy call names.
func (s *Service) policyTarget(c *call) (api.FunctionRef, string, error) {
	ref, err := s.function(c, true)
	return ref, policy.Key(ref.Qualifier), err
}

// revisionOf is the RevisionId of the function, version or alias q, and
// whether it exists.
func revisionOf(f *metadata.Function, q string) (string, bool) {
	if c, ok := f.Version(q); ok {
		return c.RevisionId, true
	}
	if a, ok := f.Aliases[q]; ok {
		return a.RevisionId, true
	}
	return "", false
}

func (s *Service) addPermission(c *call) error {
	ref, q, err := s.policyTarget(c)
	if err != nil {
		return err
	}
	var in struct {
		StatementId, Action, Principal, SourceArn, SourceAccount string
		EventSourceToken, RevisionId, PrincipalOrgID             string
		FunctionUrlAuthType                                      string
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	st := policy.Statement{Sid: in.StatementId, Action: in.Action, Principal: in.Principal,
		Resource: s.arn(c.caller.Account, ref.Name, q), SourceArn: in.SourceArn, SourceAccount: in.SourceAccount,
		PrincipalOrgID: in.PrincipalOrgID, FunctionUrlAuthType: in.FunctionUrlAuthType, EventSourceToken: in.EventSourceToken}
	if err := st.Validate(); err != nil {
		return err
	}
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		rev, ok := revisionOf(f, q)
		switch {
		case !ok:
			return s.notFound(f.Account, f.Name, q)
		case in.RevisionId != "" && in.RevisionId != rev:
			return revisionMismatch()
		case slices.ContainsFunc(f.Policies[q], func(o policy.Statement) bool { return o.Sid == st.Sid }):
			return api.Errorf(api.ResourceConflict, "The statement id (%s) provided already exists. Please choose another statement id (sid).", st.Sid)
		}
		stmts := append(slices.Clone(f.Policies[q]), st)
		if len(policy.Document(stmts)) > policy.MaxDocument {
			return &api.Error{Status: http.StatusBadRequest, Type: "PolicyLengthExceededException",
				Message: "The final policy size is bigger than the limit."}
		}
		if f.Policies == nil {
			f.Policies = map[string][]policy.Statement{}
		}
		f.Policies[q] = stmts
		return nil
	})
	if err != nil {
		return err
	}
	return c.reply(http.StatusCreated, map[string]string{"Statement": st.JSON()})
}

func (s *Service) removePermission(c *call) error {
	ref, q, err := s.policyTarget(c)
	if err != nil {
		return err
	}
	sid, revision := c.r.PathValue("StatementId"), c.r.URL.Query().Get("RevisionId")
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		rev, ok := revisionOf(f, q)
		if !ok {
			return s.notFound(f.Account, f.Name, q)
		}
		if revision != "" && revision != rev {
			return revisionMismatch()
		}
		i := slices.IndexFunc(f.Policies[q], func(o policy.Statement) bool { return o.Sid == sid })
		if i < 0 {
			return api.Errorf(api.ResourceNotFound, "Statement %s is not found in resource policy.", sid)
		}
		f.Policies[q] = slices.Delete(slices.Clone(f.Policies[q]), i, i+1)
		if len(f.Policies[q]) == 0 {
			delete(f.Policies, q)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.noContent()
}

func (s *Service) getPolicy(c *call) error {
	ref, q, err := s.policyTarget(c)
	if err != nil {
		return err
	}
	f, err := s.get(c, ref.Name, q)
	if err != nil {
		return err
	}
	rev, ok := revisionOf(f, q)
	if !ok {
		return s.notFound(f.Account, f.Name, q)
	}
	stmts := f.Policies[q]
	if len(stmts) == 0 {
		return api.Errorf(api.ResourceNotFound, "The resource you requested does not exist.")
	}
	return c.reply(http.StatusOK, map[string]string{"Policy": policy.Document(stmts), "RevisionId": rev})
}
