#!/usr/bin/python3
"""End-to-end checks of a running `kiln up` with Debian's boto3.

Run by e2e_test.go with /usr/bin/python3 and:
  ENDPOINT                                  http://127.0.0.1:PORT of kiln up
  AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE   the files kiln up wrote
  KILN_ACCESS_KEY_ID                        the key kiln up was started with
  GO_ZIP GO_V2_ZIP PY_ZIP NODE_ESM_ZIP NODE_CJS_ZIP EVIL_ZIP   deployment packages
  NODE_RUNTIME                              nodejsN.x of /usr/bin/node, empty without node

Each check is a function with plain asserts; they run in order (later ones
use the functions earlier ones created). Prints one line per check and a
summary "N passed, M failed"; exits non-zero if any failed.
"""

import base64
import collections
import hashlib
import json
import os
import sys
import time
import traceback
import urllib.request

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["ENDPOINT"]
ROLE = "arn:aws:iam::123456789012:role/kiln-e2e"
NODE_RUNTIME = os.environ.get("NODE_RUNTIME", "")
PYTHON_RUNTIME = "python3.11"


def read(name):
    with open(os.environ[name], "rb") as f:
        return f.read()


ZIPS = {name: read(name) for name in ("GO_ZIP", "GO_V2_ZIP", "PY_ZIP", "NODE_ESM_ZIP", "NODE_CJS_ZIP", "EVIL_ZIP")}

# One attempt per call, so that every error Kiln answers reaches the checks;
# generous timeouts for a loaded machine.
CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=120)
session = boto3.session.Session()
lam = session.client("lambda", endpoint_url=ENDPOINT, config=CONFIG)
# botocore checks MemorySize >= 128 itself; with that off, Kiln must.
unchecked = session.client("lambda", endpoint_url=ENDPOINT, config=CONFIG.merge(Config(parameter_validation=False)))
REGION = lam.meta.region_name
WAITERS = set(lam.waiter_names)
WAITER_CONFIG = {"Delay": 1, "MaxAttempts": 60}


def sha256b64(b):
    return base64.b64encode(hashlib.sha256(b).digest()).decode()


def payload_of(resp):
    raw = resp["Payload"].read()
    try:
        return json.loads(raw)
    except ValueError:
        raise AssertionError("response payload is not JSON: %r" % raw[:300])


def invoke(name, event=None, **kw):
    """Invoke synchronously; return (response, decoded payload)."""
    if event is not None:
        kw["Payload"] = json.dumps(event).encode()
    resp = lam.invoke(FunctionName=name, **kw)
    assert resp["StatusCode"] == 200, "invoke %s: StatusCode %s" % (name, resp["StatusCode"])
    return resp, payload_of(resp)


def tail(resp):
    assert "LogResult" in resp, "no LogResult with LogType=Tail: %s" % sorted(resp)
    return base64.b64decode(resp["LogResult"]).decode("utf-8", "replace")


