package roles

import (
	"context"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/policy"
)

// AuthorizeURL is the resource-policy check of a function URL request to
// t (caller nil for AuthType NONE), as Lambda's: a public URL needs a
// statement granting lambda:InvokeFunctionUrl to "*" on
// lambda:FunctionUrlAuthType NONE; an AWS_IAM URL admits its own account
// and the accounts a statement grants lambda:InvokeFunctionUrl. The
// policy is that of the qualifier the URL names.
func AuthorizeURL(_ context.Context, t *metadata.Target, authType string, caller *auth.Caller) error {
	account := ""
	if caller != nil {
		if caller.Account == t.Account {
			return nil
		}
		account = caller.Account
	}
	if policy.URLAllows(t.Function.Policies[policy.Key(t.Ref.Qualifier)], authType, account) {
		return nil
	}
	return api.Errorf(api.AccessDenied, "Forbidden")
}
