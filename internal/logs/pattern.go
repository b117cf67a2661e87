package logs

import (
	"bytes"
	"regexp"
	"strings"
)

// pattern is a CloudWatch Logs filter pattern for unstructured events:
//
//	ERROR Exception      both terms (case-sensitive substrings)
//	"Task timed out"     an exact phrase ("" quotes; \" inside is a quote)
//	?ERROR ?WARN         either term (at least one of the ?-terms)
//	ERROR -Healthcheck   ERROR, but not Healthcheck (also -"a phrase")
//	%REPORT.*Init%       a regular expression (Go RE2 syntax)
//	"" or empty          every event
//
// Plain terms and phrases must all match, -terms must all be absent, and when
// there are ?-terms at least one must match. JSON patterns ({ $.field = ... })
// and space-delimited patterns ([ip, user, ...]) are structured.go's.
type pattern struct {
	all, any, none [][]byte
	re             *regexp.Regexp
	structured     interface{ match([]byte) bool }
}

// maxPattern is CloudWatch Logs' limit on a filter pattern; it also bounds
// the regular expression a caller makes Kiln compile.
const maxPattern = 1024

func parsePattern(s string) (*pattern, error) {
	if len(s) > maxPattern {
		return nil, errf(invalidParameter, "1 validation error detected: Value at 'filterPattern' failed to satisfy constraint: Member must have length less than or equal to %d", maxPattern)
	}
	s = strings.TrimSpace(s)
	p := &pattern{}
	if s == "" {
		return p, nil
	}
	switch s[0] {
	case '{':
		j, err := parseJSONPattern(s)
		if err != nil {
			return nil, err
		}
		p.structured = j
		return p, nil
	case '[':
		sp, err := parseSpacePattern(s)
		if err != nil {
			return nil, err
		}
		p.structured = sp
		return p, nil
	}
	if len(s) >= 2 && s[0] == '%' && s[len(s)-1] == '%' {
		re, err := regexp.Compile(s[1 : len(s)-1])
		if err != nil {
			return nil, errf(invalidParameter, "Invalid filter pattern: invalid regular expression: %v", err)
		}
		p.re = re
		return p, nil
	}
	for i := 0; i < len(s); {
		if s[i] == ' ' || s[i] == '\t' {
			i++
			continue
		}
		kind := byte(0)
		if (s[i] == '?' || s[i] == '-') && i+1 < len(s) && s[i+1] != ' ' && s[i+1] != '\t' {
			kind = s[i]
			i++
		}
		var term string
		if s[i] == '"' {
			var b strings.Builder
			j := i + 1
			closed := false
			for ; j < len(s); j++ {
				if s[j] == '\\' && j+1 < len(s) && (s[j+1] == '"' || s[j+1] == '\\') {
					b.WriteByte(s[j+1])
					j++
					continue
				}
				if s[j] == '"' {
					closed = true
					break
				}
				b.WriteByte(s[j])
			}
			if !closed {
				return nil, errf(invalidParameter, "Invalid filter pattern: unterminated quoted phrase")
			}
			term, i = b.String(), j+1
		} else {
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '\t' {
				j++
			}
			term, i = s[i:j], j
		}
		if term == "" {
			continue
		}
		switch kind {
		case '?':
			p.any = append(p.any, []byte(term))
		case '-':
			p.none = append(p.none, []byte(term))
		default:
			p.all = append(p.all, []byte(term))
		}
	}
	return p, nil
}

func (p *pattern) match(msg []byte) bool {
	if p == nil {
		return true
	}
	if p.re != nil {
		return p.re.Match(msg)
	}
	if p.structured != nil {
		return p.structured.match(msg)
	}
	for _, t := range p.all {
		if !bytes.Contains(msg, t) {
			return false
		}
	}
	for _, t := range p.none {
		if bytes.Contains(msg, t) {
			return false
		}
	}
	if len(p.any) == 0 {
		return true
	}
	for _, t := range p.any {
		if bytes.Contains(msg, t) {
			return true
		}
	}
	return false
}