def client_error(code, status, fn, *args, **kw):
    """fn(*args, **kw) must raise ClientError code with HTTP status; returns it."""
    try:
        resp = fn(*args, **kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert got == code, "%s: error %s (%s), want %s" % (fn.__name__, got, e, code)
        assert got_status == status, "%s: %s with HTTP %s, want %s" % (fn.__name__, code, got_status, status)
        assert e.response["Error"].get("Message"), "%s: %s without a message" % (fn.__name__, code)
        return e
    resp.pop("ResponseMetadata", None)
    if "Payload" in resp:
        resp["Payload"] = resp["Payload"].read()[:300]
    raise AssertionError("%s succeeded, want %s: %r" % (fn.__name__, code, resp))


def wait(waiter, name):
    """Use botocore's waiter when this botocore has it; poll State otherwise."""
    if waiter in WAITERS:
        lam.get_waiter(waiter).wait(FunctionName=name, WaiterConfig=WAITER_CONFIG)
        return
    field, want = {"function_active_v2": ("State", "Active"),
                   "function_updated_v2": ("LastUpdateStatus", "Successful")}[waiter]
    for _ in range(60):
        if lam.get_function(FunctionName=name)["Configuration"].get(field) == want:
            return
        time.sleep(1)
    raise AssertionError("%s: %s never became %s" % (name, field, want))


def create(name, runtime, handler, zip_name, **kw):
    resp = lam.create_function(FunctionName=name, Runtime=runtime, Handler=handler, Role=ROLE,
                               Code={"ZipFile": ZIPS[zip_name]}, **kw)
    assert resp["FunctionName"] == name and resp["Runtime"] == runtime and resp["Handler"] == handler, resp
    assert resp["FunctionArn"] == "arn:aws:lambda:%s:%s:function:%s" % (REGION, resp["FunctionArn"].split(":")[4], name), resp["FunctionArn"]
    assert resp["CodeSha256"] == sha256b64(ZIPS[zip_name]), "CodeSha256 %s is not the zip's" % resp["CodeSha256"]
    assert resp["Version"] == "$LATEST", resp["Version"]
    assert resp.get("State") in ("Pending", "Active"), "State %r" % resp.get("State")
    wait("function_active_v2", name)
    return resp


CLIENT_CONTEXT = base64.b64encode(json.dumps(
    {"custom": {"tenant": "t1"}, "client": {"app_title": "e2e"}, "env": {"locale": "en"}}).encode()).decode()

# ------------------------------------------------------------------ checks

checks = []


def check(fn):
    checks.append(fn)
    return fn


NODE_FUNCTIONS = [
    ("b3-node-esm", "index.handler", "NODE_ESM_ZIP"),
    ("b3-node-async", "index.handler", "NODE_CJS_ZIP"),
    ("b3-node-cb", "index.callback", "NODE_CJS_ZIP"),
    ("b3-node-cberr", "index.callbackError", "NODE_CJS_ZIP"),
]


@check
def create_functions_and_wait_active():
    create("b3-go", "provided.al2023", "bootstrap", "GO_ZIP", Timeout=10)
    create("b3-py", PYTHON_RUNTIME, "app.handler", "PY_ZIP",
           Environment={"Variables": {"GREETING": "hello from boto3"}}, Description="boto3 python")
    create("b3-py-fail", PYTHON_RUNTIME, "app.fail", "PY_ZIP")
    if NODE_RUNTIME:
        for name, handler, zip_name in NODE_FUNCTIONS:
            create(name, NODE_RUNTIME, handler, zip_name)
    cfg = lam.get_function_configuration(FunctionName="b3-py")
    assert cfg["State"] == "Active" and cfg["MemorySize"] == 128 and cfg["Timeout"] == 3, cfg
    assert cfg["Environment"]["Variables"] == {"GREETING": "hello from boto3"}, cfg.get("Environment")
    assert cfg["Description"] == "boto3 python", cfg["Description"]


@check
def invoke_python_with_context_client_context_and_tail():
    resp, out = invoke("b3-py", {"from": "boto3", "n": 1}, InvocationType="RequestResponse",
                       LogType="Tail", ClientContext=CLIENT_CONTEXT)
    assert resp["ExecutedVersion"] == "$LATEST", resp["ExecutedVersion"]
    assert "FunctionError" not in resp, resp["FunctionError"]
    assert out["event"] == {"from": "boto3", "n": 1}, out
    assert out["functionName"] == "b3-py" and out["functionVersion"] == "$LATEST", out
    assert out["invokedFunctionArn"].endswith(":function:b3-py"), out["invokedFunctionArn"]
    assert out["memoryLimitInMB"] == "128", out["memoryLimitInMB"]
    assert out["logGroupName"] == "/aws/lambda/b3-py" and out["logStreamName"], out
    assert 0 < out["remainingMs"] <= 3000, "remaining time %s of a 3 s timeout" % out["remainingMs"]
    assert out["clientCustom"] == {"tenant": "t1"}, "ClientContext custom: %r" % out["clientCustom"]
    assert out["greeting"] == "hello from boto3" and out["python"] == "3.11", out
    # The invocation's request id is the API response's x-amzn-RequestId and the log's.
    rid = out["requestId"]
    assert rid and resp["ResponseMetadata"]["RequestId"] == rid, \
        "context.aws_request_id %s, x-amzn-RequestId %s" % (rid, resp["ResponseMetadata"]["RequestId"])
    log = tail(resp)
    for want in ("START RequestId: " + rid, "END RequestId: " + rid, "REPORT RequestId: " + rid,
                 'python handler got {"from": "boto3", "n": 1}'):
        assert want in log, "log tail lacks %r:\n%s" % (want, log)


@check
def event_invokes_between_sync_ones():
    # Right after a sync invoke, kiln up hands an Event invoke's connection to
    # its event frontend process, which hands it back for the next sync one:
    # one boto3 client, one connection, requests alternating.
    marker = "evt-%d" % time.time_ns()
    for i in range(6):
        invoke("b3-py", {"sync": i})
        resp = lam.invoke(FunctionName="b3-py", InvocationType="Event",
                          Payload=json.dumps({"marker": marker, "i": i}).encode())
        assert resp["StatusCode"] == 202, "Event invoke: StatusCode %s" % resp["StatusCode"]
        assert resp["ResponseMetadata"]["RequestId"], resp["ResponseMetadata"]
    logs = session.client("logs", endpoint_url=ENDPOINT, config=CONFIG)
    seen = set()
    deadline = time.time() + 120  # async runs, cold starts and log ingestion, on a loaded host
    while len(seen) < 6 and time.time() < deadline:
        for page in logs.get_paginator("filter_log_events").paginate(logGroupName="/aws/lambda/b3-py"):
            for e in page["events"]:
                if marker in e["message"]:
                    seen.add(json.loads(e["message"].split("python handler got ", 1)[1])["i"])
        time.sleep(0.2)
    assert seen == set(range(6)), "events that ran: %s of 0..5" % sorted(seen)


@check
def python_function_error():
    resp, out = invoke("b3-py-fail", {"why": "boto3"}, LogType="Tail")
    assert resp.get("FunctionError") == "Unhandled", "FunctionError %r" % resp.get("FunctionError")
    assert out["errorType"] == "ValueError", out
    assert out["errorMessage"] == "bad input: boto3", out
    st = out["stackTrace"]
    assert isinstance(st, list) and st and all(isinstance(s, str) for s in st), "stackTrace %r" % st
    assert any("app.py" in s and "fail" in s for s in st), "stackTrace does not show app.py's fail: %r" % st
    log = tail(resp)
    assert "about to fail" in log and "REPORT RequestId" in log, log
    # The function keeps serving.
    resp, out = invoke("b3-py-fail", {"why": "again"})
    assert out["errorMessage"] == "bad input: again", out


@check
def node_async_and_callback_handlers():
    if not NODE_RUNTIME:
        print("     (skipped: no /usr/bin/node)")
        return
    resp, out = invoke("b3-node-esm", {"from": "boto3"}, ClientContext=CLIENT_CONTEXT, LogType="Tail")
    assert out["runtime"] == "node-esm" and out["event"] == {"from": "boto3"}, out
    assert out["functionName"] == "b3-node-esm" and out["functionVersion"] == "$LATEST", out
    assert out["invokedFunctionArn"].endswith(":function:b3-node-esm") and out["memoryLimitInMB"] == "128", out
    assert out["clientCustom"] == {"tenant": "t1"}, out["clientCustom"]
    assert 0 < out["remainingMs"] <= 3000, out["remainingMs"]
    assert out["requestId"] == resp["ResponseMetadata"]["RequestId"], out["requestId"]
    assert "node esm handler got" in tail(resp)

    resp, out = invoke("b3-node-async", {"k": "async"})
    assert out == {"event": {"k": "async"}, "runtime": "node-async", "functionName": "b3-node-async"}, out
    resp, out = invoke("b3-node-cb", {"k": "callback"})
    assert out["runtime"] == "node-callback" and out["event"] == {"k": "callback"} and out["requestId"], out
    resp, out = invoke("b3-node-cberr", {"why": "boto3"})
    assert resp.get("FunctionError") == "Unhandled", resp.get("FunctionError")
    assert out["errorType"] == "TypeError" and out["errorMessage"] == "callback failed: boto3", out
    assert isinstance(out.get("trace", out.get("stackTrace")), list), "no stack trace: %r" % out


@check
def go_function_context_and_empty_payload():
    resp, out = invoke("b3-go", {"action": "context"}, ClientContext=CLIENT_CONTEXT)
    assert out["functionName"] == "b3-go" and out["version"] == "$LATEST" and out["memory"] == 128, out
    assert out["clientCustom"] == {"tenant": "t1"}, out
    assert 0 < out["remainingMs"] <= 10000, out["remainingMs"]
    resp = lam.invoke(FunctionName="b3-go")
    assert payload_of(resp) == {}, "no Payload is {}"


@check
def update_code_publish_and_code_location():
    resp = lam.update_function_code(FunctionName="b3-go", ZipFile=ZIPS["GO_V2_ZIP"], Publish=True)
    assert resp["CodeSha256"] == sha256b64(ZIPS["GO_V2_ZIP"]), resp["CodeSha256"]
    assert resp["Version"] == "1", "update_function_code Publish=True: Version %r" % resp["Version"]
    wait("function_updated_v2", "b3-go")
    _, out = invoke("b3-go", {"action": "version"})
    assert out == "v2", out
    _, out = invoke("b3-go", {"action": "version"}, Qualifier="1")
    assert out == "v2", out
    got = lam.get_function(FunctionName="b3-go")
    with urllib.request.urlopen(got["Code"]["Location"], timeout=60) as r:
        code = r.read()
    assert sha256b64(code) == got["Configuration"]["CodeSha256"] == sha256b64(ZIPS["GO_V2_ZIP"]), \
        "downloaded code does not match CodeSha256"
    got = lam.get_function(FunctionName="b3-go", Qualifier="1")
    assert got["Configuration"]["Version"] == "1" and got["Configuration"]["FunctionArn"].endswith(":b3-go:1"), got["Configuration"]


@check
def versions_qualifiers_and_unchanged_publish():
    before = lam.get_function_configuration(FunctionName="b3-py")["RevisionId"]
    v1 = lam.publish_version(FunctionName="b3-py", Description="one")
    assert v1["Version"] == "1", v1["Version"]
    # botocore's function_updated waiter on a version (LastUpdateStatus);
    # publishing gave $LATEST a new RevisionId, as Lambda does.
    lam.get_waiter("function_updated").wait(FunctionName="b3-py", Qualifier="1", WaiterConfig=WAITER_CONFIG)
    after = lam.get_function_configuration(FunctionName="b3-py")["RevisionId"]
    assert after != before, "PublishVersion left $LATEST's RevisionId %s" % before
    resp = lam.update_function_configuration(FunctionName="b3-py", Environment={"Variables": {"GREETING": "v2"}})
    assert resp["Environment"]["Variables"] == {"GREETING": "v2"}, resp
    wait("function_updated_v2", "b3-py")
    v2 = lam.publish_version(FunctionName="b3-py", CodeSha256=sha256b64(ZIPS["PY_ZIP"]))
    assert v2["Version"] == "2", v2["Version"]
    # Nothing changed since version 2: Lambda returns it instead of a new one.
    again = lam.publish_version(FunctionName="b3-py")
    assert again["Version"] == "2", "publish with nothing changed made version %s" % again["Version"]
    for qualifier, greeting in (("1", "hello from boto3"), ("2", "v2"), ("$LATEST", "v2")):
        resp, out = invoke("b3-py", {"q": qualifier}, Qualifier=qualifier)
        assert resp["ExecutedVersion"] == qualifier and out["functionVersion"] == qualifier, (qualifier, resp["ExecutedVersion"], out)
        assert out["greeting"] == greeting, (qualifier, out["greeting"])
        if qualifier != "$LATEST":
            assert out["invokedFunctionArn"].endswith(":function:b3-py:" + qualifier), out["invokedFunctionArn"]
    resp, out = invoke("b3-py:1", {})
    assert resp["ExecutedVersion"] == "1", resp["ExecutedVersion"]


@check
def aliases_with_weights():
    alias = lam.create_alias(FunctionName="b3-py", Name="canary", FunctionVersion="1", Description="half and half",
                             RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    assert alias["AliasArn"].endswith(":function:b3-py:canary") and alias["FunctionVersion"] == "1", alias
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}, alias.get("RoutingConfig")
    got = lam.get_alias(FunctionName="b3-py", Name="canary")
    assert got["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.5} and got["RevisionId"] == alias["RevisionId"], got
    seen = collections.Counter()
    for _ in range(30):
        resp, out = invoke("b3-py", {}, Qualifier="canary")
        seen[resp["ExecutedVersion"]] += 1
        assert out["functionVersion"] == resp["ExecutedVersion"], out
        assert out["invokedFunctionArn"].endswith(":function:b3-py:canary"), out["invokedFunctionArn"]
    assert set(seen) == {"1", "2"}, "versions run through a 50%% alias in 30 invokes: %s" % dict(seen)
    print("     (30 invokes of b3-py:canary ran %s)" % dict(sorted(seen.items())))

    upd = lam.update_alias(FunctionName="b3-py", Name="canary", FunctionVersion="2",
                           RoutingConfig={"AdditionalVersionWeights": {}}, RevisionId=alias["RevisionId"])
    assert upd["FunctionVersion"] == "2" and not (upd.get("RoutingConfig") or {}).get("AdditionalVersionWeights"), upd
    assert upd["RevisionId"] != alias["RevisionId"], "update_alias kept the RevisionId"
    for _ in range(5):
        resp, _ = invoke("b3-py:canary", {})
        assert resp["ExecutedVersion"] == "2", resp["ExecutedVersion"]
    lam.create_alias(FunctionName="b3-py", Name="stable", FunctionVersion="1")
    names = [a["Name"] for a in lam.list_aliases(FunctionName="b3-py")["Aliases"]]
    assert sorted(names) == ["canary", "stable"], names
    only1 = lam.list_aliases(FunctionName="b3-py", FunctionVersion="1")["Aliases"]
    assert [a["Name"] for a in only1] == ["stable"], only1
    client_error("PreconditionFailedException", 412, lam.update_alias, FunctionName="b3-py", Name="canary",
                 FunctionVersion="1", RevisionId=alias["RevisionId"])
    client_error("ResourceConflictException", 409, lam.create_alias, FunctionName="b3-py", Name="stable", FunctionVersion="2")
    client_error("ResourceNotFoundException", 404, lam.get_alias, FunctionName="b3-py", Name="ghost")
    client_error("ResourceNotFoundException", 404, lam.create_alias, FunctionName="b3-py", Name="nine", FunctionVersion="9")
    # Lambda keeps a version an alias points to.
    client_error("ResourceConflictException", 409, lam.delete_function, FunctionName="b3-py", Qualifier="1")
    lam.delete_alias(FunctionName="b3-py", Name="stable")
    client_error("ResourceNotFoundException", 404, lam.get_alias, FunctionName="b3-py", Name="stable")


@check
def paginators_page_size_1():
    pages = list(lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 1}))
    names = [f["FunctionName"] for p in pages for f in p["Functions"]]
    ours = {"b3-go", "b3-py", "b3-py-fail"} | ({n for n, _, _ in NODE_FUNCTIONS} if NODE_RUNTIME else set())
    assert all(len(p["Functions"]) <= 1 for p in pages), [len(p["Functions"]) for p in pages]
    assert len(names) == len(set(names)), "a function listed twice: %s" % names
    assert ours <= set(names), "missing from list_functions: %s" % (ours - set(names))
    assert len(pages) >= len(names) >= 3, "%d pages for %d functions" % (len(pages), len(names))
    assert all("NextMarker" in p for p in pages[:-1]), "a page before the last lacks NextMarker"
    full = lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}).build_full_result()
    assert sorted(f["FunctionName"] for f in full["Functions"]) == sorted(names), "page size 2 lists other functions"

    pages = list(lam.get_paginator("list_versions_by_function").paginate(
        FunctionName="b3-py", PaginationConfig={"PageSize": 1}))
    versions = [v["Version"] for p in pages for v in p["Versions"]]
    assert versions == ["$LATEST", "1", "2"], "versions %s" % versions
    assert len(pages) >= 3 and all(len(p["Versions"]) <= 1 for p in pages), [len(p["Versions"]) for p in pages]
    got = lam.list_versions_by_function(FunctionName="b3-py", MaxItems=2)
    assert [v["Version"] for v in got["Versions"]] == ["$LATEST", "1"] and got.get("NextMarker"), got
    got = lam.list_versions_by_function(FunctionName="b3-py", Marker=got["NextMarker"])
    assert [v["Version"] for v in got["Versions"]] == ["2"], got["Versions"]


