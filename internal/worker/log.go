package worker

import (
	"bytes"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/logline"
)

// TailSize is how much of an invoke's log X-Amz-Log-Result carries.
const TailSize = 4096

// maxLine is where a line without a newline is cut into a log event, as
// CloudWatch Logs bounds an event at 256 KB.
const maxLine = 256 << 10

// logBuffer keeps the last TailSize bytes of the current invoke's log and
// passes whole lines to the sink.
type logBuffer struct {
	buf     []byte
	partial []byte
	sink    logline.Sink
	account string
	group   string
	stream  string
	lines   []logline.Line

	// limit bounds the function's output that reaches the sink (nil: no
	// limit); platform is set while a platform line is written, which
	// passes. dropped counts the lines refused since the last report, and
	// droppedTotal every line the worker refused.
	limit        *logLimit
	platform     bool
	dropped      int64
	droppedTotal *atomic.Uint64
}

func (l *logBuffer) init(sink logline.Sink, account, group, stream string, limit *logLimit, droppedTotal *atomic.Uint64) {
	l.buf = make([]byte, 0, 2*TailSize)
	l.sink, l.account, l.group, l.stream = sink, account, group, stream
	l.limit, l.droppedTotal = limit, droppedTotal
}

func (l *logBuffer) reset() { l.buf = l.buf[:0] }

// write takes output as it comes; a line is complete at its newline, which
// its log event keeps (as Lambda's do; the CLI strips it).
func (l *logBuffer) write(p []byte) {
	l.keep(p)
	if l.sink == nil {
		return
	}
	now := time.Now()
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			if len(l.partial) >= maxLine {
				l.emit(now, l.partial)
				l.partial = l.partial[:0]
			}
			break
		}
		if len(l.partial) > 0 {
			l.partial = append(l.partial, p[:i+1]...)
			l.emit(now, l.partial)
			l.partial = l.partial[:0]
		} else {
			l.emit(now, p[:i+1])
		}
		p = p[i+1:]
	}
	l.send()
}

// writeString adds a platform line (START, END, REPORT, ...); output still
// without its newline is ended first, so lines keep their order.
func (l *logBuffer) writeString(s string) {
	if l.sink != nil && len(l.partial) > 0 {
		l.emit(time.Now(), l.partial)
		l.partial = l.partial[:0]
	}
	l.platform = true
	l.write([]byte(s))
	l.platform = false
}

func (l *logBuffer) emit(t time.Time, line []byte) {
	if !l.platform && l.limit != nil && !l.limit.allow(len(line), t) {
		l.dropped++
		l.droppedTotal.Add(1)
		return
	}
	l.lines = append(l.lines, logline.Line{Time: t, Message: string(line)})
}

// takeDropped returns the lines dropped since it was last called.
func (l *logBuffer) takeDropped() int64 {
	n := l.dropped
	l.dropped = 0
	return n
}

func (l *logBuffer) send() {
	if len(l.lines) > 0 {
		l.sink.Append(l.account, l.group, l.stream, l.lines)
		l.lines = nil
	}
}

// keep appends to the tail, dropping what is more than TailSize behind.
func (l *logBuffer) keep(p []byte) {
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

// tail copies out the last TailSize bytes.
func (l *logBuffer) tail() []byte {
	b := l.buf
	if len(b) > TailSize {
		b = b[len(b)-TailSize:]
	}
	return append([]byte(nil), b...)
}
