package logs

import (
	"strings"
	"testing"
)

func TestPattern(t *testing.T) {
	msgs := []string{
		"START RequestId: 1 Version: $LATEST",
		"ERROR Exception in thread main",
		"WARN disk almost full",
		"2024-01-01T00:00:00.000Z 1 Task timed out after 3.00 seconds",
		"ERROR Healthcheck failed",
		"REPORT RequestId: 1\tDuration: 1.00 ms\tInit Duration: 3.00 ms",
		`a "quoted" word`,
	}
	for _, tc := range []struct {
		pattern string
		want    []int // indexes into msgs
	}{
		{"", []int{0, 1, 2, 3, 4, 5, 6}},
		{`""`, []int{0, 1, 2, 3, 4, 5, 6}},
		{"ERROR", []int{1, 4}},
		{"error", nil}, // case-sensitive
		{"ERROR Exception", []int{1}},
		{"Exception ERROR", []int{1}},
		{"?ERROR ?WARN", []int{1, 2, 4}},
		{"ERROR -Healthcheck", []int{1}},
		{`"Task timed out"`, []int{3}},
		{`"timed Task"`, nil},
		{`-"RequestId: 1"`, []int{1, 2, 3, 4, 6}},
		{`?"Init Duration" ?WARN`, []int{2, 5}},
		{`"a \"quoted\" word"`, []int{6}},
		{"%^(START|END) %", []int{0}},
		{"%Duration: [0-9.]+ ms%", []int{5}},
	} {
		matchesOf(t, tc.pattern, msgs, tc.want)
	}
	for _, bad := range []string{`{ $.level = }`, `{ level = "ERROR" }`, `{ $.x > "a" }`, `{ $.x = 1`, `{ $.x = 1 } y`, `{ ($.x = 1 }`,
		`[ip, user, status=404`, `[ip, ip]`, `[a, b = x && c = 1, c]`, `[..., ...]`, `"unterminated`, `%(%`, "%" + strings.Repeat("(a*)*", 205) + "%"} {
		_, err := parsePattern(bad)
		e, ok := err.(*apiError)
		if !ok || e.Type != invalidParameter {
			t.Errorf("%q: got %v, want InvalidParameterException", bad, err)
		}
	}
	if _, err := parsePattern(`{ $.x = }`); err == nil || !strings.Contains(err.Error(), "expected a value after $.x =") {
		t.Errorf("JSON pattern error does not say why: %v", err)
	}
}

// TestStructuredPatterns: JSON patterns on JSON events (what Powertools
// writes) and space-delimited patterns on fielded lines, as CloudWatch
// Logs matches them.
func TestStructuredPatterns(t *testing.T) {
	msgs := []string{
		`{"level":"ERROR","message":"boom","latency":120,"user":{"id":7,"name":"ann"},"tags":["a","b"],"retry":true,"gone":null}`,
		`{"level":"INFO","message":"ok","latency":20.5,"user":{"id":8},"tags":[],"retry":false}`,
		`  {"level":"WARN","message":"slow request","latency":900}  `,
		`2024-01-01T00:00:00Z e1 ERROR {"level":"ERROR"}`,
		`{"level":"ERROR"`,
		`127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326`,
		`10.0.0.2 - - [10/Oct/2000:13:55:37 -0700] "POST /login HTTP/1.0" 404 512`,
		`10.0.0.3 - bob [10/Oct/2000:13:55:38 -0700] "GET / HTTP/1.0" 500 80000`,
	}
	for _, tc := range []struct {
		pattern string
		want    []int
	}{
		{`{ $.level = "ERROR" }`, []int{0}},
		{`{$.level="ERROR"}`, []int{0}},
		{`{ $.level = ERROR }`, []int{0}},
		{`{ $.level != "ERROR" }`, []int{1, 2}},
		{`{ $.level = "*R*" }`, []int{0, 2}},
		{`{ $.message = "slow*" }`, []int{2}},
		{`{ $.latency > 100 }`, []int{0, 2}},
		{`{ $.latency <= 20.5 }`, []int{1}},
		{`{ $.latency >= 120 && $.level = "WARN" }`, []int{2}},
		{`{ $.level = "INFO" || $.latency > 500 }`, []int{1, 2}},
		{`{ ($.level = "INFO" || $.level = "WARN") && $.latency < 100 }`, []int{1}},
		{`{ $.user.id = 7 }`, []int{0}},
		{`{ $.user.name = "ann" }`, []int{0}},
		{`{ $.tags[1] = "b" }`, []int{0}},
		{`{ $.retry IS TRUE }`, []int{0}},
		{`{ $.retry IS FALSE }`, []int{1}},
		{`{ $.gone IS NULL }`, []int{0}},
		{`{ $.user EXISTS }`, []int{0, 1}},
		{`{ $.user NOT EXISTS }`, []int{2}},
		{`[ip, identity, user, timestamp, request, status, bytes]`, []int{5, 6, 7}},
		{`[ip, identity, user, timestamp, request, status = 404, bytes]`, []int{6}},
		{`[ip, identity, user, timestamp, request, status = 4*, bytes]`, []int{6}},
		{`[ip, identity, user, timestamp, request, status >= 400 && status < 500, bytes]`, []int{6}},
		{`[..., status, bytes > 1000]`, []int{5, 7}},
		{`[ip = 10.*, ...]`, []int{6, 7}},
		{`[ip, ..., bytes = 80000 || bytes = 512]`, []int{6, 7}},
		{`[ip, identity, user != "-", ...]`, []int{3, 5, 7}},
		{`[a, b]`, []int{2}}, // two fields: the JSON line split at its space
	} {
		matchesOf(t, tc.pattern, msgs, tc.want)
	}
}

