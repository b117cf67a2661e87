package logs_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	cwl "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/logline"
	"github.com/kiln-dev/kiln/internal/logs"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var ctx = context.Background()

const (
	account = "123456789012"
	keyID   = "AKIDLOGSTEST"
	secret  = "logs-test-secret"
	region  = "us-east-1"
)

// env is a real store: embedded NATS with its data in dir, the store, and
// the API behind SigV4 on httptest.
type env struct {
	t      testing.TB
	dir    string
	nats   *natsd.Server
	nc     *nats.Conn
	store  *logs.Store
	srv    *httptest.Server
	client *cwl.Client
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func start(t testing.TB, dir string, cfg logs.Config) *env {
	t.Helper()
	ns, err := natsd.Start(natsd.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	store, err := logs.Open(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	keyring := auth.NewKeyring(auth.Credential{AccessKeyID: keyID, SecretAccessKey: secret, Account: account})
	limit := func(*http.Request) (int64, *api.Error) {
		return 2 << 20, api.Errorf(api.RequestTooLarge, "too large")
	}
	mux := http.NewServeMux()
	mux.Handle("POST /{$}", store.Handler())
	srv := httptest.NewServer(auth.Middleware(keyring, limit, mux))
	e := &env{t: t, dir: dir, nats: ns, nc: nc, store: store, srv: srv, client: client(srv.URL)}
	t.Cleanup(e.stop)
	return e
}

var stopMu sync.Mutex

func (e *env) stop() {
	stopMu.Lock()
	defer stopMu.Unlock()
	if e.srv == nil {
		return
	}
	e.srv.Close()
	e.store.Close()
	e.nc.Close()
	e.nats.Shutdown()
	e.srv = nil
}

// crash stops NATS under the store, which gets no chance to finish.
func (e *env) crash() {
	stopMu.Lock()
	defer stopMu.Unlock()
	e.srv.Close()
	e.nc.Close()
	e.nats.Shutdown()
	e.store.Close() // its connection is gone: this writes nothing
	e.srv = nil
}

func client(endpoint string) *cwl.Client {
	return cwl.New(cwl.Options{
		Region:           region,
		BaseEndpoint:     aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider(keyID, secret, ""),
		RetryMaxAttempts: 1,
	})
}

// must returns v, or panics (failing the test with a stack) on error.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// apiError asserts err is an API error of type typ with HTTP status 400.
func apiError(t *testing.T, err error, typ string) {
	t.Helper()
	kilntest.APIError(t, err, typ, 400)
}

func lines(t0 time.Time, step time.Duration, format string, n int) []logline.Line {
	out := make([]logline.Line, n)
	for i := range out {
		out[i] = logline.Line{Time: t0.Add(time.Duration(i) * step), Message: fmt.Sprintf(format, i)}
	}
	return out
}

func messages[E any](evs []E, msg func(E) *string) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = aws.ToString(msg(e))
	}
	return out
}

func outMsg(e types.OutputLogEvent) *string    { return e.Message }
func filtMsg(e types.FilteredLogEvent) *string { return e.Message }

// getAll pages GetLogEvents forward with the SDK's paginator.
func getAll(t *testing.T, c *cwl.Client, in *cwl.GetLogEventsInput) []string {
	t.Helper()
	var out []string
	p := cwl.NewGetLogEventsPaginator(c, in, func(o *cwl.GetLogEventsPaginatorOptions) {
		o.StopOnDuplicateToken = true // the forward token repeats at the end
		o.Limit = aws.ToInt32(in.Limit)
	})
	for p.HasMorePages() {
		page := must(p.NextPage(ctx))
		out = append(out, messages(page.Events, outMsg)...)
	}
	return out
}

// filterAll pages FilterLogEvents with the SDK's paginator.
func filterAll(t *testing.T, c *cwl.Client, in *cwl.FilterLogEventsInput) []types.FilteredLogEvent {
	t.Helper()
	var out []types.FilteredLogEvent
	p := cwl.NewFilterLogEventsPaginator(c, in, func(o *cwl.FilterLogEventsPaginatorOptions) { o.Limit = aws.ToInt32(in.Limit) })
	for p.HasMorePages() {
		page := must(p.NextPage(ctx))
		out = append(out, page.Events...)
	}
	return out
}

// Odd names: Lambda's stream names have '/', '[', '$', ']'; the sink takes
// any name at all, including NATS' own wildcards and separators.
const (
	lambdaGroup  = "/aws/lambda/my-fn_1.2#x"
	lambdaStream = "2026/01/02/[$LATEST]0123456789abcdef"
)

func TestSinkOrderPagingAndRestart(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir, logs.Config{})
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)

	// Two streams appended in many small calls, interleaved, plus names
	// that are NATS syntax.
	const n = 2500
	other := "2026/01/02/[7]other"
	for i := 0; i < n; i += 10 {
		e.store.Append(account, lambdaGroup, lambdaStream, lines(t0.Add(time.Duration(i)*time.Millisecond), time.Millisecond, "a-%04d", 10)[:10])
		e.store.Append(account, lambdaGroup, other, []logline.Line{{Time: t0.Add(time.Duration(i) * time.Millisecond), Message: fmt.Sprintf("b-%04d", i)}})
	}
	odd := []string{"a.b", "a*", ">", "with space", "ünï/cödé", "_2F"}
	for i, name := range odd {
		e.store.Append(account, "weird.group>*", name, []logline.Line{{Time: t0, Message: "odd " + name}, {Time: t0.Add(time.Duration(i)), Message: "second " + name}})
	}
	if err := e.store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if d := e.store.Dropped(); d != 0 {
		t.Fatalf("dropped %d lines", d)
	}

	check := func(c *cwl.Client) {
		t.Helper()
		// Forward, paged by 97, in order.
		got := getAll(t, c, &cwl.GetLogEventsInput{LogGroupName: aws.String(lambdaGroup), LogStreamName: aws.String(lambdaStream),
			StartFromHead: aws.Bool(true), Limit: aws.Int32(97)})
		if len(got) != n {
			t.Fatalf("forward: %d events, want %d", len(got), n)
		}
		for i, m := range got {
			if want := fmt.Sprintf("a-%04d", i%10); m != want {
				t.Fatalf("forward event %d = %q, want %q", i, m, want)
			}
		}
		// Interleaved across the group, in each stream's order.
		all := filterAll(t, c, &cwl.FilterLogEventsInput{LogGroupName: aws.String(lambdaGroup), Limit: aws.Int32(333)})
		if len(all) != n+n/10 {
			t.Fatalf("filter: %d events, want %d", len(all), n+n/10)
		}
		var bs []string
		ids := map[string]bool{}
		for _, ev := range all {
			if aws.ToString(ev.LogStreamName) == other {
				bs = append(bs, aws.ToString(ev.Message))
			}
			if ids[aws.ToString(ev.EventId)] {
				t.Fatalf("duplicate event id %s", aws.ToString(ev.EventId))
			}
			ids[aws.ToString(ev.EventId)] = true
		}
		if !slices.IsSorted(bs) || len(bs) != n/10 {
			t.Fatalf("stream %q out of order or incomplete: %d", other, len(bs))
		}
		for _, name := range odd {
			got := getAll(t, c, &cwl.GetLogEventsInput{LogGroupName: aws.String("weird.group>*"), LogStreamName: aws.String(name), StartFromHead: aws.Bool(true)})
			if !slices.Equal(got, []string{"odd " + name, "second " + name}) {
				t.Fatalf("stream %q: %q", name, got)
			}
		}
		// The index.
		ds := must(c.DescribeLogStreams(ctx, &cwl.DescribeLogStreamsInput{LogGroupName: aws.String(lambdaGroup)}))
		if len(ds.LogStreams) != 2 || aws.ToString(ds.LogStreams[0].LogStreamName) != lambdaStream || aws.ToString(ds.LogStreams[1].LogStreamName) != other {
			t.Fatalf("streams: %+v", ds.LogStreams)
		}
		st := ds.LogStreams[0]
		if aws.ToInt64(st.FirstEventTimestamp) != t0.UnixMilli() || aws.ToInt64(st.LastEventTimestamp) != t0.Add((n-1)*time.Millisecond).UnixMilli() ||
			aws.ToInt64(st.LastIngestionTime) < t0.UnixMilli() || aws.ToInt64(st.StoredBytes) != int64(n*(6+26)) ||
			aws.ToString(st.Arn) != "arn:aws:logs:"+region+":"+account+":log-group:"+lambdaGroup+":log-stream:"+lambdaStream {
			t.Fatalf("stream record: %+v", st)
		}
		dg := must(c.DescribeLogGroups(ctx, &cwl.DescribeLogGroupsInput{}))
		if len(dg.LogGroups) != 2 || aws.ToString(dg.LogGroups[0].LogGroupName) != lambdaGroup ||
			aws.ToInt64(dg.LogGroups[0].StoredBytes) != int64(n*(6+26)+n/10*(6+26)) ||
			aws.ToString(dg.LogGroups[0].Arn) != "arn:aws:logs:"+region+":"+account+":log-group:"+lambdaGroup+":*" {
			t.Fatalf("groups: %+v", dg.LogGroups)
		}
	}
	check(e.client)

	// Restart everything on the same directory: events and index persist.
	e.stop()
	e = start(t, dir, logs.Config{})
	check(e.client)
	// And appending goes on in the same streams, after what was there.
	e.store.Append(account, lambdaGroup, lambdaStream, []logline.Line{{Time: time.Now(), Message: "after restart"}})
	noErr(t, e.store.Flush(ctx))
	got := getAll(t, e.client, &cwl.GetLogEventsInput{LogGroupName: aws.String(lambdaGroup), LogStreamName: aws.String(lambdaStream), StartFromHead: aws.Bool(true)})
	if len(got) != n+1 || got[n] != "after restart" {
		t.Fatalf("after restart: %d events, last %q", len(got), got[len(got)-1])
	}
}

