package roles

import (
	"slices"
	"testing"
)

// TestPostService: how a POST / is told apart, for the keyring (what its
// signature may be scoped to) and for the router (who serves it).
func TestPostService(t *testing.T) {
	for _, c := range []struct {
		target, signedFor string
		scopes            []string // postServices; nil: Lambda's scope
		serves            string   // postService; "": UnknownOperationException
	}{
		{"Logs_20140328.PutLogEvents", "logs", []string{"logs"}, "logs"},
		{"AmazonSQS.SendMessage", "sqs", []string{"sqs"}, "sqs"},
		{"Kinesis_20131202.PutRecords", "kinesis", []string{"kinesis"}, "kinesis"},
		{"AWSSecurityTokenServiceV20110615.GetCallerIdentity", "sts", []string{"sts"}, "sts"},
		// The target decides, whatever the signature says (the keyring
		// refuses a mismatched scope before the router sees it).
		{"Kinesis_20131202.ListStreams", "sqs", []string{"kinesis"}, "kinesis"},
		// The query protocol has no target: its signature's service decides.
		{"", "sqs", []string{"sqs", "sts"}, "sqs"},
		{"", "sts", []string{"sqs", "sts"}, "sts"},
		{"", "lambda", []string{"sqs", "sts"}, ""},
		{"", "", []string{"sqs", "sts"}, ""},
		// Targets no service has: only a whole prefix names a service.
		{"Logs_20140328", "logs", nil, ""},
		{"AmazonSQSX.SendMessage", "sqs", nil, ""},
		{"DynamoDB_20120810.GetItem", "dynamodb", nil, ""},
		{"logs_20140328.PutLogEvents", "logs", nil, ""},
	} {
		if got := postServices(c.target); !slices.Equal(got, c.scopes) {
			t.Errorf("postServices(%q) = %q, want %q", c.target, got, c.scopes)
		}
		if got := postService(c.target, c.signedFor); got != c.serves {
			t.Errorf("postService(%q, %q) = %q, want %q", c.target, c.signedFor, got, c.serves)
		}
	}
}
