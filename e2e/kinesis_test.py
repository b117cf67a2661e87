#!/usr/bin/python3
"""End-to-end checks of Kiln streams with Debian's boto3: many records over
four shards routed by the MD5 of their keys (computed here, independently),
per-shard and per-key order, every iterator type, ExplicitHashKey, paging,
MillisBehindLatest, reads through a second endpoint, and the error cases.

Run by kinesis_test.go with /usr/bin/python3 and ENDPOINT, ENDPOINT2 (another
frontend of the same Kiln, or the same one), AWS_SHARED_CREDENTIALS_FILE,
AWS_CONFIG_FILE. Prints one line per check; exits non-zero at the first
failure.
"""

import base64
import datetime
import hashlib
import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60)
session = boto3.session.Session()
kin = session.client("kinesis", endpoint_url=os.environ["ENDPOINT"], config=CONFIG)
kin2 = session.client("kinesis", endpoint_url=os.environ["ENDPOINT2"], config=CONFIG)
unchecked = session.client("kinesis", endpoint_url=os.environ["ENDPOINT"],
                           config=CONFIG.merge(Config(parameter_validation=False)))
S = "boto3-stream"


def ok(what):
    print("ok  ", what, flush=True)


def expect_error(code, what, fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"{what}: want {code}, got {got}: {e}"
        ok(f"{what}: {code}")
        return
    raise AssertionError(f"{what}: succeeded, want {code}")


def iterator(shard, kind, client=kin, **kw):
    return client.get_shard_iterator(StreamName=S, ShardId=shard, ShardIteratorType=kind, **kw)["ShardIterator"]


def drain(it, limit=1000, client=kin2):
    """Every record from it on, until caught up; and the next iterator."""
    recs = []
    for _ in range(100):
        out = client.get_records(ShardIterator=it, Limit=limit)
        recs += out["Records"]
        it = out["NextShardIterator"]
        if out["MillisBehindLatest"] == 0:
            return recs, it
    raise AssertionError("not caught up after 100 reads")


def main():
    kin.create_stream(StreamName=S, ShardCount=4)
    kin.get_waiter("stream_exists").wait(StreamName=S, WaiterConfig={"Delay": 1})
    shards = kin.list_shards(StreamName=S)["Shards"]
    assert [s["ShardId"] for s in shards] == [f"shardId-00000000000{i}" for i in range(4)], shards
    ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])) for s in shards]
    assert ranges[0][0] == 0 and ranges[-1][1] == 2**128 - 1, ranges
    assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(3)), ranges
    paged = [s for page in kin.get_paginator("list_shards").paginate(StreamName=S, PaginationConfig={"PageSize": 1})
             for s in page["Shards"]]
    assert paged == shards, paged
    ok("create_stream of 4 shards: contiguous hash key ranges over [0, 2^128); list_shards paginated a shard a page")

    def shard_of(key):
        h = int(hashlib.md5(key.encode()).hexdigest(), 16)
        return next(i for i, (lo, hi) in enumerate(ranges) if lo <= h <= hi)

    keys = [f"key-{i}" for i in range(20)]
    sent = {i: [] for i in range(4)}  # shard -> [(key, data)] in put order
    for batch in range(2):
        entries = [{"PartitionKey": k, "Data": f"{k}/{batch}/{j}".encode()} for j in range(5) for k in keys]
        out = kin.put_records(StreamName=S, Records=entries)
        assert out["FailedRecordCount"] == 0, out
        for e, r in zip(entries, out["Records"]):
            want = shard_of(e["PartitionKey"])
            assert r["ShardId"] == f"shardId-00000000000{want}", (e["PartitionKey"], r, want)
            sent[want].append((e["PartitionKey"], e["Data"], r["SequenceNumber"]))
    out = kin.put_record(StreamName=S, PartitionKey="any", Data=b"explicit", ExplicitHashKey=str(ranges[2][0]))
    assert out["ShardId"] == "shardId-000000000002", out
    sent[2].append(("any", b"explicit", out["SequenceNumber"]))
    ok("put_records x2 (200 records, 20 keys): each key on the shard its MD5 falls in; ExplicitHashKey honoured")

    for i in range(4):
        recs, _ = drain(iterator(f"shardId-00000000000{i}", "TRIM_HORIZON"), limit=7)
        got = [(r["PartitionKey"], r["Data"], r["SequenceNumber"]) for r in recs]
        assert got == sent[i], f"shard {i}: {len(got)} records, want {len(sent[i])}"
        seqs = [int(r["SequenceNumber"]) for r in recs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"shard {i}: sequence numbers"
    ok("TRIM_HORIZON through the second endpoint, 7 at a time: every shard in put order")

    shard = "shardId-000000000002"
    recs = [r for r in sent[2]]
    mid = recs[len(recs) // 2]
    at, _ = drain(iterator(shard, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=mid[2]))
    after, _ = drain(iterator(shard, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=mid[2]))
    assert at[0]["SequenceNumber"] == mid[2] and len(at) == len(recs) - len(recs) // 2, len(at)
    assert len(after) == len(at) - 1 and after[0]["SequenceNumber"] == at[1]["SequenceNumber"]
    ok("AT_SEQUENCE_NUMBER and AFTER_SEQUENCE_NUMBER")

    # botocore sends whole seconds.
    arrival = at[0]["ApproximateArrivalTimestamp"].replace(microsecond=0)
    since, _ = drain(iterator(shard, "AT_TIMESTAMP", Timestamp=arrival))
    assert since[-len(at):] == at and all(r["ApproximateArrivalTimestamp"] >= arrival for r in since), len(since)
    assert drain(iterator(shard, "AT_TIMESTAMP", Timestamp=arrival - datetime.timedelta(hours=1)))[0] == drain(iterator(shard, "TRIM_HORIZON"))[0]
    future = iterator(shard, "AT_TIMESTAMP", Timestamp=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    latest = iterator(shard, "LATEST")
    none, latest = drain(latest)
    assert none == [], none
    kin.put_record(StreamName=S, PartitionKey="any", Data=b"late", ExplicitHashKey=str(ranges[2][0]))
    late, _ = drain(latest)
    assert [r["Data"] for r in late] == [b"late"], late
    assert drain(future)[0] == []
    ok("AT_TIMESTAMP (past and an hour ahead) and LATEST")

    out = kin2.get_records(ShardIterator=iterator(shard, "TRIM_HORIZON"), Limit=1)
    assert len(out["Records"]) == 1 and out["MillisBehindLatest"] > 0, out["MillisBehindLatest"]
    ok("MillisBehindLatest > 0 while records remain")

    od = S + ".on-demand"
    kin.create_stream(StreamName=od, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    d = kin.describe_stream_summary(StreamName=od)["StreamDescriptionSummary"]
    assert d["StreamModeDetails"]["StreamMode"] == "ON_DEMAND" and d["OpenShardCount"] == 4, d
    kin.increase_stream_retention_period(StreamName=od, RetentionPeriodHours=48)
    assert kin.describe_stream_summary(StreamName=od)["StreamDescriptionSummary"]["RetentionPeriodHours"] == 48
    expect_error("InvalidArgumentException", "a retention of 23 hours", kin.decrease_stream_retention_period,
                 StreamName=od, RetentionPeriodHours=23)
    kin.delete_stream(StreamName=od)
    ok("an ON_DEMAND stream (4 shards), named with a dot; its retention raised to 48 hours")

    # The error cases.
    expect_error("ResourceInUseException", "create_stream again", kin.create_stream, StreamName=S, ShardCount=1)
    expect_error("ResourceNotFoundException", "a missing stream", kin.put_record,
                 StreamName="nope", PartitionKey="k", Data=b"x")
    expect_error("ValidationException", "a record of 1 MiB + 1", kin.put_record,
                 StreamName=S, PartitionKey="k", Data=b"x" * (1024 * 1024 + 1))
    expect_error("ValidationException", "501 records", unchecked.put_records,
                 StreamName=S, Records=[{"PartitionKey": "k", "Data": b"x"}] * 501)
    expect_error("InvalidArgumentException", "6 MiB of records", kin.put_records,
                 StreamName=S, Records=[{"PartitionKey": "k", "Data": b"x" * 1024 * 1024}] * 6)
    expect_error("InvalidArgumentException", "an ExplicitHashKey of 2^128", kin.put_record,
                 StreamName=S, PartitionKey="k", Data=b"x", ExplicitHashKey=str(2**128))
    good = iterator(shard, "TRIM_HORIZON")
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[5] ^= 1  # the shard, say
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    expect_error("InvalidArgumentException", "a forged iterator", kin.get_records, ShardIterator=forged)
    expect_error("InvalidArgumentException", "a made-up iterator", kin.get_records, ShardIterator="A" * 100)
    expect_error("ResourceNotFoundException", "a shard that does not exist", kin.get_shard_iterator,
                 StreamName=S, ShardId="shardId-000000000004", ShardIteratorType="LATEST")
    expect_error("ValidationException", "a Limit of 10001", unchecked.get_records, ShardIterator=good, Limit=10001)
    recs, _ = drain(good)
    assert len(recs) == len(sent[2]) + 1, len(recs)
    ok("none of the refused records was stored")

    kin.delete_stream(StreamName=S)
    expect_error("ResourceNotFoundException", "reading a deleted stream", kin.get_records, ShardIterator=good)


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"all checks passed in {time.time() - start:.1f}s")
