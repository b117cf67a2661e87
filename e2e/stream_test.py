"""boto3's invoke_with_response_stream against Kiln: the event stream of a
Node streaming function, chunk by chunk, and InvokeComplete with the error
of a function that fails mid-stream. Usage: stream_test.py ENDPOINT FUNCTION"""
import sys

import boto3

endpoint, function = sys.argv[1], sys.argv[2]
client = boto3.client("lambda", endpoint_url=endpoint)

for payload, want_error in ((b"{}", None), (b'{"fail":true}', "Error")):
    resp = client.invoke_with_response_stream(FunctionName=function, Payload=payload, LogType="Tail")
    assert resp["StatusCode"] == 200, resp
    assert resp["ExecutedVersion"] == "$LATEST", resp
    chunks, complete = [], None
    for event in resp["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append(event["PayloadChunk"]["Payload"])
        elif "InvokeComplete" in event:
            complete = event["InvokeComplete"]
    assert b"".join(chunks) == b"chunk 0\nchunk 1\n", chunks
    assert len(chunks) >= 2, chunks  # written 2 s apart: two events at least
    assert complete is not None, "no InvokeComplete"
    assert complete.get("ErrorCode") == want_error, complete
    assert complete.get("LogResult"), complete
    if want_error:
        assert "failed mid-stream" in complete.get("ErrorDetails", ""), complete
print("boto3 invoke_with_response_stream: ok")