@check
def waiters_function_updated_v2():
    if "function_updated_v2" not in WAITERS:
        print("     (this botocore has no function_updated_v2 waiter; polled LastUpdateStatus)")
    resp = lam.update_function_configuration(FunctionName="b3-go", MemorySize=256, Timeout=15)
    assert resp["MemorySize"] == 256 and resp["Timeout"] == 15, resp
    assert resp.get("LastUpdateStatus") in ("InProgress", "Successful"), resp.get("LastUpdateStatus")
    wait("function_updated_v2", "b3-go")
    cfg = lam.get_function_configuration(FunctionName="b3-go")
    assert cfg["LastUpdateStatus"] == "Successful" and cfg["MemorySize"] == 256, cfg
    _, out = invoke("b3-go", {"action": "context"})
    assert out["memory"] == 256 and out["remainingMs"] > 10000, out


@check
def error_not_found():
    client_error("ResourceNotFoundException", 404, lam.invoke, FunctionName="b3-missing", Payload=b"{}")
    client_error("ResourceNotFoundException", 404, lam.invoke, FunctionName="b3-py", Qualifier="99")
    client_error("ResourceNotFoundException", 404, lam.invoke, FunctionName="b3-py:ghost")
    client_error("ResourceNotFoundException", 404, lam.get_function, FunctionName="b3-missing")
    client_error("ResourceNotFoundException", 404, lam.get_function_configuration, FunctionName="b3-missing")
    client_error("ResourceNotFoundException", 404, lam.update_function_configuration, FunctionName="b3-missing", Timeout=5)
    client_error("ResourceNotFoundException", 404, lam.publish_version, FunctionName="b3-missing")
    client_error("ResourceNotFoundException", 404, lam.list_versions_by_function, FunctionName="b3-missing")


