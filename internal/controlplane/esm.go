package controlplane

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/esm"
	"github.com/kiln-dev/kiln/internal/queues"
	"github.com/kiln-dev/kiln/internal/streams"
)

// Event source mappings: the API writes them to the mapping store; the
// pollers (package esm) move them through their states and run them.

// StreamDescriber describes a Kiln stream (the stream service).
type StreamDescriber interface {
	Describe(ctx context.Context, account, name string) (*streams.Description, error)
}

// QueueAttributes reads a Kiln queue's attributes (the queue service).
type QueueAttributes interface {
	Attributes(ctx context.Context, account, name string) (map[string]string, error)
}

func (s *Service) mappingRoutes() []route {
	const base = "/2015-03-31/event-source-mappings"
	return []route{
		{"POST " + base, "CreateEventSourceMapping", s.createMapping},
		{"POST " + base + "/{$}", "CreateEventSourceMapping", s.createMapping},
		{"GET " + base, "ListEventSourceMappings", s.listMappings},
		{"GET " + base + "/{$}", "ListEventSourceMappings", s.listMappings},
		{"GET " + base + "/{UUID}", "GetEventSourceMapping", s.getMapping},
		{"PUT " + base + "/{UUID}", "UpdateEventSourceMapping", s.updateMapping},
		{"DELETE " + base + "/{UUID}", "DeleteEventSourceMapping", s.deleteMapping},
	}
}

// mappingSource checks a mapping's event source: a Kiln queue of the
// caller's account in this region, a queue of a RabbitMQ broker (its ARN
// of the caller's account and region), or a stream of a NATS the caller
// runs.
// It returns its kind and how long a received record stays hidden (the
// queue's visibility timeout), in seconds.
func (s *Service) mappingSource(c *call, arn string, self *esm.SelfManagedEventSource, stream []string) (esm.Kind, int, error) {
	if esm.IsBrokerARN(arn) {
		parts := strings.Split(arn, ":")
		if len(parts) != 8 || parts[5] != "broker" || parts[6] == "" || parts[7] == "" {
			return 0, 0, api.Errorf(api.InvalidParameterValue, "Invalid Amazon MQ broker ARN %s: arn:aws:mq:REGION:ACCOUNT:broker:NAME:ID", arn)
		}
		if parts[3] != s.cfg.Region || parts[4] != c.caller.Account {
			return 0, 0, api.Errorf(api.InvalidParameterValue, "Kiln maps only brokers of the caller's account (%s) in %s: %s", c.caller.Account, s.cfg.Region, arn)
		}
		return esm.KindRabbitMQ, int(esm.BrokerHold / time.Second), nil
	}
	if self != nil && len(self.Endpoints[esm.KafkaServersKey]) > 0 {
		// Kafka has no hold for a function's timeout to fit in.
		return esm.KindKafka, 900, nil // the longest function timeout
	}
	if strings.HasPrefix(arn, "arn:aws:kinesis:") {
		return s.mappingStream(c, arn)
	}
	if self != nil {
		if len(stream) == 1 {
			servers := strings.Join(self.Endpoints[esm.NATSServersKey], ",")
			if err := esm.CheckNATS(c.ctx, servers, stream[0]); err != nil {
				return 0, 0, api.Errorf(api.InvalidParameterValue, "Error occurred while reading the NATS event source: %v", err)
			}
		}
		return esm.KindNATS, int(esm.BrokerHold / time.Second), nil
	}
	region, account, name, perr := queues.ParseARN(arn)
	if perr != nil {
		return 0, 0, api.Errorf(api.InvalidParameterValue, "Unrecognized event source, must be kinesis, dynamodb stream, sqs, mq, kafka or documentdb. Unsupported source arn : %s", arn)
	}
	if region != s.cfg.Region || account != c.caller.Account {
		return 0, 0, api.Errorf(api.InvalidParameterValue, "Kiln maps only queues of the caller's account (%s) in %s: %s", c.caller.Account, s.cfg.Region, arn)
	}
	attrs, qerr := s.cfg.Queues.Attributes(c.ctx, account, name)
	var qe *queues.Error
	if errors.As(qerr, &qe) {
		return 0, 0, api.Errorf(api.InvalidParameterValue, "Error occurred while ReceiveMessage. SQS Error Code: %s. SQS Error Message: %s", qe.Query, qe.Message)
	}
	if qerr != nil {
		return 0, 0, qerr
	}
	visibility, _ := strconv.Atoi(attrs["VisibilityTimeout"])
	if attrs["FifoQueue"] == "true" {
		return esm.KindFifoQueue, visibility, nil
	}
	return esm.KindQueue, visibility, nil
}

