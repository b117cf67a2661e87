package frontend

import "testing"

func TestURLHostID(t *testing.T) {
	const id = "abcdefghijklmnopqrstuvwxyz012345"
	for host, want := range map[string]string{
		id + ".lambda-url.us-east-1.on.localhost:9000":                          id,
		id + ".lambda-url.us-east-1.on.127.0.0.1:9000":                          id,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345.lambda-url.us-east-1.on.kiln.example": id, // host names are case-insensitive
		id + ".lambda-url.eu-west-1.on.localhost":                               "", // another region
		"short.lambda-url.us-east-1.on.localhost":                               "",
		id + "x.lambda-url.us-east-1.on.localhost":                              "",
		"abcdefghijklmnopqrstuvwxyz01234_.lambda-url.us-east-1.on.localhost":    "",
		"localhost:9000":                                 "",
		"127.0.0.1:9000":                                 "",
		id + ".lambda-url.us-east-1.on":                  "", // no host after "on"
		"x." + id + ".lambda-url.us-east-1.on.localhost": "",
	} {
		if got := URLHostID(host, "us-east-1"); got != want {
			t.Errorf("URLHostID(%q) = %q, want %q", host, got, want)
		}
	}
}
