package queues

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Queue attribute names.
const (
	attrDelay          = "DelaySeconds"
	attrMaxSize        = "MaximumMessageSize"
	attrRetention      = "MessageRetentionPeriod"
	attrWait           = "ReceiveMessageWaitTimeSeconds"
	attrVisibility     = "VisibilityTimeout"
	attrRedrive        = "RedrivePolicy"
	attrFifo           = "FifoQueue"
	attrContentDedup   = "ContentBasedDeduplication"
	attrArn            = "QueueArn"
	attrCreated        = "CreatedTimestamp"
	attrModified       = "LastModifiedTimestamp"
	attrVisible        = "ApproximateNumberOfMessages"
	attrNotVisible     = "ApproximateNumberOfMessagesNotVisible"
	attrDelayed        = "ApproximateNumberOfMessagesDelayed"
	defaultMaxSize     = 262144
	defaultRetention   = 345600
	defaultVisibility  = 30
	maxVisibility      = 43200
	maxBatchEntries    = 10
	maxMessageAttrs    = 10
	fifoSuffix         = ".fifo"
	maxReceiveCountMax = 1000
)

// settable are the attributes CreateQueue and SetQueueAttributes take, with
// their integer range (lo > hi: not an integer) and default.
var settable = map[string]struct {
	lo, hi int
	def    string
}{
	attrDelay:                      {0, 900, "0"},
	attrMaxSize:                    {1024, 1048576, strconv.Itoa(defaultMaxSize)},
	attrRetention:                  {60, 1209600, strconv.Itoa(defaultRetention)},
	attrWait:                       {0, 20, "0"},
	attrVisibility:                 {0, maxVisibility, strconv.Itoa(defaultVisibility)},
	attrRedrive:                    {1, 0, ""},
	attrContentDedup:               {1, 0, ""},
	"Policy":                       {1, 0, ""},
	"RedriveAllowPolicy":           {1, 0, ""},
	"KmsMasterKeyId":               {1, 0, ""},
	"KmsDataKeyReusePeriodSeconds": {60, 86400, ""},
	"SqsManagedSseEnabled":         {1, 0, ""},
	"DeduplicationScope":           {1, 0, ""},
	"FifoThroughputLimit":          {1, 0, ""},
}

// computed are the attributes GetQueueAttributes adds to the stored ones.
var computed = []string{attrArn, attrCreated, attrModified, attrVisible, attrNotVisible, attrDelayed, attrFifo}

var nameRe = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,80}$`)

// checkName checks a queue name: 1 to 80 letters, digits, - and _, the
// .fifo suffix counting, for FIFO queues only.
func checkName(name string, fifo bool) error {
	base, hasSuffix := strings.CutSuffix(name, fifoSuffix)
	if len(name) > 80 || !nameRe.MatchString(base) {
		return invalid("for parameter QueueName is invalid. Reason: Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length")
	}
	if hasSuffix != fifo {
		return invalid("for parameter QueueName is invalid. Reason: The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.")
	}
	return nil
}

// RedrivePolicy is a queue's dead-letter configuration.
type RedrivePolicy struct {
	DeadLetterTargetArn string
	MaxReceiveCount     int
}

// parseRedrive reads RedrivePolicy's JSON (maxReceiveCount a number or a
// string, as SQS accepts both).
func parseRedrive(s string) (*RedrivePolicy, error) {
	var raw struct {
		Arn   string          `json:"deadLetterTargetArn"`
		Count json.RawMessage `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, errorf(errAttrValue, "Invalid value for the parameter RedrivePolicy. Reason: Redrive policy is not a valid JSON map.")
	}
	n, err := strconv.Atoi(strings.Trim(string(raw.Count), `"`))
	if err != nil || n < 1 || n > maxReceiveCountMax {
		return nil, errorf(errAttrValue, "Value %s for parameter RedrivePolicy is invalid. Reason: Invalid value for maxReceiveCount: %s, valid values are from 1 to 1000 both inclusive.", s, raw.Count)
	}
	if _, _, _, err := ParseARN(raw.Arn); err != nil {
		return nil, errorf(errAttrValue, "Value %s for parameter RedrivePolicy is invalid. Reason: Invalid value for deadLetterTargetArn.", s)
	}
	return &RedrivePolicy{DeadLetterTargetArn: raw.Arn, MaxReceiveCount: n}, nil
}