// TestGetLogEventsTokens follows CloudWatch's token semantics: without a
// token and startFromHead false the newest events come first; the backward
// token pages towards the head; the forward token repeats at the end.
func TestGetLogEventsTokens(t *testing.T) {
	e := start(t, t.TempDir(), logs.Config{})
	c := e.client
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	e.store.Append(account, "g", "s", lines(t0, time.Second, "e%02d", 25))
	noErr(t, e.store.Flush(ctx))
	in := &cwl.GetLogEventsInput{LogGroupName: aws.String("g"), LogStreamName: aws.String("s"), Limit: aws.Int32(10)}

	tail := must(c.GetLogEvents(ctx, in))
	if got := messages(tail.Events, outMsg); !slices.Equal(got, names("e%02d", 15, 25)) {
		t.Fatalf("tail: %v", got)
	}
	// Backward twice: 5..14, then 0..4, then nothing with the same token.
	in.NextToken = tail.NextBackwardToken
	b1 := must(c.GetLogEvents(ctx, in))
	if got := messages(b1.Events, outMsg); !slices.Equal(got, names("e%02d", 5, 15)) {
		t.Fatalf("back 1: %v", got)
	}
	in.NextToken = b1.NextBackwardToken
	b2 := must(c.GetLogEvents(ctx, in))
	if got := messages(b2.Events, outMsg); !slices.Equal(got, names("e%02d", 0, 5)) {
		t.Fatalf("back 2: %v", got)
	}
	in.NextToken = b2.NextBackwardToken
	b3 := must(c.GetLogEvents(ctx, in))
	if len(b3.Events) != 0 || aws.ToString(b3.NextBackwardToken) != aws.ToString(in.NextToken) {
		t.Fatalf("back 3: %v %s", b3.Events, aws.ToString(b3.NextBackwardToken))
	}
	// Forward from the head of the tail's page: nothing new, token repeats.
	in.NextToken = tail.NextForwardToken
	f := must(c.GetLogEvents(ctx, in))
	if len(f.Events) != 0 || aws.ToString(f.NextForwardToken) != aws.ToString(tail.NextForwardToken) {
		t.Fatalf("forward at end: %v %s", f.Events, aws.ToString(f.NextForwardToken))
	}
	// New events arrive: the same forward token now yields them.
	e.store.Append(account, "g", "s", lines(t0.Add(25*time.Second), time.Second, "new%d", 3))
	noErr(t, e.store.Flush(ctx))
	f = must(c.GetLogEvents(ctx, in))
	if got := messages(f.Events, outMsg); !slices.Equal(got, []string{"new0", "new1", "new2"}) {
		t.Fatalf("forward after append: %v", got)
	}
	// Forward from b2's forward token (after e04) reads e05 onwards.
	in.NextToken = b2.NextForwardToken
	f = must(c.GetLogEvents(ctx, in))
	if got := messages(f.Events, outMsg); !slices.Equal(got, names("e%02d", 5, 15)) {
		t.Fatalf("forward from e04: %v", got)
	}

	// Time range [start, end): events e10..e12.
	got := getAll(t, c, &cwl.GetLogEventsInput{LogGroupName: aws.String("g"), LogStreamName: aws.String("s"), StartFromHead: aws.Bool(true),
		StartTime: aws.Int64(t0.Add(10 * time.Second).UnixMilli()), EndTime: aws.Int64(t0.Add(13 * time.Second).UnixMilli())})
	if !slices.Equal(got, names("e%02d", 10, 13)) {
		t.Fatalf("time range: %v", got)
	}
	// An empty stream answers with tokens that repeat.
	must(c.CreateLogStream(ctx, &cwl.CreateLogStreamInput{LogGroupName: aws.String("g"), LogStreamName: aws.String("empty")}))
	if got := getAll(t, c, &cwl.GetLogEventsInput{LogGroupName: aws.String("g"), LogStreamName: aws.String("empty")}); len(got) != 0 {
		t.Fatalf("empty stream: %v", got)
	}

	_, err := c.GetLogEvents(ctx, &cwl.GetLogEventsInput{LogGroupName: aws.String("g"), LogStreamName: aws.String("s"), NextToken: aws.String("f/garbage")})
	apiError(t, err, "InvalidParameterException")
	_, err = c.GetLogEvents(ctx, &cwl.GetLogEventsInput{LogGroupName: aws.String("g"), LogStreamName: aws.String("nope")})
	apiError(t, err, "ResourceNotFoundException")
	_, err = c.GetLogEvents(ctx, &cwl.GetLogEventsInput{LogGroupName: aws.String("nope"), LogStreamName: aws.String("s")})
	apiError(t, err, "ResourceNotFoundException")
}

