"""The function of the event source mapping checks: it appends one JSON line
per record to $SINK, fails a batch holding a poison pill, and reports the
first delivery of each fail-once message as a batch item failure."""
import json
import os


def handler(event, context):
    failures = []
    lines = []
    poison = False
    for r in event["Records"]:
        assert r["eventSource"] == "aws:sqs" and r["md5OfBody"] and r["receiptHandle"], r
        n = int(r["attributes"]["ApproximateReceiveCount"])
        lines.append(json.dumps({"body": r["body"], "n": n, "group": r["attributes"].get("MessageGroupId")}) + "\n")
        if r["body"].startswith("poison"):
            poison = True
        if r["body"].startswith("fail-once") and n == 1:
            failures.append({"itemIdentifier": r["messageId"]})
    with open(os.environ["SINK"], "a") as f:
        f.write("".join(lines))
    if poison:
        raise RuntimeError("poison pill")
    return {"batchItemFailures": failures}
