"""End-to-end checks of stream event source mappings with boto3 against a
running `kiln up` (streams.sh setup made the streams, function and
mappings).

    streams_test.py put-aged       write the aged stream's records (mapped a minute later)
    streams_test.py order          keys in order under ParallelizationFactor 5
    streams_test.py poison         a poison record isolated by bisect, to the failure queue
    streams_test.py crash-put      fill the crash stream
    streams_test.py crash-verify   after a SIGKILL: every record processed, again
                                   only within a batch in flight
    streams_test.py aged           map the aged stream with MaximumRecordAgeInSeconds 60:
                                   its records go to the failure queue, newer ones are processed

The function (streams_fn.py) appends one JSON line per record to $SINK.
Environment: ENDPOINT, ACCOUNT, SINK, N, AWS_* files.
"""
import base64
import json
import os
import sys
import time
from collections import defaultdict

import boto3

import e2elib

ENDPOINT = os.environ["ENDPOINT"]
ACCOUNT = os.environ["ACCOUNT"]
SINK = os.environ["SINK"]
N = int(os.environ.get("N", "1000"))
DEADLINE = float(os.environ.get("DEADLINE", "120"))
FAILURES = "%s/%s/stream-failures" % (ENDPOINT, ACCOUNT)

kinesis = boto3.client("kinesis", endpoint_url=ENDPOINT)
lam = boto3.client("lambda", endpoint_url=ENDPOINT)
sqs = boto3.client("sqs", endpoint_url=ENDPOINT)


def put(stream, records):
    """Writes (key, data) records in order, 100 a call, retrying failed entries."""
    for i in range(0, len(records), 100):
        chunk = records[i:i + 100]
        while chunk:
            out = kinesis.put_records(StreamName=stream, Records=[
                dict(PartitionKey=k, Data=json.dumps(d).encode()) for k, d in chunk])
            # Retrying a failed entry after later ones would reorder its key:
            # keep the first failed one and everything after it.
            first = next((j for j, r in enumerate(out["Records"]) if "ErrorCode" in r), None)
            chunk = [] if first is None else chunk[first:]


def sink(stream):
    """What the function saw of a stream: key -> ns in the order written."""
    seen = defaultdict(list)
    try:
        with open(SINK) as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                r = json.loads(line)
                if r["stream"] == stream:
                    seen[r["key"]].append(r["n"])
    except FileNotFoundError:
        pass
    return seen


def wait(what, cond):
    e2elib.wait(what, cond, DEADLINE)


def failures(n):
    """Reads n failure records from the failure queue."""
    got = []
    deadline = time.time() + DEADLINE
    while len(got) < n and time.time() < deadline:
        out = sqs.receive_message(QueueUrl=FAILURES, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in out.get("Messages", []):
            got.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=FAILURES, ReceiptHandle=m["ReceiptHandle"])
    if len(got) < n:
        sys.exit("FAIL %d failure records, want %d: %s" % (len(got), n, got))
    return got


def check_failure(doc, condition, stream, n):
    info = doc.get("KinesisBatchInfo") or {}
    rc = doc.get("requestContext") or {}
    if rc.get("condition") != condition or doc.get("version") != "1.0" or info.get("batchSize") != n or \
            info.get("streamArn") != "arn:aws:kinesis:us-east-1:%s:stream/%s" % (ACCOUNT, stream) or \
            not info.get("shardId", "").startswith("shardId-") or not info.get("startSequenceNumber"):
        sys.exit("FAIL failure record %s, want %s of %d records of %s" % (doc, condition, n, stream))


def in_order(seen, keys, n):
    for k in keys:
        if seen[k] != list(range(n)):
            # The whole list: a cut one made a repeat look like a stall.
            return False, "%s (%d of %d): %s" % (k, len(seen[k]), n, seen[k])
    return True, ""


def order():
    keys = ["k%d" % i for i in range(10)]
    # streams.sh put k0's record 0 with the CLI.
    put("order", [(k, {"n": i}) for i in range(50) for k in keys if (k, i) != ("k0", 0)])
    wait("order: 10 keys x 50 records in order under ParallelizationFactor 5", lambda: in_order(sink("order"), keys, 50))


def poison():
    put("poison", [("p", {"n": i, "poison": i == 13}) for i in range(40)])
    want = [i for i in range(40) if i != 13]
    wait("poison: every other record processed, in order", lambda: (sink("poison")["p"] == want, sink("poison")["p"]))
    f = failures(1)
    check_failure(f[0], "RetryAttemptsExhausted", "poison", 1)
    print("ok   poison: one failure record naming the poison record alone")


def crash_put():
    put("crash", [("c%d" % (i % 7), {"n": i // 7}) for i in range(N)])
    print("ok   crash: %d records written" % N)


def crash_verify():
    keys = ["c%d" % i for i in range(7)]
    counts = {k: len([i for i in range(N) if i % 7 == int(k[1:])]) for k in keys}

    def done():
        seen = sink("crash")
        for k in keys:
            if set(seen[k]) != set(range(counts[k])):
                return False, "%s: %d of %d" % (k, len(set(seen[k])), counts[k])
        return True, ""
    wait("crash: every record processed after the restart", done)
    seen = sink("crash")
    dups = sum(len(seen[k]) - counts[k] for k in keys)
    # At most the batch in flight on each of the two shards comes again.
    if dups > 2 * 10:
        sys.exit("FAIL %d records processed twice, want at most 20" % dups)
    for k in keys:
        firsts = []
        for n in seen[k]:
            if n not in firsts:
                firsts.append(n)
        if firsts != list(range(counts[k])):
            sys.exit("FAIL key %s first processed out of order: %s" % (k, firsts[:40]))
    print("ok   crash: %d records processed twice (within the batches in flight)" % dups)


def put_aged():
    put("aged", [("old", {"n": i}) for i in range(5)])
    with open(SINK + ".aged", "w") as f:
        f.write(str(time.time()))
    print("ok   aged: 5 records written")


def aged():
    with open(SINK + ".aged") as f:
        written = float(f.read())
    time.sleep(max(0, written + 62 - time.time()))
    arn = "arn:aws:kinesis:us-east-1:%s:stream/aged" % ACCOUNT
    lam.create_event_source_mapping(FunctionName="streams-py", EventSourceArn=arn, StartingPosition="TRIM_HORIZON",
                                    MaximumRecordAgeInSeconds=60,
                                    DestinationConfig={"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:%s:stream-failures" % ACCOUNT}})
    put("aged", [("new", {"n": i}) for i in range(5)])
    wait("aged: the new records processed", lambda: (sink("aged")["new"] == list(range(5)), sink("aged")["new"]))
    if sink("aged")["old"]:
        sys.exit("FAIL expired records processed: %s" % sink("aged")["old"])
    f = failures(1)
    check_failure(f[0], "RecordAgeExceeded", "aged", 5)
    print("ok   aged: the 5 old records went to the failure queue unprocessed")


{"put-aged": put_aged, "order": order, "poison": poison, "crash-put": crash_put,
 "crash-verify": crash_verify, "aged": aged}[sys.argv[1]]()