func names(format string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf(format, i))
	}
	return out
}

func TestFilterLogEvents(t *testing.T) {
	e := start(t, t.TempDir(), logs.Config{})
	c := e.client
	g := aws.String("/aws/lambda/filter")
	must(c.CreateLogGroup(ctx, &cwl.CreateLogGroupInput{LogGroupName: g}))
	t0 := time.Now().Add(-30 * time.Minute).Truncate(time.Millisecond)
	ms := func(d time.Duration) *int64 { return aws.Int64(t0.Add(d).UnixMilli()) }
	put := func(stream string, evs ...types.InputLogEvent) {
		t.Helper()
		must(c.CreateLogStream(ctx, &cwl.CreateLogStreamInput{LogGroupName: g, LogStreamName: aws.String(stream)}))
		must(c.PutLogEvents(ctx, &cwl.PutLogEventsInput{LogGroupName: g, LogStreamName: aws.String(stream), LogEvents: evs}))
	}
	ev := func(d time.Duration, msg string) types.InputLogEvent {
		return types.InputLogEvent{Timestamp: ms(d), Message: aws.String(msg)}
	}
	put("2026/01/01/[$LATEST]a",
		ev(0, "START RequestId: r1 Version: $LATEST"),
		ev(time.Second, "ERROR Exception: boom"),
		ev(2*time.Second, "WARN slow"),
		ev(3*time.Second, "END RequestId: r1"))
	put("2026/01/01/[1]b",
		ev(500*time.Millisecond, "ERROR Healthcheck failed"),
		ev(1500*time.Millisecond, "Task timed out after 3.00 seconds"))
	put("other",
		ev(10*time.Second, "ERROR other stream"))

	msgsOf := func(in *cwl.FilterLogEventsInput) []string {
		t.Helper()
		in.LogGroupName = g
		return messages(filterAll(t, c, in), filtMsg)
	}
	for _, tc := range []struct {
		name string
		in   cwl.FilterLogEventsInput
		want []string
	}{
		{"all", cwl.FilterLogEventsInput{}, []string{"START RequestId: r1 Version: $LATEST", "ERROR Exception: boom", "WARN slow", "END RequestId: r1",
			"ERROR Healthcheck failed", "Task timed out after 3.00 seconds", "ERROR other stream"}},
		{"term", cwl.FilterLogEventsInput{FilterPattern: aws.String("ERROR")}, []string{"ERROR Exception: boom", "ERROR Healthcheck failed", "ERROR other stream"}},
		{"and", cwl.FilterLogEventsInput{FilterPattern: aws.String("ERROR boom")}, []string{"ERROR Exception: boom"}},
		{"or", cwl.FilterLogEventsInput{FilterPattern: aws.String("?WARN ?Healthcheck")}, []string{"WARN slow", "ERROR Healthcheck failed"}},
		{"not", cwl.FilterLogEventsInput{FilterPattern: aws.String("ERROR -Healthcheck -other")}, []string{"ERROR Exception: boom"}},
		{"phrase", cwl.FilterLogEventsInput{FilterPattern: aws.String(`"Task timed out"`)}, []string{"Task timed out after 3.00 seconds"}},
		{"regex", cwl.FilterLogEventsInput{FilterPattern: aws.String(`%^(START|END) RequestId%`)}, []string{"START RequestId: r1 Version: $LATEST", "END RequestId: r1"}},
		{"prefix", cwl.FilterLogEventsInput{LogStreamNamePrefix: aws.String("2026/01/01/[1]")}, []string{"ERROR Healthcheck failed", "Task timed out after 3.00 seconds"}},
		{"names", cwl.FilterLogEventsInput{LogStreamNames: []string{"other", "2026/01/01/[1]b"}, FilterPattern: aws.String("ERROR")}, []string{"ERROR Healthcheck failed", "ERROR other stream"}},
		// FilterLogEvents' range is [start, end] (both included).
		{"time", cwl.FilterLogEventsInput{StartTime: ms(time.Second), EndTime: ms(2 * time.Second)}, []string{"ERROR Exception: boom", "WARN slow", "Task timed out after 3.00 seconds"}},
		{"since", cwl.FilterLogEventsInput{StartTime: ms(3 * time.Second)}, []string{"END RequestId: r1", "ERROR other stream"}},
		{"paged", cwl.FilterLogEventsInput{Limit: aws.Int32(1), FilterPattern: aws.String("?START ?END ?other")}, []string{"START RequestId: r1 Version: $LATEST", "END RequestId: r1", "ERROR other stream"}},
	} {
		if got := msgsOf(&tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q\nwant %q", tc.name, got, tc.want)
		}
	}
	all := filterAll(t, c, &cwl.FilterLogEventsInput{LogGroupName: g, FilterPattern: aws.String("WARN")})
	if len(all) != 1 || aws.ToString(all[0].LogStreamName) != "2026/01/01/[$LATEST]a" || aws.ToInt64(all[0].Timestamp) != *ms(2 * time.Second) ||
		aws.ToInt64(all[0].IngestionTime) < *ms(0) || aws.ToString(all[0].EventId) == "" {
		t.Fatalf("event fields: %+v", all)
	}

	_, err := c.FilterLogEvents(ctx, &cwl.FilterLogEventsInput{LogGroupName: g, FilterPattern: aws.String(`{ $.level = }`)})
	apiError(t, err, "InvalidParameterException")
	_, err = c.FilterLogEvents(ctx, &cwl.FilterLogEventsInput{LogGroupName: g, LogStreamNames: []string{"a"}, LogStreamNamePrefix: aws.String("a")})
	apiError(t, err, "InvalidParameterException")
	_, err = c.FilterLogEvents(ctx, &cwl.FilterLogEventsInput{LogGroupName: aws.String("/nope")})
	apiError(t, err, "ResourceNotFoundException")
	_, err = c.FilterLogEvents(ctx, &cwl.FilterLogEventsInput{LogGroupName: g, NextToken: aws.String("bogus")})
	apiError(t, err, "InvalidParameterException")
	// logGroupIdentifier takes the group's ARN.
	arn := "arn:aws:logs:" + region + ":" + account + ":log-group:/aws/lambda/filter"
	out := must(c.FilterLogEvents(ctx, &cwl.FilterLogEventsInput{LogGroupIdentifier: aws.String(arn), FilterPattern: aws.String("WARN")}))
	if len(out.Events) != 1 {
		t.Fatalf("by ARN: %+v", out.Events)
	}
}