@check
def error_function_arn_of_another_region():
    # Lambda: 404 ResourceNotFoundException "Functions from 'eu-west-1' are
    # not reachable in this region ('us-east-1')", for invokes and management calls.
    other = "eu-west-1" if REGION != "eu-west-1" else "us-west-2"
    arn = lam.get_function(FunctionName="b3-py")["Configuration"]["FunctionArn"].replace(":%s:" % REGION, ":%s:" % other, 1)
    problems = []
    for fn, kw in ((lam.invoke, {"Payload": b'{"region": "other"}'}), (lam.get_function, {}), (lam.get_function_configuration, {})):
        try:
            client_error("ResourceNotFoundException", 404, fn, FunctionName=arn, **kw)
        except AssertionError as e:
            problems.append("%s(FunctionName=%s): %s" % (fn.__name__, arn, e))
    assert not problems, "\n  ".join(problems)


@check
def error_invalid_parameters():
    base = dict(Role=ROLE, Runtime=PYTHON_RUNTIME, Handler="app.handler", Code={"ZipFile": ZIPS["PY_ZIP"]})
    client_error("ValidationException", 400, unchecked.create_function, FunctionName="b3-small", MemorySize=64, **base)
    client_error("ValidationException", 400, lam.create_alias, FunctionName="b3-py", Name="2024", FunctionVersion="1")
    client_error("ValidationException", 400, lam.list_functions, FunctionVersion="ALLX")
    client_error("ValidationException", 400, lam.invoke, FunctionName="b3-py", LogType="Everything")
    client_error("InvalidParameterValueException", 400, lam.create_function, FunctionName="b3-cobol",
                 **dict(base, Runtime="cobol"))
    client_error("InvalidParameterValueException", 400, lam.create_function, FunctionName="b3-evil",
                 **dict(base, Runtime="provided.al2023", Handler="bootstrap", Code={"ZipFile": ZIPS["EVIL_ZIP"]}))
    client_error("InvalidParameterValueException", 400, lam.create_function, FunctionName="b3-notzip",
                 **dict(base, Code={"ZipFile": b"this is not a zip file"}))
    client_error("InvalidParameterValueException", 400, lam.update_function_code, FunctionName="b3-go", ZipFile=ZIPS["EVIL_ZIP"])
    for name in ("b3-small", "b3-cobol", "b3-evil", "b3-notzip"):
        client_error("ResourceNotFoundException", 404, lam.get_function, FunctionName=name)
    client_error("InvalidParameterValueException", 400, lam.publish_version, FunctionName="b3-py",
                 CodeSha256=sha256b64(b"other code"))
    client_error("InvalidRequestContentException", 400, lam.invoke, FunctionName="b3-py", Payload=b"not json")


