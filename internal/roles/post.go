package roles

import (
	"net/http"
	"slices"
	"strings"

	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/logs"
	"github.com/kiln-dev/kiln/internal/queues"
	"github.com/kiln-dev/kiln/internal/streams"
	"github.com/kiln-dev/kiln/internal/sts"
)

// The services that share POST / with Lambda's REST API, by the service
// their requests are signed for. Lambda's own requests never POST to /.
const logsService = "logs"

var lambdaService = []string{"lambda"}

// postTargets tells them apart by X-Amz-Target: CloudWatch Logs and Kinesis
// (JSON 1.1), SQS and STS (JSON 1.0).
var postTargets = [...]struct {
	prefix  string
	service []string
}{
	{logs.TargetPrefix, []string{logsService}},
	{queues.TargetPrefix, []string{queues.SigningService}},
	{streams.TargetPrefix, []string{streams.SigningService}},
	{sts.TargetPrefix, []string{sts.SigningService}},
}

// queryServices are those with a query protocol form, which has no target:
// only the service its signature is scoped to tells them apart.
var queryServices = []string{queues.SigningService, sts.SigningService}

// postServices is what a POST / with X-Amz-Target target may be for: the
// one service its target names, both query protocol services when it has
// none, nil for a target no service has (callers must not modify it). The
// keyring checks a signature's scope against it; Services routes by it.
func postServices(target string) []string {
	if target == "" {
		return queryServices
	}
	for i := range postTargets {
		if strings.HasPrefix(target, postTargets[i].prefix) {
			return postTargets[i].service
		}
	}
	return nil
}

// postService is the service that serves a POST / with target, signed for
// signedFor (a query form goes to the service it is signed for); "" if none.
func postService(target, signedFor string) string {
	s := postServices(target)
	if len(s) == 1 {
		return s[0]
	}
	if slices.Contains(s, signedFor) {
		return signedFor
	}
	return ""
}

// Services serves POST / (see postServices) with the Logs, SQS and Kinesis
// handlers given and STS's own; anything else is UnknownOperationException.
func Services(logStore, sqs, kinesis http.Handler) http.Handler {
	handlers := map[string]http.Handler{
		logsService:            logStore,
		queues.SigningService:  sqs,
		streams.SigningService: kinesis,
		sts.SigningService:     sts.Handler(),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.Header.Get("X-Amz-Target")
		caller, _ := auth.FromContext(r.Context())
		if h := handlers[postService(target, caller.Service)]; h != nil {
			h.ServeHTTP(w, r)
			return
		}
		logs.UnknownOperation(w, target)
	})
}