// TestFilterFollowsLikeTail polls as `aws logs tail --follow` does: page
// with nextToken until there is none, then poll again from the newest
// timestamp seen, skipping event ids already shown.
func TestFilterFollowsLikeTail(t *testing.T) {
	e := start(t, t.TempDir(), logs.Config{})
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	e.store.Append(account, "/aws/lambda/f", "s1", lines(t0, time.Millisecond, "old%d", 5))
	noErr(t, e.store.Flush(ctx))

	seen := map[string]bool{}
	var shown []string
	in := &cwl.FilterLogEventsInput{LogGroupName: aws.String("/aws/lambda/f"), StartTime: aws.Int64(t0.Add(-10 * time.Minute).UnixMilli()), Interleaved: aws.Bool(true), Limit: aws.Int32(2)}
	poll := func() {
		for {
			out := must(e.client.FilterLogEvents(ctx, in))
			var newest int64
			for _, ev := range out.Events {
				if !seen[aws.ToString(ev.EventId)] {
					seen[aws.ToString(ev.EventId)] = true
					shown = append(shown, aws.ToString(ev.Message))
				}
				newest = max(newest, aws.ToInt64(ev.Timestamp))
			}
			if out.NextToken != nil {
				in.NextToken = out.NextToken
				continue
			}
			if newest > 0 {
				in.StartTime = aws.Int64(newest)
			}
			in.NextToken = nil
			return
		}
	}
	poll()
	e.store.Append(account, "/aws/lambda/f", "s2", lines(time.Now(), 0, "new-s2-%d", 3))
	e.store.Append(account, "/aws/lambda/f", "s1", lines(time.Now(), 0, "new-s1-%d", 2))
	noErr(t, e.store.Flush(ctx))
	poll()
	poll()
	want := []string{"old0", "old1", "old2", "old3", "old4", "new-s2-0", "new-s2-1", "new-s2-2", "new-s1-0", "new-s1-1"}
	if !slices.Equal(shown, want) {
		t.Fatalf("followed %q\nwant %q", shown, want)
	}
}

