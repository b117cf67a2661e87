package esm

import (
	"errors"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/api"
)

func TestRequestCheck(t *testing.T) {
	n := func(v int) *int { return &v }
	s := func(v string) *string { return &v }
	deep := strings.Repeat(`{"a":`, 11) + `[1]` + strings.Repeat(`}`, 11)
	for _, c := range []struct {
		name string
		req  Request
		fifo bool
		want string // "" for valid, else a fragment of the message
	}{
		{"defaults", Request{}, false, ""},
		{"batch 10000 with a window", Request{BatchSize: n(10000), MaximumBatchingWindowInSeconds: n(1)}, false, ""},
		{"batch 0", Request{BatchSize: n(0)}, false, "greater than or equal to 1"},
		{"batch 10001", Request{BatchSize: n(10001)}, false, "less than or equal to 10000"},
		{"batch 11 without a window", Request{BatchSize: n(11)}, false, "Maximum batch window in seconds must be greater than 0"},
		{"fifo batch 11", Request{BatchSize: n(11), MaximumBatchingWindowInSeconds: n(1)}, true, "FIFO"},
		{"fifo window", Request{MaximumBatchingWindowInSeconds: n(1)}, true, "FIFO"},
		{"window 301", Request{MaximumBatchingWindowInSeconds: n(301)}, false, "less than or equal to 300"},
		{"window -1", Request{MaximumBatchingWindowInSeconds: n(-1)}, false, "greater than or equal to 0"},
		{"concurrency 1", Request{ScalingConfig: &ScalingConfig{MaximumConcurrency: n(1)}}, false, "greater than or equal to 2"},
		{"concurrency 1001", Request{ScalingConfig: &ScalingConfig{MaximumConcurrency: n(1001)}}, false, "less than or equal to 1000"},
		{"response type", Request{FunctionResponseTypes: &[]string{"Everything"}}, false, "enum value set"},
		{"filter not JSON", Request{FilterCriteria: &FilterCriteria{Filters: []Filter{{Pattern: `{"body":`}}}}, false, "Invalid filter pattern definition"},
		{"filter too deep", Request{FilterCriteria: &FilterCriteria{Filters: []Filter{{Pattern: deep}}}}, false, "Invalid filter pattern definition"},
		{"six filters", Request{FilterCriteria: &FilterCriteria{Filters: make([]Filter, 6)}}, false, "maximum number of filters"},
		{"filter too long", Request{FilterCriteria: &FilterCriteria{Filters: []Filter{{Pattern: strings.Repeat(" ", 4097)}}}}, false, "length less than or equal to 4096"},
		{"stream setting", Request{StartingPosition: s("LATEST")}, false, "Unsupported StartingPosition"},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind := KindQueue
			if c.fifo {
				kind = KindFifoQueue
			}
			err := c.req.Check(kind, true)
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var e *api.Error
			if !errors.As(err, &e) || e.Type != api.InvalidParameterValue || e.Status != 400 || !strings.Contains(e.Message, c.want) {
				t.Fatalf("error %v, want InvalidParameterValueException with %q", err, c.want)
			}
		})
	}
}

func TestCheckRabbitMQ(t *testing.T) {
	const arn = "arn:aws:mq:us-east-1:123456789012:broker:b:b-1"
	req := func(url string, queues []string, access ...SourceAccessConfiguration) Request {
		return Request{SelfManagedEventSource: &SelfManagedEventSource{Endpoints: map[string][]string{RabbitMQBrokersKey: {url}}},
			Queues: &queues, SourceAccessConfigurations: &access}
	}
	auth := SourceAccessConfiguration{Type: BasicAuth, URI: "u:p:w"}
	for _, c := range []struct {
		name string
		req  Request
		want string // "" for valid, else a fragment of the message
	}{
		{"valid", req("amqp://127.0.0.1:5672", []string{"q"}, auth), ""},
		{"amqps and a virtual host", req("amqps://h:5671", []string{"q"}, auth, SourceAccessConfiguration{Type: VirtualHost, URI: "v"}), ""},
		{"no endpoint", Request{Queues: &[]string{"q"}}, "RABBITMQ_BROKERS"},
		{"http URL", req("http://h:5672", []string{"q"}, auth), "Invalid RabbitMQ broker URL"},
		{"credentials in the URL", req("amqp://u:p@h:5672", []string{"q"}, auth), "Invalid RabbitMQ broker URL"},
		{"a vhost path in the URL", req("amqp://h:5672/v", []string{"q"}, auth), "Invalid RabbitMQ broker URL"},
		{"two queues", req("amqp://h", []string{"a", "b"}, auth), "one queue"},
		{"empty queue name", req("amqp://h", []string{""}, auth), "one queue"},
		{"no BASIC_AUTH", req("amqp://h", []string{"q"}), "one BASIC_AUTH"},
		{"BASIC_AUTH without a password", req("amqp://h", []string{"q"}, SourceAccessConfiguration{Type: BasicAuth, URI: "u"}), "USER:PASSWORD"},
		{"two virtual hosts", req("amqp://h", []string{"q"}, auth, SourceAccessConfiguration{Type: VirtualHost, URI: "a"},
			SourceAccessConfiguration{Type: VirtualHost, URI: "b"}), "at most one VIRTUAL_HOST"},
		{"Kafka's access type", req("amqp://h", []string{"q"}, auth, SourceAccessConfiguration{Type: "SASL_SCRAM_512_AUTH", URI: "x"}), "Unsupported source access configuration"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, err := c.req.CheckRabbitMQ(arn)
			if c.want == "" {
				if err != nil || src.User != "u" || src.Password != "p:w" || src.Queue != "q" || src.VirtualHost == "" || src.ARN != arn {
					t.Fatalf("%+v %v", src, err)
				}
				return
			}
			var e *api.Error
			if !errors.As(err, &e) || e.Type != api.InvalidParameterValue || e.Status != 400 || !strings.Contains(e.Message, c.want) {
				t.Fatalf("error %v, want InvalidParameterValueException with %q", err, c.want)
			}
		})
	}
	// A RabbitMQ mapping refuses what Amazon MQ's does.
	for name, r := range map[string]Request{
		"ReportBatchItemFailures": {FunctionResponseTypes: &[]string{ReportBatchItemFailures}},
		"Topics":                  {Topics: &[]string{"t"}},
	} {
		if err := r.Check(KindRabbitMQ, true); err == nil || !strings.Contains(err.Error(), "for MQ event source") {
			t.Errorf("%s on a RabbitMQ mapping: %v", name, err)
		}
	}
}
