#!/usr/bin/env bash
# End-to-end checks of a running `kiln up` with Debian's AWS CLI.
#
#   cli.sh main            create, read, invoke, update, version, alias, delete
#                          functions, and every error case
#   cli.sh after-restart   after kiln up restarted on the same data: what main
#                          created is still there and the alias still invokes
#   cli.sh images          container-image functions from REGISTRY: create,
#                          invoke, update to a new tag, roll back through an
#                          alias, deduplicated chunks (CHUNKS, BASE_BYTES); and
#                          from kiln up's own registry (KILN_REGISTRY) and
#                          from toolkit.tar in its image archives
#
# Environment (set by e2e_test.go):
#   ENDPOINT                      http://127.0.0.1:PORT of kiln up
#   AWS_SHARED_CREDENTIALS_FILE   DATA/credentials written by kiln up
#   AWS_CONFIG_FILE               DATA/config written by kiln up
#   KILN_ACCESS_KEY_ID            the access key id kiln up was started with
#   GO_ZIP GO_V2_ZIP PY_ZIP NODE_ESM_ZIP NODE_CJS_ZIP EVIL_ZIP   deployment packages
#   NODE_RUNTIME                  nodejsN.x of /usr/bin/node, empty without node
#   AWS PYTHON                    /usr/bin/aws, /usr/bin/python3
#
# Prints one line per check; exits non-zero at the first failure.
set -euo pipefail

AWS=${AWS:-/usr/bin/aws}
PY=${PYTHON:-/usr/bin/python3}
: "${ENDPOINT:?}" "${AWS_SHARED_CREDENTIALS_FILE:?}" "${AWS_CONFIG_FILE:?}"
# One attempt per call: a retried throttle or 5xx would hide what Kiln said.
export AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=1 AWS_PAGER=""
ROLE=arn:aws:iam::123456789012:role/kiln-e2e
PHASE=${1:-main}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
OUT=$WORK/stdout
ERR=$WORK/stderr
RESP=$WORK/response.json
CHECKS=0

ok() {
	CHECKS=$((CHECKS + 1))
	echo "ok   $*"
}

fail() {
	echo "FAIL $*" >&2
	exit 1
}

CALLS=0
TIMES=$WORK/times # seconds, then the call, per line

lam() {
	local start=$EPOCHREALTIME rc=0
	"$AWS" lambda "$@" --endpoint-url "$ENDPOINT" || rc=$?
	CALLS=$((CALLS + 1))
	local what="$1 ${2:-} ${3:-}"
	echo "$start $EPOCHREALTIME" | awk -v what="${what:0:60}" '{printf "%.2f %s\n", $2 - $1, what}' >>"$TIMES"
	return $rc
}

# timing_summary: how long the aws calls took, the slowest first.
timing_summary() {
	[ -s "$TIMES" ] || return 0
	awk '{t += $1} END {printf "%d aws calls took %.1fs; slowest: ", NR, t}' "$TIMES"
	sort -rn "$TIMES" | head -3 | awk '{t = $1; $1 = ""; printf "%s%s %ss;", (NR > 1 ? " " : ""), substr($0, 2), t}'
	echo
}

# call WHAT ARGS...: aws lambda ARGS must succeed; its output is in $OUT.
call() {
	local what=$1
	shift
	if ! lam "$@" >"$OUT" 2>"$ERR"; then
		fail "$what: aws lambda $* exited non-zero
--- stdout:
$(cat "$OUT")
--- stderr:
$(cat "$ERR")"
	fi
}

# expect_error CODE WHAT ARGS...: aws lambda ARGS must fail with error CODE.
expect_error() {
	local code=$1 what=$2
	shift 2
	local rc=0
	lam "$@" >"$OUT" 2>"$ERR" || rc=$?
	if [ "$rc" -eq 0 ]; then
		fail "$what: aws lambda $* succeeded, want $code
--- stdout:
$(cat "$OUT")"
	fi
	if ! grep -q "($code)" "$ERR"; then
		fail "$what: aws lambda $* exited $rc without ($code) on stderr:
$(cat "$ERR")"
	fi
	ok "$what: exit $rc, $code"
}

