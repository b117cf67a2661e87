package logs

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/logline"
)

// TargetPrefix starts the X-Amz-Target header of every CloudWatch Logs
// request (JSON 1.1 protocol: POST / with X-Amz-Target: Logs_20140328.<Op>).
const TargetPrefix = "Logs_20140328."

// Error types of the CloudWatch Logs API, as botocore's model names them.
const (
	invalidParameter      = "InvalidParameterException"
	resourceNotFound      = "ResourceNotFoundException"
	resourceAlreadyExists = "ResourceAlreadyExistsException"
	serviceUnavailable    = "ServiceUnavailableException"
	unknownOperation      = "UnknownOperationException"
	serialization         = "SerializationException"
	invalidSignature      = "InvalidSignatureException"
	missingAuth           = "MissingAuthenticationTokenException"
)

// apiError is an error in the JSON 1.1 shape: {"__type","message"}.
type apiError struct {
	Type    string
	Message string
	Status  int // 0 means 400
}

func (e *apiError) Error() string { return e.Type + ": " + e.Message }

func errf(typ, format string, args ...any) *apiError {
	return &apiError{Type: typ, Message: fmt.Sprintf(format, args...)}
}

const contentType = "application/x-amz-json-1.1"

func writeError(w http.ResponseWriter, e *apiError) {
	status := e.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	b, _ := json.Marshal(map[string]string{"__type": e.Type, "message": e.Message})
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Amzn-ErrorType", e.Type)
	h.Set("X-Amzn-RequestId", requestID())
	w.WriteHeader(status)
	w.Write(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, &apiError{Type: serviceUnavailable, Message: "encoding the response failed", Status: http.StatusInternalServerError})
		return
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Amzn-RequestId", requestID())
	w.Write(b)
}

func requestID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// UnknownOperation answers a JSON 1.1 request whose X-Amz-Target no service
// of Kiln serves.
func UnknownOperation(w http.ResponseWriter, target string) {
	writeError(w, errf(unknownOperation, "Unknown operation %s", target))
}

// Handler serves the CloudWatch Logs API. It must sit behind
// auth.Middleware: it reads the caller's account from the request's
// context and the verified body with auth.Body.
func (s *Store) Handler() http.Handler {
	return http.HandlerFunc(s.serve)
}

// routes are the Logs API's operations (X-Amz-Target TargetPrefix+name).
var routes = map[string]func(*Store, *call) (any, error){
	"DescribeLogGroups":     (*Store).describeLogGroups,
	"DescribeLogStreams":    (*Store).describeLogStreams,
	"GetLogEvents":          (*Store).getLogEvents,
	"FilterLogEvents":       (*Store).filterLogEvents,
	"CreateLogGroup":        (*Store).createLogGroup,
	"CreateLogStream":       (*Store).createLogStream,
	"DeleteLogGroup":        (*Store).deleteLogGroup,
	"DeleteLogStream":       (*Store).deleteLogStream,
	"PutLogEvents":          (*Store).putLogEvents,
	"PutRetentionPolicy":    (*Store).putRetentionPolicy,
	"DeleteRetentionPolicy": (*Store).deleteRetentionPolicy,
}

type call struct {
	ctx     context.Context
	account string
	region  string
	body    []byte
}

func (s *Store) serve(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, TargetPrefix)
	if !ok || r.Method != http.MethodPost {
		UnknownOperation(w, target)
		return
	}
	caller, ok := auth.FromContext(r.Context())
	if !ok || caller.Account == "" {
		writeError(w, &apiError{Type: missingAuth, Message: "Missing Authentication Token", Status: http.StatusForbidden})
		return
	}
	if caller.Service != "logs" {
		writeError(w, &apiError{Type: invalidSignature, Status: http.StatusForbidden,
			Message: fmt.Sprintf("Credential should be scoped to correct service: 'logs'. (signed for '%s')", caller.Service)})
		return
	}
	body := auth.Body(r)
	if body == nil && r.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(r.Body, 2<<20))
	}
	c := &call{ctx: r.Context(), account: caller.Account, region: caller.Region, body: body}
	h, ok := routes[op]
	if !ok {
		UnknownOperation(w, target)
		return
	}
	if strings.HasPrefix(op, "Describe") || strings.HasSuffix(op, "LogEvents") {
		// Reads see every line this process has taken, not only what a
		// publishing round has stored so far.
		s.Flush(r.Context())
	}
	out, err := h(s, c)
	if err != nil {
		var e *apiError
		if !errors.As(err, &e) {
			s.log.Error("logs: internal error", "op", op, "err", err)
			e = &apiError{Type: serviceUnavailable, Message: "The service cannot complete the request.", Status: http.StatusInternalServerError}
		}
		writeError(w, e)
		return
	}
	writeJSON(w, out)
}