// mappingStream checks a Kinesis mapping's stream: a Kiln stream of the
// caller's account in this region.
func (s *Service) mappingStream(c *call, arn string) (esm.Kind, int, error) {
	region, account, name, err := streams.ParseARN(arn)
	if err != nil {
		return 0, 0, api.Errorf(api.InvalidParameterValue, "%v", err)
	}
	if region != s.cfg.Region || account != c.caller.Account {
		return 0, 0, api.Errorf(api.InvalidParameterValue, "Kiln maps only streams of the caller's account (%s) in %s: %s", c.caller.Account, s.cfg.Region, arn)
	}
	if s.cfg.Streams == nil {
		return 0, 0, api.Errorf(api.InvalidParameterValue, "Kiln serves no streams here: %s", arn)
	}
	if _, err := s.cfg.Streams.Describe(c.ctx, account, name); err != nil {
		if errors.Is(err, streams.ErrNotFound) {
			return 0, 0, api.Errorf(api.InvalidParameterValue, "Stream not found: %s", arn)
		}
		return 0, 0, err
	}
	return esm.KindKinesis, 900, nil // a stream holds no record for a function's timeout
}

// mappingFunction resolves a mapping's FunctionName to the ARN it stores
// (qualified when a version or alias was named) and checks that the queue's
// visibility timeout covers the function's timeout, as Lambda does.
func (s *Service) mappingFunction(c *call, name string, visibility int) (string, error) {
	ref, err := api.ParseFunctionRef(name)
	if err != nil {
		return "", err
	}
	if err := s.checkOwner(c, ref); err != nil {
		return "", err
	}
	_, cfg, err := s.getResolved(c, ref)
	if err != nil {
		return "", err
	}
	if visibility < cfg.Timeout {
		return "", api.Errorf(api.InvalidParameterValue, "Queue visibility timeout: %d seconds is less than Function timeout: %d seconds", visibility, cfg.Timeout)
	}
	return s.arn(c.caller.Account, ref.Name, ref.Qualifier), nil
}

// mappingDestinations checks a stream mapping's failure destination as an
// asynchronous invoke's: of the caller's account and region, not the
// function itself.
func (s *Service) mappingDestinations(c *call, fn string, d *api.DestinationConfig) error {
	ref, err := api.ParseFunctionRef(fn)
	if err != nil {
		return err
	}
	return s.checkDestinations(c, ref.Name, d)
}

