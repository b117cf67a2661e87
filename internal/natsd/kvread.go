package natsd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LeaderGet reads key of KV bucket from the bucket's stream leader (the
// JetStream API's message get), returning its value and revision, or
// jetstream.ErrKeyNotFound. A KV Get is a direct get, which any replica
// may answer: in a cluster it can miss a write acknowledged a moment ago,
// through this process or another.
//
// A key the KV API would refuse is jetstream.ErrInvalidKey: it becomes part
// of a subject, where a wildcard (a UUID of ">" from a request's path) would
// read another key.
func LeaderGet(ctx context.Context, nc *nats.Conn, bucket, key string) ([]byte, uint64, error) {
	if !validKey.MatchString(key) {
		return nil, 0, jetstream.ErrInvalidKey
	}
	m, err := leaderLast(ctx, nc, "KV_"+bucket, "$KV."+bucket+"."+key)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, 0, jetstream.ErrKeyNotFound
	case err != nil:
		return nil, 0, fmt.Errorf("read %s: %w", key, err)
	case bytes.Contains(m.Hdrs, []byte("KV-Operation")): // a delete or purge marker
		return nil, 0, jetstream.ErrKeyNotFound
	}
	return m.Data, m.Seq, nil
}

// LeaderLast returns the sequence and time of stream's last message on
// subject as the stream's leader has it, or jetstream.ErrMsgNotFound. A
// direct get, which any replica may answer, can miss a message
// acknowledged a moment ago.
func LeaderLast(ctx context.Context, nc *nats.Conn, stream, subject string) (uint64, time.Time, error) {
	m, err := leaderLast(ctx, nc, stream, subject)
	if err != nil {
		return 0, time.Time{}, err
	}
	return m.Seq, m.Time, nil
}

// leaderMsg is a message as the JetStream API's message get returns it.
type leaderMsg struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	Hdrs []byte    `json:"hdrs"`
	Data []byte    `json:"data"`
}

// leaderLast reads stream's last message on subject from the stream's leader.
func leaderLast(ctx context.Context, nc *nats.Conn, stream, subject string) (*leaderMsg, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": subject})
	var resp struct {
		Message *leaderMsg `json:"message"`
	}
	err := leaderRequest(ctx, nc, "$JS.API.STREAM.MSG.GET."+stream, req, &resp)
	const noMessageFound = 10037
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode == noMessageFound:
		return nil, jetstream.ErrMsgNotFound
	case err != nil:
		return nil, err
	case resp.Message == nil:
		return nil, errors.New("empty answer")
	}
	return resp.Message, nil
}

// LeaderKeys lists the keys of KV bucket that match filter (a KV key
// pattern; "" is every key), sorted, as the bucket's stream leader knows
// them (stream info's subject details). A KV ListKeys runs a consumer that
// any replica may host, and misses writes it has not applied yet. Keys whose
// last entry is a delete or purge marker are listed too: read each
// (LeaderGet) to tell.
func LeaderKeys(ctx context.Context, nc *nats.Conn, bucket, filter string) ([]string, error) {
	if filter == "" {
		filter = ">"
	}
	prefix := "$KV." + bucket + "."
	var keys []string
	for {
		req, _ := json.Marshal(map[string]any{"subjects_filter": prefix + filter, "offset": len(keys)})
		var resp struct {
			Total int `json:"total"`
			State struct {
				Subjects map[string]uint64 `json:"subjects"`
			} `json:"state"`
		}
		if err := leaderRequest(ctx, nc, "$JS.API.STREAM.INFO.KV_"+bucket, req, &resp); err != nil {
			return nil, fmt.Errorf("list %s: %w", bucket, err)
		}
		for s := range resp.State.Subjects {
			keys = append(keys, strings.TrimPrefix(s, prefix))
		}
		if len(resp.State.Subjects) == 0 || len(keys) >= resp.Total {
			break
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// leaderRequest sends a JetStream API request that only a stream's leader
// answers, and decodes the answer into resp; an API error is returned as a
// *jetstream.APIError. While the stream has no leader (nobody answers, or
// a member answers that there is none) it asks again (Retry): a read
// during an election is late, not failed.
func leaderRequest(ctx context.Context, nc *nats.Conn, subj string, req []byte, resp any) error {
	err := Retry(ctx, func(ctx context.Context) error {
		msg, err := nc.RequestWithContext(ctx, subj, req)
		if err != nil {
			return err
		}
		var apiResp struct {
			Error *jetstream.APIError `json:"error"`
		}
		if err = json.Unmarshal(msg.Data, &apiResp); err != nil {
			return err
		}
		if apiResp.Error != nil {
			return apiResp.Error
		}
		return json.Unmarshal(msg.Data, resp)
	})
	if Transient(err) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no stream leader answered: %w", err)
	}
	return err
}

// validKey is the KV API's rule for keys.
var validKey = regexp.MustCompile(`\A[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*\z`)