# check WHAT FILE EXPR: the Python expression EXPR is true of d, the JSON
# document in FILE.
check() {
	local what=$1 file=$2 expr=$3
	if ! "$PY" - "$file" "$expr" <<'EOF'; then
import json, sys
with open(sys.argv[1], "rb") as f:
    raw = f.read()
try:
    d = json.loads(raw)
except ValueError as e:
    print("    not JSON (%s): %r" % (e, raw[:500]))
    sys.exit(1)
if not eval(sys.argv[2], {"d": d, "json": json}):
    print("    false: %s\n    of: %s" % (sys.argv[2], json.dumps(d, indent=1, sort_keys=True)[:3000]))
    sys.exit(1)
EOF
		fail "$what"
	fi
	ok "$what"
}

# get FILE EXPR: print the Python expression EXPR of d, the JSON in FILE.
get() {
	"$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# invoke WHAT FUNCTION PAYLOAD [ARGS...]: invoke; metadata in $OUT, the
# function's response in $RESP.
invoke() {
	local what=$1 fn=$2 payload=$3
	shift 3
	rm -f "$RESP"
	call "$what" invoke --function-name "$fn" --cli-binary-format raw-in-base64-out --payload "$payload" "$@" "$RESP"
}

create() {
	local name=$1 runtime=$2 handler=$3 zip=$4
	shift 4
	call "create-function $name" create-function --function-name "$name" --runtime "$runtime" --handler "$handler" \
		--role "$ROLE" --zip-file "fileb://$zip" "$@"
	check "create-function $name ($runtime): FunctionName, Runtime, Handler, ARN; Pending while its zip is unpacked" "$OUT" \
		"d['FunctionName'] == '$name' and d['Runtime'] == '$runtime' and d['Handler'] == '$handler' and d['FunctionArn'].startswith('arn:aws:lambda:') and d['FunctionArn'].endswith(':function:$name') and d['Version'] == '\$LATEST' and d['State'] == 'Pending' and d['LastUpdateStatus'] == 'InProgress'"
	# Lambda refuses invokes while a function is Pending: wait, as clients must.
	call "wait function-active-v2 $name" wait function-active-v2 --function-name "$name"
}

# sha256b64 FILE: base64 of the SHA-256 of FILE, as Lambda's CodeSha256.
sha256b64() {
	"$PY" -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha256(open(sys.argv[1], "rb").read()).digest()).decode())' "$1"
}

