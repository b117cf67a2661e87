package sandboxtest_test

// The functions the suites build at test time (fntest.BuildGo resolves
// their imports from Kiln's go.mod) use aws-lambda-go; this import keeps
// the requirement in go.mod through `go mod tidy`.
import _ "github.com/aws/aws-lambda-go/lambda"
