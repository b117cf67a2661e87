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
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return nil, 0, err
	}
	var resp struct {
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", key, err)
	}
	const noMessageFound = 10037
	switch {
	case resp.Error != nil && resp.Error.ErrCode == noMessageFound:
		return nil, 0, jetstream.ErrKeyNotFound
	case resp.Error != nil:
		return nil, 0, fmt.Errorf("read %s: %s", key, resp.Error.Description)
	case resp.Message == nil:
		return nil, 0, errors.New("read " + key + ": empty answer")
	case bytes.Contains(resp.Message.Hdrs, []byte("KV-Operation")): // a delete or purge marker
		return nil, 0, jetstream.ErrKeyNotFound
	}
	return resp.Message.Data, resp.Message.Seq, nil
}

// validKey is the KV API's rule for keys.
var validKey = regexp.MustCompile(`\A[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*\z`)

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
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := nc.RequestWithContext(rctx, "$JS.API.STREAM.INFO.KV_"+bucket, req)
		cancel()
		if err != nil {
			return nil, err
		}
		var resp struct {
			Total int `json:"total"`
			State struct {
				Subjects map[string]uint64 `json:"subjects"`
			} `json:"state"`
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if err := json.Unmarshal(msg.Data, &resp); err != nil {
			return nil, fmt.Errorf("list %s: %w", bucket, err)
		}
		if resp.Error != nil {
			return nil, fmt.Errorf("list %s: %s", bucket, resp.Error.Description)
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