main() {
	: "${GO_ZIP:?}" "${GO_V2_ZIP:?}" "${PY_ZIP:?}" "${NODE_ESM_ZIP:?}" "${EVIL_ZIP:?}"
	"$AWS" --version

	# ---------------------------------------------------------------- create
	create cli-go provided.al2023 bootstrap "$GO_ZIP"
	ok "wait function-active-v2 cli-go"
	create cli-py python3.11 app.handler "$PY_ZIP" --environment 'Variables={GREETING=hello from cli}'
	if [ -n "${NODE_RUNTIME:-}" ]; then
		create cli-node "$NODE_RUNTIME" index.handler "$NODE_ESM_ZIP"
	else
		echo "skip no /usr/bin/node: Node.js checks"
	fi

	# ------------------------------------------------------------------ read
	call "get-function cli-go" get-function --function-name cli-go
	check "get-function: Configuration and Code.Location" "$OUT" \
		"d['Configuration']['FunctionName'] == 'cli-go' and d['Configuration']['State'] == 'Active' and d['Code']['Location'].startswith('http')"
	want_sha=$(sha256b64 "$GO_ZIP")
	want_size=$(stat -c %s "$GO_ZIP")
	check "get-function: CodeSha256 is the SHA-256 of the uploaded zip, CodeSize its size" "$OUT" \
		"d['Configuration']['CodeSha256'] == '$want_sha' and d['Configuration']['CodeSize'] == $want_size"
	location=$(get "$OUT" "d['Code']['Location']")
	"$PY" - "$location" "$WORK/code.zip" <<'EOF' || fail "download Code.Location $location"
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
EOF
	got_sha=$(sha256b64 "$WORK/code.zip")
	[ "$got_sha" = "$want_sha" ] || fail "Code.Location download: sha256 $got_sha, CodeSha256 is $want_sha"
	ok "Code.Location download (unsigned GET) has CodeSha256 $got_sha"

	call "get-function-configuration cli-go" get-function-configuration --function-name cli-go
	check "get-function-configuration: defaults (128 MB, 3 s), Runtime, Handler, State, RevisionId" "$OUT" \
		"d['MemorySize'] == 128 and d['Timeout'] == 3 and d['Runtime'] == 'provided.al2023' and d['Handler'] == 'bootstrap' and d['State'] == 'Active' and d['LastUpdateStatus'] == 'Successful' and d['RevisionId']"
	call "list-functions --page-size 1" list-functions --page-size 1
	check "list-functions --page-size 1 (the CLI follows NextMarker): the same functions, once each" "$OUT" \
		"{'cli-go', 'cli-py'} <= {f['FunctionName'] for f in d['Functions']} and len(d['Functions']) == len({f['FunctionName'] for f in d['Functions']})"

	# ---------------------------------------------------------------- invoke
	invoke "invoke cli-go" cli-go '{"hello":"world","n":[1,2,3]}'
	check "invoke cli-go: StatusCode 200, ExecutedVersion \$LATEST, no FunctionError" "$OUT" \
		"d['StatusCode'] == 200 and d['ExecutedVersion'] == '\$LATEST' and 'FunctionError' not in d"
	check "invoke cli-go: the echo of the payload" "$RESP" "d == {'hello': 'world', 'n': [1, 2, 3]}"

	invoke "invoke cli-py" cli-py '{"from":"cli"}'
	check "invoke cli-py (python3.11): event, context, environment" "$RESP" \
		"d['event'] == {'from': 'cli'} and d['functionName'] == 'cli-py' and d['functionVersion'] == '\$LATEST' and d['greeting'] == 'hello from cli' and d['python'] == '3.11' and d['memoryLimitInMB'] == '128'"
	if [ -n "${NODE_RUNTIME:-}" ]; then
		invoke "invoke cli-node" cli-node '{"from":"cli"}'
		check "invoke cli-node ($NODE_RUNTIME, index.mjs async handler)" "$RESP" \
			"d['event'] == {'from': 'cli'} and d['runtime'] == 'node-esm' and d['functionName'] == 'cli-node'"
	fi

	invoke "invoke --log-type Tail" cli-go '{"action":"print","lines":2,"text":"hello from the cli test"}' --log-type Tail
	check "invoke --log-type Tail: LogResult present" "$OUT" "d['StatusCode'] == 200 and d.get('LogResult')"
	get "$OUT" "d['LogResult']" | base64 -d >"$WORK/tail.log" || fail "LogResult is not base64"
	for want in "START RequestId: " "END RequestId: " "REPORT RequestId: " "hello from the cli test"; do
		grep -q "$want" "$WORK/tail.log" || fail "log tail lacks '$want':
$(cat "$WORK/tail.log")"
	done
	ok "log tail has START, END, REPORT and the function's output"

	invoke "invoke --invocation-type DryRun" cli-go '{}' --invocation-type DryRun
	check "invoke DryRun: StatusCode 204" "$OUT" "d['StatusCode'] == 204"

	create cli-pyfail python3.11 app.fail "$PY_ZIP"
	invoke "invoke a failing handler" cli-pyfail '{"why":"cli"}'
	check "invoke of a raising Python handler: exit 0, FunctionError Unhandled" "$OUT" \
		"d['StatusCode'] == 200 and d['FunctionError'] == 'Unhandled'"
	check "the error document: errorType, errorMessage, stackTrace" "$RESP" \
		"d['errorType'] == 'ValueError' and d['errorMessage'] == 'bad input: cli' and isinstance(d['stackTrace'], list)"

	# ---------------------------------------------------------------- update
	call "update-function-code cli-go" update-function-code --function-name cli-go --zip-file "fileb://$GO_V2_ZIP"
	check "update-function-code: new CodeSha256, InProgress" "$OUT" "d['CodeSha256'] == '$(sha256b64 "$GO_V2_ZIP")' and d['LastUpdateStatus'] == 'InProgress'"
	call "wait function-updated-v2" wait function-updated-v2 --function-name cli-go
	invoke "invoke updated code" cli-go '{"action":"version"}'
	check "invoke after update-function-code runs the new code" "$RESP" "d == 'v2'"

	call "update-function-configuration" update-function-configuration --function-name cli-go \
		--environment 'Variables={GREETING=hi,OTHER=x}' --memory-size 256 --timeout 10 --description "updated by cli"
	check "update-function-configuration: answer has the new settings" "$OUT" \
		"d['MemorySize'] == 256 and d['Timeout'] == 10 and d['Environment']['Variables'] == {'GREETING': 'hi', 'OTHER': 'x'} and d['Description'] == 'updated by cli'"
	call "wait function-updated-v2" wait function-updated-v2 --function-name cli-go
	call "get-function-configuration" get-function-configuration --function-name cli-go
	check "get-function-configuration reads them back" "$OUT" \
		"d['MemorySize'] == 256 and d['Timeout'] == 10 and d['Environment']['Variables']['GREETING'] == 'hi'"
	invoke "invoke sees the environment" cli-go '{"action":"env","name":"GREETING"}'
	check "invoke after update-function-configuration: GREETING=hi" "$RESP" "d == 'hi'"
	invoke "invoke sees the memory size" cli-go '{"action":"context"}'
	check "invoke after update-function-configuration: memory 256" "$RESP" "d['memory'] == 256"

	# -------------------------------------------------------------- versions
	call "publish-version 1" publish-version --function-name cli-go --description first
	check "publish-version: Version 1, qualified ARN" "$OUT" "d['Version'] == '1' and d['FunctionArn'].endswith(':function:cli-go:1')"
	sha_v2=$(sha256b64 "$GO_V2_ZIP")
	call "update-function-code back to v1" update-function-code --function-name cli-go --zip-file "fileb://$GO_ZIP"
	call "wait function-updated-v2" wait function-updated-v2 --function-name cli-go
	expect_error InvalidParameterValueException "publish-version with a stale --code-sha256" \
		publish-version --function-name cli-go --code-sha256 "$sha_v2"
	call "publish-version 2" publish-version --function-name cli-go --code-sha256 "$(sha256b64 "$GO_ZIP")"
	check "publish-version with the right --code-sha256: Version 2" "$OUT" "d['Version'] == '2'"
	call "list-versions-by-function" list-versions-by-function --function-name cli-go
	check "list-versions-by-function: \$LATEST, 1, 2" "$OUT" "[v['Version'] for v in d['Versions']] == ['\$LATEST', '1', '2']"
	call "get-function --qualifier 1" get-function --function-name cli-go --qualifier 1
	check "get-function --qualifier 1: version 1's configuration and code" "$OUT" \
		"d['Configuration']['Version'] == '1' and d['Configuration']['CodeSha256'] == '$sha_v2' and d['Configuration']['MemorySize'] == 256"
	invoke "invoke version 1" cli-go '{"action":"version"}' --qualifier 1
	check "invoke --qualifier 1: ExecutedVersion 1" "$OUT" "d['ExecutedVersion'] == '1'"
	check "invoke --qualifier 1: version 1's code" "$RESP" "d == 'v2'"
	invoke "invoke cli-go:2" cli-go:2 '{"action":"version"}'
	check "invoke cli-go:2: ExecutedVersion 2" "$OUT" "d['ExecutedVersion'] == '2'"
	check "invoke cli-go:2: version 2's code" "$RESP" "d == 'v1'"

	# --------------------------------------------------------------- aliases
	call "create-alias live" create-alias --function-name cli-go --name live --function-version 1 \
		--routing-config '{"AdditionalVersionWeights":{"2":0.5}}'
	check "create-alias --routing-config: version 1 plus 50% to 2" "$OUT" \
		"d['Name'] == 'live' and d['FunctionVersion'] == '1' and d['RoutingConfig']['AdditionalVersionWeights'] == {'2': 0.5} and d['AliasArn'].endswith(':function:cli-go:live')"
	invoke "invoke the weighted alias" cli-go:live '{"action":"version"}'
	check "invoke cli-go:live runs version 1 or 2" "$OUT" "d['ExecutedVersion'] in ('1', '2')"
	call "create-alias beta" create-alias --function-name cli-go --name beta --function-version '$LATEST'
	call "update-alias live" update-alias --function-name cli-go --name live --function-version 2 \
		--routing-config '{"AdditionalVersionWeights":{}}'
	check "update-alias: version 2, routing cleared" "$OUT" \
		"d['FunctionVersion'] == '2' and not (d.get('RoutingConfig') or {}).get('AdditionalVersionWeights')"
	invoke "invoke the updated alias" cli-go:live '{"action":"version"}'
	check "invoke cli-go:live after update-alias: ExecutedVersion 2" "$OUT" "d['ExecutedVersion'] == '2'"
	call "list-aliases" list-aliases --function-name cli-go
	check "list-aliases: beta and live" "$OUT" "sorted(a['Name'] for a in d['Aliases']) == ['beta', 'live']"

	# ----------------------------------------------------------- concurrency
	call "put-function-concurrency" put-function-concurrency --function-name cli-py --reserved-concurrent-executions 5
	check "put-function-concurrency: 5" "$OUT" "d['ReservedConcurrentExecutions'] == 5"
	call "get-function-concurrency" get-function-concurrency --function-name cli-py
	check "get-function-concurrency: 5" "$OUT" "d['ReservedConcurrentExecutions'] == 5"
	call "get-function shows concurrency" get-function --function-name cli-py
	check "get-function: Concurrency.ReservedConcurrentExecutions 5" "$OUT" "d['Concurrency']['ReservedConcurrentExecutions'] == 5"
	call "delete-function-concurrency" delete-function-concurrency --function-name cli-py
	ok "delete-function-concurrency"
	call "get-function-concurrency" get-function-concurrency --function-name cli-py
	if [ -s "$OUT" ]; then
		check "get-function-concurrency after delete: none" "$OUT" "'ReservedConcurrentExecutions' not in d"
	else
		ok "get-function-concurrency after delete: none"
	fi
	invoke "invoke after delete-function-concurrency" cli-py '{"again":true}'
	check "invoke cli-py after concurrency changes" "$RESP" "d['event'] == {'again': True}"

	# ---------------------------------------------------------------- errors
	expect_error ResourceNotFoundException "invoke of a missing function" \
		invoke --function-name no-such-function "$WORK/none.json"
	expect_error ResourceNotFoundException "invoke of a missing version" \
		invoke --function-name cli-go --qualifier 99 "$WORK/none.json"
	expect_error ResourceConflictException "duplicate create-function" \
		create-function --function-name cli-py --runtime python3.11 --handler app.handler --role "$ROLE" --zip-file "fileb://$PY_ZIP"
	expect_error ResourceConflictException "duplicate create-alias" \
		create-alias --function-name cli-go --name live --function-version 1
	# Constraints of the model are Lambda's ValidationException.
	expect_error ValidationException "create-alias --name 2024" \
		create-alias --function-name cli-go --name 2024 --function-version 1
	expect_error ValidationException "list-functions --function-version ALLX" list-functions --function-version ALLX
	# The CLI validates MemorySize >= 128 itself; with that off, Kiln must.
	cp "$AWS_CONFIG_FILE" "$WORK/config-novalidate"
	printf '\nparameter_validation = false\n' >>"$WORK/config-novalidate"
	AWS_CONFIG_FILE=$WORK/config-novalidate expect_error ValidationException "create-function --memory-size 64" \
		create-function --function-name cli-small --runtime python3.11 --handler app.handler --role "$ROLE" --zip-file "fileb://$PY_ZIP" --memory-size 64
	expect_error InvalidParameterValueException "create-function with a zip entry ../evil" \
		create-function --function-name cli-evil --runtime provided.al2023 --handler bootstrap --role "$ROLE" --zip-file "fileb://$EVIL_ZIP"
	expect_error ResourceNotFoundException "the hostile zip left no function" get-function --function-name cli-evil
	expect_error InvalidParameterValueException "update-function-code with a zip entry ../evil" \
		update-function-code --function-name cli-go --zip-file "fileb://$EVIL_ZIP"

	call "get-function-configuration (revision)" get-function-configuration --function-name cli-py
	stale=$(get "$OUT" "d['RevisionId']")
	call "update-function-configuration (new revision)" update-function-configuration --function-name cli-py --description "bump" --revision-id "$stale"
	check "update-function-configuration --revision-id (current): new RevisionId" "$OUT" "d['RevisionId'] != '$stale'"
	call "wait function-updated-v2" wait function-updated-v2 --function-name cli-py
	expect_error PreconditionFailedException "update-function-code with a stale --revision-id" \
		update-function-code --function-name cli-py --zip-file "fileb://$PY_ZIP" --revision-id "$stale"
	expect_error PreconditionFailedException "update-function-configuration with a stale --revision-id" \
		update-function-configuration --function-name cli-py --timeout 5 --revision-id "$stale"

	AWS_ACCESS_KEY_ID=${KILN_ACCESS_KEY_ID:?} AWS_SECRET_ACCESS_KEY=wrong-secret-key expect_error InvalidSignatureException \
		"list-functions with a wrong secret key" list-functions
	AWS_ACCESS_KEY_ID=AKIAUNKNOWNKEY000000 AWS_SECRET_ACCESS_KEY=whatever expect_error UnrecognizedClientException \
		"list-functions with an unknown access key" list-functions

	# ---------------------------------------------------------------- delete
	call "delete-function --qualifier 1" delete-function --function-name cli-go --qualifier 1
	ok "delete-function --qualifier 1"
	call "list-versions-by-function" list-versions-by-function --function-name cli-go
	check "version 1 is gone, \$LATEST and 2 stay" "$OUT" "[v['Version'] for v in d['Versions']] == ['\$LATEST', '2']"
	expect_error ResourceNotFoundException "invoke of the deleted version" \
		invoke --function-name cli-go --qualifier 1 "$WORK/none.json"
	invoke "invoke after deleting version 1" cli-go '{"still":"here"}'
	check "cli-go \$LATEST still answers" "$RESP" "d == {'still': 'here'}"
	if [ -n "${NODE_RUNTIME:-}" ]; then
		call "delete-function cli-node" delete-function --function-name cli-node
		ok "delete-function cli-node"
		expect_error ResourceNotFoundException "get-function of the deleted function" get-function --function-name cli-node
		expect_error ResourceNotFoundException "invoke of the deleted function" invoke --function-name cli-node "$WORK/none.json"
		call "list-functions" list-functions
		check "list-functions no longer has cli-node" "$OUT" "'cli-node' not in [f['FunctionName'] for f in d['Functions']]"
	fi
}

