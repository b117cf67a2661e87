package fntest

import "embed"

// The functions tests and kiln-bench share, each a main package of its own
// under functions/ (so `go vet ./...` checks them), built by BuildGo.
var (
	// EchoGo returns its event.
	EchoGo = source("echo")
	// ReaderGo reads 5% of the file named by the event's "path" in 1 MiB
	// reads spread evenly over it, as a handler loading what it needs of a
	// large image.
	ReaderGo = source("reader")
	// ToolkitGo has a behaviour per event "action", so most tests share
	// one build:
	//
	//	echo (default)  return the event
	//	sleep           sleep "ms" milliseconds, then return the event
	//	error           return an error with message "msg"
	//	panic           panic
	//	exit            os.Exit("code") in the middle of the invoke
	//	big             return a string of "bytes" bytes
	//	env             return the environment variable named "name"
	//	context         return what lambdacontext and the deadline say
	//	print           print "lines" lines of "text" to stdout, return "done"
	//	version         return the VERSION constant (change it to make new code)
	ToolkitGo = source("toolkit")
)

//go:embed functions/*/main.go
var functions embed.FS

func source(name string) string {
	b, err := functions.ReadFile("functions/" + name + "/main.go")
	if err != nil {
		panic(err) // embedded at build time: a missing one is a typo above
	}
	return string(b)
}
