package queues

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/auth"
)

// TargetPrefix starts the X-Amz-Target of SQS's JSON protocol.
const TargetPrefix = "AmazonSQS."

// SigningService is the SigV4 service name SQS clients sign with.
const SigningService = "sqs"

// Handler serves SQS's API in both protocols: AWS JSON 1.0 (X-Amz-Target
// AmazonSQS.Op, current SDKs) and query (form POST with Action=Op, XML
// answers; older SDKs and CLIs such as Debian bookworm's). It must sit
// behind auth.Middleware.
func (s *Service) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// call is one API request, decoded.
type call struct {
	ctx      context.Context
	account  string
	endpoint string // http://host:port, the base of queue URLs
	input    []byte // the request as JSON, whichever the protocol
}

func (s *Service) serve(w http.ResponseWriter, r *http.Request) {
	caller, _ := auth.FromContext(r.Context())
	c := &call{ctx: r.Context(), account: caller.Account, endpoint: "http://" + r.Host}
	var op string
	protocol := jsonProtocol{}
	var wr writer = protocol
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		op, c.input = strings.TrimPrefix(target, TargetPrefix), auth.Body(r)
		if len(c.input) == 0 {
			c.input = []byte("{}")
		}
	} else {
		form, err := url.ParseQuery(string(auth.Body(r)))
		if err != nil {
			queryProtocol{}.error(w, errorf(errBadRequest, "The request body is not a valid form: %v", err))
			return
		}
		for k, v := range r.URL.Query() {
			form[k] = v
		}
		op = form.Get("Action")
		wr = queryProtocol{op: op}
		c.input, _ = json.Marshal(queryInput(form))
	}
	h, ok := operations[op]
	if !ok {
		wr.error(w, errorf(errUnknownAction, "An unknown operation %s was requested.", op))
		return
	}
	if caller.Service != SigningService {
		wr.error(w, errorf(errAccessDenied, "Credential should be scoped to correct service: '%s'.", SigningService))
		return
	}
	out, err := h(s, c)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			s.log.Warn("queues: "+op, "err", err)
			e = errorf(errInternal, "We encountered an internal error. Please try again.")
		}
		wr.error(w, e)
		return
	}
	wr.result(w, out)
}

// operations are SQS's actions, by name.
var operations = map[string]func(*Service, *call) (any, error){
	"CreateQueue":                  (*Service).createQueue,
	"GetQueueUrl":                  (*Service).getQueueURL,
	"ListQueues":                   (*Service).listQueues,
	"GetQueueAttributes":           (*Service).getQueueAttributes,
	"SetQueueAttributes":           (*Service).setQueueAttributes,
	"DeleteQueue":                  (*Service).deleteQueue,
	"PurgeQueue":                   (*Service).purgeQueue,
	"SendMessage":                  (*Service).sendMessage,
	"SendMessageBatch":             (*Service).sendMessageBatch,
	"ReceiveMessage":               (*Service).receiveMessage,
	"DeleteMessage":                (*Service).deleteMessage,
	"DeleteMessageBatch":           (*Service).deleteMessageBatch,
	"ChangeMessageVisibility":      (*Service).changeMessageVisibility,
	"ChangeMessageVisibilityBatch": (*Service).changeMessageVisibilityBatch,
	"ListQueueTags":                (*Service).listQueueTags,
	"TagQueue":                     (*Service).tagQueue,
	"UntagQueue":                   (*Service).untagQueue,
}

// decode reads the call's input into v.
func (c *call) decode(v any) error {
	if err := json.Unmarshal(c.input, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return invalid("for parameter %s is invalid. Reason: not a valid %s.", te.Field, te.Type)
		}
		return errorf(errBadRequest, "The request is not valid JSON: %v", err)
	}
	return nil
}

// queueRef is the QueueUrl every queue operation names its queue with.
type queueRef struct{ QueueUrl string }

func (r queueRef) ref() queueRef { return r }

// queueInput decodes the call's input into in (a struct embedding
// queueRef) and returns the name of the queue its QueueUrl names.
func (c *call) queueInput(in interface{ ref() queueRef }) (string, error) {
	if err := c.decode(in); err != nil {
		return "", err
	}
	return c.queue(in.ref())
}

