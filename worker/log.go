package worker

import (
	"encoding/json"
)

// TailSize is how much of an invoke's log X-Amz-Log-Result carries.
const TailSize = 4096

// logBuffer keeps the last TailSize bytes of the current invoke's log.
type logBuffer struct {
	buf []byte
}

func (l *logBuffer) init()  { l.buf = make([]byte, 0, 2*TailSize) }
func (l *logBuffer) reset() { l.buf = l.buf[:0] }

func (l *logBuffer) write(p []byte) {
	if len(p) >= TailSize {
		l.buf = append(l.buf[:0], p[len(p)-TailSize:]...)
		return
	}
	if len(l.buf)+len(p) > cap(l.buf) {
		keep := TailSize - len(p)
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-min(keep, len(l.buf)):]...)
	}
	l.buf = append(l.buf, p...)
}

func (l *logBuffer) writeString(s string) { l.write([]byte(s)) }

// tail copies out the last TailSize bytes.
func (l *logBuffer) tail() []byte {
	b := l.buf
	if len(b) > TailSize {
		b = b[len(b)-TailSize:]
	}
	return append([]byte(nil), b...)
}

// errorDoc is Lambda's error document {"errorMessage","errorType"}.
func errorDoc(typ, msg string) []byte {
	b, _ := json.Marshal(map[string]string{"errorMessage": msg, "errorType": typ})
	return b
}

// jsonOr returns body when it is JSON, else wraps it in an error document, so
// the caller always gets a parseable error whatever the runtime posted.
func jsonOr(body []byte, typ string) []byte {
	if json.Valid(body) {
		return body
	}
	return errorDoc(typ, string(body))
}