func (c *call) decode(v any) error {
	body := c.body
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errf(serialization, "Could not parse the request: %v", err)
	}
	return nil
}

// groupName resolves logGroupName / logGroupIdentifier (a name or an ARN).
func (c *call) groupName(name, identifier string, required bool) (string, error) {
	if name != "" && identifier != "" {
		return "", errf(invalidParameter, "LogGroup name and LogGroup ARN are mutually exclusive parameters.")
	}
	if identifier != "" {
		if rest, ok := strings.CutPrefix(identifier, "arn:"); ok {
			// arn:PARTITION:logs:REGION:ACCOUNT:log-group:NAME[:*]
			f := strings.SplitN(rest, ":", 5)
			if len(f) != 5 || f[1] != "logs" || !strings.HasPrefix(f[4], "log-group:") {
				return "", errf(invalidParameter, "Invalid logGroupIdentifier %s", identifier)
			}
			if f[3] != c.account {
				return "", errGroupNotFound
			}
			name = strings.TrimSuffix(strings.TrimPrefix(f[4], "log-group:"), ":*")
		} else {
			name = identifier
		}
	}
	if name == "" && required {
		return "", errf(invalidParameter, "Either logGroupName or logGroupIdentifier must be specified.")
	}
	if len(name) > 512 {
		return "", errf(invalidParameter, "1 validation error detected: Value at 'logGroupName' failed to satisfy constraint: Member must have length less than or equal to 512")
	}
	return name, nil
}

func (c *call) groupARN(name string) string {
	return "arn:aws:logs:" + c.region + ":" + c.account + ":log-group:" + name
}

// limit checks an optional limit against [1, max].
func limit(v *int, max int) (int, error) {
	if v == nil {
		return max, nil
	}
	if *v < 1 || *v > max {
		return 0, errf(invalidParameter, "1 validation error detected: Value '%d' at 'limit' failed to satisfy constraint: Member must have value between 1 and %d", *v, max)
	}
	return *v, nil
}

// Page tokens of the Describe operations: the sort key of the last item
// returned, base64url-encoded JSON.
type pageToken struct {
	Name string `json:"n"`
	Time int64  `json:"t,omitempty"`
}

func encodePage(t pageToken) string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodePage(s string) (pageToken, error) {
	var t pageToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &t) != nil {
		return t, errf(invalidParameter, "The specified nextToken is invalid.")
	}
	return t, nil
}