func (s *Service) createMapping(c *call) error {
	var req esm.Request
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.FunctionName == nil {
		return validation(nil, "functionName", "Member must not be null")
	}
	rabbit := esm.IsBrokerARN(aws(req.EventSourceArn))
	if !rabbit && (req.EventSourceArn == nil) == (req.SelfManagedEventSource == nil) {
		return api.Errorf(api.InvalidParameterValue, "Unrecognized event source, must be kinesis, dynamodb stream, sqs, mq, kafka or documentdb; Kiln maps Kiln queues (EventSourceArn), RabbitMQ brokers (EventSourceArn of Amazon MQ with SelfManagedEventSource) and NATS streams (SelfManagedEventSource).")
	}
	var stream []string
	kafka := req.SelfManagedEventSource != nil && len(req.SelfManagedEventSource.Endpoints[esm.KafkaServersKey]) > 0
	var broker esm.RabbitMQ
	if rabbit {
		var err error
		if broker, err = req.CheckRabbitMQ(*req.EventSourceArn); err != nil {
			return err
		}
	} else if kafka {
		if err := req.CheckKafka(); err != nil {
			return err
		}
	} else if req.SelfManagedEventSource != nil {
		if err := req.CheckNATS(); err != nil {
			return err
		}
		stream = *req.Queues
	}
	kind, visibility, err := s.mappingSource(c, aws(req.EventSourceArn), req.SelfManagedEventSource, stream)
	if err == nil {
		err = req.Check(kind, true)
	}
	if err != nil {
		return err
	}
	fn, err := s.mappingFunction(c, *req.FunctionName, visibility)
	if err != nil {
		return err
	}
	if err := s.mappingDestinations(c, fn, req.DestinationConfig); err != nil {
		return err
	}
	if rabbit {
		if err := esm.CheckRabbitMQ(broker); err != nil {
			return api.Errorf(api.InvalidParameterValue, "Error occurred while reading the RabbitMQ event source: %v", err)
		}
	}
	all, err := s.cfg.Mappings.List(c.ctx)
	if err != nil {
		return err
	}
	id := api.NewUUID()
	m := &esm.Mapping{Account: c.caller.Account, Enabled: true, Configuration: esm.Configuration{
		UUID: id, EventSourceArn: aws(req.EventSourceArn), FunctionArn: fn, BatchSize: esm.DefaultBatchSize,
		EventSourceMappingArn: "arn:aws:lambda:" + s.cfg.Region + ":" + c.caller.Account + ":event-source-mapping:" + id,
		LastProcessingResult:  "No records processed", State: esm.StateCreating, StateTransitionReason: "USER_INITIATED",
	}}
	switch kind {
	case esm.KindNATS:
		m.SelfManagedEventSource, m.Queues, m.BatchSize, m.HoldSeconds = req.SelfManagedEventSource, stream, esm.DefaultBrokerBatchSize, visibility
		if req.Topics != nil {
			m.Topics = *req.Topics
		}
	case esm.KindRabbitMQ:
		m.SetRabbitMQ(broker)
		m.BatchSize, m.HoldSeconds = esm.DefaultBrokerBatchSize, visibility
	}
	if kind == esm.KindKafka || kind == esm.KindKinesis {
		m.StreamSettings, m.BatchSize = esm.NewStreamSettings(kind, id), esm.DefaultStreamBatchSize
		if kafka {
			m.SelfManagedEventSource, m.Topics = req.SelfManagedEventSource, *req.Topics
		}
	}
	req.Apply(m)
	for _, o := range all {
		if o.Account == m.Account && o.FunctionArn == fn && o.SourceKey() == m.SourceKey() {
			return api.Errorf(api.ResourceConflict, "An event source mapping with event source (\" %s \") and function (\" %s \") already exists. Please update or delete the existing mapping with UUID %s",
				m.EventSourceArn+strings.Join(m.Queues, ""), fn, o.UUID)
		}
	}
	if err := s.cfg.Mappings.Create(c.ctx, m); err != nil {
		return err
	}
	return c.reply(http.StatusAccepted, m.Configuration)
}

// aws is the value of an optional string, as the AWS SDKs' aws.ToString.
func aws(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// mapping reads the {UUID} of the path, of the caller's account.
func (s *Service) mapping(c *call) (*esm.Mapping, error) {
	m, _, err := s.cfg.Mappings.Get(c.ctx, c.r.PathValue("UUID"))
	if errors.Is(err, esm.ErrNotFound) || err == nil && m.Account != c.caller.Account {
		return nil, api.Errorf(api.ResourceNotFound, "The resource you requested does not exist.")
	}
	return m, err
}

func (s *Service) getMapping(c *call) error {
	m, err := s.mapping(c)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, m.Configuration)
}

