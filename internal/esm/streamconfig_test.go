package esm

import (
	"errors"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/api"
)

func TestStreamRequestCheck(t *testing.T) {
	n := func(v int) *int { return &v }
	s := func(v string) *string { return &v }
	ts := 1700000000.0
	latest := s(Latest)
	servers := &SelfManagedEventSource{Endpoints: map[string][]string{KafkaServersKey: {"127.0.0.1:9092"}}}
	for _, c := range []struct {
		name   string
		req    Request
		kind   Kind
		create bool
		want   string // "" for valid, else a fragment of the message
	}{
		{"kinesis", Request{StartingPosition: latest, BatchSize: n(10000), ParallelizationFactor: n(10)}, KindKinesis, true, ""},
		{"batch over 10 needs no window", Request{StartingPosition: latest, BatchSize: n(500)}, KindKafka, true, ""},
		{"no starting position", Request{}, KindKinesis, true, "'startingPosition' failed to satisfy constraint: Member must not be null"},
		{"update without starting position", Request{BatchSize: n(5)}, KindKinesis, false, ""},
		{"starting position updated", Request{StartingPosition: latest}, KindKinesis, false, "cannot be updated"},
		{"unknown position", Request{StartingPosition: s("EARLIEST")}, KindKinesis, true, "enum value set: [TRIM_HORIZON, LATEST, AT_TIMESTAMP]"},
		{"at timestamp without one", Request{StartingPosition: s(AtTimestamp)}, KindKinesis, true, "StartingPositionTimestamp"},
		{"timestamp without at timestamp", Request{StartingPosition: latest, StartingPositionTimestamp: &ts}, KindKinesis, true, "StartingPositionTimestamp"},
		{"at timestamp", Request{StartingPosition: s(AtTimestamp), StartingPositionTimestamp: &ts}, KindKafka, true, ""},
		{"parallelization 0", Request{StartingPosition: latest, ParallelizationFactor: n(0)}, KindKinesis, true, "'parallelizationFactor' failed to satisfy constraint: Member must have value greater than or equal to 1"},
		{"parallelization 11", Request{StartingPosition: latest, ParallelizationFactor: n(11)}, KindKinesis, true, "less than or equal to 10"},
		{"retries -2", Request{StartingPosition: latest, MaximumRetryAttempts: n(-2)}, KindKinesis, true, "greater than or equal to -1"},
		{"retries 10001", Request{StartingPosition: latest, MaximumRetryAttempts: n(10001)}, KindKinesis, true, "less than or equal to 10000"},
		{"age 59", Request{StartingPosition: latest, MaximumRecordAgeInSeconds: n(59)}, KindKinesis, true, "-1 or between 60 and 604800"},
		{"age -1", Request{StartingPosition: latest, MaximumRecordAgeInSeconds: n(-1)}, KindKinesis, true, ""},
		{"age 604801", Request{StartingPosition: latest, MaximumRecordAgeInSeconds: n(604801)}, KindKinesis, true, "less than or equal to 604800"},
		{"window 901", Request{StartingPosition: latest, TumblingWindowInSeconds: n(901)}, KindKinesis, true, "less than or equal to 900"},
		{"queue destination", Request{StartingPosition: latest, DestinationConfig: &api.DestinationConfig{OnFailure: &api.OnFailure{Destination: "arn:aws:sqs:us-east-1:123456789012:dlq"}}}, KindKinesis, true, ""},
		{"function destination", Request{StartingPosition: latest, DestinationConfig: &api.DestinationConfig{OnFailure: &api.OnFailure{Destination: "arn:aws:lambda:us-east-1:123456789012:function:f:live"}}}, KindKafka, true, ""},
		{"topic destination", Request{StartingPosition: latest, DestinationConfig: &api.DestinationConfig{OnFailure: &api.OnFailure{Destination: "arn:aws:sns:us-east-1:123456789012:t"}}}, KindKinesis, true, "DestinationArn"},
		{"on success", Request{StartingPosition: latest, DestinationConfig: &api.DestinationConfig{OnSuccess: &api.OnSuccess{Destination: "arn:aws:sqs:us-east-1:123456789012:q"}}}, KindKinesis, true, "OnSuccess"},
		{"scaling config", Request{StartingPosition: latest, ScalingConfig: &ScalingConfig{MaximumConcurrency: n(5)}}, KindKinesis, true, "ScalingConfig"},
		{"consumer group on kinesis", Request{StartingPosition: latest, SelfManagedKafkaEventSourceConfig: &KafkaConfig{"g"}}, KindKinesis, true, "SelfManagedKafkaEventSourceConfig"},
		{"window on kafka", Request{StartingPosition: latest, TumblingWindowInSeconds: n(60)}, KindKafka, true, "TumblingWindowInSeconds"},
		{"authentication on kafka", Request{StartingPosition: latest, SourceAccessConfigurations: &[]SourceAccessConfiguration{}}, KindKafka, true, "SourceAccessConfigurations"},
		{"topics on kinesis", Request{StartingPosition: latest, Topics: &[]string{"t"}}, KindKinesis, true, "Topics"},
		{"stream setting on a queue", Request{ParallelizationFactor: n(2)}, KindQueue, true, "Unsupported ParallelizationFactor parameter for SQS"},
		{"kafka", Request{SelfManagedEventSource: servers, Topics: &[]string{"orders"}}, KindKafka, true, "kafka:"},
		{"kafka without topic", Request{SelfManagedEventSource: servers}, KindKafka, true, "one topic"},
		{"kafka bad server", Request{SelfManagedEventSource: &SelfManagedEventSource{Endpoints: map[string][]string{KafkaServersKey: {"nope"}}}, Topics: &[]string{"t"}}, KindKafka, true, "HOST:PORT"},
		{"kafka bad group", Request{SelfManagedEventSource: servers, Topics: &[]string{"t"}, SelfManagedKafkaEventSourceConfig: &KafkaConfig{"a b"}}, KindKafka, true, "consumerGroupId"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var err error
			if strings.HasPrefix(c.name, "kafka") {
				err = c.req.CheckKafka()
				if c.want == "kafka:" {
					c.want = ""
				}
			} else {
				err = c.req.Check(c.kind, c.create)
			}
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
