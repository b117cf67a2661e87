"""The function of the stream mapping checks: for each Kinesis record (data:
{"key", "n", "poison"}) it appends one JSON line to $SINK, one write per
batch; a batch holding a poison record fails whole, writing nothing. A batch
of the crash stream takes 50 ms more after its write, so that the test
kills kiln up while records are in flight (written, not yet checkpointed)."""
import base64
import json
import os
import time


def handler(event, context):
    lines = []
    for r in event["Records"]:
        k = r["kinesis"]
        assert r["eventSource"] == "aws:kinesis" and r["eventName"] == "aws:kinesis:record", r
        assert r["eventID"] == "%s:%s" % (r["eventID"].split(":")[0], k["sequenceNumber"]), r
        assert k["kinesisSchemaVersion"] == "1.0" and k["approximateArrivalTimestamp"] > 0, r
        d = json.loads(base64.b64decode(k["data"]))
        if d.get("poison"):
            raise RuntimeError("poison record %s" % k["sequenceNumber"])
        lines.append(json.dumps({"stream": r["eventSourceARN"].split("/")[-1], "key": k["partitionKey"],
                                 "n": d["n"], "seq": k["sequenceNumber"]}) + "\n")
    with open(os.environ["SINK"], "a") as f:
        f.write("".join(lines))
    if event["Records"] and event["Records"][0]["eventSourceARN"].endswith("/crash"):
        time.sleep(0.05)
