#!/usr/bin/env bash
# End-to-end checks of Kiln queues and event source mappings with Debian's
# AWS CLI (which speaks SQS's query protocol).
#
#   sqs.sh api      the queue API: every operation, attributes, MD5s, long
#                   polling, visibility, FIFO, redrive, and the error cases
#   sqs.sh setup    the function and queues esm_test.py drives, their
#                   mappings, and the mapping API's error cases
#
# Environment (set by esm_test.go): ENDPOINT, AWS_SHARED_CREDENTIALS_FILE,
# AWS_CONFIG_FILE, ACCOUNT, ESM_ZIP (the Python function), SINK (the file
# the function appends each record to), AWS.
set -euo pipefail

. "$(dirname "$0")/awscli.sh"
: "${ENDPOINT:?}" "${ACCOUNT:?}"
ARN=arn:aws:sqs:us-east-1:$ACCOUNT

# wait_state UUID STATE: the mapping reaches STATE within 10 s; its
# document is in $OUT.
wait_state() {
	for _ in $(seq 50); do
		run "get mapping" lambda get-event-source-mapping --uuid "$1"
		[ "$(field 'd["State"]')" = "$2" ] && return 0
		sleep 0.2
	done
	fail "mapping $1 not $2: $(cat "$OUT")"
}

