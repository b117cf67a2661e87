package logs

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Structured filter patterns: JSON patterns, which select members of
// events that are JSON objects (what Powertools and Lambda's JSON log
// format write), and space-delimited patterns, which name the fields of
// events such as access logs.
//
//	{ $.level = "ERROR" }                   a member's value ("*" is a wildcard)
//	{ $.latency > 50 && $.path != "/ok" }   numbers: = != < <= > >=; && || ( )
//	{ $.user.id = 7 } { $.items[0] = "a" }  nested members and array elements
//	{ $.error IS TRUE } { $.x IS NULL } { $.x NOT EXISTS } { $.x EXISTS }
//	[ip, user, ..., status = 4*, bytes > 1000]
//	                                        fields split at spaces ("..." and
//	                                        [...] are one field); "..." takes
//	                                        any number; a field's conditions as
//	                                        in JSON patterns, && || between them

// cond is a compiled condition on a structured event.
type cond interface {
	eval(get func(sel string) (any, bool)) bool
}

type and struct{ l, r cond }
type or struct{ l, r cond }

func (c and) eval(get func(string) (any, bool)) bool { return c.l.eval(get) && c.r.eval(get) }
func (c or) eval(get func(string) (any, bool)) bool  { return c.l.eval(get) || c.r.eval(get) }

// compare is "selector op value", or a test (IS TRUE, EXISTS, ...).
type compare struct {
	sel, op string
	glob    []string // a string value split at its * wildcards
	num     float64
	isNum   bool
}

func (c compare) eval(get func(string) (any, bool)) bool {
	v, ok := get(c.sel)
	switch c.op {
	case "EXISTS":
		return ok
	case "NOT EXISTS":
		return !ok
	case "IS NULL":
		return ok && v == nil
	case "IS TRUE", "IS FALSE":
		b, isBool := v.(bool)
		return ok && isBool && b == (c.op == "IS TRUE")
	}
	if !ok {
		return false
	}
	if c.isNum {
		var n float64
		switch x := v.(type) {
		case json.Number:
			f, err := x.Float64()
			if err != nil {
				return false
			}
			n = f
		case string: // a space-delimited field
			f, err := strconv.ParseFloat(x, 64)
			if err != nil {
				return false
			}
			n = f
		default:
			return false
		}
		switch c.op {
		case "=":
			return n == c.num
		case "!=":
			return n != c.num
		case "<":
			return n < c.num
		case "<=":
			return n <= c.num
		case ">":
			return n > c.num
		case ">=":
			return n >= c.num
		}
		return false
	}
	s, isStr := v.(string)
	if !isStr {
		if n, isNumber := v.(json.Number); isNumber {
			s = n.String()
		} else {
			return false
		}
	}
	return globMatch(c.glob, s) == (c.op == "=")
}

