#!/usr/bin/env bash
# End-to-end checks of stream event source mappings with Debian's AWS CLI:
# Kiln streams (aws kinesis), the function, the failure queue, the
# mappings streams_test.py drives, and the stream mapping fields' errors.
#
#   streams.sh streams   the four streams, ACTIVE
#   streams.sh setup     the function, the failure queue, the mappings and
#                        the stream mapping fields' errors
#
# Environment (set by streams_test.go): ENDPOINT, AWS_SHARED_CREDENTIALS_FILE,
# AWS_CONFIG_FILE, ACCOUNT, FN_ZIP (the Python function), SINK.
set -euo pipefail

. "$(dirname "$0")/awscli.sh"
: "${ENDPOINT:?}" "${ACCOUNT:?}" "${FN_ZIP:?}" "${SINK:?}"
STREAM=arn:aws:kinesis:us-east-1:$ACCOUNT:stream
DLQ=arn:aws:sqs:us-east-1:$ACCOUNT:stream-failures

streams() {
	for s in order:2 poison:1 crash:2 aged:1; do
		run "create stream ${s%%:*}" kinesis create-stream --stream-name "${s%%:*}" --shard-count "${s##*:}"
	done
	for s in order poison crash aged; do
		for _ in $(seq 50); do
			run "describe $s" kinesis describe-stream-summary --stream-name "$s"
			[ "$(field 'd["StreamDescriptionSummary"]["StreamStatus"]')" = ACTIVE ] && break
			sleep 0.2
		done
		[ "$(field 'd["StreamDescriptionSummary"]["StreamStatus"]')" = ACTIVE ] || fail "stream $s not ACTIVE: $(cat "$OUT")"
	done
	ok "four streams ACTIVE"
}

setup() {
	run "create-function" lambda create-function --function-name streams-py --runtime python3.11 --handler app.handler \
		--role arn:aws:iam::123456789012:role/kiln-e2e --zip-file "fileb://$FN_ZIP" --timeout 5 \
		--environment "Variables={SINK=$SINK}"
	run "wait function-active-v2" lambda wait function-active-v2 --function-name streams-py
	run "create the failure queue" sqs create-queue --queue-name stream-failures

	expect_error InvalidParameterValueException "parallelization factor 11" lambda create-event-source-mapping \
		--function-name streams-py --event-source-arn "$STREAM/order" --starting-position LATEST --parallelization-factor 11
	expect_error InvalidParameterValueException "no starting position" lambda create-event-source-mapping \
		--function-name streams-py --event-source-arn "$STREAM/order"
	expect_error InvalidParameterValueException "record age 30 s" lambda create-event-source-mapping \
		--function-name streams-py --event-source-arn "$STREAM/order" --starting-position LATEST --maximum-record-age-in-seconds 30
	expect_error InvalidParameterValueException "missing stream" lambda create-event-source-mapping \
		--function-name streams-py --event-source-arn "$STREAM/nope" --starting-position LATEST
	expect_error InvalidParameterValueException "a failure queue of another account" lambda create-event-source-mapping \
		--function-name streams-py --event-source-arn "$STREAM/order" --starting-position LATEST \
		--destination-config "OnFailure={Destination=arn:aws:sqs:us-east-1:999999999999:stream-failures}"
	expect_error InvalidParameterValueException "a queue's setting" lambda create-event-source-mapping \
		--function-name streams-py --event-source-arn "$STREAM/order" --starting-position LATEST --scaling-config MaximumConcurrency=2

	run "map order" lambda create-event-source-mapping --function-name streams-py --event-source-arn "$STREAM/order" \
		--starting-position TRIM_HORIZON --batch-size 10 --parallelization-factor 5
	[ "$(field 'd["ParallelizationFactor"], d["StartingPosition"], d["MaximumRetryAttempts"], d["State"]')" = "5 TRIM_HORIZON -1 Creating" ] ||
		fail "order mapping: $(cat "$OUT")"
	run "map poison" lambda create-event-source-mapping --function-name streams-py --event-source-arn "$STREAM/poison" \
		--starting-position TRIM_HORIZON --batch-size 8 --bisect-batch-on-function-error --maximum-retry-attempts 1 \
		--destination-config "OnFailure={Destination=$DLQ}"
	[ "$(field 'd["DestinationConfig"]["OnFailure"]["Destination"], d["BisectBatchOnFunctionError"]')" = "$DLQ True" ] ||
		fail "poison mapping: $(cat "$OUT")"
	run "map crash" lambda create-event-source-mapping --function-name streams-py --event-source-arn "$STREAM/crash" \
		--starting-position TRIM_HORIZON --batch-size 10
	expect_error ResourceConflictException "second mapping of a stream and function" lambda create-event-source-mapping \
		--function-name streams-py --event-source-arn "$STREAM/crash" --starting-position LATEST
	run "list mappings of order" lambda list-event-source-mappings --event-source-arn "$STREAM/order"
	[ "$(field 'len(d["EventSourceMappings"])')" = 1 ] || fail "list: $(cat "$OUT")"

	run "put-record" kinesis put-record --stream-name order --partition-key k0 \
		--data "$(printf '{"n":0}' | base64)" --cli-binary-format base64
	[ "$(field 'd["ShardId"].startswith("shardId-")')" = True ] || fail "put-record: $(cat "$OUT")"
	ok "setup"
}

"$@"