// queue parses a QueueUrl (http://HOST/ACCOUNT/NAME) of the caller's account.
func (c *call) queue(ref queueRef) (string, error) {
	if ref.QueueUrl == "" {
		return "", errorf(errMissingParam, "The request must contain the parameter QueueUrl.")
	}
	u, err := url.Parse(ref.QueueUrl)
	if err != nil {
		return "", errorf(errNoQueue, "The specified queue does not exist or you do not have access to it.")
	}
	account, name, ok := strings.Cut(strings.Trim(u.Path, "/"), "/")
	if !ok || account != c.account || name == "" || strings.Contains(name, "/") {
		return "", errorf(errNoQueue, "The specified queue does not exist or you do not have access to it.")
	}
	return name, nil
}

func (c *call) url(name string) string { return c.endpoint + "/" + c.account + "/" + name }

func (s *Service) createQueue(c *call) (any, error) {
	var in struct {
		QueueName  string
		Attributes map[string]string
		Tags       map[string]string `json:"tags"`
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if in.QueueName == "" {
		return nil, errorf(errMissingParam, "The request must contain the parameter QueueName.")
	}
	if err := s.Create(c.ctx, c.account, in.QueueName, in.Attributes, in.Tags); err != nil {
		return nil, err
	}
	return map[string]string{"QueueUrl": c.url(in.QueueName)}, nil
}

func (s *Service) getQueueURL(c *call) (any, error) {
	var in struct{ QueueName, QueueOwnerAWSAccountId string }
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if in.QueueName == "" {
		return nil, errorf(errMissingParam, "The request must contain the parameter QueueName.")
	}
	if in.QueueOwnerAWSAccountId != "" && in.QueueOwnerAWSAccountId != c.account {
		return nil, errNotExist()
	}
	if err := s.Exists(c.ctx, c.account, in.QueueName); err != nil {
		return nil, err
	}
	return map[string]string{"QueueUrl": c.url(in.QueueName)}, nil
}

func (s *Service) listQueues(c *call) (any, error) {
	var in struct {
		QueueNamePrefix, NextToken string
		MaxResults                 *int
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if in.MaxResults != nil && (*in.MaxResults < 1 || *in.MaxResults > 1000) {
		return nil, invalid("%d for parameter MaxResults is invalid. Reason: MaxResults must be an integer between 1 and 1000.", *in.MaxResults)
	}
	names, err := s.List(c.ctx, c.account, in.QueueNamePrefix)
	if err != nil {
		return nil, err
	}
	// The token is the last name returned; names are sorted.
	i := sort.SearchStrings(names, in.NextToken)
	if in.NextToken != "" && i < len(names) && names[i] == in.NextToken {
		i++
	}
	names = names[i:]
	out := struct {
		QueueUrls []string `json:",omitempty"`
		NextToken string   `json:",omitempty"`
	}{}
	limit := 1000
	if in.MaxResults != nil {
		limit = *in.MaxResults
	}
	if len(names) > limit {
		names = names[:limit]
		if in.MaxResults != nil {
			out.NextToken = names[limit-1]
		}
	}
	for _, n := range names {
		out.QueueUrls = append(out.QueueUrls, c.url(n))
	}
	return out, nil
}

func (s *Service) getQueueAttributes(c *call) (any, error) {
	var in struct {
		queueRef
		AttributeNames []string
	}
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	all, err := s.Attributes(c.ctx, c.account, name)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, a := range in.AttributeNames {
		if a == "All" {
			out = all
			break
		}
		v, ok := all[a]
		_, known := settable[a]
		if !ok && !known && !contains(computed, a) {
			return nil, errorf(errAttrName, "Unknown Attribute %s.", a)
		}
		if ok {
			out[a] = v
		}
	}
	return struct {
		Attributes map[string]string `json:",omitempty"`
	}{out}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (s *Service) setQueueAttributes(c *call) (any, error) {
	var in struct {
		queueRef
		Attributes map[string]string
	}
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	return nil, s.SetAttributes(c.ctx, c.account, name, in.Attributes)
}

// simple runs op on the queue a call's QueueUrl names.
func (s *Service) simple(c *call, op func(ctx context.Context, account, name string) error) (any, error) {
	var in queueRef
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	return nil, op(c.ctx, c.account, name)
}

func (s *Service) deleteQueue(c *call) (any, error) { return s.simple(c, s.Delete) }
func (s *Service) purgeQueue(c *call) (any, error)  { return s.simple(c, s.Purge) }

func (s *Service) listQueueTags(c *call) (any, error) {
	var in queueRef
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	tags, err := s.Tags(c.ctx, c.account, name)
	return struct {
		Tags map[string]string `json:",omitempty"`
	}{tags}, err
}

func (s *Service) tagQueue(c *call) (any, error) {
	var in struct {
		queueRef
		Tags map[string]string
	}
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	return nil, s.modifyTags(c.ctx, c.account, name, func(t map[string]string) {
		for k, v := range in.Tags {
			t[k] = v
		}
	})
}

func (s *Service) untagQueue(c *call) (any, error) {
	var in struct {
		queueRef
		TagKeys []string
	}
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	return nil, s.modifyTags(c.ctx, c.account, name, func(t map[string]string) {
		for _, k := range in.TagKeys {
			delete(t, k)
		}
	})
}

// sendEntry is SendMessage's input and a SendMessageBatch entry.
type sendEntry struct {
	Id string
	SendInput
}

func (s *Service) sendMessage(c *call) (any, error) {
	var in struct {
		queueRef
		SendInput
	}
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	return s.Send(c.ctx, c.account, name, in.SendInput)
}

var batchIDRe = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,80}$`)

// checkBatch checks a batch's entry ids: 1 to 10 of them, distinct, well formed.
func checkBatch(ids []string) error {
	if len(ids) == 0 {
		return errorf(errEmptyBatch, "There should be at least one SendMessageBatchRequestEntry in the request.")
	}
	if len(ids) > maxBatchEntries {
		return errorf(errTooManyEntries, "Maximum number of entries per request are 10. You have sent %d.", len(ids))
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if !batchIDRe.MatchString(id) {
			return errorf(errBatchEntryID, "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.")
		}
		if seen[id] {
			return errorf(errIdsNotDistinct, "Id %s repeated.", id)
		}
		seen[id] = true
	}
	return nil
}

// batchFailure is a BatchResultErrorEntry.
type batchFailure struct {
	Id          string
	SenderFault bool
	Code        string
	Message     string
}

func failure(id string, err error) batchFailure {
	var e *Error
	if !errors.As(err, &e) {
		e = errorf(errInternal, "We encountered an internal error. Please try again.")
	}
	return batchFailure{Id: id, SenderFault: e.Sender, Code: e.Query, Message: e.Message}
}

type batchResult[T any] struct {
	Successful []T
	Failed     []batchFailure
}

func (s *Service) sendMessageBatch(c *call) (any, error) {
	var in struct {
		queueRef
		Entries []sendEntry
	}
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	q, err := s.queue(c.ctx, c.account, name)
	if err != nil {
		return nil, err
	}
	ids, total := make([]string, len(in.Entries)), 0
	for i, e := range in.Entries {
		ids[i] = e.Id
		n, _ := checkMessageAttributes(e.MessageAttributes)
		total += len(e.MessageBody) + n
	}
	if err := checkBatch(ids); err != nil {
		return nil, err
	}
	if max := q.int(attrMaxSize); total > max {
		return nil, errorf(errBatchTooLong, "Batch requests cannot be longer than %d bytes. You have sent %d bytes.", max, total)
	}
	type sent struct {
		Id string
		SendResult
	}
	out := batchResult[sent]{Successful: []sent{}, Failed: []batchFailure{}}
	for _, e := range in.Entries {
		err := q.check(e.SendInput)
		var res *SendResult
		if err == nil {
			res, err = s.send(c.ctx, q, c.account, e.SendInput)
		}
		if err != nil {
			out.Failed = append(out.Failed, failure(e.Id, err))
			continue
		}
		out.Successful = append(out.Successful, sent{e.Id, *res})
	}
	return out, nil
}

func (s *Service) receiveMessage(c *call) (any, error) {
	var in struct {
		queueRef
		AttributeNames              []string
		MessageSystemAttributeNames []string
		MessageAttributeNames       []string
		MaxNumberOfMessages         *int
		VisibilityTimeout           *int
		WaitTimeSeconds             *int
	}
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	q, err := s.queue(c.ctx, c.account, name)
	if err != nil {
		return nil, err
	}
	ri := ReceiveInput{Max: 1, Wait: time.Duration(q.int(attrWait)) * time.Second}
	if n := in.MaxNumberOfMessages; n != nil {
		if *n < 1 || *n > maxBatchEntries {
			return nil, invalid("%d for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided.", *n)
		}
		ri.Max = *n
	}
	if w := in.WaitTimeSeconds; w != nil {
		if *w < 0 || *w > 20 {
			return nil, invalid("%d for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided.", *w)
		}
		ri.Wait = time.Duration(*w) * time.Second
	}
	if v := in.VisibilityTimeout; v != nil {
		if *v < 0 || *v > maxVisibility {
			return nil, invalid("%d for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200, if provided.", *v)
		}
		d := time.Duration(*v) * time.Second
		ri.Visibility = &d
	}
	msgs, err := s.Receive(c.ctx, c.account, name, ri)
	if err != nil {
		if c.ctx.Err() != nil {
			return nil, c.ctx.Err()
		}
		return nil, err
	}
	sysNames := append(in.AttributeNames, in.MessageSystemAttributeNames...)
	for i := range msgs {
		m := &msgs[i]
		m.Attributes = keep(m.Attributes, sysNames, func(want, name string) bool { return want == "All" || want == name })
		m.MessageAttributes = keep(m.MessageAttributes, in.MessageAttributeNames, func(want, name string) bool {
			p, wild := strings.CutSuffix(want, ".*")
			return want == "All" || want == ".*" || want == name || wild && strings.HasPrefix(name, p+".")
		})
		m.MD5OfMessageAttributes = md5OfAttributes(m.MessageAttributes)
	}
	return struct {
		Messages []Message `json:",omitempty"`
	}{msgs}, nil
}

// keep returns the entries of m whose names match one of wants.
func keep[V any](m map[string]V, wants []string, match func(want, name string) bool) map[string]V {
	out := map[string]V{}
	for name, v := range m {
		for _, w := range wants {
			if match(w, name) {
				out[name] = v
				break
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

type receiptRef struct {
	queueRef
	ReceiptHandle     string
	VisibilityTimeout *int
}

func (s *Service) deleteMessage(c *call) (any, error) {
	var in receiptRef
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	if in.ReceiptHandle == "" {
		return nil, errorf(errMissingParam, "The request must contain the parameter ReceiptHandle.")
	}
	return nil, s.DeleteMessage(c.ctx, c.account, name, in.ReceiptHandle)
}

func (s *Service) changeMessageVisibility(c *call) (any, error) {
	var in receiptRef
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	if in.VisibilityTimeout == nil {
		return nil, errorf(errMissingParam, "The request must contain the parameter VisibilityTimeout.")
	}
	return nil, s.ChangeVisibility(c.ctx, c.account, name, in.ReceiptHandle, *in.VisibilityTimeout)
}

// receiptBatch runs op on each entry of a DeleteMessageBatch or
// ChangeMessageVisibilityBatch.
func (s *Service) receiptBatch(c *call, op func(ctx context.Context, name string, e receiptEntry) error) (any, error) {
	var in struct {
		queueRef
		Entries []receiptEntry
	}
	name, err := c.queueInput(&in)
	if err != nil {
		return nil, err
	}
	if err := s.Exists(c.ctx, c.account, name); err != nil {
		return nil, err
	}
	ids := make([]string, len(in.Entries))
	for i, e := range in.Entries {
		ids[i] = e.Id
	}
	if err := checkBatch(ids); err != nil {
		return nil, err
	}
	type ok struct{ Id string }
	out := batchResult[ok]{Successful: []ok{}, Failed: []batchFailure{}}
	errs := each(len(in.Entries), func(i int) error { return op(c.ctx, name, in.Entries[i]) })
	for i, e := range in.Entries {
		if errs[i] != nil {
			out.Failed = append(out.Failed, failure(e.Id, errs[i]))
			continue
		}
		out.Successful = append(out.Successful, ok{e.Id})
	}
	return out, nil
}

type receiptEntry struct {
	Id, ReceiptHandle string
	VisibilityTimeout int
}

func (s *Service) deleteMessageBatch(c *call) (any, error) {
	return s.receiptBatch(c, func(ctx context.Context, name string, e receiptEntry) error {
		return s.DeleteMessage(ctx, c.account, name, e.ReceiptHandle)
	})
}

func (s *Service) changeMessageVisibilityBatch(c *call) (any, error) {
	return s.receiptBatch(c, func(ctx context.Context, name string, e receiptEntry) error {
		return s.ChangeVisibility(ctx, c.account, name, e.ReceiptHandle, e.VisibilityTimeout)
	})
}

// queryInput turns a query-protocol form into the JSON protocol's input:
// A.1.B=x becomes {"A":[{"B":"x"}]}, the flattened names become the JSON
// members' (Attribute.N.Name/Value → Attributes map, AttributeName.N →
// AttributeNames, …Entry.N → Entries), and integer parameters numbers.
func queryInput(form url.Values) any {
	root := map[string]any{}
	for k, vs := range form {
		if k == "Action" || k == "Version" || len(vs) == 0 {
			continue
		}
		node := root
		parts := strings.Split(k, ".")
		for _, p := range parts[:len(parts)-1] {
			child, ok := node[p].(map[string]any)
			if !ok {
				child = map[string]any{}
				node[p] = child
			}
			node = child
		}
		node[parts[len(parts)-1]] = vs[0]
	}
	return reshape(root)
}

// queryLists are the flattened members of the query protocol, by their
// name there: the JSON member, and for maps the key's element.
var queryLists = map[string]struct{ json, key string }{
	"Attribute":                      {"Attributes", "Name"},
	"MessageAttribute":               {"MessageAttributes", "Name"},
	"MessageSystemAttribute":         {"MessageSystemAttributes", "Name"},
	"Tag":                            {"Tags", "Key"},
	"AttributeName":                  {"AttributeNames", ""},
	"MessageAttributeName":           {"MessageAttributeNames", ""},
	"MessageSystemAttributeName":     {"MessageSystemAttributeNames", ""},
	"TagKey":                         {"TagKeys", ""},
	"SendMessageBatchRequestEntry":   {"Entries", ""},
	"DeleteMessageBatchRequestEntry": {"Entries", ""},
	"ChangeMessageVisibilityBatchRequestEntry": {"Entries", ""},
}

var queryInts = map[string]bool{"MaxNumberOfMessages": true, "VisibilityTimeout": true, "WaitTimeSeconds": true,
	"DelaySeconds": true, "MaxResults": true}

func reshape(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	// {"1": x, "2": y} is a list.
	indexed := len(m) > 0
	for k := range m {
		if _, err := strconv.Atoi(k); err != nil {
			indexed = false
			break
		}
	}
	if indexed {
		keys := make([]int, 0, len(m))
		for k := range m {
			n, _ := strconv.Atoi(k)
			keys = append(keys, n)
		}
		sort.Ints(keys)
		list := make([]any, 0, len(keys))
		for _, k := range keys {
			list = append(list, reshape(m[strconv.Itoa(k)]))
		}
		return list
	}
	out := map[string]any{}
	for k, v := range m {
		v = reshape(v)
		if s, ok := v.(string); ok && queryInts[k] {
			if n, err := strconv.Atoi(s); err == nil {
				v = n
			}
		}
		l, isList := queryLists[k]
		if !isList {
			out[k] = v
			continue
		}
		items, _ := v.([]any)
		if l.key == "" {
			out[l.json] = items
			continue
		}
		mv := map[string]any{}
		for _, it := range items {
			if e, ok := it.(map[string]any); ok {
				if name, ok := e[l.key].(string); ok {
					mv[name] = e["Value"]
				}
			}
		}
		out[l.json] = mv
	}
	return out
}
