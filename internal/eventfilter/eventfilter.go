// Package eventfilter is Lambda's event filtering: the filter patterns of an
// event source mapping's FilterCriteria, parsed once and matched against
// each record. No I/O.
//
// A pattern is a JSON object whose keys follow the record's; a key holds
// either a nested pattern or an array of matchers, any of which may match
// the record's value there (or, when the value is an array, any of its
// elements). Matchers: a string, number, boolean or null (equality; numbers
// compare as numbers), {"prefix": s}, {"suffix": s}, {"equals-ignore-case": s},
// {"anything-but": v | [v...] | {"prefix": s} | {"suffix": s}},
// {"numeric": [op, n (, op, n)]} with op one of = < <= > >=, and
// {"exists": bool}. A record matches a set of filters when one matches.
package eventfilter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// Limits of a pattern.
const (
	MaxLength = 4096 // characters, as Lambda's Filter.Pattern
	MaxDepth  = 10   // nested objects
)

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid filter pattern")

// Pattern is a parsed filter pattern.
type Pattern struct{ root object }

// object is a pattern object: each field a nested object or matchers.
type object map[string]field

type field struct {
	nested   object
	matchers []matcher
}

type matcher struct {
	kind   string // "equals", "prefix", "suffix", "equals-ignore-case", "anything-but", "numeric", "exists"
	value  any    // equals: string, float64, bool or nil; exists: bool
	str    string
	values []any     // anything-but
	inner  *matcher  // anything-but {prefix|suffix}
	ranges []numeric // numeric
}

