package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"
)

type event struct {
	Path string `json:"path"`
}

func main() {
	lambda.Start(func(e event) (int, error) {
		f, err := os.Open(e.Path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return 0, err
		}
		buf := make([]byte, 1<<20)
		reads := max(1, int(fi.Size()/20)/len(buf))
		total := 0
		for i := range reads {
			n, _ := f.ReadAt(buf, int64(i)*(fi.Size()/int64(reads)))
			total += n
		}
		return total, nil
	})
}
