package api

import (
	"fmt"
	"regexp"
	"strings"
)

// Destination kinds: what Kiln delivers an asynchronous invoke's outcome to.
const (
	// DestinationFunction is a Kiln function, ARN arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER];
	// it is invoked asynchronously with the record as its event.
	DestinationFunction = "function"
	// DestinationQueue is a Kiln queue, ARN arn:aws:sqs:REGION:ACCOUNT:NAME (the
	// form of an SQS queue's ARN, so that tools that expect one accept it);
	// it is the JetStream stream KILN_QUEUE_ACCOUNT_NAME, subject
	// kiln.queue.ACCOUNT.NAME, which any NATS client can read.
	DestinationQueue = "queue"
)

// Destination is a parsed destination ARN.
type Destination struct {
	ARN                   string
	Kind                  string // DestinationFunction or DestinationQueue
	Region, Account, Name string
	Qualifier             string // of a function
}

var queueNameRe = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,80}$`)

// ParseDestination parses a destination ARN (OnSuccess, OnFailure or a
// dead-letter queue). Its errors say why Kiln cannot deliver there, in a
// sentence for users.
func ParseDestination(arn string) (Destination, error) {
	d := Destination{ARN: arn}
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 6 || parts[0] != "arn" || !strings.HasPrefix(parts[1], "aws") {
		return d, fmt.Errorf("%s is not an ARN", arn)
	}
	d.Region, d.Account = parts[3], parts[4]
	switch parts[2] {
	case "lambda":
		ref, err := ParseFunctionRef(arn)
		if err != nil || ref.Account == "" || ref.Region == "" {
			return d, fmt.Errorf("%s is not a function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)", arn)
		}
		d.Kind, d.Name, d.Qualifier = DestinationFunction, ref.Name, ref.Qualifier
	case "sqs":
		name := parts[5]
		if strings.HasSuffix(name, ".fifo") {
			return d, fmt.Errorf("Kiln queues are not FIFO queues (%s)", arn)
		}
		if !queueNameRe.MatchString(name) || d.Region == "" || !accountRe.MatchString(d.Account) {
			return d, fmt.Errorf("%s is not a queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME, ACCOUNT of 12 digits, NAME of 1 to 80 letters, digits, - and _)", arn)
		}
		d.Kind, d.Name = DestinationQueue, name
	default:
		return d, fmt.Errorf("Kiln delivers to Kiln functions (arn:aws:lambda:REGION:ACCOUNT:function:NAME) and Kiln queues (arn:aws:sqs:REGION:ACCOUNT:NAME), not to %s ARNs", parts[2])
	}
	return d, nil
}