api() {
	run "create-queue" sqs create-queue --queue-name cli-q --attributes VisibilityTimeout=2,DelaySeconds=0 --tags team=kiln
	Q=$(field 'd["QueueUrl"]')
	[ "$Q" = "$ENDPOINT/$ACCOUNT/cli-q" ] || fail "queue url $Q"
	run "create-queue again, same attributes" sqs create-queue --queue-name cli-q --attributes VisibilityTimeout=2
	expect_error QueueAlreadyExists "create-queue with other attributes" sqs create-queue --queue-name cli-q --attributes VisibilityTimeout=9
	run "get-queue-url" sqs get-queue-url --queue-name cli-q
	[ "$(field 'd["QueueUrl"]')" = "$Q" ] || fail "get-queue-url"
	run "list-queues" sqs list-queues --queue-name-prefix cli-
	[ "$(field 'd["QueueUrls"]')" = "['$Q']" ] || fail "list-queues: $(cat "$OUT")"
	run "list-queue-tags" sqs list-queue-tags --queue-url "$Q"
	[ "$(field 'd["Tags"]["team"]')" = kiln ] || fail "tags: $(cat "$OUT")"
	ok "create, get-queue-url, list, tags"

	run "set-queue-attributes" sqs set-queue-attributes --queue-url "$Q" --attributes MessageRetentionPeriod=3600,ReceiveMessageWaitTimeSeconds=1
	run "get-queue-attributes" sqs get-queue-attributes --queue-url "$Q" --attribute-names All
	[ "$(field 'd["Attributes"]["MessageRetentionPeriod"], d["Attributes"]["QueueArn"]')" = "3600 $ARN:cli-q" ] || fail "attributes: $(cat "$OUT")"
	ok "set and get attributes"

	# The CLI checks MD5OfMessageBody and MD5OfMessageAttributes itself.
	run "send-message" sqs send-message --queue-url "$Q" --message-body "héllo wörld" \
		--message-attributes '{"s":{"DataType":"String","StringValue":"x"},"n":{"DataType":"Number.int","StringValue":"42"},"b":{"DataType":"Binary","BinaryValue":"AAEC/w=="}}'
	[ "$(field 'd["MD5OfMessageBody"]')" = "$(printf 'héllo wörld' | md5sum | cut -d' ' -f1)" ] || fail "body md5"
	run "receive-message" sqs receive-message --queue-url "$Q" --attribute-names All --message-attribute-names All --wait-time-seconds 5 --visibility-timeout 30
	[ "$(field 'd["Messages"][0]["Body"], d["Messages"][0]["MessageAttributes"]["n"]["StringValue"], d["Messages"][0]["Attributes"]["ApproximateReceiveCount"]')" = "héllo wörld 42 1" ] ||
		fail "receive: $(cat "$OUT")"
	RH=$(field 'd["Messages"][0]["ReceiptHandle"]')
	ok "send and receive with attributes (MD5s checked by the CLI)"

	run "receive while invisible" sqs receive-message --queue-url "$Q" --wait-time-seconds 0
	[ ! -s "$OUT" ] || [ "$(field 'len(d.get("Messages", []))')" = 0 ] || fail "received an invisible message: $(cat "$OUT")"
	run "change-message-visibility 0" sqs change-message-visibility --queue-url "$Q" --receipt-handle "$RH" --visibility-timeout 0
	run "receive again" sqs receive-message --queue-url "$Q" --attribute-names ApproximateReceiveCount --wait-time-seconds 5
	[ "$(field 'd["Messages"][0]["Attributes"]["ApproximateReceiveCount"]')" = 2 ] || fail "receive count: $(cat "$OUT")"
	RH=$(field 'd["Messages"][0]["ReceiptHandle"]')
	run "delete-message" sqs delete-message --queue-url "$Q" --receipt-handle "$RH"
	sleep 2.5 # past the visibility timeout: a deleted message never comes back
	run "receive after delete" sqs receive-message --queue-url "$Q" --wait-time-seconds 1
	[ ! -s "$OUT" ] || fail "deleted message came back: $(cat "$OUT")"
	ok "visibility timeout, change-message-visibility, receive count, delete"

	run "send-message-batch" sqs send-message-batch --queue-url "$Q" --entries \
		'[{"Id":"a","MessageBody":"one"},{"Id":"b","MessageBody":"two","DelaySeconds":20},{"Id":"c","MessageBody":"three"}]'
	[ "$(field 'len(d["Successful"])')" = 3 ] || fail "batch: $(cat "$OUT")"
	run "receive batch" sqs receive-message --queue-url "$Q" --max-number-of-messages 10 --wait-time-seconds 1
	[ "$(field 'sorted(m["Body"] for m in d["Messages"])')" = "['one', 'three']" ] || fail "delayed message was visible: $(cat "$OUT")"
	field 'json.dumps([{"Id": "m%d" % i, "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(d["Messages"])])' >"$WORK/del.json"
	run "delete-message-batch" sqs delete-message-batch --queue-url "$Q" --entries "file://$WORK/del.json"
	[ "$(field 'len(d["Successful"])')" = 2 ] || fail "delete batch: $(cat "$OUT")"
	run "receive delayed" sqs receive-message --queue-url "$Q" --wait-time-seconds 20 --visibility-timeout 30
	[ "$(field 'd["Messages"][0]["Body"]')" = two ] || fail "delayed message: $(cat "$OUT")"
	field 'json.dumps([{"Id": "x", "ReceiptHandle": d["Messages"][0]["ReceiptHandle"], "VisibilityTimeout": 0}])' >"$WORK/vis.json"
	run "change-message-visibility-batch" sqs change-message-visibility-batch --queue-url "$Q" --entries "file://$WORK/vis.json"
	run "receive after batch visibility" sqs receive-message --queue-url "$Q" --wait-time-seconds 5
	[ "$(field 'd["Messages"][0]["Body"]')" = two ] || fail "change-message-visibility-batch: $(cat "$OUT")"
	run "purge-queue" sqs purge-queue --queue-url "$Q"
	run "attributes after purge" sqs get-queue-attributes --queue-url "$Q" --attribute-names ApproximateNumberOfMessages
	[ "$(field 'd["Attributes"]["ApproximateNumberOfMessages"]')" = 0 ] || fail "purge: $(cat "$OUT")"
	ok "batches, delay, purge"

	# Redrive: received twice without a delete, then in the dead-letter queue.
	run "create dlq" sqs create-queue --queue-name cli-dlq
	run "create source" sqs create-queue --queue-name cli-src --attributes "{\"VisibilityTimeout\":\"1\",\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"$ARN:cli-dlq\\\",\\\"maxReceiveCount\\\":\\\"2\\\"}\"}"
	SRC=$ENDPOINT/$ACCOUNT/cli-src
	run "send poison" sqs send-message --queue-url "$SRC" --message-body poison
	for i in 1 2; do
		run "receive poison $i" sqs receive-message --queue-url "$SRC" --wait-time-seconds 5
		[ "$(field 'd["Messages"][0]["Body"]')" = poison ] || fail "receive $i: $(cat "$OUT")"
		sleep 1.2
	done
	run "receive a third time" sqs receive-message --queue-url "$SRC" --wait-time-seconds 2
	[ ! -s "$OUT" ] || fail "poison received a third time: $(cat "$OUT")"
	run "receive from dlq" sqs receive-message --queue-url "$ENDPOINT/$ACCOUNT/cli-dlq" --wait-time-seconds 5
	[ "$(field 'd["Messages"][0]["Body"]')" = poison ] || fail "dlq: $(cat "$OUT")"
	ok "redrive to the dead-letter queue after maxReceiveCount"

	# FIFO: order within a group, deduplication.
	run "create fifo" sqs create-queue --queue-name cli.fifo --attributes FifoQueue=true,ContentBasedDeduplication=true
	F=$ENDPOINT/$ACCOUNT/cli.fifo
	for i in 1 2 3; do run "fifo send $i" sqs send-message --queue-url "$F" --message-body "m$i" --message-group-id g; done
	FIRST=$(field 'd["SequenceNumber"]')
	run "fifo duplicate" sqs send-message --queue-url "$F" --message-body m3 --message-group-id g
	[ "$(field 'd["SequenceNumber"]')" = "$FIRST" ] || fail "duplicate got a new sequence number: $(cat "$OUT")"
	GOT=""
	for i in 1 2 3; do
		run "fifo receive $i" sqs receive-message --queue-url "$F" --attribute-names All --wait-time-seconds 2
		GOT="$GOT $(field 'd["Messages"][0]["Body"]')"
		run "fifo delete $i" sqs delete-message --queue-url "$F" --receipt-handle "$(field 'd["Messages"][0]["ReceiptHandle"]')"
	done
	[ "$GOT" = " m1 m2 m3" ] || fail "fifo order: $GOT"
	run "fifo empty" sqs receive-message --queue-url "$F" --wait-time-seconds 1
	[ ! -s "$OUT" ] || fail "duplicate delivered: $(cat "$OUT")"
	expect_error MissingParameter "fifo send without a group" sqs send-message --queue-url "$F" --message-body x
	ok "fifo order and deduplication"

	# Hostile input.
	head -c 262145 /dev/zero | tr '\0' a >"$WORK/big"
	expect_error InvalidParameterValue "oversized message" sqs send-message --queue-url "$Q" --message-body "file://$WORK/big"
	expect_error InvalidParameterValue "attribute without a value" sqs send-message --queue-url "$Q" --message-body x \
		--message-attributes '{"a":{"DataType":"String","StringValue":""}}'
	expect_error InvalidParameterValue "attribute of an unknown type" sqs send-message --queue-url "$Q" --message-body x \
		--message-attributes '{"a":{"DataType":"Blob","StringValue":"x"}}'
	expect_error InvalidParameterValue "Number attribute that is not a number" sqs send-message --queue-url "$Q" --message-body x \
		--message-attributes '{"a":{"DataType":"Number","StringValue":"twelve"}}'
	expect_error InvalidAttributeName "unknown queue attribute" sqs set-queue-attributes --queue-url "$Q" --attributes Colour=blue
	expect_error InvalidAttributeValue "visibility out of range" sqs set-queue-attributes --queue-url "$Q" --attributes VisibilityTimeout=50000
	expect_error ReceiptHandleIsInvalid "forged receipt handle" sqs delete-message --queue-url "$Q" --receipt-handle 'JEpTLkFDSy5PVEhFUi5zcXMuMS4xLjEuMS4w'
	expect_error AWS.SimpleQueueService.TooManyEntriesInBatchRequest "11 entries" sqs send-message-batch --queue-url "$Q" --entries \
		"$(python3 -c 'import json; print(json.dumps([{"Id": str(i), "MessageBody": "x"} for i in range(11)]))')"
	expect_error AWS.SimpleQueueService.BatchEntryIdsNotDistinct "repeated ids" sqs send-message-batch --queue-url "$Q" --entries \
		'[{"Id":"a","MessageBody":"x"},{"Id":"a","MessageBody":"y"}]'
	expect_error_unchecked InvalidParameterValue "max-number-of-messages 11" sqs receive-message --queue-url "$Q" --max-number-of-messages 11
	expect_error InvalidParameterValue "bad queue name" sqs create-queue --queue-name 'no spaces'
	run "delete-queue" sqs delete-queue --queue-url "$Q"
	expect_error AWS.SimpleQueueService.NonExistentQueue "deleted queue" sqs get-queue-url --queue-name cli-q
	expect_error AWS.SimpleQueueService.NonExistentQueue "send to a deleted queue" sqs send-message --queue-url "$Q" --message-body x
	ok "queue API done"
}