func TestDescribe(t *testing.T) {
	e := start(t, t.TempDir(), logs.Config{})
	c := e.client
	var groups []string
	for i := 0; i < 7; i++ {
		groups = append(groups, fmt.Sprintf("/aws/lambda/fn-%d", i))
	}
	groups = append(groups, "/custom/a.b#c_d")
	for _, g := range groups {
		must(c.CreateLogGroup(ctx, &cwl.CreateLogGroupInput{LogGroupName: aws.String(g)}))
	}
	_, err := c.CreateLogGroup(ctx, &cwl.CreateLogGroupInput{LogGroupName: aws.String(groups[0])})
	apiError(t, err, "ResourceAlreadyExistsException")
	_, err = c.CreateLogGroup(ctx, &cwl.CreateLogGroupInput{LogGroupName: aws.String("bad name")})
	apiError(t, err, "InvalidParameterException")

	var got []string
	p := cwl.NewDescribeLogGroupsPaginator(c, &cwl.DescribeLogGroupsInput{LogGroupNamePrefix: aws.String("/aws/lambda/")},
		func(o *cwl.DescribeLogGroupsPaginatorOptions) { o.Limit = 3 })
	pages := 0
	for p.HasMorePages() {
		page := must(p.NextPage(ctx))
		pages++
		for _, g := range page.LogGroups {
			got = append(got, aws.ToString(g.LogGroupName))
		}
	}
	if !slices.Equal(got, groups[:7]) || pages != 3 {
		t.Fatalf("groups (%d pages): %v", pages, got)
	}

	// Streams, with different last event times.
	g := aws.String(groups[0])
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	streamNames := []string{"2026/01/01/[$LATEST]c", "2026/01/01/[$LATEST]a", "2026/01/02/[3]b", "x"}
	for i, s := range streamNames {
		e.store.Append(account, groups[0], s, []logline.Line{{Time: base.Add(time.Duration(10-i) * time.Minute), Message: s}})
	}
	noErr(t, e.store.Flush(ctx))
	listStreams := func(in *cwl.DescribeLogStreamsInput) []string {
		t.Helper()
		in.LogGroupName = g
		var out []string
		p := cwl.NewDescribeLogStreamsPaginator(c, in, func(o *cwl.DescribeLogStreamsPaginatorOptions) { o.Limit = 2 })
		for p.HasMorePages() {
			for _, s := range must(p.NextPage(ctx)).LogStreams {
				out = append(out, aws.ToString(s.LogStreamName))
			}
		}
		return out
	}
	byName := slices.Sorted(slices.Values(streamNames))
	if got := listStreams(&cwl.DescribeLogStreamsInput{}); !slices.Equal(got, byName) {
		t.Errorf("by name: %v", got)
	}
	if got := listStreams(&cwl.DescribeLogStreamsInput{Descending: aws.Bool(true)}); !slices.Equal(got, reversed(byName)) {
		t.Errorf("by name, descending: %v", got)
	}
	// LastEventTime: the first appended has the newest event.
	if got := listStreams(&cwl.DescribeLogStreamsInput{OrderBy: types.OrderByLastEventTime, Descending: aws.Bool(true)}); !slices.Equal(got, streamNames) {
		t.Errorf("by last event time, descending: %v", got)
	}
	if got := listStreams(&cwl.DescribeLogStreamsInput{LogStreamNamePrefix: aws.String("2026/01/01/[$LATEST]")}); !slices.Equal(got, byName[:2]) {
		t.Errorf("by prefix: %v", got)
	}
	_, err = c.DescribeLogStreams(ctx, &cwl.DescribeLogStreamsInput{LogGroupName: g, OrderBy: types.OrderByLastEventTime, LogStreamNamePrefix: aws.String("x")})
	apiError(t, err, "InvalidParameterException")
	_, err = c.DescribeLogStreams(ctx, &cwl.DescribeLogStreamsInput{LogGroupName: aws.String("/nope")})
	apiError(t, err, "ResourceNotFoundException")

	// Deleting a stream and a group removes their events and records.
	must(c.DeleteLogStream(ctx, &cwl.DeleteLogStreamInput{LogGroupName: g, LogStreamName: aws.String("x")}))
	if got := listStreams(&cwl.DescribeLogStreamsInput{}); slices.Contains(got, "x") {
		t.Errorf("deleted stream listed: %v", got)
	}
	if evs := filterAll(t, c, &cwl.FilterLogEventsInput{LogGroupName: g}); len(evs) != 3 {
		t.Errorf("after deleting a stream: %d events", len(evs))
	}
	must(c.DeleteLogGroup(ctx, &cwl.DeleteLogGroupInput{LogGroupName: g}))
	_, err = c.FilterLogEvents(ctx, &cwl.FilterLogEventsInput{LogGroupName: g})
	apiError(t, err, "ResourceNotFoundException")
	_, err = c.DeleteLogGroup(ctx, &cwl.DeleteLogGroupInput{LogGroupName: g})
	apiError(t, err, "ResourceNotFoundException")
	must(c.CreateLogGroup(ctx, &cwl.CreateLogGroupInput{LogGroupName: g}))
	if evs := filterAll(t, c, &cwl.FilterLogEventsInput{LogGroupName: g}); len(evs) != 0 {
		t.Errorf("re-created group has %d old events", len(evs))
	}
}