// matchesOf checks that pattern parses and matches exactly msgs[want...].
func matchesOf(t *testing.T, pattern string, msgs []string, want []int) {
	t.Helper()
	p, err := parsePattern(pattern)
	if err != nil {
		t.Errorf("%q: %v", pattern, err)
		return
	}
	var got []int
	for i, m := range msgs {
		if p.match([]byte(m)) {
			got = append(got, i)
		}
	}
	if !equalInts(got, want) {
		t.Errorf("%q matched %v, want %v", pattern, got, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestEscape(t *testing.T) {
	for _, s := range []string{"/aws/lambda/fn", "2024/01/02/[$LATEST]worker-1-7", "a.b*c>d e_f", "plain-Name09", "ünïcode/…", "_", "__5F", "x"} {
		e := escape(s)
		for i := 0; i < len(e); i++ {
			if !plain(e[i]) && e[i] != '_' {
				t.Fatalf("escape(%q) = %q has %q", s, e, e[i])
			}
		}
		back, err := unescape(e)
		if err != nil || back != s {
			t.Errorf("unescape(escape(%q)) = %q, %v", s, back, err)
		}
	}
	if escape("/aws/lambda/f") != "_2Faws_2Flambda_2Ff" {
		t.Errorf("escape: %q", escape("/aws/lambda/f"))
	}
	if escape("a_b") == escape("a/b") || escape("a.b") == escape("a_2Eb") {
		t.Error("escape is not injective")
	}
}

func TestBatchCodec(t *testing.T) {
	b := appendBatchHeader(nil, 1700000000123, -5, 1700000000001, 3)
	b = appendEvent(b, 1700000000000, "one")
	b = appendEvent(b, -5, "")
	b = appendEvent(b, 1700000000001, strings.Repeat("x", 70000))
	var got []string
	var tss []int64
	decode := func(data []byte) (batch, error) {
		got, tss = nil, nil
		bt, err := parseBatch(data)
		if err != nil {
			return bt, err
		}
		return bt, bt.each(func(i int, ts int64, msg []byte) bool {
			got, tss = append(got, string(msg)), append(tss, ts)
			return true
		})
	}
	bt, err := decode(b)
	if err != nil || bt.ingestion != 1700000000123 || bt.minTs != -5 || bt.maxTs != 1700000000001 || len(got) != 3 ||
		got[0] != "one" || got[1] != "" || len(got[2]) != 70000 || tss[0] != 1700000000000 || tss[1] != -5 {
		t.Fatalf("decode: %+v %d %v", bt.count, len(got), err)
	}
	for i := 0; i < len(b); i++ {
		decode(b[:i]) // must not panic
	}
	if _, err := decode(b[:len(b)-1]); err == nil {
		t.Error("truncated batch decoded")
	}
}
