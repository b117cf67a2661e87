package eventfilter

import (
	"errors"
	"strings"
	"testing"
)

const record = `{"messageId":"1","body":"{\"kind\":\"order\",\"total\":42.5,\"tags\":[\"a\",\"vip\"],\"customer\":{\"name\":\"Ada\",\"country\":\"FR\"},\"note\":null}",
 "attributes":{"ApproximateReceiveCount":"1"},"messageAttributes":{"source":{"stringValue":"web","dataType":"String"}},"eventSource":"aws:sqs"}`

func TestMatch(t *testing.T) {
	cases := []struct {
		name, pattern string
		want          bool
	}{
		{"exact string", `{"body":{"kind":["order"]}}`, true},
		{"exact miss", `{"body":{"kind":["refund"]}}`, false},
		{"one of several", `{"body":{"kind":["refund","order"]}}`, true},
		{"number equals numerically", `{"body":{"total":[42.50]}}`, true},
		{"number is not its string", `{"body":{"total":["42.5"]}}`, false},
		{"null", `{"body":{"note":[null]}}`, true},
		{"nested", `{"body":{"customer":{"country":["FR"]}}}`, true},
		{"nested miss", `{"body":{"customer":{"country":["DE"]}}}`, false},
		{"array value: any element", `{"body":{"tags":["vip"]}}`, true},
		{"prefix", `{"body":{"customer":{"name":[{"prefix":"Ad"}]}}}`, true},
		{"prefix miss", `{"body":{"customer":{"name":[{"prefix":"Bo"}]}}}`, false},
		{"suffix", `{"body":{"customer":{"name":[{"suffix":"da"}]}}}`, true},
		{"equals-ignore-case", `{"body":{"kind":[{"equals-ignore-case":"ORDER"}]}}`, true},
		{"anything-but value", `{"body":{"kind":[{"anything-but":"refund"}]}}`, true},
		{"anything-but list hit", `{"body":{"kind":[{"anything-but":["refund","order"]}]}}`, false},
		{"anything-but prefix", `{"body":{"kind":[{"anything-but":{"prefix":"ord"}}]}}`, false},
		{"anything-but on absent field", `{"body":{"missing":[{"anything-but":"x"}]}}`, false},
		{"numeric range in", `{"body":{"total":[{"numeric":[">",10,"<=",42.5]}]}}`, true},
		{"numeric range out", `{"body":{"total":[{"numeric":[">",10,"<",42.5]}]}}`, false},
		{"numeric equals", `{"body":{"total":[{"numeric":["=",42.5]}]}}`, true},
		{"numeric on a string", `{"body":{"kind":[{"numeric":[">",0]}]}}`, false},
		{"exists true", `{"body":{"kind":[{"exists":true}]}}`, true},
		{"exists false on absent", `{"body":{"missing":[{"exists":false}]}}`, true},
		{"exists false on present", `{"body":{"kind":[{"exists":false}]}}`, false},
		{"exists true on an object", `{"body":{"customer":[{"exists":true}]}}`, false},
		{"all fields must match", `{"body":{"kind":["order"],"total":[1]}}`, false},
		{"outside the body", `{"messageAttributes":{"source":{"stringValue":["web"]}}}`, true},
		{"top level field", `{"eventSource":["aws:sqs"]}`, true},
	}
	ev, err := Decode([]byte(record), "body")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse(c.pattern)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := p.Match(ev); got != c.want {
				t.Errorf("Match = %v, want %v", got, c.want)
			}
		})
	}
}

func TestPlainBody(t *testing.T) {
	ev, err := Decode([]byte(`{"body":"hello world"}`), "body")
	if err != nil {
		t.Fatal(err)
	}
	for pattern, want := range map[string]bool{
		`{"body":["hello world"]}`:        true,
		`{"body":[{"prefix":"hello"}]}`:   true,
		`{"body":{"kind":["order"]}}`:     false, // a JSON pattern never matches a plain body
		`{"body":[{"anything-but":"x"}]}`: true,
	} {
		p, err := Parse(pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Match(ev); got != want {
			t.Errorf("%s: Match = %v, want %v", pattern, got, want)
		}
	}
}

func TestFiltersOr(t *testing.T) {
	fs, err := ParseAll([]string{`{"body":{"kind":["refund"]}}`, `{"body":{"kind":["order"]}}`})
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := Decode([]byte(record), "body")
	if !fs.Match(ev) {
		t.Error("second filter should match")
	}
	if !Filters(nil).Match(ev) {
		t.Error("no filters pass everything")
	}
}

func TestParseErrors(t *testing.T) {
	deep := strings.Repeat(`{"a":`, MaxDepth+1) + `["x"]` + strings.Repeat("}", MaxDepth+1)
	for name, pattern := range map[string]string{
		"not JSON":           `{"body":`,
		"not an object":      `["x"]`,
		"trailing text":      `{"a":["x"]} {}`,
		"scalar field":       `{"a":"x"}`,
		"empty matchers":     `{"a":[]}`,
		"empty object":       `{"a":{}}`,
		"unknown operator":   `{"a":[{"regex":"x"}]}`,
		"two operators":      `{"a":[{"prefix":"x","suffix":"y"}]}`,
		"prefix not string":  `{"a":[{"prefix":1}]}`,
		"exists not bool":    `{"a":[{"exists":"yes"}]}`,
		"numeric bad op":     `{"a":[{"numeric":["!=",1]}]}`,
		"numeric odd length": `{"a":[{"numeric":[">",1,"<"]}]}`,
		"numeric reversed":   `{"a":[{"numeric":["<",1,">",0]}]}`,
		"numeric not number": `{"a":[{"numeric":[">","1"]}]}`,
		"too deep":           deep,
		"too long":           `{"a":["` + strings.Repeat("x", MaxLength) + `"]}`,
	} {
		if _, err := Parse(pattern); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	ok := strings.Repeat(`{"a":`, MaxDepth) + `["x"]` + strings.Repeat("}", MaxDepth)
	if _, err := Parse(ok); err != nil {
		t.Errorf("%d levels: %v", MaxDepth, err)
	}
}
