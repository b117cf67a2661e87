package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

type event struct {
	Records []struct {
		Kinesis struct{ Data []byte } `json:"kinesis"`
	}
	Kafka map[string][]struct{ Value string } `json:"records"`
}

func handle(ctx context.Context, ev event) error {
	now := time.Now().UnixNano()
	var data [][]byte
	for _, r := range ev.Records {
		data = append(data, r.Kinesis.Data)
	}
	for _, recs := range ev.Kafka {
		for _, r := range recs {
			v, _ := base64.StdEncoding.DecodeString(r.Value)
			data = append(data, v)
		}
	}
	var out []byte
	for _, d := range data {
		var p struct{ T int64 }
		json.Unmarshal(d, &p)
		out = fmt.Appendf(out, "%d\n", now-p.T)
	}
	f, err := os.OpenFile(os.Getenv("SINK"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(out)
	return err
}

func main() { lambda.Start(handle) }
