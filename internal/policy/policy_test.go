package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/api"
)

const me, other = "111111111111", "222222222222"

func TestAllows(t *testing.T) {
	invoke := func(principal string) Statement {
		return Statement{Sid: "s", Action: "lambda:InvokeFunction", Principal: principal}
	}
	with := func(s Statement, edit func(*Statement)) Statement { edit(&s); return s }
	for _, tc := range []struct {
		name   string
		stmts  []Statement
		action string
		want   bool
	}{
		{"no policy", nil, "lambda:InvokeFunction", false},
		{"account id", []Statement{invoke(other)}, "lambda:InvokeFunction", true},
		{"account root ARN", []Statement{invoke("arn:aws:iam::" + other + ":root")}, "lambda:InvokeFunction", true},
		{"a user of the account", []Statement{invoke("arn:aws:iam::" + other + ":user/deploy")}, "lambda:InvokeFunction", true},
		{"anyone", []Statement{invoke("*")}, "lambda:InvokeFunction", true},
		{"another account", []Statement{invoke("333333333333")}, "lambda:InvokeFunction", false},
		{"lambda:*", []Statement{with(invoke(other), func(s *Statement) { s.Action = "lambda:*" })}, "lambda:InvokeFunction", true},
		{"another action", []Statement{with(invoke(other), func(s *Statement) { s.Action = "lambda:GetFunction" })}, "lambda:InvokeFunction", false},
		{"a service", []Statement{invoke("s3.amazonaws.com")}, "lambda:InvokeFunction", false},
		{"on a source", []Statement{with(invoke("*"), func(s *Statement) { s.SourceArn = "arn:aws:s3:::b" })}, "lambda:InvokeFunction", false},
		{"on a source account", []Statement{with(invoke("*"), func(s *Statement) { s.SourceAccount = other })}, "lambda:InvokeFunction", false},
		{"in an organization", []Statement{with(invoke("*"), func(s *Statement) { s.PrincipalOrgID = "o-abcdefghij" })}, "lambda:InvokeFunction", false},
		{"second statement", []Statement{invoke("333333333333"), invoke(other)}, "lambda:InvokeFunction", true},
	} {
		if got := Allows(tc.stmts, tc.action, other); got != tc.want {
			t.Errorf("%s: Allows = %v; want %v", tc.name, got, tc.want)
		}
	}
}

func TestURLAllows(t *testing.T) {
	url := func(principal, authType string) Statement {
		return Statement{Sid: "u", Action: "lambda:InvokeFunctionUrl", Principal: principal, FunctionUrlAuthType: authType}
	}
	for _, tc := range []struct {
		name              string
		s                 Statement
		authType, account string
		want              bool
	}{
		{"public", url("*", "NONE"), "NONE", "", true},
		{"public needs the NONE condition", url("*", ""), "NONE", "", false},
		{"IAM statement for NONE", url("*", "AWS_IAM"), "NONE", "", false},
		{"one account for NONE", url(other, "NONE"), "NONE", "", false},
		{"invoke, not the URL", Statement{Sid: "u", Action: "lambda:InvokeFunction", Principal: "*"}, "NONE", "", false},
		{"IAM, the account", url(other, "AWS_IAM"), "AWS_IAM", other, true},
		{"IAM, unconditioned", url(other, ""), "AWS_IAM", other, true},
		{"IAM, the account's ARN", url("arn:aws:iam::"+other+":root", "AWS_IAM"), "AWS_IAM", other, true},
		{"IAM, another account", url("333333333333", "AWS_IAM"), "AWS_IAM", other, false},
		{"IAM, a NONE statement", url("*", "NONE"), "AWS_IAM", other, false},
		{"IAM, on a source", Statement{Sid: "u", Action: "lambda:InvokeFunctionUrl", Principal: other, SourceAccount: other}, "AWS_IAM", other, false},
	} {
		if got := URLAllows([]Statement{tc.s}, tc.authType, tc.account); got != tc.want {
			t.Errorf("%s: URLAllows = %v; want %v", tc.name, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Statement{Sid: "s-1_x", Action: "lambda:InvokeFunction", Principal: me}
	for _, tc := range []struct {
		name string
		edit func(*Statement)
		want string // "" valid
	}{
		{"valid", func(*Statement) {}, ""},
		{"service with source", func(s *Statement) {
			s.Principal, s.SourceArn, s.SourceAccount = "sns.amazonaws.com", "arn:aws:sns:us-east-1:111111111111:t", me
		}, ""},
		{"url", func(s *Statement) {
			s.Action, s.Principal, s.FunctionUrlAuthType = "lambda:InvokeFunctionUrl", "*", "NONE"
		}, ""},
		{"sid", func(s *Statement) { s.Sid = "a b" }, "statementId"},
		{"empty sid", func(s *Statement) { s.Sid = "" }, "statementId"},
		{"action", func(s *Statement) { s.Action = "s3:GetObject" }, "action"},
		{"principal", func(s *Statement) { s.Principal = "bob" }, "The provided principal was invalid"},
		{"source account", func(s *Statement) { s.SourceAccount = "12" }, "sourceAccount"},
		{"source arn", func(s *Statement) { s.SourceArn = "bucket" }, "sourceArn"},
		{"org", func(s *Statement) { s.PrincipalOrgID = "org" }, "principalOrgID"},
		{"url auth type", func(s *Statement) { s.Action, s.FunctionUrlAuthType = "lambda:InvokeFunctionUrl", "OPEN" }, "functionUrlAuthType"},
		{"url auth type on invoke", func(s *Statement) { s.FunctionUrlAuthType = "NONE" }, "only supported with the lambda:InvokeFunctionUrl"},
	} {
		s := ok
		tc.edit(&s)
		err := s.Validate()
		var e *api.Error
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (!errors.As(err, &e) || e.Type != api.InvalidParameterValue || !strings.Contains(e.Message, tc.want)):
			t.Errorf("%s: err %v; want InvalidParameterValueException naming %q", tc.name, err, tc.want)
		}
	}
}

func TestDocument(t *testing.T) {
	got := Document([]Statement{{Sid: "a", Action: "lambda:InvokeFunction", Principal: me, Resource: "arn:aws:lambda:us-east-1:" + other + ":function:f"}})
	want := `{"Version":"2012-10-17","Id":"default","Statement":[{"Sid":"a","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:root"},"Action":"lambda:InvokeFunction","Resource":"arn:aws:lambda:us-east-1:222222222222:function:f"}]}`
	if got != want {
		t.Errorf("Document\n%s\nwant\n%s", got, want)
	}
}
