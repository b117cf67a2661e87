// Package policy is Lambda's resource-based policy of a function, version
// or alias: the statements AddPermission adds, the document GetPolicy
// shows, and the decision whether a caller of another account may act on
// the function. It is pure: the control plane stores the statements with
// the function's metadata, the frontend asks Allows on every invoke that
// crosses accounts, and function URLs ask PublicURL.
package policy

import (
	"encoding/json"
	"regexp"
	"strings"

	"github.com/kiln-dev/kiln/internal/api"
)

// Statement is one permission, as AddPermission takes it.
type Statement struct {
	Sid                 string `json:"sid"`
	Action              string `json:"action"`
	Principal           string `json:"principal"`
	Resource            string `json:"resource"`
	SourceArn           string `json:"sourceArn,omitempty"`
	SourceAccount       string `json:"sourceAccount,omitempty"`
	PrincipalOrgID      string `json:"principalOrgId,omitempty"`
	FunctionUrlAuthType string `json:"functionUrlAuthType,omitempty"`
	EventSourceToken    string `json:"eventSourceToken,omitempty"`
}

// Key is the qualifier whose policy governs qualifier: $LATEST's is the
// function's ("").
func Key(qualifier string) string {
	if qualifier == "$LATEST" {
		return ""
	}
	return qualifier
}

// MaxDocument is the longest policy document Lambda keeps (20 KB).
const MaxDocument = 20 * 1024

var (
	sidRe       = regexp.MustCompile(`^[a-zA-Z0-9-_]{1,100}$`)
	actionRe    = regexp.MustCompile(`^(lambda:[*]|lambda:[a-zA-Z]+|[*])$`)
	accountRe   = regexp.MustCompile(`^\d{12}$`)
	iamARNRe    = regexp.MustCompile(`^arn:aws[a-zA-Z-]*:iam::(\d{12}):(root|user/.+|role/.+)$`)
	serviceRe   = regexp.MustCompile(`^[a-z0-9-]+(\.[a-z0-9-]+)*\.amazonaws\.com$`)
	orgRe       = regexp.MustCompile(`^o-[a-z0-9]{10,32}$`)
	arnRe       = regexp.MustCompile(`^arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:([a-z]{2}(-gov)?-[a-z]+-\d{1})?:(\d{12})?:(.*)$`)
	tokenRe     = regexp.MustCompile(`^[a-zA-Z0-9._\-]{0,256}$`)
	urlAuthType = map[string]bool{"NONE": true, "AWS_IAM": true}
)

// Validate checks s as Lambda's model and AddPermission do.
func (s Statement) Validate() error {
	switch {
	case !sidRe.MatchString(s.Sid):
		return validation(s.Sid, "statementId", "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)")
	case !actionRe.MatchString(s.Action):
		return validation(s.Action, "action", "Member must satisfy regular expression pattern: (lambda:[*]|lambda:[a-zA-Z]+|[*])")
	case s.Principal == "" || strings.ContainsAny(s.Principal, " \t\r\n"):
		return validation(s.Principal, "principal", "Member must satisfy regular expression pattern: [^\\s]+")
	case s.SourceAccount != "" && !accountRe.MatchString(s.SourceAccount):
		return validation(s.SourceAccount, "sourceAccount", "Member must satisfy regular expression pattern: \\d{12}")
	case s.SourceArn != "" && !arnRe.MatchString(s.SourceArn):
		return validation(s.SourceArn, "sourceArn", "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\\-])+:([a-z]{2}(-gov)?-[a-z]+-\\d{1})?:(\\d{12})?:(.*)")
	case s.PrincipalOrgID != "" && !orgRe.MatchString(s.PrincipalOrgID):
		return validation(s.PrincipalOrgID, "principalOrgID", "Member must satisfy regular expression pattern: ^o-[a-z0-9]{10,32}$")
	case s.FunctionUrlAuthType != "" && !urlAuthType[s.FunctionUrlAuthType]:
		return validation(s.FunctionUrlAuthType, "functionUrlAuthType", "Member must satisfy enum value set: [NONE, AWS_IAM]")
	case !tokenRe.MatchString(s.EventSourceToken):
		return validation(s.EventSourceToken, "eventSourceToken", "Member must satisfy regular expression pattern: [a-zA-Z0-9._\\-]+")
	case s.Principal != "*" && !accountRe.MatchString(s.Principal) && !iamARNRe.MatchString(s.Principal) && !serviceRe.MatchString(s.Principal):
		return api.Errorf(api.InvalidParameterValue, "The provided principal was invalid. Please check the principal and try again.")
	case s.FunctionUrlAuthType != "" && s.Action != "lambda:InvokeFunctionUrl":
		return api.Errorf(api.InvalidParameterValue, "The FunctionUrlAuthType parameter is only supported with the lambda:InvokeFunctionUrl action.")
	}
	return nil
}

