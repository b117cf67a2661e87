package natsd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KVFromLeader reads key of the key-value bucket from its stream's leader
// (the JetStream API's message get), with the revision it was written at.
// The bucket's own client reads with a direct get, which any replica
// answers and which can miss a write acknowledged a moment ago. A key never
// written, deleted or purged is jetstream.ErrKeyNotFound.
func KVFromLeader(ctx context.Context, nc *nats.Conn, bucket, key string) (value []byte, revision uint64, err error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
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
		return nil, 0, fmt.Errorf("%s %s: %w", bucket, key, err)
	}
	const noMessageFound = 10037
	switch {
	case resp.Error != nil && resp.Error.ErrCode == noMessageFound:
		return nil, 0, jetstream.ErrKeyNotFound
	case resp.Error != nil:
		return nil, 0, fmt.Errorf("%s %s: %s", bucket, key, resp.Error.Description)
	case resp.Message == nil:
		return nil, 0, fmt.Errorf("%s %s: empty answer", bucket, key)
	case bytes.Contains(resp.Message.Hdrs, []byte("KV-Operation")): // a delete or purge marker
		return nil, 0, jetstream.ErrKeyNotFound
	}
	return resp.Message.Data, resp.Message.Seq, nil
}