@check
def error_conflict_and_precondition():
    client_error("ResourceConflictException", 409, lam.create_function, FunctionName="b3-py", Role=ROLE,
                 Runtime=PYTHON_RUNTIME, Handler="app.handler", Code={"ZipFile": ZIPS["PY_ZIP"]})
    rev = lam.get_function_configuration(FunctionName="b3-py-fail")["RevisionId"]
    new = lam.update_function_configuration(FunctionName="b3-py-fail", Description="bumped", RevisionId=rev)
    assert new["RevisionId"] != rev, "RevisionId unchanged by an update"
    wait("function_updated_v2", "b3-py-fail")
    client_error("PreconditionFailedException", 412, lam.update_function_configuration, FunctionName="b3-py-fail",
                 Timeout=5, RevisionId=rev)
    client_error("PreconditionFailedException", 412, lam.update_function_code, FunctionName="b3-py-fail",
                 ZipFile=ZIPS["PY_ZIP"], RevisionId=rev)
    client_error("PreconditionFailedException", 412, lam.publish_version, FunctionName="b3-py-fail", RevisionId=rev)


@check
def error_credentials():
    creds = session.get_credentials()
    assert creds.access_key == os.environ["KILN_ACCESS_KEY_ID"], "credentials file has key %s" % creds.access_key
    bad = boto3.client("lambda", endpoint_url=ENDPOINT, config=CONFIG, region_name=REGION,
                       aws_access_key_id=creds.access_key, aws_secret_access_key="wrong-secret-key")
    client_error("InvalidSignatureException", 403, bad.invoke, FunctionName="b3-py", Payload=b"{}")
    client_error("InvalidSignatureException", 403, bad.list_functions)
    unknown = boto3.client("lambda", endpoint_url=ENDPOINT, config=CONFIG, region_name=REGION,
                           aws_access_key_id="AKIAUNKNOWNKEY000000", aws_secret_access_key="whatever")
    client_error("UnrecognizedClientException", 403, unknown.invoke, FunctionName="b3-py", Payload=b"{}")
    client_error("UnrecognizedClientException", 403, unknown.get_function, FunctionName="b3-py")