// globMatch reports whether s is parts joined by any strings.
func globMatch(parts []string, s string) bool {
	if len(parts) == 1 {
		return s == parts[0]
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}

// lexer splits a structured pattern into tokens.
type lexer struct {
	s   string
	pos int
}

func (l *lexer) skip() {
	for l.pos < len(l.s) && (l.s[l.pos] == ' ' || l.s[l.pos] == '\t') {
		l.pos++
	}
}

// next returns the next token: a quoted string (with its quotes), an
// operator, a parenthesis, a comma, a bracket, or a word.
func (l *lexer) next() (string, error) {
	l.skip()
	if l.pos >= len(l.s) {
		return "", nil
	}
	s, i := l.s, l.pos
	switch {
	case s[i] == '"':
		j := i + 1
		for ; j < len(s); j++ {
			if s[j] == '\\' && j+1 < len(s) {
				j++
				continue
			}
			if s[j] == '"' {
				l.pos = j + 1
				return s[i : j+1], nil
			}
		}
		return "", patternError("unterminated quoted string")
	case strings.HasPrefix(s[i:], "&&"), strings.HasPrefix(s[i:], "||"), strings.HasPrefix(s[i:], "!="),
		strings.HasPrefix(s[i:], "<="), strings.HasPrefix(s[i:], ">="):
		l.pos += 2
		return s[i : i+2], nil
	case strings.ContainsRune("=<>(),{}[]", rune(s[i])):
		l.pos++
		return s[i : i+1], nil
	}
	j := i
	for j < len(s) && !strings.ContainsRune(" \t=<>!&|(),{}\"", rune(s[j])) && !(s[j] == ']' && !strings.Contains(s[i:j], "[")) {
		j++
	}
	if j == i {
		return "", patternError("unexpected %q", s[i:i+1])
	}
	l.pos = j
	return s[i:j], nil
}

func (l *lexer) peek() string {
	save := l.pos
	t, _ := l.next()
	l.pos = save
	return t
}

func patternError(format string, args ...any) *apiError {
	return errf(invalidParameter, "Invalid filter pattern: "+format, args...)
}

// parseExpr parses conditions joined by && (first) and || until end (a
// closing token it does not consume); sel checks a selector.
func parseExpr(l *lexer, end string, sel func(string) error) (cond, error) {
	left, err := parseAnd(l, end, sel)
	if err != nil {
		return nil, err
	}
	for l.peek() == "||" {
		l.next()
		right, err := parseAnd(l, end, sel)
		if err != nil {
			return nil, err
		}
		left = or{left, right}
	}
	return left, nil
}

func parseAnd(l *lexer, end string, sel func(string) error) (cond, error) {
	left, err := parseTerm(l, end, sel)
	if err != nil {
		return nil, err
	}
	for l.peek() == "&&" {
		l.next()
		right, err := parseTerm(l, end, sel)
		if err != nil {
			return nil, err
		}
		left = and{left, right}
	}
	return left, nil
}

func parseTerm(l *lexer, end string, sel func(string) error) (cond, error) {
	t, err := l.next()
	if err != nil {
		return nil, err
	}
	if t == "(" {
		c, err := parseExpr(l, ")", sel)
		if err != nil {
			return nil, err
		}
		if t, _ := l.next(); t != ")" {
			return nil, patternError("missing )")
		}
		return c, nil
	}
	if t == "" || t == end {
		return nil, patternError("missing a condition")
	}
	if err := sel(t); err != nil {
		return nil, err
	}
	c := compare{sel: t}
	op, err := l.next()
	if err != nil {
		return nil, err
	}
	switch op {
	case "EXISTS":
		c.op = op
		return c, nil
	case "NOT":
		if w, _ := l.next(); w != "EXISTS" {
			return nil, patternError("NOT must be followed by EXISTS")
		}
		c.op = "NOT EXISTS"
		return c, nil
	case "IS":
		w, _ := l.next()
		if w != "TRUE" && w != "FALSE" && w != "NULL" {
			return nil, patternError("IS must be followed by TRUE, FALSE or NULL")
		}
		c.op = "IS " + w
		return c, nil
	case "=", "!=", "<", "<=", ">", ">=":
		c.op = op
	default:
		return nil, patternError("expected an operator after %s, got %q", t, op)
	}
	v, err := l.next()
	if err != nil {
		return nil, err
	}
	if v == "" || strings.ContainsAny(v[:1], "(),{}[]=<>&|!") {
		return nil, patternError("expected a value after %s %s", t, op)
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(n) && !math.IsInf(n, 0) {
		c.num, c.isNum = n, true
		return c, nil
	}
	if op != "=" && op != "!=" {
		return nil, patternError("%s compares numbers; %s is not one", op, v)
	}
	if v[0] == '"' {
		s, err := strconv.Unquote(v)
		if err != nil {
			return nil, patternError("bad string %s", v)
		}
		v = s
	}
	c.glob = strings.Split(v, "*")
	return c, nil
}

// jsonPattern is a compiled { ... } pattern.
type jsonPattern struct{ c cond }

var selectorRe = regexp.MustCompile(`^\$((\.[A-Za-z0-9_@\-]+)|(\[[0-9]+\]))*$`)

func parseJSONPattern(s string) (*jsonPattern, error) {
	l := &lexer{s: s[1:]}
	c, err := parseExpr(l, "}", func(sel string) error {
		if !selectorRe.MatchString(sel) {
			return patternError("bad selector %q: selectors are $.member, $.a.b or $.list[0]", sel)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if t, _ := l.next(); t != "}" {
		return nil, patternError("missing } at the end of the JSON pattern")
	}
	if l.skip(); l.pos != len(l.s) {
		return nil, patternError("text after the JSON pattern")
	}
	return &jsonPattern{c}, nil
}

var selectorPart = regexp.MustCompile(`\.([A-Za-z0-9_@\-]+)|\[([0-9]+)\]`)

func (p *jsonPattern) match(msg []byte) bool {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 || msg[0] != '{' {
		return false
	}
	d := json.NewDecoder(bytes.NewReader(msg))
	d.UseNumber()
	var doc any
	if d.Decode(&doc) != nil {
		return false
	}
	return p.c.eval(func(sel string) (any, bool) {
		v := doc
		for _, m := range selectorPart.FindAllStringSubmatch(sel, -1) {
			if m[1] != "" {
				obj, ok := v.(map[string]any)
				if !ok {
					return nil, false
				}
				if v, ok = obj[m[1]]; !ok {
					return nil, false
				}
				continue
			}
			arr, ok := v.([]any)
			i, _ := strconv.Atoi(m[2])
			if !ok || i >= len(arr) {
				return nil, false
			}
			v = arr[i]
		}
		return v, true
	})
}

// spacePattern is a compiled [ ... ] pattern.
type spacePattern struct {
	names    []string // "" for an unnamed field, "..." for any number
	ellipsis int      // index of "..." in names, or -1
	c        cond     // nil: no conditions
}

var fieldNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func parseSpacePattern(s string) (*spacePattern, error) {
	l := &lexer{s: s[1:]}
	p := &spacePattern{ellipsis: -1}
	known := map[string]bool{}
	named := func(sel string) error {
		if !known[sel] {
			return patternError("condition on %s, which is not a field named before it", sel)
		}
		return nil
	}
	for {
		start := l.pos
		t, err := l.next()
		if err != nil {
			return nil, err
		}
		switch {
		case t == "...":
			if p.ellipsis >= 0 {
				return nil, patternError("... appears twice")
			}
			p.ellipsis = len(p.names)
			p.names = append(p.names, t)
		case fieldNameRe.MatchString(t):
			if known[t] {
				return nil, patternError("field %s named twice", t)
			}
			known[t] = true
			p.names = append(p.names, t)
			if op := l.peek(); op == "," || op == "]" {
				break
			}
			l.pos = start // the name begins the field's conditions
			c, err := parseExpr(l, "]", named)
			if err != nil {
				return nil, err
			}
			if p.c == nil {
				p.c = c
			} else {
				p.c = and{p.c, c}
			}
		default:
			return nil, patternError("bad field %q in a space-delimited pattern", t)
		}
		switch t, _ := l.next(); t {
		case ",":
		case "]":
			if l.skip(); l.pos != len(l.s) {
				return nil, patternError("text after the space-delimited pattern")
			}
			return p, nil
		default:
			return nil, patternError("expected , or ] in a space-delimited pattern, got %q", t)
		}
	}
}

// fields splits a message at spaces; a "quoted" or [bracketed] part is one
// field (without its quotes or brackets).
func fields(msg []byte) []string {
	var out []string
	s := string(msg)
	for i := 0; i < len(s); {
		if s[i] == ' ' || s[i] == '\t' {
			i++
			continue
		}
		if end := closing(s[i]); end != 0 {
			if j := strings.IndexByte(s[i+1:], end); j >= 0 {
				out = append(out, s[i+1:i+1+j])
				i += j + 2
				continue
			}
		}
		j := i
		for j < len(s) && s[j] != ' ' && s[j] != '\t' {
			j++
		}
		out = append(out, s[i:j])
		i = j
	}
	return out
}

func closing(open byte) byte {
	switch open {
	case '"':
		return '"'
	case '[':
		return ']'
	}
	return 0
}

func (p *spacePattern) match(msg []byte) bool {
	fs := fields(msg)
	values := map[string]string{}
	fixed := len(p.names)
	if p.ellipsis >= 0 {
		fixed--
		if len(fs) < fixed {
			return false
		}
	} else if len(fs) != fixed {
		return false
	}
	for i, n := range p.names {
		switch {
		case p.ellipsis >= 0 && i == p.ellipsis:
		case p.ellipsis >= 0 && i > p.ellipsis:
			values[n] = fs[len(fs)-(len(p.names)-i)]
		default:
			values[n] = fs[i]
		}
	}
	if p.c == nil {
		return true
	}
	return p.c.eval(func(sel string) (any, bool) {
		v, ok := values[sel]
		return v, ok
	})
}
