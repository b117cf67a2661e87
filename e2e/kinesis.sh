#!/usr/bin/env bash
# End-to-end checks of Kiln streams with Debian's AWS CLI: create, put
# (put-record, put-records), iterators, per-shard order, and error cases (an
# oversize record, a forged iterator, a sequence number of another shard).
# Each call starts the CLI anew (a second or so), so the many cases are in
# kinesis_test.py (boto3) instead.
#
# Environment (set by kinesis_test.go): ENDPOINT, ENDPOINT2 (another
# frontend of the same Kiln, or the same), AWS_SHARED_CREDENTIALS_FILE,
# AWS_CONFIG_FILE, AWS.
set -euo pipefail

. "$(dirname "$0")/awscli.sh"
: "${ENDPOINT:?}" "${ENDPOINT2:?}"
S=cli-stream

# run WHAT ARGS...: aws kinesis ARGS against ENDPOINT must succeed; output
# (text) in $OUT. (It and expect_error replace awscli.sh's: the service is
# always kinesis here.)
run() {
	local what=$1
	shift
	"$AWS" kinesis "$@" --endpoint-url "${EP:-$ENDPOINT}" --output text >"$OUT" 2>"$ERR" ||
		fail "$what: aws kinesis $*: $(cat "$OUT" "$ERR")"
}

# expect_error CODE WHAT ARGS...: the call must fail with CODE.
expect_error() {
	local code=$1 what=$2
	shift 2
	if "$AWS" kinesis "$@" --endpoint-url "$ENDPOINT" >"$OUT" 2>"$ERR"; then
		fail "$what: succeeded, want $code: $(cat "$OUT")"
	fi
	grep -q "($code)" "$ERR" || fail "$what: want $code, got: $(cat "$ERR")"
	ok "$what: $code"
}

# iterator SHARD TYPE [ARGS...]: a shard iterator, in $IT.
iterator() {
	local shard=$1 type=$2
	shift 2
	run "get-shard-iterator $type" get-shard-iterator --stream-name $S --shard-id "$shard" --shard-iterator-type "$type" "$@" --query ShardIterator
	IT=$(cat "$OUT")
}

# drain: the data of the records from $IT on (read through ENDPOINT2) until
# the read is caught up, one per line in $WORK/data, sequence numbers in
# $WORK/seqs.
drain() {
	: >"$WORK/data"
	: >"$WORK/seqs"
	for _ in $(seq 20); do
		EP=$ENDPOINT2 run get-records get-records --shard-iterator "$IT" \
			--query '[NextShardIterator, MillisBehindLatest, join(`,`, Records[].Data), join(`,`, Records[].SequenceNumber)]'
		read -r IT behind data seqs <"$OUT"
		for d in ${data//,/ }; do
			base64 -d <<<"$d"
			echo
		done >>"$WORK/data"
		[ -z "$seqs" ] || tr , '\n' <<<"$seqs" >>"$WORK/seqs"
		[ "$behind" = 0 ] && return
	done
	fail "drain: not caught up after 20 reads"
}

run create-stream create-stream --stream-name $S --shard-count 2
"$AWS" kinesis wait stream-exists --stream-name $S --endpoint-url "$ENDPOINT" || fail "wait stream-exists"
run describe-stream-summary describe-stream-summary --stream-name $S \
	--query 'StreamDescriptionSummary.[StreamStatus, OpenShardCount, StreamARN]'
read -r status shards arn <"$OUT"
[ "$status $shards" = "ACTIVE 2" ] || fail "summary: $(cat "$OUT")"
[[ $arn == arn:aws:kinesis:us-east-1:*:stream/$S ]] || fail "ARN $arn"
ok "create-stream, wait stream-exists, describe-stream-summary"
run list-streams list-streams --query 'StreamNames'
grep -qw $S "$OUT" || fail "list-streams: $(cat "$OUT")"
run list-shards list-shards --stream-name $S --query 'Shards[].ShardId'
[ "$(cat "$OUT")" = "shardId-000000000000	shardId-000000000001" ] || fail "list-shards: $(cat "$OUT")"
ok "list-streams, list-shards"

# "a" hashes to shard 0 of 2, "zzz" to shard 1 (the MD5 of the key).
for k in a zzz; do
	run "put-record $k" put-record --stream-name $S --partition-key $k --data "$(printf '%s-0' $k | base64)" --query ShardId
	want=shardId-000000000000
	[ $k = zzz ] && want=shardId-000000000001
	[ "$(cat "$OUT")" = $want ] || fail "put-record $k went to $(cat "$OUT")"
done
records=()
for i in 1 2 3 4 5; do
	records+=("Data=$(printf 'a-%d' $i | base64),PartitionKey=a" "Data=$(printf 'zzz-%d' $i | base64),PartitionKey=zzz")
done
run put-records put-records --stream-name $S --records "${records[@]}" --query FailedRecordCount
[ "$(cat "$OUT")" = 0 ] || fail "put-records: $(cat "$OUT")"
ok "put-record, put-records: keys hash to their shards"

for shard in 1 0; do
	k=a
	[ $shard = 1 ] && k=zzz
	iterator shardId-00000000000$shard TRIM_HORIZON
	drain
	printf '%s-%d\n' $k 0 $k 1 $k 2 $k 3 $k 4 $k 5 >"$WORK/want"
	diff "$WORK/want" "$WORK/data" >/dev/null || fail "shard $shard TRIM_HORIZON: $(cat "$WORK/data")"
	sort -c "$WORK/seqs" || fail "shard $shard: sequence numbers out of order"
	ok "shard $shard: TRIM_HORIZON, in order (read through ENDPOINT2)"
done
third=$(sed -n 3p "$WORK/seqs") # of shard 0
iterator shardId-000000000000 AFTER_SEQUENCE_NUMBER --starting-sequence-number "$third"
drain
[ "$(head -1 "$WORK/data")" = a-3 ] && [ "$(wc -l <"$WORK/data")" = 3 ] || fail "AFTER_SEQUENCE_NUMBER: $(cat "$WORK/data")"
ok "AFTER_SEQUENCE_NUMBER"
iterator shardId-000000000000 LATEST
run put-record put-record --stream-name $S --partition-key a --data "$(printf 'late' | base64)"
drain
[ "$(cat "$WORK/data")" = late ] || fail "after LATEST: $(cat "$WORK/data")"
ok "LATEST: only what comes after"

head -c 1048577 /dev/zero >"$WORK/big"
expect_error ValidationException "a record of 1 MiB + 1" put-record --stream-name $S --partition-key a --data "fileb://$WORK/big"
iterator shardId-000000000000 TRIM_HORIZON
forged=${IT:0:20}$([ "${IT:20:1}" = A ] && echo B || echo A)${IT:21}
expect_error InvalidArgumentException "a forged iterator" get-records --shard-iterator "$forged"
expect_error InvalidArgumentException "a sequence number of another shard" get-shard-iterator --stream-name $S \
	--shard-id shardId-000000000001 --shard-iterator-type AT_SEQUENCE_NUMBER --starting-sequence-number "$third"

run delete-stream delete-stream --stream-name $S
expect_error ResourceNotFoundException "describe a deleted stream" describe-stream-summary --stream-name $S
ok "delete-stream"