after_restart() {
	invoke "invoke cli-go:live after restart" cli-go:live '{"action":"version"}'
	check "alias created before the restart: ExecutedVersion 2, no FunctionError" "$OUT" \
		"d['StatusCode'] == 200 and d['ExecutedVersion'] == '2' and 'FunctionError' not in d"
	check "alias created before the restart runs version 2's code" "$RESP" "d == 'v1'"
	invoke "invoke cli-py after restart" cli-py '{"after":"restart"}'
	check "cli-py after restart: environment kept" "$RESP" "d['event'] == {'after': 'restart'} and d['greeting'] == 'hello from cli'"
	call "get-function-configuration cli-go after restart" get-function-configuration --function-name cli-go
	check "cli-go's configuration survived the restart" "$OUT" \
		"d['MemorySize'] == 256 and d['Timeout'] == 10 and d['Environment']['Variables']['GREETING'] == 'hi'"
	call "list-versions-by-function after restart" list-versions-by-function --function-name cli-go
	check "versions survived the restart" "$OUT" "[v['Version'] for v in d['Versions']] == ['\$LATEST', '2']"
	call "list-functions after restart" list-functions
	check "list-functions after restart: cli-go and cli-py, not cli-node" "$OUT" \
		"{'cli-go', 'cli-py'} <= {f['FunctionName'] for f in d['Functions']} and 'cli-node' not in {f['FunctionName'] for f in d['Functions']}"
}

