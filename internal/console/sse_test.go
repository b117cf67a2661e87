package console_test

import (
	"bufio"
	"io"
	"strings"
)

// newSSE returns a reader of server-sent events: each call returns the
// next event's name and data.
func newSSE(r io.Reader) func() (string, []byte, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	return func() (string, []byte, error) {
		var name string
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "" && data != nil:
				return name, []byte(strings.Join(data, "\n")), nil
			case strings.HasPrefix(line, "event: "):
				name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				data = append(data, line[len("data: "):])
			}
		}
		if err := sc.Err(); err != nil {
			return "", nil, err
		}
		return "", nil, io.EOF
	}
}