@check
def error_throttled_by_reserved_concurrency_0():
    resp = lam.put_function_concurrency(FunctionName="b3-go", ReservedConcurrentExecutions=0)
    assert resp["ReservedConcurrentExecutions"] == 0, resp
    assert lam.get_function_concurrency(FunctionName="b3-go").get("ReservedConcurrentExecutions") == 0
    # The change reaches counting through the metadata watch: allow it time.
    deadline = time.time() + 60
    while True:
        try:
            lam.invoke(FunctionName="b3-go", Payload=b"{}")
        except ClientError as e:
            if e.response["Error"]["Code"] == "TooManyRequestsException":
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429, e.response["ResponseMetadata"]
                assert e.response.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded", \
                    "throttle Reason %r in %r" % (e.response.get("Reason"), e.response)
                break
            raise
        assert time.time() < deadline, "invokes not throttled 60 s after reserved concurrency 0"
        time.sleep(0.2)
    lam.delete_function_concurrency(FunctionName="b3-go")
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="b3-go")
    deadline = time.time() + 60
    while True:
        try:
            invoke("b3-go", {"back": True})
            break
        except ClientError as e:
            assert e.response["Error"]["Code"] == "TooManyRequestsException", e
            assert time.time() < deadline, "still throttled 60 s after delete_function_concurrency"
            time.sleep(0.2)