func reversed(s []string) []string {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

func TestPutLogEventsChecks(t *testing.T) {
	e := start(t, t.TempDir(), logs.Config{})
	c := e.client
	g, s := aws.String("g"), aws.String("s")
	_, err := c.PutLogEvents(ctx, &cwl.PutLogEventsInput{LogGroupName: g, LogStreamName: s, LogEvents: []types.InputLogEvent{{Timestamp: aws.Int64(1), Message: aws.String("x")}}})
	apiError(t, err, "ResourceNotFoundException")
	must(c.CreateLogGroup(ctx, &cwl.CreateLogGroupInput{LogGroupName: g}))
	must(c.CreateLogStream(ctx, &cwl.CreateLogStreamInput{LogGroupName: g, LogStreamName: s}))
	_, err = c.CreateLogStream(ctx, &cwl.CreateLogStreamInput{LogGroupName: g, LogStreamName: s})
	apiError(t, err, "ResourceAlreadyExistsException")
	now := time.Now()
	_, err = c.PutLogEvents(ctx, &cwl.PutLogEventsInput{LogGroupName: g, LogStreamName: s, LogEvents: []types.InputLogEvent{
		{Timestamp: aws.Int64(now.UnixMilli()), Message: aws.String("b")}, {Timestamp: aws.Int64(now.UnixMilli() - 1), Message: aws.String("a")}}})
	apiError(t, err, "InvalidParameterException")
	old := now.Add(-15 * 24 * time.Hour)
	out := must(c.PutLogEvents(ctx, &cwl.PutLogEventsInput{LogGroupName: g, LogStreamName: s, LogEvents: []types.InputLogEvent{
		{Timestamp: aws.Int64(old.UnixMilli()), Message: aws.String("too old")},
		{Timestamp: aws.Int64(old.Add(time.Second).UnixMilli()), Message: aws.String("too old too")}}}))
	if r := out.RejectedLogEventsInfo; r == nil || r.TooOldLogEventEndIndex == nil || *r.TooOldLogEventEndIndex != 1 || r.TooNewLogEventStartIndex != nil {
		t.Fatalf("rejected: %+v", r)
	}
	out = must(c.PutLogEvents(ctx, &cwl.PutLogEventsInput{LogGroupName: g, LogStreamName: s, LogEvents: []types.InputLogEvent{
		{Timestamp: aws.Int64(now.UnixMilli()), Message: aws.String("ok")},
		{Timestamp: aws.Int64(now.Add(3 * time.Hour).UnixMilli()), Message: aws.String("too new")}}}))
	if r := out.RejectedLogEventsInfo; r == nil || r.TooNewLogEventStartIndex == nil || *r.TooNewLogEventStartIndex != 1 || r.TooOldLogEventEndIndex != nil {
		t.Fatalf("rejected: %+v", r)
	}
	// An event ahead of its ingestion (allowed up to 2 h) is still found by
	// a search that starts after it was ingested.
	future := now.Add(time.Hour).UnixMilli()
	must(c.PutLogEvents(ctx, &cwl.PutLogEventsInput{LogGroupName: g, LogStreamName: s, LogEvents: []types.InputLogEvent{
		{Timestamp: aws.Int64(future), Message: aws.String("from the future")}}}))
	got := messages(filterAll(t, c, &cwl.FilterLogEventsInput{LogGroupName: g, StartTime: aws.Int64(future)}), filtMsg)
	if !slices.Equal(got, []string{"from the future"}) {
		t.Fatalf("future event: %q", got)
	}
	if got := getAll(t, c, &cwl.GetLogEventsInput{LogGroupName: g, LogStreamName: s, StartFromHead: aws.Bool(true)}); !slices.Equal(got, []string{"ok", "from the future"}) {
		t.Fatalf("stored: %q", got)
	}
}

// TestProtocol checks what the SDK does not show: unknown operations, the
// service a request is signed for, and the error document's shape.
func TestProtocol(t *testing.T) {
	e := start(t, t.TempDir(), logs.Config{})
	do := func(target, service, body string) (int, string) {
		t.Helper()
		req := must(http.NewRequest("POST", e.srv.URL+"/", strings.NewReader(body)))
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		req.Header.Set("X-Amz-Target", target)
		sum := sha256.Sum256([]byte(body))
		creds := aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret}
		noErr(t, v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), service, region, time.Now()))
		resp := must(http.DefaultClient.Do(req))
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do("Logs_20140328.NoSuchThing", "logs", "{}"); code != 400 || !strings.Contains(body, `"__type":"UnknownOperationException"`) {
		t.Errorf("unknown operation: %d %s", code, body)
	}
	if code, body := do("Logs_20140328.DescribeLogGroups", "lambda", "{}"); code != 403 || !strings.Contains(body, "InvalidSignatureException") {
		t.Errorf("signed for lambda: %d %s", code, body)
	}
	if code, body := do("Logs_20140328.DescribeLogStreams", "logs", `{"logGroupName":"/nope"}`); code != 400 ||
		body != `{"__type":"ResourceNotFoundException","message":"The specified log group does not exist."}` {
		t.Errorf("not found: %d %s", code, body)
	}
	if code, body := do("Logs_20140328.DescribeLogGroups", "logs", `{"limit":"x"}`); code != 400 || !strings.Contains(body, "SerializationException") {
		t.Errorf("bad body: %d %s", code, body)
	}
	if code, body := do("Logs_20140328.DescribeLogGroups", "logs", ``); code != 200 || body != `{"logGroups":[]}` {
		t.Errorf("empty body: %d %s", code, body)
	}
}