setup() {
	run "create-function" lambda create-function --function-name esm-py --runtime python3.11 --handler app.handler \
		--role arn:aws:iam::123456789012:role/kiln-e2e --zip-file "fileb://$ESM_ZIP" --timeout 2 \
		--environment "Variables={SINK=$SINK}"
	run "wait function-active-v2" lambda wait function-active-v2 --function-name esm-py
	for q in bulk poison-dlq crash; do run "create $q" sqs create-queue --queue-name $q --attributes VisibilityTimeout=2; done
	# partial's fine items must be received once: its batches stay hidden
	# through a cold start on a loaded machine (a redelivery would count 2).
	run "create partial" sqs create-queue --queue-name partial --attributes VisibilityTimeout=20
	run "create poison" sqs create-queue --queue-name poison --attributes \
		"{\"VisibilityTimeout\":\"2\",\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"$ARN:poison-dlq\\\",\\\"maxReceiveCount\\\":\\\"2\\\"}\"}"
	run "create fifo" sqs create-queue --queue-name orders.fifo --attributes FifoQueue=true,ContentBasedDeduplication=true,VisibilityTimeout=2

	# Mapping API errors, before any mapping exists.
	expect_error InvalidParameterValueException "filter that is not JSON" lambda create-event-source-mapping --function-name esm-py \
		--event-source-arn "$ARN:bulk" --filter-criteria '{"Filters":[{"Pattern":"{\"body\": "}]}'
	DEEP=$(python3 -c 'print("{\"a\":" * 11 + "[1]" + "}" * 11)')
	expect_error InvalidParameterValueException "filter nested too deep" lambda create-event-source-mapping --function-name esm-py \
		--event-source-arn "$ARN:bulk" --filter-criteria "$(python3 -c 'import json,sys; print(json.dumps({"Filters": [{"Pattern": sys.argv[1]}]}))' "$DEEP")"
	expect_error_unchecked InvalidParameterValueException "batch size 0" lambda create-event-source-mapping --function-name esm-py \
		--event-source-arn "$ARN:bulk" --batch-size 0
	expect_error InvalidParameterValueException "batch size 100 without a window" lambda create-event-source-mapping --function-name esm-py \
		--event-source-arn "$ARN:bulk" --batch-size 100
	expect_error InvalidParameterValueException "fifo batch size 20" lambda create-event-source-mapping --function-name esm-py \
		--event-source-arn "$ARN:orders.fifo" --batch-size 20 --maximum-batching-window-in-seconds 1
	expect_error InvalidParameterValueException "missing queue" lambda create-event-source-mapping --function-name esm-py \
		--event-source-arn "$ARN:nope"
	expect_error ResourceNotFoundException "missing function" lambda create-event-source-mapping --function-name nope \
		--event-source-arn "$ARN:bulk"
	expect_error_unchecked InvalidParameterValueException "maximum concurrency 1" lambda create-event-source-mapping --function-name esm-py \
		--event-source-arn "$ARN:bulk" --scaling-config MaximumConcurrency=1
	expect_error ResourceNotFoundException "get a missing mapping" lambda get-event-source-mapping --uuid 00000000-0000-4000-8000-000000000000

	# The mappings: bulk keeps only {"kind": "work"} bodies.
	run "map bulk" lambda create-event-source-mapping --function-name esm-py --event-source-arn "$ARN:bulk" \
		--batch-size 100 --maximum-batching-window-in-seconds 1 --scaling-config MaximumConcurrency=4 \
		--filter-criteria '{"Filters":[{"Pattern":"{\"body\":{\"kind\":[\"work\"]}}"}]}'
	[ "$(field 'd["State"]')" = Creating ] || fail "new mapping state: $(cat "$OUT")"
	BULK=$(field 'd["UUID"]')
	expect_error ResourceConflictException "second mapping of the same pair" lambda create-event-source-mapping --function-name esm-py \
		--event-source-arn "$ARN:bulk"
	run "map partial" lambda create-event-source-mapping --function-name esm-py --event-source-arn "$ARN:partial" \
		--function-response-types ReportBatchItemFailures
	run "map poison" lambda create-event-source-mapping --function-name esm-py --event-source-arn "$ARN:poison" --batch-size 1
	run "map fifo" lambda create-event-source-mapping --function-name esm-py --event-source-arn "$ARN:orders.fifo"
	run "map crash" lambda create-event-source-mapping --function-name esm-py --event-source-arn "$ARN:crash" \
		--batch-size 50 --maximum-batching-window-in-seconds 1
	wait_state "$BULK" Enabled
	[ "$(field 'd["State"], d["BatchSize"], d["ScalingConfig"]["MaximumConcurrency"]')" = "Enabled 100 4" ] || fail "bulk mapping: $(cat "$OUT")"
	run "list by function" lambda list-event-source-mappings --function-name esm-py
	[ "$(field 'len(d["EventSourceMappings"])')" = 5 ] || fail "list: $(cat "$OUT")"
	run "list by source" lambda list-event-source-mappings --event-source-arn "$ARN:poison"
	[ "$(field 'len(d["EventSourceMappings"])')" = 1 ] || fail "list by source: $(cat "$OUT")"
	ok "mappings created and enabled"

	# Disable, update, enable and delete a mapping of its own.
	run "create spare queue" sqs create-queue --queue-name spare --attributes VisibilityTimeout=2
	run "map spare disabled" lambda create-event-source-mapping --function-name esm-py --event-source-arn "$ARN:spare" --no-enabled
	SPARE=$(field 'd["UUID"]')
	wait_state "$SPARE" Disabled
	run "update spare" lambda update-event-source-mapping --uuid "$SPARE" --batch-size 5 --enabled
	[ "$(field 'd["State"], d["BatchSize"]')" = "Updating 5" ] || fail "update: $(cat "$OUT")"
	wait_state "$SPARE" Enabled
	run "delete spare" lambda delete-event-source-mapping --uuid "$SPARE"
	[ "$(field 'd["State"]')" = Deleting ] || fail "delete: $(cat "$OUT")"
	for i in $(seq 50); do
		"$AWS" lambda get-event-source-mapping --uuid "$SPARE" --endpoint-url "$ENDPOINT" >/dev/null 2>&1 || break
		sleep 0.2
	done
	expect_error ResourceNotFoundException "deleted mapping" lambda get-event-source-mapping --uuid "$SPARE"
	ok "mapping disable, update, enable, delete"
}

case ${1:-} in
api) api ;;
setup) setup ;;
*) fail "usage: sqs.sh api|setup" ;;
esac
