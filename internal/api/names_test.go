package api

import "testing"

func TestParseFunctionRef(t *testing.T) {
	tests := []struct {
		in   string
		want FunctionRef
		bad  bool
	}{
		{in: "f", want: FunctionRef{Name: "f"}},
		{in: "my-func_1", want: FunctionRef{Name: "my-func_1"}},
		{in: "f:prod", want: FunctionRef{Name: "f", Qualifier: "prod"}},
		{in: "f:$LATEST", want: FunctionRef{Name: "f", Qualifier: "$LATEST"}},
		{in: "f:12", want: FunctionRef{Name: "f", Qualifier: "12"}},
		{in: "123456789012:function:f", want: FunctionRef{Account: "123456789012", Name: "f"}},
		{in: "123456789012:function:f:3", want: FunctionRef{Account: "123456789012", Name: "f", Qualifier: "3"}},
		{in: "arn:aws:lambda:us-east-1:123456789012:function:f", want: FunctionRef{Region: "us-east-1", Account: "123456789012", Name: "f"}},
		{in: "arn:aws:lambda:eu-west-1:123456789012:function:f:live", want: FunctionRef{Region: "eu-west-1", Account: "123456789012", Name: "f", Qualifier: "live"}},
		{in: "", bad: true},
		{in: "f:", bad: true},
		{in: "a/b", bad: true},
		{in: "f:a:b", bad: true},
		{in: "12345:function:f", bad: true},
		{in: "arn:aws:lambda:us-east-1:123456789012:function:f:1:2", bad: true},
		{in: "../etc", bad: true},
		{in: "arn:aws:lambda:/:123456789012:function:f", bad: true}, // a region that is no token (found by FuzzParseFunctionRef)
		{in: string(make([]byte, 65)), bad: true},
	}
	for _, tt := range tests {
		got, err := ParseFunctionRef(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("%q: parsed as %+v, want an error", tt.in, got)
			} else if e, ok := err.(*Error); !ok || e.Type != InvalidParameterValue {
				t.Errorf("%q: error %v, want InvalidParameterValueException", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: got %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestWithQualifier(t *testing.T) {
	r := FunctionRef{Name: "f", Qualifier: "prod"}
	if _, err := r.WithQualifier("prod"); err != nil {
		t.Errorf("same qualifier twice: %v", err)
	}
	if _, err := r.WithQualifier("dev"); err == nil {
		t.Error("conflicting qualifiers accepted")
	}
	if got, _ := (FunctionRef{Name: "f"}).WithQualifier("3"); got.Qualifier != "3" {
		t.Errorf("got %+v", got)
	}
}