func (s *Store) describeLogGroups(c *call) (any, error) {
	var in struct {
		LogGroupNamePrefix  string `json:"logGroupNamePrefix"`
		LogGroupNamePattern string `json:"logGroupNamePattern"`
		NextToken           string `json:"nextToken"`
		Limit               *int   `json:"limit"`
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if in.LogGroupNamePrefix != "" && in.LogGroupNamePattern != "" {
		return nil, errf(invalidParameter, "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.")
	}
	n, err := limit(in.Limit, 50)
	if err != nil {
		return nil, err
	}
	var after *pageToken
	if in.NextToken != "" {
		t, err := decodePage(in.NextToken)
		if err != nil {
			return nil, err
		}
		after = &t
	}
	type logGroup struct {
		LogGroupName      string `json:"logGroupName"`
		CreationTime      int64  `json:"creationTime"`
		MetricFilterCount int    `json:"metricFilterCount"`
		Arn               string `json:"arn"`
		LogGroupArn       string `json:"logGroupArn"`
		StoredBytes       int64  `json:"storedBytes"`
		LogGroupClass     string `json:"logGroupClass"`
		RetentionInDays   int    `json:"retentionInDays,omitempty"`
	}
	out := struct {
		LogGroups []logGroup `json:"logGroups"`
		NextToken string     `json:"nextToken,omitempty"`
	}{LogGroups: []logGroup{}}
	for _, g := range s.groups(c.account) {
		if !strings.HasPrefix(g.Name, in.LogGroupNamePrefix) || !strings.Contains(g.Name, in.LogGroupNamePattern) {
			continue
		}
		if after != nil && g.Name <= after.Name {
			continue
		}
		if len(out.LogGroups) == n {
			out.NextToken = encodePage(pageToken{Name: out.LogGroups[n-1].LogGroupName})
			break
		}
		arn := c.groupARN(g.Name)
		out.LogGroups = append(out.LogGroups, logGroup{LogGroupName: g.Name, CreationTime: g.Created,
			Arn: arn + ":*", LogGroupArn: arn, StoredBytes: g.Bytes, LogGroupClass: "STANDARD", RetentionInDays: g.Retention})
	}
	return out, nil
}

func (s *Store) describeLogStreams(c *call) (any, error) {
	var in struct {
		LogGroupName        string `json:"logGroupName"`
		LogGroupIdentifier  string `json:"logGroupIdentifier"`
		LogStreamNamePrefix string `json:"logStreamNamePrefix"`
		OrderBy             string `json:"orderBy"`
		Descending          bool   `json:"descending"`
		NextToken           string `json:"nextToken"`
		Limit               *int   `json:"limit"`
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	group, err := c.groupName(in.LogGroupName, in.LogGroupIdentifier, true)
	if err != nil {
		return nil, err
	}
	byTime := false
	switch in.OrderBy {
	case "", "LogStreamName":
	case "LastEventTime":
		byTime = true
		if in.LogStreamNamePrefix != "" {
			return nil, errf(invalidParameter, "Cannot order by LastEventTime with a logStreamNamePrefix.")
		}
	default:
		return nil, errf(invalidParameter, "1 validation error detected: Value '%s' at 'orderBy' failed to satisfy constraint: Member must satisfy enum value set: [LogStreamName, LastEventTime]", in.OrderBy)
	}
	n, err := limit(in.Limit, 50)
	if err != nil {
		return nil, err
	}
	streams, err := s.streams(c.account, group)
	if err != nil {
		return nil, err
	}
	compare := func(a, b stream) int {
		if byTime {
			if r := cmp.Compare(a.Last, b.Last); r != 0 {
				return r
			}
		}
		return cmp.Compare(a.Name, b.Name)
	}
	if in.Descending {
		asc := compare
		compare = func(a, b stream) int { return asc(b, a) }
	}
	slices.SortFunc(streams, compare)
	var after *stream
	if in.NextToken != "" {
		t, err := decodePage(in.NextToken)
		if err != nil {
			return nil, err
		}
		after = &stream{Name: t.Name, Last: t.Time}
	}
	type logStream struct {
		LogStreamName       string `json:"logStreamName"`
		CreationTime        int64  `json:"creationTime"`
		FirstEventTimestamp int64  `json:"firstEventTimestamp,omitempty"`
		LastEventTimestamp  int64  `json:"lastEventTimestamp,omitempty"`
		LastIngestionTime   int64  `json:"lastIngestionTime,omitempty"`
		Arn                 string `json:"arn"`
		StoredBytes         int64  `json:"storedBytes"`
	}
	out := struct {
		LogStreams []logStream `json:"logStreams"`
		NextToken  string      `json:"nextToken,omitempty"`
	}{LogStreams: []logStream{}}
	var last stream
	for _, st := range streams {
		if !strings.HasPrefix(st.Name, in.LogStreamNamePrefix) || after != nil && compare(st, *after) <= 0 {
			continue
		}
		if len(out.LogStreams) == n {
			t := pageToken{Name: last.Name}
			if byTime {
				t.Time = last.Last
			}
			out.NextToken = encodePage(t)
			break
		}
		last = st
		out.LogStreams = append(out.LogStreams, logStream{LogStreamName: st.Name, CreationTime: st.Created,
			FirstEventTimestamp: st.First, LastEventTimestamp: st.Last, LastIngestionTime: st.LastIngestion,
			Arn: c.groupARN(group) + ":log-stream:" + st.Name, StoredBytes: st.Bytes})
	}
	return out, nil
}

type outputEvent struct {
	Timestamp     int64  `json:"timestamp"`
	Message       string `json:"message"`
	IngestionTime int64  `json:"ingestionTime"`
}

func (s *Store) getLogEvents(c *call) (any, error) {
	var in struct {
		LogGroupName       string `json:"logGroupName"`
		LogGroupIdentifier string `json:"logGroupIdentifier"`
		LogStreamName      string `json:"logStreamName"`
		StartTime          *int64 `json:"startTime"`
		EndTime            *int64 `json:"endTime"`
		NextToken          string `json:"nextToken"`
		Limit              *int   `json:"limit"`
		StartFromHead      bool   `json:"startFromHead"`
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	group, err := c.groupName(in.LogGroupName, in.LogGroupIdentifier, true)
	if err != nil {
		return nil, err
	}
	if in.LogStreamName == "" {
		return nil, errf(invalidParameter, "1 validation error detected: Value null at 'logStreamName' failed to satisfy constraint: Member must not be null")
	}
	n, err := limit(in.Limit, 10000)
	if err != nil {
		return nil, err
	}
	res, err := s.getEvents(c.ctx, getQuery{account: c.account, group: group, stream: in.LogStreamName,
		start: in.StartTime, end: in.EndTime, limit: n, startFromHead: in.StartFromHead, token: in.NextToken})
	if err != nil {
		return nil, err
	}
	out := struct {
		Events            []outputEvent `json:"events"`
		NextForwardToken  string        `json:"nextForwardToken"`
		NextBackwardToken string        `json:"nextBackwardToken"`
	}{Events: make([]outputEvent, len(res.events)), NextForwardToken: res.forward, NextBackwardToken: res.backward}
	for i, e := range res.events {
		out.Events[i] = outputEvent{Timestamp: e.timestamp, Message: e.message, IngestionTime: e.ingestion}
	}
	return out, nil
}

func (s *Store) filterLogEvents(c *call) (any, error) {
	var in struct {
		LogGroupName        string   `json:"logGroupName"`
		LogGroupIdentifier  string   `json:"logGroupIdentifier"`
		LogStreamNames      []string `json:"logStreamNames"`
		LogStreamNamePrefix string   `json:"logStreamNamePrefix"`
		StartTime           *int64   `json:"startTime"`
		EndTime             *int64   `json:"endTime"`
		FilterPattern       string   `json:"filterPattern"`
		NextToken           string   `json:"nextToken"`
		Limit               *int     `json:"limit"`
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	group, err := c.groupName(in.LogGroupName, in.LogGroupIdentifier, true)
	if err != nil {
		return nil, err
	}
	if len(in.LogStreamNames) > 0 && in.LogStreamNamePrefix != "" {
		return nil, errf(invalidParameter, "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.")
	}
	if len(in.LogStreamNames) > 100 {
		return nil, errf(invalidParameter, "1 validation error detected: Value at 'logStreamNames' failed to satisfy constraint: Member must have length less than or equal to 100")
	}
	n, err := limit(in.Limit, 10000)
	if err != nil {
		return nil, err
	}
	pat, err := parsePattern(in.FilterPattern)
	if err != nil {
		return nil, err
	}
	res, err := s.filterEvents(c.ctx, filterQuery{account: c.account, group: group, streams: in.LogStreamNames,
		prefix: in.LogStreamNamePrefix, start: in.StartTime, end: in.EndTime, pattern: pat, limit: n, token: in.NextToken})
	if err != nil {
		return nil, err
	}
	type filteredEvent struct {
		LogStreamName string `json:"logStreamName"`
		Timestamp     int64  `json:"timestamp"`
		Message       string `json:"message"`
		IngestionTime int64  `json:"ingestionTime"`
		EventID       string `json:"eventId"`
	}
	out := struct {
		Events             []filteredEvent `json:"events"`
		SearchedLogStreams []struct{}      `json:"searchedLogStreams"`
		NextToken          string          `json:"nextToken,omitempty"`
	}{Events: make([]filteredEvent, len(res.events)), SearchedLogStreams: []struct{}{}, NextToken: res.next}
	for i, e := range res.events {
		out.Events[i] = filteredEvent{LogStreamName: e.stream, Timestamp: e.timestamp, Message: e.message,
			IngestionTime: e.ingestion, EventID: e.pos.String()}
	}
	return out, nil
}

var groupNameRE = regexp.MustCompile(`^[.\-_/#A-Za-z0-9]{1,512}$`)

func checkGroupName(name string) error {
	if !groupNameRE.MatchString(name) {
		return errf(invalidParameter, "1 validation error detected: Value '%s' at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+ and have length between 1 and 512", name)
	}
	return nil
}

func checkStreamName(name string) error {
	if name == "" || len(name) > 512 || strings.ContainsAny(name, ":*") {
		return errf(invalidParameter, "1 validation error detected: Value '%s' at 'logStreamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [^:*]* and have length between 1 and 512", name)
	}
	return nil
}

type groupStreamInput struct {
	LogGroupName  string `json:"logGroupName"`
	LogStreamName string `json:"logStreamName"`
}

func (s *Store) createLogGroup(c *call) (any, error) {
	var in groupStreamInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if err := checkGroupName(in.LogGroupName); err != nil {
		return nil, err
	}
	return struct{}{}, s.createGroup(c.ctx, c.account, in.LogGroupName)
}

func (s *Store) createLogStream(c *call) (any, error) {
	var in groupStreamInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if err := checkGroupName(in.LogGroupName); err != nil {
		return nil, err
	}
	if err := checkStreamName(in.LogStreamName); err != nil {
		return nil, err
	}
	return struct{}{}, s.createStream(c.ctx, c.account, in.LogGroupName, in.LogStreamName)
}

func (s *Store) deleteLogGroup(c *call) (any, error) {
	var in groupStreamInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	return struct{}{}, s.deleteGroup(c.ctx, c.account, in.LogGroupName)
}

func (s *Store) putRetentionPolicy(c *call) (any, error) {
	var in struct {
		LogGroupName    string `json:"logGroupName"`
		RetentionInDays *int   `json:"retentionInDays"`
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if err := checkGroupName(in.LogGroupName); err != nil {
		return nil, err
	}
	if in.RetentionInDays == nil || !validRetention(*in.RetentionInDays) {
		given := "null"
		if in.RetentionInDays != nil {
			given = strconv.Itoa(*in.RetentionInDays)
		}
		return nil, errf(invalidParameter, "1 validation error detected: Value '%s' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: %v", given, retentionDays)
	}
	return struct{}{}, s.setRetention(c.ctx, c.account, in.LogGroupName, *in.RetentionInDays)
}

func (s *Store) deleteRetentionPolicy(c *call) (any, error) {
	var in groupStreamInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if err := checkGroupName(in.LogGroupName); err != nil {
		return nil, err
	}
	return struct{}{}, s.setRetention(c.ctx, c.account, in.LogGroupName, 0)
}

func (s *Store) deleteLogStream(c *call) (any, error) {
	var in groupStreamInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	return struct{}{}, s.deleteStream(c.ctx, c.account, in.LogGroupName, in.LogStreamName)
}

// PutLogEvents' limits, as CloudWatch Logs'.
const (
	maxPutEvents = 10000
	maxPutBytes  = 1048576
	maxPastAge   = 14 * 24 * time.Hour
	maxFuture    = 2 * time.Hour
)

func (s *Store) putLogEvents(c *call) (any, error) {
	var in struct {
		LogGroupName  string `json:"logGroupName"`
		LogStreamName string `json:"logStreamName"`
		LogEvents     []struct {
			Timestamp int64  `json:"timestamp"`
			Message   string `json:"message"`
		} `json:"logEvents"`
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if len(in.LogEvents) == 0 || len(in.LogEvents) > maxPutEvents {
		return nil, errf(invalidParameter, "1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length between 1 and %d", maxPutEvents)
	}
	if _, err := s.streamSkew(c.account, in.LogGroupName, in.LogStreamName); err != nil {
		return nil, err
	}
	var size int64
	for i, e := range in.LogEvents {
		size += eventSize(e.Message)
		if e.Message == "" {
			return nil, errf(invalidParameter, "Log event message must not be empty (event %d).", i)
		}
		if i > 0 && e.Timestamp < in.LogEvents[i-1].Timestamp {
			return nil, errf(invalidParameter, "Log events in a single PutLogEvents request must be in chronological order.")
		}
	}
	if size > maxPutBytes {
		return nil, errf(invalidParameter, "Upload too large: %d bytes exceeds %d bytes", size, maxPutBytes)
	}
	if in.LogEvents[len(in.LogEvents)-1].Timestamp-in.LogEvents[0].Timestamp > (24 * time.Hour).Milliseconds() {
		return nil, errf(invalidParameter, "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.")
	}
	now := time.Now()
	oldest, newest := now.Add(-maxPastAge).UnixMilli(), now.Add(maxFuture).UnixMilli()
	type rejected struct {
		TooNewLogEventStartIndex *int `json:"tooNewLogEventStartIndex,omitempty"`
		TooOldLogEventEndIndex   *int `json:"tooOldLogEventEndIndex,omitempty"`
	}
	var rej rejected
	lines := make([]logline.Line, 0, len(in.LogEvents))
	for i, e := range in.LogEvents {
		switch {
		case e.Timestamp < oldest:
			rej.TooOldLogEventEndIndex = &i
		case e.Timestamp > newest:
			if rej.TooNewLogEventStartIndex == nil {
				rej.TooNewLogEventStartIndex = &i
			}
		default:
			lines = append(lines, logline.Line{Time: time.UnixMilli(e.Timestamp), Message: e.Message})
		}
	}
	if len(lines) > 0 {
		if err := s.put(c.ctx, c.account, in.LogGroupName, in.LogStreamName, lines); err != nil {
			return nil, err
		}
	}
	out := struct {
		NextSequenceToken     string    `json:"nextSequenceToken"`
		RejectedLogEventsInfo *rejected `json:"rejectedLogEventsInfo,omitempty"`
	}{NextSequenceToken: fmt.Sprintf("%d", now.UnixNano())}
	if rej != (rejected{}) {
		out.RejectedLogEventsInfo = &rej
	}
	return out, nil
}
