package logs

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzFilterPattern: a filter pattern from a caller either parses or is
// refused with InvalidParameterException, and a parsed one matches any
// message without failing. Patterns of plain terms match exactly the
// messages holding every term; a quoted phrase matches itself.
func FuzzFilterPattern(f *testing.F) {
	f.Fuzz(func(t *testing.T, pattern string, msg []byte) {
		p, err := parsePattern(pattern)
		if err != nil {
			var e *apiError
			if !errors.As(err, &e) || e.Type != invalidParameter {
				t.Fatalf("%q: %v, want %s", pattern, err, invalidParameter)
			}
			return
		}
		got := p.match(msg)
		if terms, ok := plainTerms(pattern); ok {
			want := true
			for _, term := range terms {
				want = want && bytes.Contains(msg, []byte(term))
			}
			if got != want {
				t.Fatalf("%q on %q: %v, want %v", pattern, msg, got, want)
			}
		}
		quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(string(msg)) + `"`
		if len(msg) == 0 || len(quoted) > maxPattern {
			return
		}
		q, err := parsePattern(quoted)
		if err != nil || len(q.all) != 1 || !bytes.Equal(q.all[0], msg) || !q.match(append([]byte("x "), msg...)) {
			t.Fatalf("phrase %s of %q: %+v, %v", quoted, msg, q, err)
		}
	})
}

// plainTerms splits a pattern made of plain terms only (no phrases,
// alternatives, exclusions, regular expressions or structured patterns).
func plainTerms(pattern string) ([]string, bool) {
	s := strings.TrimSpace(pattern)
	if s != "" && strings.ContainsRune("%{[", rune(s[0])) {
		return nil, false
	}
	terms := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' })
	for _, term := range terms {
		if strings.ContainsAny(term[:1], `?-"`) || strings.Contains(term, `"`) {
			return nil, false
		}
	}
	return terms, true
}

// FuzzTokens: what callers send as names and tokens. Names escape to
// subject-safe tokens and back; page tokens and event ids either decode
// into what encodes back to them or are refused.
func FuzzTokens(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		e := escape(s)
		if strings.Trim(e, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			t.Fatalf("escape(%q) = %q, not one subject token", s, e)
		}
		if back, err := unescape(e); err != nil || back != s {
			t.Fatalf("unescape(escape(%q)) = %q, %v", s, back, err)
		}
		if pt, err := decodePage(s); err == nil {
			if again, err := decodePage(encodePage(pt)); err != nil || again != pt {
				t.Fatalf("page token %q: %+v, again %+v, %v", s, pt, again, err)
			}
		}
		if p, ok := parsePos(s); ok && p.String() != s {
			t.Fatalf("event id %q parsed to %v", s, p)
		}
	})
}

// FuzzBatch: a stored message is decoded without reading past it, and
// what decodes encodes back to the same events.
func FuzzBatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := parseBatch(data)
		if err != nil {
			return
		}
		type event struct {
			ts  int64
			msg string
		}
		var events []event
		if err := b.each(func(i int, ts int64, msg []byte) bool {
			events = append(events, event{ts, string(msg)})
			return true
		}); err != nil {
			return
		}
		again := appendBatchHeader(nil, b.ingestion, b.minTs, b.maxTs, len(events))
		for _, e := range events {
			again = appendEvent(again, e.ts, e.msg)
		}
		b2, err := parseBatch(again)
		if err != nil {
			t.Fatalf("re-encoded batch: %v", err)
		}
		i := 0
		b2.each(func(_ int, ts int64, msg []byte) bool {
			if ts != events[i].ts || string(msg) != events[i].msg {
				t.Fatalf("event %d: %d %q, want %+v", i, ts, msg, events[i])
			}
			i++
			return true
		})
		if i != len(events) {
			t.Fatalf("%d events, want %d", i, len(events))
		}
	})
}

// FuzzStructuredPattern: JSON and space-delimited patterns from a caller
// parse or are refused with InvalidParameterException, and match any
// message without failing; a pattern selecting a member's (a field's)
// exact value matches the event that has it.
func FuzzStructuredPattern(f *testing.F) {
	f.Add(`{ $.level = "ERROR" && ($.latency > 10 || $.x NOT EXISTS) }`, "ERROR", []byte(`{"level":"ERROR","latency":11}`))
	f.Add(`[ip, user, ..., status = 4*, bytes > 100]`, "GET", []byte(`1.2.3.4 - "GET /" 404 512`))
	f.Add(`{ $.a[0].b IS TRUE }`, "x y", []byte(`{"a":[{"b":true}]}`))
	f.Fuzz(func(t *testing.T, pattern, value string, msg []byte) {
		for _, s := range []string{pattern, "{" + pattern, "[" + pattern} {
			p, err := parsePattern(s)
			if err != nil {
				var e *apiError
				if !errors.As(err, &e) || e.Type != invalidParameter {
					t.Fatalf("%q: %v, want %s", s, err, invalidParameter)
				}
				continue
			}
			p.match(msg)
		}
		if strings.Contains(value, "*") || !utf8.ValidString(value) {
			return // JSON cannot carry invalid UTF-8 as it is
		}
		quoted := strconv.Quote(value)
		if len(quoted) > maxPattern/2 {
			return // within the limit on patterns
		}
		doc, _ := json.Marshal(map[string]string{"k": value})
		if p, err := parsePattern(`{ $.k = ` + quoted + ` }`); err == nil {
			if !p.match(doc) {
				t.Fatalf("{ $.k = %s } does not match %s", quoted, doc)
			}
		} else {
			t.Fatalf("{ $.k = %s }: %v", quoted, err)
		}
		word := strings.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '"' || r == '[' || r == ']' {
				return -1
			}
			return r
		}, value)
		if word == "" {
			return
		}
		if p, err := parsePattern(`[a, b = ` + strconv.Quote(word) + `]`); err == nil && !p.match([]byte("x "+word)) {
			t.Fatalf("[a, b = %q] does not match %q", word, "x "+word)
		}
	})
}
