# The AWS CLI helpers of the end-to-end scripts (sourced): the CLI at
# $AWS, retries off, a work directory, and run / expect_error / field on
# the output of the last call ($OUT, $ERR).

AWS=${AWS:-/usr/bin/aws}
export AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=1 AWS_PAGER=""
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
OUT=$WORK/out
ERR=$WORK/err

fail() {
	echo "FAIL $*" >&2
	exit 1
}
ok() { echo "ok   $*"; }

# run WHAT SERVICE ARGS...: aws SERVICE ARGS must succeed; output in $OUT.
run() {
	local what=$1
	shift
	"$AWS" "$@" --endpoint-url "$ENDPOINT" >"$OUT" 2>"$ERR" ||
		fail "$what: aws $*: $(cat "$OUT" "$ERR")"
}

# expect_error CODE WHAT SERVICE ARGS...: the call must fail with CODE.
expect_error() {
	local code=$1 what=$2
	shift 2
	if "$AWS" "$@" --endpoint-url "$ENDPOINT" >"$OUT" 2>"$ERR"; then
		fail "$what: succeeded, want $code: $(cat "$OUT")"
	fi
	grep -q "($code)" "$ERR" || fail "$what: want $code, got: $(cat "$ERR")"
	ok "$what: $code"
}

# expect_error_unchecked: expect_error without the CLI's own parameter
# checks, so that Kiln's are what answers.
expect_error_unchecked() {
	cp "$AWS_CONFIG_FILE" "$WORK/config-novalidate"
	printf '\nparameter_validation = false\n' >>"$WORK/config-novalidate"
	AWS_CONFIG_FILE=$WORK/config-novalidate expect_error "$@"
}

# field EXPR: a value of the JSON in $OUT (python expression on d).
field() { python3 -c "import json,sys; d=json.load(open('$OUT')); print($1)"; }