// TestAppendNeverBlocks: past the queue's bound, lines are dropped and
// counted instead of waiting.
func TestAppendNeverBlocks(t *testing.T) {
	var logged syncBuffer
	e := start(t, t.TempDir(), logs.Config{QueueBytes: 4096, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	big := []logline.Line{{Time: time.Now(), Message: strings.Repeat("x", 5000)}}
	startT := time.Now()
	e.store.Append(account, "g", "s", big)
	if d := e.store.Dropped(); d != 1 {
		t.Fatalf("dropped %d, want 1", d)
	}
	for i := 0; i < 20000; i++ {
		e.store.Append(account, "g", "s", []logline.Line{{Time: time.Now(), Message: "small"}})
	}
	if el := time.Since(startT); el > 2*time.Second {
		t.Fatalf("20000 appends took %v", el)
	}
	noErr(t, e.store.Flush(ctx))
	got := getAll(t, e.client, &cwl.GetLogEventsInput{LogGroupName: aws.String("g"), LogStreamName: aws.String("s"), StartFromHead: aws.Bool(true)})
	if uint64(len(got))+e.store.Dropped() != 20001 {
		t.Fatalf("stored %d + dropped %d != 20001", len(got), e.store.Dropped())
	}
	t.Logf("stored %d, dropped %d with a 4 KiB queue", len(got), e.store.Dropped())
	if w := logged.String(); strings.Count(w, "logs: queue full, dropping log lines") != 1 {
		t.Fatalf("want one warning (they are at most every 10 s), logged:\n%s", w)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestCrash: a new stream's index record is written before its first
// events, so a crash never hides stored events.
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir, logs.Config{IndexInterval: time.Hour})
	e.store.Append(account, "/aws/lambda/crash", "s", []logline.Line{{Time: time.Now(), Message: "before the crash"}})
	noErr(t, e.store.Flush(ctx))
	e.crash()
	e = start(t, dir, logs.Config{})
	ds := must(e.client.DescribeLogStreams(ctx, &cwl.DescribeLogStreamsInput{LogGroupName: aws.String("/aws/lambda/crash")}))
	if len(ds.LogStreams) != 1 {
		t.Fatalf("streams after crash: %+v", ds.LogStreams)
	}
	got := getAll(t, e.client, &cwl.GetLogEventsInput{LogGroupName: aws.String("/aws/lambda/crash"), LogStreamName: aws.String("s"), StartFromHead: aws.Bool(true)})
	if !slices.Equal(got, []string{"before the crash"}) {
		t.Fatalf("events after crash: %q", got)
	}
}

// BenchmarkAppend is the cost of Append on the invoke path: one call with
// one line, as the worker makes for a line of output.
func BenchmarkAppend(b *testing.B) {
	e := start(b, b.TempDir(), logs.Config{})
	line := []logline.Line{{Time: time.Now(), Message: "2026-01-01T00:00:00.000Z\tINFO\ta typical log line of some eighty bytes"}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%4096 == 4095 {
			// Keep the queue from filling: this measures queueing, not dropping.
			b.StopTimer()
			e.store.Flush(ctx)
			b.StartTimer()
		}
		e.store.Append(account, "/aws/lambda/bench", "2026/01/01/[$LATEST]env", line)
	}
	b.StopTimer()
	e.store.Flush(ctx)
	b.ReportMetric(float64(e.store.Dropped()), "dropped")
}

// BenchmarkThroughput is stored lines per second: 8 streams appending
// batches of 10 lines, until everything is acknowledged by JetStream.
func BenchmarkThroughput(b *testing.B) {
	e := start(b, b.TempDir(), logs.Config{})
	batch := lines(time.Now(), 0, "2026-01-01T00:00:00.000Z\tINFO\ta typical log line of some eighty bytes %d", 10)
	const streams = 8
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	for s := 0; s < streams; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("2026/01/01/[$LATEST]env-%d", s)
			for i := 0; i < b.N/streams+1; i++ {
				e.store.Append(account, "/aws/lambda/bench", name, batch)
				if i%500 == 499 {
					// Stay within the queue's bound: this measures storing,
					// not dropping.
					e.store.Flush(ctx)
				}
			}
		}()
	}
	wg.Wait()
	if err := e.store.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	el := time.Since(t0)
	b.StopTimer()
	total := float64((b.N/streams + 1) * streams * len(batch))
	stored := total - float64(e.store.Dropped())
	b.ReportMetric(stored/el.Seconds(), "lines/s")
	b.ReportMetric(float64(e.store.Dropped()), "dropped")
}

// TestLongNames: the longest names CloudWatch allows, made of characters
// that escaping triples, still fit a subject and a key.
func TestLongNames(t *testing.T) {
	e := start(t, t.TempDir(), logs.Config{})
	c := e.client
	g := aws.String(strings.Repeat("/.#_", 128))
	s := aws.String(strings.Repeat("[$]/", 128))
	must(c.CreateLogGroup(ctx, &cwl.CreateLogGroupInput{LogGroupName: g}))
	must(c.CreateLogStream(ctx, &cwl.CreateLogStreamInput{LogGroupName: g, LogStreamName: s}))
	must(c.PutLogEvents(ctx, &cwl.PutLogEventsInput{LogGroupName: g, LogStreamName: s,
		LogEvents: []types.InputLogEvent{{Timestamp: aws.Int64(time.Now().UnixMilli()), Message: aws.String("long")}}}))
	if got := messages(filterAll(t, c, &cwl.FilterLogEventsInput{LogGroupName: g}), filtMsg); !slices.Equal(got, []string{"long"}) {
		t.Fatalf("got %q", got)
	}
	if got := getAll(t, c, &cwl.GetLogEventsInput{LogGroupName: g, LogStreamName: s, StartFromHead: aws.Bool(true)}); !slices.Equal(got, []string{"long"}) {
		t.Fatalf("got %q", got)
	}
}

// BenchmarkFilterPoll is one poll of `aws logs tail --follow`
// (FilterLogEvents from the newest timestamp seen, through SigV4 and the
// SDK) finding 10 new events: in a group holding only them, and behind
// 100,000 events timestamped an hour ago but ingested just now (so that
// the scan's start by ingestion time cannot skip them; each of their
// batches is skipped by its time span instead).
func BenchmarkFilterPoll(b *testing.B) {
	for _, old := range []int{0, 100} {
		b.Run(fmt.Sprintf("behind-%dk", old), func(b *testing.B) {
			e := start(b, b.TempDir(), logs.Config{})
			then := time.Now().Add(-time.Hour)
			for i := 0; i < old; i++ {
				e.store.Append(account, "/aws/lambda/bench", fmt.Sprintf("s%d", i%4), lines(then.Add(time.Duration(i)*time.Second), time.Millisecond, "old line %d", 1000))
			}
			e.store.Append(account, "/aws/lambda/bench", "s0", lines(time.Now(), time.Millisecond, "new line %d", 10))
			noErr(b, e.store.Flush(ctx))
			in := &cwl.FilterLogEventsInput{LogGroupName: aws.String("/aws/lambda/bench"), StartTime: aws.Int64(time.Now().Add(-time.Second).UnixMilli()), Interleaved: aws.Bool(true)}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out := must(e.client.FilterLogEvents(ctx, in))
				if len(out.Events) != 10 {
					b.Fatalf("%d events", len(out.Events))
				}
			}
		})
	}
}