@check
def error_request_too_large():
    big = json.dumps({"blob": "x" * (7 * 1024 * 1024)}).encode()
    client_error("RequestEntityTooLargeException", 413, lam.invoke, FunctionName="b3-go", Payload=big)
    # Kiln keeps serving on the same client afterwards.
    _, out = invoke("b3-go", {"after": "big"})
    assert out == {"after": "big"}, out


@check
def delete_versions_and_functions():
    lam.delete_function(FunctionName="b3-py", Qualifier="1")
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName="b3-py")["Versions"]]
    assert versions == ["$LATEST", "2"], versions
    client_error("ResourceNotFoundException", 404, lam.invoke, FunctionName="b3-py", Qualifier="1")
    resp, _ = invoke("b3-py:canary", {})
    assert resp["ExecutedVersion"] == "2", resp["ExecutedVersion"]
    lam.delete_function(FunctionName="b3-py-fail")
    client_error("ResourceNotFoundException", 404, lam.get_function, FunctionName="b3-py-fail")
    client_error("ResourceNotFoundException", 404, lam.invoke, FunctionName="b3-py-fail", Payload=b"{}")
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert "b3-py-fail" not in names and "b3-py" in names, names


def main():
    print("boto3 %s, botocore %s, endpoint %s, region %s" % (boto3.__version__, botocore.__version__, ENDPOINT, REGION))
    passed = failed = 0
    for fn in checks:
        start = time.time()
        try:
            fn()
        except Exception as e:  # AssertionError, ClientError, anything
            failed += 1
            if isinstance(e, AssertionError):
                frame = traceback.extract_tb(e.__traceback__)[-1]
                detail = "     at %s:%d: %s\n" % (os.path.basename(frame.filename), frame.lineno, frame.line)
            else:
                detail = traceback.format_exc()
            print("FAIL %s (%.1fs): %s\n%s" % (fn.__name__, time.time() - start, e, detail), flush=True)
            if fn is checks[0]:
                break  # nothing else can work without the functions
        else:
            passed += 1
            print("ok   %s (%.1fs)" % (fn.__name__, time.time() - start), flush=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