func errInUse() *api.Error {
	return api.Errorf(api.ResourceInUse, "Cannot update the event source mapping because it is in use.")
}

func (s *Service) updateMapping(c *call) error {
	cur, err := s.mapping(c)
	if err != nil {
		return err
	}
	var req esm.Request
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.EventSourceArn != nil || req.SelfManagedEventSource != nil || req.Queues != nil || req.Topics != nil || req.SourceAccessConfigurations != nil {
		return api.Errorf(api.InvalidParameterValue, "A mapping's event source cannot change.")
	}
	kind, visibility, err := s.mappingSource(c, cur.EventSourceArn, cur.SelfManagedEventSource, nil)
	if err == nil {
		err = req.Check(kind, false)
	}
	if err != nil {
		return err
	}
	fn := cur.FunctionArn
	if req.FunctionName != nil {
		if fn, err = s.mappingFunction(c, *req.FunctionName, visibility); err != nil {
			return err
		}
	}
	if err := s.mappingDestinations(c, fn, req.DestinationConfig); err != nil {
		return err
	}
	m, err := s.cfg.Mappings.Modify(c.ctx, cur.UUID, func(m *esm.Mapping) error {
		if m.State != esm.StateEnabled && m.State != esm.StateDisabled {
			return errInUse()
		}
		req.Apply(m)
		m.FunctionArn = fn
		if err := esm.CheckMerged(m); err != nil {
			return err
		}
		m.State, m.StateTransitionReason = esm.StateUpdating, "USER_INITIATED"
		return nil
	})
	if err != nil {
		return err
	}
	return c.reply(http.StatusAccepted, m.Configuration)
}

func (s *Service) deleteMapping(c *call) error {
	cur, err := s.mapping(c)
	if err != nil {
		return err
	}
	m, err := s.cfg.Mappings.Modify(c.ctx, cur.UUID, func(m *esm.Mapping) error {
		if m.State == esm.StateCreating || m.State == esm.StateUpdating {
			return errInUse()
		}
		m.State, m.StateTransitionReason = esm.StateDeleting, "USER_INITIATED"
		return nil
	})
	if errors.Is(err, esm.ErrNotFound) {
		return api.Errorf(api.ResourceNotFound, "The resource you requested does not exist.")
	}
	if err != nil {
		return err
	}
	return c.reply(http.StatusAccepted, m.Configuration)
}

func (s *Service) listMappings(c *call) error {
	page, err := listQuery(c.r, 100)
	if err != nil {
		return err
	}
	q := c.r.URL.Query()
	var ref api.FunctionRef
	if name := q.Get("FunctionName"); name != "" {
		if ref, err = api.ParseFunctionRef(name); err != nil {
			return err
		}
		if err := s.checkOwner(c, ref); err != nil {
			return err
		}
	}
	source := q.Get("EventSourceArn")
	all, err := s.cfg.Mappings.List(c.ctx)
	if err != nil {
		return err
	}
	var mine []esm.Configuration
	for _, m := range all {
		if m.Account != c.caller.Account || source != "" && m.EventSourceArn != source {
			continue
		}
		if ref.Name != "" {
			fn, err := api.ParseFunctionRef(m.FunctionArn)
			if err != nil || fn.Name != ref.Name || ref.Qualifier != "" && fn.Qualifier != ref.Qualifier {
				continue
			}
		}
		mine = append(mine, m.Configuration)
	}
	items, next, err := paginate(mine, func(m esm.Configuration) string { return m.UUID }, page)
	if err != nil {
		return err
	}
	out := struct {
		EventSourceMappings []esm.Configuration
		NextMarker          string `json:",omitempty"`
	}{EventSourceMappings: items, NextMarker: next}
	if out.EventSourceMappings == nil {
		out.EventSourceMappings = []esm.Configuration{}
	}
	return c.reply(http.StatusOK, out)
}
