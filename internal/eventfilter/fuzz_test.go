package eventfilter

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzPattern: a pattern from a caller either parses or is refused with
// ErrInvalid, and a parsed one matches any decoded record without failing.
// A record's string field matches a pattern of its exact value, and not
// one of anything-but that value.
func FuzzPattern(f *testing.F) {
	f.Add(`{"body":{"kind":["order"]}}`, `{"body":"{\"kind\":\"order\"}"}`)
	f.Add(`{"a":[{"numeric":[">",1,"<=",5]}],"b":[{"exists":false}]}`, `{"a":3}`)
	f.Add(`{"a":[{"anything-but":{"prefix":"x"}}]}`, `{"a":["xy","z"]}`)
	f.Fuzz(func(t *testing.T, pattern, record string) {
		p, err := Parse(pattern)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("%q: %v, want ErrInvalid", pattern, err)
		}
		ev, derr := Decode([]byte(record), "body")
		if derr != nil {
			return
		}
		if err == nil {
			p.Match(ev)
		}
		m, ok := ev.(map[string]any)
		if !ok {
			return
		}
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				continue
			}
			exact, _ := json.Marshal(map[string]any{k: []any{s}})
			but, _ := json.Marshal(map[string]any{k: []any{map[string]any{"anything-but": s}}})
			pe, err1 := Parse(string(exact))
			pb, err2 := Parse(string(but))
			if err1 != nil || err2 != nil {
				if len(exact) <= MaxLength && len(but) <= MaxLength {
					t.Fatalf("patterns of %q: %v %v", s, err1, err2)
				}
				continue
			}
			if !pe.Match(ev) || pb.Match(ev) {
				t.Fatalf("%s on %s: exact %v, anything-but %v", exact, record, pe.Match(ev), pb.Match(ev))
			}
		}
	})
}