// ParseARN splits a queue's ARN, arn:aws:sqs:REGION:ACCOUNT:NAME.
func ParseARN(arn string) (region, account, name string, err error) {
	p := strings.Split(arn, ":")
	if len(p) != 6 || p[0] != "arn" || !strings.HasPrefix(p[1], "aws") || p[2] != "sqs" || p[3] == "" || p[4] == "" {
		return "", "", "", fmt.Errorf("%q is not a queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)", arn)
	}
	if err := checkName(p[5], strings.HasSuffix(p[5], fifoSuffix)); err != nil {
		return "", "", "", err
	}
	return p[3], p[4], p[5], nil
}

// ARN is a queue's ARN.
func ARN(region, account, name string) string {
	return "arn:aws:sqs:" + region + ":" + account + ":" + name
}

// checkAttributes validates attributes to set on a queue (fifo or not)
// and returns them with booleans normalized.
func checkAttributes(in map[string]string, fifo, creating bool) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range in {
		if k == attrFifo {
			if !creating {
				return nil, errorf(errAttrName, "Unknown Attribute %s.", k)
			}
			continue // taken from the name by the caller
		}
		spec, ok := settable[k]
		if !ok {
			return nil, errorf(errAttrName, "Unknown Attribute %s.", k)
		}
		switch {
		case k == attrRedrive:
			if v != "" {
				if _, err := parseRedrive(v); err != nil {
					return nil, err
				}
			}
		case k == attrContentDedup || k == "SqsManagedSseEnabled":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, errorf(errAttrValue, "Invalid value for the parameter %s.", k)
			}
			if k == attrContentDedup && !fifo {
				return nil, errorf(errAttrName, "Unknown Attribute %s.", k)
			}
			v = strconv.FormatBool(b)
		case k == "DeduplicationScope" || k == "FifoThroughputLimit":
			if !fifo {
				return nil, errorf(errAttrName, "Unknown Attribute %s.", k)
			}
		case spec.lo <= spec.hi:
			n, err := strconv.Atoi(v)
			if err != nil || n < spec.lo || n > spec.hi {
				return nil, errorf(errAttrValue, "Invalid value for the parameter %s.", k)
			}
			v = strconv.Itoa(n)
		}
		out[k] = v
	}
	return out, nil
}

// meta is a queue's stored description.
type meta struct {
	Account, Name     string
	Fifo              bool
	Created, Modified int64 // Unix seconds
	Attributes        map[string]string
	Tags              map[string]string `json:",omitempty"`
}

// int reads an integer attribute, or its default.
func (m *meta) int(name string) int {
	v, ok := m.Attributes[name]
	if !ok {
		v = settable[name].def
	}
	n, _ := strconv.Atoi(v)
	return n
}

func (m *meta) visibility() time.Duration { return time.Duration(m.int(attrVisibility)) * time.Second }

func (m *meta) redrive() *RedrivePolicy {
	if v := m.Attributes[attrRedrive]; v != "" {
		r, _ := parseRedrive(v)
		return r
	}
	return nil
}

// sameAttributes tells whether CreateQueue's attributes match an existing
// queue's (CreateQueue is idempotent only then); the name of the first
// difference otherwise.
func (m *meta) sameAttributes(attrs map[string]string) (string, bool) {
	for k, v := range attrs {
		cur, ok := m.Attributes[k]
		if !ok {
			cur = settable[k].def
		}
		if cur != v {
			return k, false
		}
	}
	return "", true
}

// newMeta is a new queue's description.
func newMeta(account, name string, attrs map[string]string, tags map[string]string) *meta {
	now := time.Now().Unix()
	return &meta{Account: account, Name: name, Fifo: strings.HasSuffix(name, fifoSuffix), Created: now, Modified: now,
		Attributes: attrs, Tags: tags}
}