type numeric struct {
	op string
	n  float64
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Parse parses a pattern.
func Parse(s string) (*Pattern, error) {
	if len(s) > MaxLength {
		return nil, invalid("longer than %d characters", MaxLength)
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, invalid("not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, invalid("text after the JSON object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, invalid("a pattern is a JSON object")
	}
	root, err := parseObject(m, 1)
	if err != nil {
		return nil, err
	}
	return &Pattern{root: root}, nil
}

func parseObject(m map[string]any, depth int) (object, error) {
	if depth > MaxDepth {
		return nil, invalid("nested deeper than %d levels", MaxDepth)
	}
	if len(m) == 0 {
		return nil, invalid("empty object")
	}
	o := object{}
	for k, v := range m {
		switch v := v.(type) {
		case map[string]any:
			n, err := parseObject(v, depth+1)
			if err != nil {
				return nil, err
			}
			o[k] = field{nested: n}
		case []any:
			if len(v) == 0 {
				return nil, invalid("%q has an empty array of matchers", k)
			}
			var ms []matcher
			for _, x := range v {
				mt, err := parseMatcher(x)
				if err != nil {
					return nil, fmt.Errorf("%q: %w", k, err)
				}
				ms = append(ms, mt)
			}
			o[k] = field{matchers: ms}
		default:
			return nil, invalid("%q must be an object or an array of matchers", k)
		}
	}
	return o, nil
}

func scalar(x any) (any, bool) {
	switch x := x.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case string, bool, nil:
		return x, true
	}
	return nil, false
}

func parseMatcher(x any) (matcher, error) {
	if v, ok := scalar(x); ok {
		return matcher{kind: "equals", value: v}, nil
	}
	m, ok := x.(map[string]any)
	if !ok || len(m) != 1 {
		return matcher{}, invalid("a matcher is a value or an object with one operator")
	}
	for op, arg := range m {
		switch op {
		case "prefix", "suffix", "equals-ignore-case":
			s, ok := arg.(string)
			if !ok || s == "" && op != "equals-ignore-case" {
				return matcher{}, invalid("%s takes a non-empty string", op)
			}
			return matcher{kind: op, str: s}, nil
		case "exists":
			b, ok := arg.(bool)
			if !ok {
				return matcher{}, invalid("exists takes true or false")
			}
			return matcher{kind: op, value: b}, nil
		case "anything-but":
			return parseAnythingBut(arg)
		case "numeric":
			return parseNumeric(arg)
		default:
			return matcher{}, invalid("unknown operator %q", op)
		}
	}
	panic("unreachable")
}

func parseAnythingBut(arg any) (matcher, error) {
	mt := matcher{kind: "anything-but"}
	switch a := arg.(type) {
	case []any:
		if len(a) == 0 {
			return mt, invalid("anything-but takes a non-empty array")
		}
		for _, x := range a {
			v, ok := scalar(x)
			if !ok {
				return mt, invalid("anything-but's array holds values")
			}
			mt.values = append(mt.values, v)
		}
	case map[string]any:
		inner, err := parseMatcher(a)
		if err != nil || inner.kind != "prefix" && inner.kind != "suffix" && inner.kind != "equals-ignore-case" {
			return mt, invalid("anything-but takes a value, an array of values or a prefix, suffix or equals-ignore-case")
		}
		mt.inner = &inner
	default:
		v, ok := scalar(a)
		if !ok {
			return mt, invalid("anything-but takes a value")
		}
		mt.values = []any{v}
	}
	return mt, nil
}

func parseNumeric(arg any) (matcher, error) {
	a, ok := arg.([]any)
	if !ok || len(a) != 2 && len(a) != 4 {
		return matcher{}, invalid("numeric takes [op, n] or [op, n, op, n]")
	}
	mt := matcher{kind: "numeric"}
	for i := 0; i < len(a); i += 2 {
		op, ok := a[i].(string)
		num, isNum := a[i+1].(json.Number)
		if !ok || !isNum {
			return mt, invalid("numeric takes operators and numbers")
		}
		n, err := num.Float64()
		if err != nil || math.IsInf(n, 0) {
			return mt, invalid("numeric: %s is out of range", num)
		}
		switch op {
		case "=", "<", "<=", ">", ">=":
		default:
			return mt, invalid("numeric: unknown operator %q", op)
		}
		if len(a) == 4 && (op == "=" || i == 0 && op[0] != '>' || i == 2 && op[0] != '<') {
			return mt, invalid("numeric ranges are a lower bound (> or >=) then an upper bound (< or <=)")
		}
		mt.ranges = append(mt.ranges, numeric{op, n})
	}
	return mt, nil
}

// Match reports whether event (decoded JSON: map[string]any, []any, string,
// float64, bool, nil) matches the pattern.
func (p *Pattern) Match(event any) bool { return p.root.match(event) }

func (o object) match(v any) bool {
	m, _ := v.(map[string]any)
	for k, f := range o {
		val, present := m[k]
		if f.nested != nil {
			if !present || !f.nested.match(val) {
				return false
			}
			continue
		}
		if !f.matchValue(val, present) {
			return false
		}
	}
	return true
}

func (f field) matchValue(v any, present bool) bool {
	for _, mt := range f.matchers {
		if mt.kind == "exists" {
			// exists:true needs a leaf value (not an object).
			_, isObject := v.(map[string]any)
			if mt.value.(bool) == (present && !isObject) {
				return true
			}
			continue
		}
		if !present {
			continue
		}
		if list, ok := v.([]any); ok {
			for _, x := range list {
				if mt.match(x) {
					return true
				}
			}
			continue
		}
		if mt.match(v) {
			return true
		}
	}
	return false
}

func (mt matcher) match(v any) bool {
	switch mt.kind {
	case "equals":
		return equal(mt.value, v)
	case "prefix":
		s, ok := v.(string)
		return ok && strings.HasPrefix(s, mt.str)
	case "suffix":
		s, ok := v.(string)
		return ok && strings.HasSuffix(s, mt.str)
	case "equals-ignore-case":
		s, ok := v.(string)
		return ok && strings.EqualFold(s, mt.str)
	case "anything-but":
		if _, isObject := v.(map[string]any); isObject {
			return false
		}
		if mt.inner != nil {
			_, ok := v.(string)
			return ok && !mt.inner.match(v)
		}
		for _, x := range mt.values {
			if equal(x, v) {
				return false
			}
		}
		return true
	case "numeric":
		n, ok := v.(float64)
		if !ok {
			return false
		}
		for _, r := range mt.ranges {
			var in bool
			switch r.op {
			case "=":
				in = n == r.n
			case "<":
				in = n < r.n
			case "<=":
				in = n <= r.n
			case ">":
				in = n > r.n
			case ">=":
				in = n >= r.n
			}
			if !in {
				return false
			}
		}
		return true
	}
	return false
}

func equal(a, b any) bool {
	switch a := a.(type) {
	case float64:
		f, ok := b.(float64)
		return ok && f == a
	case string:
		s, ok := b.(string)
		return ok && s == a
	case bool:
		x, ok := b.(bool)
		return ok && x == a
	case nil:
		return b == nil
	}
	return false
}

// Filters is a mapping's filters: a record passes when one matches, or
// when there are none.
type Filters []*Pattern

// ParseAll parses a mapping's patterns.
func ParseAll(patterns []string) (Filters, error) {
	var fs Filters
	for _, p := range patterns {
		f, err := Parse(p)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// Match reports whether event passes.
func (fs Filters) Match(event any) bool {
	if len(fs) == 0 {
		return true
	}
	for _, f := range fs {
		if f.Match(event) {
			return true
		}
	}
	return false
}

// Decode decodes a record for matching, numbers as float64. Fields named
// in jsonFields (SQS's "body", Kinesis's "data" after decoding) that hold
// JSON text are replaced by the decoded JSON, as Lambda matches them.
func Decode(record []byte, jsonFields ...string) (any, error) {
	var v any
	if err := json.Unmarshal(record, &v); err != nil {
		return nil, err
	}
	if m, ok := v.(map[string]any); ok {
		for _, f := range jsonFields {
			s, ok := m[f].(string)
			if !ok {
				continue
			}
			var inner any
			if t := bytes.TrimSpace([]byte(s)); len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Unmarshal(t, &inner) == nil {
				m[f] = inner
			}
		}
	}
	return v, nil
}