func validation(value, field, constraint string) *api.Error {
	return api.Errorf(api.InvalidParameterValue, "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: %s", value, field, constraint)
}

// statementDoc is a statement as Lambda writes it in a policy document.
type statementDoc struct {
	Sid       string                       `json:"Sid"`
	Effect    string                       `json:"Effect"`
	Principal any                          `json:"Principal"`
	Action    string                       `json:"Action"`
	Resource  string                       `json:"Resource"`
	Condition map[string]map[string]string `json:"Condition,omitempty"`
}

func (s Statement) doc() statementDoc {
	d := statementDoc{Sid: s.Sid, Effect: "Allow", Action: s.Action, Resource: s.Resource}
	switch {
	case s.Principal == "*":
		d.Principal = "*"
	case accountRe.MatchString(s.Principal):
		d.Principal = map[string]string{"AWS": "arn:aws:iam::" + s.Principal + ":root"}
	case serviceRe.MatchString(s.Principal):
		d.Principal = map[string]string{"Service": s.Principal}
	default:
		d.Principal = map[string]string{"AWS": s.Principal}
	}
	cond := func(op, key, value string) {
		if value == "" {
			return
		}
		if d.Condition == nil {
			d.Condition = map[string]map[string]string{}
		}
		if d.Condition[op] == nil {
			d.Condition[op] = map[string]string{}
		}
		d.Condition[op][key] = value
	}
	cond("ArnLike", "AWS:SourceArn", s.SourceArn)
	cond("StringEquals", "AWS:SourceAccount", s.SourceAccount)
	cond("StringEquals", "aws:PrincipalOrgID", s.PrincipalOrgID)
	cond("StringEquals", "lambda:FunctionUrlAuthType", s.FunctionUrlAuthType)
	cond("StringEquals", "lambda:EventSourceToken", s.EventSourceToken)
	return d
}

// JSON is the statement as AddPermission answers it.
func (s Statement) JSON() string {
	b, _ := json.Marshal(s.doc())
	return string(b)
}

// Document is the policy GetPolicy answers with.
func Document(stmts []Statement) string {
	docs := make([]statementDoc, len(stmts))
	for i, s := range stmts {
		docs[i] = s.doc()
	}
	b, _ := json.Marshal(struct {
		Version   string         `json:"Version"`
		ID        string         `json:"Id"`
		Statement []statementDoc `json:"Statement"`
	}{"2012-10-17", "default", docs})
	return string(b)
}

// Allows says whether stmts let a caller of account (signing with its own
// key, not as an AWS service) perform action ("lambda:InvokeFunction").
// A statement for a service principal, or conditioned on a source or an
// organization, grants nothing to such a caller: Kiln has no services
// calling on an account's behalf and no organizations, so those
// conditions never hold.
func Allows(stmts []Statement, action, account string) bool {
	for _, s := range stmts {
		if !actionMatches(s.Action, action) || s.SourceArn != "" || s.SourceAccount != "" ||
			s.PrincipalOrgID != "" || s.EventSourceToken != "" || s.FunctionUrlAuthType != "" {
			continue
		}
		if grants(s.Principal, account) {
			return true
		}
	}
	return false
}

// URLAllows says whether stmts let a function URL request through, as
// Lambda's policy check of function URLs: for AuthType NONE (account
// "", an unsigned caller) a statement granting lambda:InvokeFunctionUrl
// to "*" on the condition lambda:FunctionUrlAuthType NONE; for AWS_IAM,
// a caller of another account needs lambda:InvokeFunctionUrl granted to
// its account (or "*"), unconditioned or on FunctionUrlAuthType AWS_IAM.
// (The function's own account needs no statement: its keys act as its
// root user.)
func URLAllows(stmts []Statement, authType, account string) bool {
	for _, s := range stmts {
		if !actionMatches(s.Action, "lambda:InvokeFunctionUrl") || s.SourceArn != "" || s.SourceAccount != "" ||
			s.PrincipalOrgID != "" || s.EventSourceToken != "" {
			continue
		}
		if authType == "NONE" {
			if s.Principal == "*" && s.FunctionUrlAuthType == "NONE" {
				return true
			}
			continue
		}
		if s.FunctionUrlAuthType != "" && s.FunctionUrlAuthType != authType {
			continue
		}
		if grants(s.Principal, account) {
			return true
		}
	}
	return false
}

// grants says whether principal names account (its id or an IAM ARN in
// it) or everyone.
func grants(principal, account string) bool {
	if principal == "*" || principal == account {
		return true
	}
	m := iamARNRe.FindStringSubmatch(principal)
	return m != nil && m[1] == account
}

func actionMatches(granted, action string) bool {
	return granted == action || granted == "lambda:*" || granted == "*"
}
