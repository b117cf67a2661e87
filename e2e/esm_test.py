"""End-to-end checks of event source mappings with boto3 (query protocol, as
Debian's botocore speaks SQS) against a running `kiln up`.

    esm_test.py send           fill the queues sqs.sh setup mapped
    esm_test.py verify         wait until every record was processed as wanted
    esm_test.py crash-send     fill the crash queue
    esm_test.py crash-verify   after kiln up was killed and restarted: every
                               message was processed at least once, none left

The function (esm_fn.py) appends one JSON line per record to $SINK.
Environment: ENDPOINT, ACCOUNT, SINK, N (messages of the bulk and crash
queues), AWS_* files.
"""
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
N = int(os.environ.get("N", "2000"))
SKIPPED = N // 10
DEADLINE = float(os.environ.get("DEADLINE", "300"))

sqs = boto3.client("sqs", endpoint_url=ENDPOINT)


def url(name):
    return "%s/%s/%s" % (ENDPOINT, ACCOUNT, name)


def send_all(queue, bodies, **extra):
    for i in range(0, len(bodies), 10):
        entries = [dict(Id=str(j), MessageBody=b, **extra.get(b, {})) for j, b in enumerate(bodies[i:i + 10])]
        out = sqs.send_message_batch(QueueUrl=url(queue), Entries=entries)
        assert not out.get("Failed"), out["Failed"]


def sink():
    """The records the function saw: body -> receive counts, in order."""
    seen = defaultdict(list)
    order = []
    try:
        with open(SINK) as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # a line being written
                r = json.loads(line)
                seen[r["body"]].append(r["n"])
                order.append(r)
    except FileNotFoundError:
        pass
    return seen, order


def wait(what, cond):
    e2elib.wait(what, cond, DEADLINE)


def empty(queue):
    a = sqs.get_queue_attributes(QueueUrl=url(queue), AttributeNames=["All"])["Attributes"]
    n = int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
    return n == 0, "%d messages left in %s" % (n, queue)


def work(i):
    return json.dumps({"kind": "work", "i": i})


def send():
    t = time.time()
    bodies = [work(i) for i in range(N)] + [json.dumps({"kind": "skip", "i": i}) for i in range(SKIPPED)]
    send_all("bulk", bodies)
    print("ok   sent %d messages to bulk in %.1fs" % (len(bodies), time.time() - t))
    send_all("partial", ["fail-once-%d" % i if i % 4 == 0 else "fine-%d" % i for i in range(20)])
    sqs.send_message(QueueUrl=url("poison"), MessageBody="poison-pill")
    for i in range(10):
        for g in range(3):
            sqs.send_message(QueueUrl=url("orders.fifo"), MessageBody="g%d-%03d" % (g, i), MessageGroupId="g%d" % g)
    print("ok   sent partial, poison and fifo messages")


def verify():
    def all_work():
        seen, _ = sink()
        missing = [i for i in range(N) if work(i) not in seen]
        return not missing, "%d of %d work messages not processed (first %s)" % (len(missing), N, missing[:3])
    wait("every bulk work message processed at least once", all_work)
    wait("bulk queue empty (filtered messages deleted, not left)", lambda: empty("bulk"))
    seen, order = sink()
    skipped = [b for b in seen if '"skip"' in b]
    assert not skipped, "filtered messages were delivered: %s" % skipped[:3]
    print("ok   no filtered message delivered")

    def partial():
        seen, _ = sink()
        fails = ["fail-once-%d" % i for i in range(0, 20, 4)]
        return all(len(seen.get(b, [])) >= 2 for b in fails), {b: seen.get(b) for b in fails}
    wait("partial batch failures retried", partial)
    wait("partial queue empty", lambda: empty("partial"))
    seen, _ = sink()
    for i in range(20):
        b = "fail-once-%d" % i if i % 4 == 0 else "fine-%d" % i
        counts = seen[b]
        if i % 4 == 0:
            assert counts[:2] == [1, 2], (b, counts)
        else:
            assert counts == [1], "%s was processed %s times: only failed items are retried" % (b, counts)
    print("ok   only the failed items came back")

    def dlq():
        out = sqs.receive_message(QueueUrl=url("poison-dlq"), WaitTimeSeconds=1, AttributeNames=["All"])
        msgs = out.get("Messages", [])
        return bool(msgs) and msgs[0]["Body"] == "poison-pill", msgs
    wait("poison message in the dead-letter queue", dlq)
    seen, _ = sink()
    assert seen["poison-pill"][:2] == [1, 2], seen["poison-pill"]
    assert max(seen["poison-pill"]) <= 2, "poison received after maxReceiveCount: %s" % seen["poison-pill"]
    wait("poison queue empty", lambda: empty("poison"))

    def fifo():
        _, order = sink()
        got = [r["body"] for r in order if r["body"].startswith("g")]
        return len(set(got)) == 30, "%d of 30 fifo messages" % len(set(got))
    wait("every fifo message processed", fifo)
    _, order = sink()
    for g in range(3):
        firsts = []
        for r in order:
            if r["body"].startswith("g%d-" % g) and r["body"] not in firsts:
                firsts.append(r["body"])
        assert firsts == sorted(firsts), "group g%d out of order: %s" % (g, firsts)
    print("ok   fifo order kept per group")


def crash_send():
    t = time.time()
    send_all("crash", ["crash-%d" % i for i in range(N)])
    print("ok   sent %d messages to crash in %.1fs" % (N, time.time() - t))


def crash_verify():
    def all_crash():
        seen, _ = sink()
        missing = [i for i in range(N) if "crash-%d" % i not in seen]
        return not missing, "%d of %d crash messages not processed (first %s)" % (len(missing), N, missing[:3])
    wait("every crash message processed at least once across the kill", all_crash)
    wait("crash queue empty", lambda: empty("crash"))
    seen, _ = sink()
    again = sum(1 for i in range(N) if len(seen["crash-%d" % i]) > 1)
    print("ok   %d of %d messages were processed more than once (at least once)" % (again, N))


{"send": send, "verify": verify, "crash-send": crash_send, "crash-verify": crash_verify}[sys.argv[1]]()