// TestLingerAndReadFlush: a publishing round waits (here for an hour) for
// more lines, yet every API read sees what was appended before it, and
// lines still lingering at Close are stored.
func TestLingerAndReadFlush(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir, logs.Config{Linger: time.Hour})
	js := must(jetstream.New(e.nc))
	stored := func() uint64 {
		t.Helper()
		st := must(js.Stream(ctx, "KILN_LOGS"))
		return must(st.Info(ctx)).State.Msgs
	}
	t0 := time.Now().Truncate(time.Millisecond)
	e.store.Append(account, lambdaGroup, lambdaStream, lines(t0, time.Millisecond, "first-%d", 3))
	e.store.Append(account, lambdaGroup, lambdaStream, lines(t0.Add(time.Second), time.Millisecond, "second-%d", 2))
	time.Sleep(50 * time.Millisecond) // the round has started and lingers: time for a wrong early store to show
	if n := stored(); n != 0 {
		t.Fatalf("%d messages stored while the round lingers", n)
	}
	got := getAll(t, e.client, &cwl.GetLogEventsInput{LogGroupName: aws.String(lambdaGroup),
		LogStreamName: aws.String(lambdaStream), StartFromHead: aws.Bool(true)})
	if want := []string{"first-0", "first-1", "first-2", "second-0", "second-1"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read during the linger: %q, want %q", got, want)
	}
	if n := stored(); n != 1 {
		t.Errorf("%d messages for two appends to one stream in one round, want 1", n)
	}

	e.store.Append(account, lambdaGroup, lambdaStream, lines(t0.Add(2*time.Second), time.Millisecond, "third-%d", 1))
	time.Sleep(50 * time.Millisecond) // the append joins the lingering round (the scenario)
	e.stop()                          // Close ends the linger and stores the line
	e = start(t, dir, logs.Config{Linger: time.Hour})
	got = getAll(t, e.client, &cwl.GetLogEventsInput{LogGroupName: aws.String(lambdaGroup),
		LogStreamName: aws.String(lambdaStream), StartFromHead: aws.Bool(true)})
	if len(got) != 6 || got[5] != "third-0" {
		t.Fatalf("after a restart: %q", got)
	}
}

// TestRetention: PutRetentionPolicy and DeleteRetentionPolicy through the
// AWS SDK; events stored longer ago than their group's retention are
// removed and newer ones kept; the store's default retention applies to
// groups without a policy, and DescribeLogGroups shows what applies.
func TestRetention(t *testing.T) {
	e := start(t, t.TempDir(), logs.Config{RetentionDays: 30})
	defer e.stop()
	c := e.client
	const short, long = "/aws/lambda/short", "/aws/lambda/long"
	e.store.Append(account, short, "s", lines(time.Now(), time.Millisecond, "old %d", 3))
	e.store.Append(account, long, "s", lines(time.Now(), time.Millisecond, "kept %d", 3))
	noErr(t, e.store.Flush(ctx))
	mid := time.Now() // after the first events were stored, before the next
	e.store.Append(account, short, "s", lines(time.Now(), time.Millisecond, "new %d", 2))
	noErr(t, e.store.Flush(ctx))

	_, err := c.PutRetentionPolicy(ctx, &cwl.PutRetentionPolicyInput{LogGroupName: aws.String(short), RetentionInDays: aws.Int32(2)})
	apiError(t, err, "InvalidParameterException")
	_, err = c.PutRetentionPolicy(ctx, &cwl.PutRetentionPolicyInput{LogGroupName: aws.String("/aws/lambda/none"), RetentionInDays: aws.Int32(1)})
	apiError(t, err, "ResourceNotFoundException")
	must(c.PutRetentionPolicy(ctx, &cwl.PutRetentionPolicyInput{LogGroupName: aws.String(short), RetentionInDays: aws.Int32(1)}))
	retention := func() map[string]int32 {
		out := map[string]int32{}
		for _, g := range must(c.DescribeLogGroups(ctx, &cwl.DescribeLogGroupsInput{})).LogGroups {
			out[aws.ToString(g.LogGroupName)] = aws.ToInt32(g.RetentionInDays)
		}
		return out
	}
	if got := retention(); got[short] != 1 || got[long] != 30 {
		t.Fatalf("retention %v, want %s 1 and %s 30 (the default)", got, short, long)
	}

	noErr(t, e.store.Expire(ctx, mid.Add(24*time.Hour))) // a day after mid: short's first events are past 1 day
	left := func(group string) []string {
		return messages(filterAll(t, c, &cwl.FilterLogEventsInput{LogGroupName: aws.String(group)}), filtMsg)
	}
	if got := left(short); !slices.Equal(got, []string{"new 0", "new 1"}) {
		t.Errorf("%s after expiry: %q, want the events stored after the cutoff", short, got)
	}
	if got := left(long); len(got) != 3 {
		t.Errorf("%s after expiry: %q, want its 3 events (30 days)", long, got)
	}
	noErr(t, e.store.Expire(ctx, mid.Add(31*24*time.Hour)))
	if got := left(long); len(got) != 0 {
		t.Errorf("%s after 31 days: %q, want none", long, got)
	}

	must(c.DeleteRetentionPolicy(ctx, &cwl.DeleteRetentionPolicyInput{LogGroupName: aws.String(short)}))
	if got := retention(); got[short] != 30 {
		t.Fatalf("retention after DeleteRetentionPolicy %v, want the default 30", got)
	}
}

// TestShutdownWithoutNATS: with NATS gone under the store (its TCP
// connection reconnecting, as a cluster role's does), Shutdown gives up
// the lines it could not store once its context ends, rather than waiting
// out each publish's own timeout (30 s) and the index watch's stop.
func TestShutdownWithoutNATS(t *testing.T) {
	ns, err := natsd.Start(natsd.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	store := must(logs.Open(ctx, must(jetstream.New(nc)), logs.Config{Logger: quiet()}))
	store.Append(account, "/aws/lambda/gone", "s", []logline.Line{{Time: time.Now(), Message: "stored"}})
	noErr(t, store.Flush(ctx))
	ns.Shutdown()
	store.Append(account, "/aws/lambda/gone", "s", []logline.Line{{Time: time.Now(), Message: "never stored"}})
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- store.Shutdown(sctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v, want its context's deadline", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown still waiting on NATS 20 s after it was called (its context ended after 1 s)")
	}
}