# images: functions whose code is a container image in $REGISTRY
# (toolkit:v1 and toolkit:v2 share a base layer of BASE_BYTES random bytes;
# arm:v1 is for arm64). A 30 s timeout for each: an image's first invoke reads its
# files through FUSE from the chunk store, slow on a loaded 2-core machine.
images() {
	local uri=$REGISTRY/toolkit
	store_bytes() { if [ -n "$CHUNKS" ]; then du -sb "$CHUNKS" | cut -f1; else echo 0; fi; }
	call "create-function --package-type Image" create-function --function-name img --package-type Image \
		--code "ImageUri=$uri:v1" --role "$ROLE" --timeout 30 --publish
	check "create-function image: PackageType Image, version 1, no Runtime, Pending while it is imported" "$OUT" \
		"d['PackageType'] == 'Image' and d['Version'] == '1' and 'Runtime' not in d and len(d['CodeSha256']) == 64 and d['State'] == 'Pending' and d['StateReasonCode'] == 'Creating'"
	call "wait function-active-v2 img" wait function-active-v2 --function-name img
	ok "the function-active-v2 waiter saw img Active"
	local after_v1
	after_v1=$(store_bytes)
	call "get-function img" get-function --function-name img
	check "get-function: Code.ImageUri, ResolvedImageUri by digest, RepositoryType ECR" "$OUT" \
		"d['Code']['ImageUri'] == '$uri:v1' and d['Code']['ResolvedImageUri'] == '$uri@sha256:' + d['Configuration']['CodeSha256'] and d['Code']['RepositoryType'] == 'ECR'"
	invoke "invoke img" img '{"action":"version"}'
	check "invoke img runs the image's aws-lambda-go bootstrap (v1)" "$RESP" "d == 'v1'"
	invoke "invoke img: env" img '{"action":"env","name":"FROM_IMAGE"}'
	check "the image's ENV reaches the function" "$RESP" "d == 'yes'"
	call "create-alias live" create-alias --function-name img --name live --function-version 1
	ok "create-alias live -> 1"

	call "update-function-code --image-uri v2" update-function-code --function-name img --image-uri "$uri:v2" --publish
	check "update-function-code: version 2, Pending while it is imported" "$OUT" "d['Version'] == '2' and d['PackageType'] == 'Image' and d['State'] == 'Pending'"
	call "wait function-updated-v2 img" wait function-updated-v2 --function-name img
	call "get-function img:2" get-function --function-name img --qualifier 2
	check "after the update: version 2 Active" "$OUT" "d['Configuration']['State'] == 'Active'"
	local after_v2
	after_v2=$(store_bytes)
	if [ -n "$CHUNKS" ]; then # else the caller measures the store
		[ $((after_v2 - after_v1)) -lt "$BASE_BYTES" ] || fail "the store grew by $((after_v2 - after_v1)) bytes for v2, base is $BASE_BYTES"
		ok "v2 stored $((after_v2 - after_v1)) new bytes; its $BASE_BYTES-byte base was stored once"
	fi
	invoke "invoke img \$LATEST" img '{"action":"version"}'
	check "\$LATEST runs v2" "$RESP" "d == 'v2'"
	call "update-alias live -> 2" update-alias --function-name img --name live --function-version 2
	invoke "invoke img:live" img:live '{"action":"version"}'
	check "live runs v2" "$RESP" "d == 'v2'"
	call "roll back: update-alias live -> 1" update-alias --function-name img --name live --function-version 1
	invoke "invoke img:live after the rollback" img:live '{"action":"version"}'
	check "live runs v1 again, ExecutedVersion 1" "$OUT" "d['ExecutedVersion'] == '1'"
	check "the rolled-back alias runs v1's image" "$RESP" "d == 'v1'"

	call "create-function from Kiln's own registry" create-function --function-name img-kiln --package-type Image \
		--code "ImageUri=$KILN_REGISTRY/toolkit:v1" --role "$ROLE" --timeout 30
	call "wait function-active-v2 img-kiln" wait function-active-v2 --function-name img-kiln
	invoke "invoke img-kiln" img-kiln '{"action":"version"}'
	check "the image pushed to Kiln's own registry runs (v1)" "$RESP" "d == 'v1'"
	expect_error InvalidParameterValueException "create-function with a tag Kiln's registry does not have" create-function \
		--function-name bad --package-type Image --code "ImageUri=$KILN_REGISTRY/toolkit:v9" --role "$ROLE"

	if [ -n "$ARCHIVES" ]; then
		call "create-function from a docker save tarball" create-function --function-name img-archive --package-type Image \
			--code "ImageUri=docker-archive:toolkit.tar:toolkit:v1" --role "$ROLE" --timeout 30
		check "the archive's function is an image function" "$OUT" "d['PackageType'] == 'Image'"
		call "wait function-active-v2 img-archive" wait function-active-v2 --function-name img-archive
		invoke "invoke img-archive" img-archive '{"action":"version"}'
		check "the image from the tarball runs (v1)" "$RESP" "d == 'v1'"
	fi
	expect_error InvalidParameterValueException "create-function with an archive outside the archives directory" create-function \
		--function-name bad --package-type Image --code "ImageUri=docker-archive:../identity.json" --role "$ROLE"

	expect_error InvalidParameterValueException "create-function with a malformed image URI" create-function \
		--function-name bad --package-type Image --code "ImageUri=not a uri" --role "$ROLE"
	expect_error InvalidParameterValueException "create-function with an image that does not exist" create-function \
		--function-name bad --package-type Image --code "ImageUri=$REGISTRY/none:v9" --role "$ROLE"
	expect_error InvalidParameterValueException "create-function with an arm64 image for x86_64" create-function \
		--function-name bad --package-type Image --code "ImageUri=$REGISTRY/arm:v1" --role "$ROLE"
	"$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1], "w").writestr("bootstrap", "#!/bin/sh\n")' "$WORK/small.zip"
	expect_error InvalidParameterValueException "update-function-code with a zip for an image function" \
		update-function-code --function-name img --zip-file "fileb://$WORK/small.zip"
}

case $PHASE in
main) main ;;
after-restart) after_restart ;;
images) images ;;
*) fail "unknown phase $PHASE" ;;
esac
timing_summary
echo "$CHECKS checks passed ($PHASE)"
