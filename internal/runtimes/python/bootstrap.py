"""Kiln's Python runtime interface client.

Started by Kiln as `python3.X bootstrap.py` inside a function's sandbox.  It
talks to the Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API, imports the user's
handler named by $_HANDLER ("module.function") from $LAMBDA_TASK_ROOT and calls
it once per invocation, the way Lambda's managed python3.x runtimes do.

Only the standard library is used, and as little of it as possible: cold start
time matters, so the Runtime API is spoken over a single raw keep-alive socket
(http.client alone would pull in the email package and ssl, roughly doubling the
interpreter's start-up time), `traceback` is imported only when an error has to
be reported, and `logging` is configured only if something imports it.
"""

import json
import os
import socket
import sys
import time

_API_PREFIX = "/2018-06-01/runtime"
_USER_AGENT = "kiln-runtime-python/%d.%d" % sys.version_info[:2]
_THIS_FILE = __file__

# Request id of the invocation being run (or last run).  The logging handler
# stamps it on every record as `aws_request_id`, as Lambda's does.
_request_id = ""


class _APIError(Exception):
    """The Runtime API went away or answered in a way we cannot continue from."""


class _RuntimeAPI:
    """A minimal HTTP/1.1 client on one persistent connection."""

    def __init__(self, address):
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise _APIError("bad AWS_LAMBDA_RUNTIME_API %r" % address)
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self.host_header = address
        self.sock = None
        self.rfile = None

    def close(self):
        if self.sock is not None:
            try:
                self.rfile.close()
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.rfile = None

    def _connect(self):
        # A bytes host spares getaddrinfo the idna codec (~1 ms to import).
        sock = socket.create_connection((self.host.encode("ascii", "replace"), self.port))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.sock = sock
        self.rfile = sock.makefile("rb")

    def request(self, method, path, body=None, headers=None):
        """Send one request, return (status, headers, body).

        A connection that was idle may have been closed by the server in the
        meantime; such a failure is retried once on a fresh connection.  Any
        other failure raises _APIError.
        """
        head = "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n" % (
            method, path, self.host_header, _USER_AGENT)
        if body is not None:
            head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        if headers:
            for k, v in headers.items():
                head += "%s: %s\r\n" % (k, v)
        data = (head + "\r\n").encode("utf-8")
        if body:
            data += body
        for attempt in (0, 1):
            fresh = self.sock is None
            try:
                if fresh:
                    self._connect()
                self.sock.sendall(data)
                return self._read_response(method)
            except (OSError, ValueError, _APIError) as e:
                self.close()
                if fresh or attempt:
                    raise _APIError("%s %s: %s" % (method, path, e)) from None
        raise _APIError("unreachable")

    def _read_response(self, method):
        rfile = self.rfile
        line = rfile.readline(65537)
        if not line:
            raise _APIError("connection closed by the Runtime API")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise _APIError("malformed status line %r" % line[:100])
        status = int(parts[1])
        headers = {}
        while True:
            line = rfile.readline(65537)
            if not line:
                raise _APIError("connection closed while reading headers")
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.decode("utf-8", "replace").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:  # interim response; the real one follows
            return self._read_response(method)
        keep = headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size_line = rfile.readline(65537)
                if not size_line:
                    raise _APIError("connection closed inside a chunked body")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunk = rfile.read(size)
                if len(chunk) != size:
                    raise _APIError("connection closed inside a chunked body")
                chunks.append(chunk)
                rfile.readline(65537)
            body = b"".join(chunks)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body = rfile.read(n) if n else b""
            if len(body) != n:
                raise _APIError("connection closed inside the body")
        else:
            body = rfile.read()
            keep = False
        if not keep:
            self.close()
        return status, headers, body


# ---------------------------------------------------------------- context


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, data=None):
        data = data if isinstance(data, dict) else {}
        self.cognito_identity_id = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id = data.get("cognitoIdentityPoolId")

    def __repr__(self):
        return "CognitoIdentity([cognito_identity_id=%s,cognito_identity_pool_id=%s])" % (
            self.cognito_identity_id, self.cognito_identity_pool_id)


class Client:
    __slots__ = ("installation_id", "app_title", "app_version_name",
                 "app_version_code", "app_package_name")

    def __init__(self, data):
        for name in self.__slots__:
            setattr(self, name, data.get(name))

    def __repr__(self):
        return "Client([%s])" % ",".join(
            "%s=%s" % (n, getattr(self, n)) for n in self.__slots__)


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, data):
        client = data.get("client")
        self.client = Client(client) if isinstance(client, dict) else None
        self.custom = data.get("custom")
        self.env = data.get("env")

    def __repr__(self):
        return "ClientContext([client=%s,custom=%s,env=%s])" % (
            self.client, self.custom, self.env)


def _env_int(name, default):
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return default


class LambdaContext:
    """The `context` argument, with the attribute names of Lambda's."""

    def __init__(self, request_id, deadline_ms, invoked_function_arn,
                 identity, client_context):
        env = os.environ
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = _env_int("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 128)
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.identity = identity
        self.client_context = client_context
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return ("LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,"
                "function_name=%s,memory_limit_in_mb=%s,function_version=%s,"
                "invoked_function_arn=%s,client_context=%s,identity=%s])" % (
                    self.aws_request_id, self.log_group_name, self.log_stream_name,
                    self.function_name, self.memory_limit_in_mb, self.function_version,
                    self.invoked_function_arn, self.client_context, self.identity))


def _json_header(headers, name):
    raw = headers.get(name)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------- logging


def _configure_logging(logging):
    """Give the root logger a handler like Lambda's.

    Lines look like "[INFO]\t2024-01-01T00:00:00.123Z\t<request id>\t<message>".
    As on Lambda the root logger keeps its default WARNING level unless
    AWS_LAMBDA_LOG_LEVEL says otherwise, `aws_request_id` is available to custom
    formatters (it is set by a filter on the handler), and because the root
    logger already has a handler, logging.basicConfig() is a no-op.
    """
    if getattr(logging, "_kiln_configured", False):
        return
    logging._kiln_configured = True

    class LambdaLoggerFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _request_id
            return True

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record):
            try:
                msg = self.format(record)
                sys.stdout.write(msg + "\n")
            except RecursionError:
                raise
            except Exception:
                self.handleError(record)

    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = LambdaLoggerHandler()
    handler.setFormatter(formatter)
    handler.addFilter(LambdaLoggerFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    if level:
        try:
            root.setLevel(level)
        except (ValueError, TypeError):
            pass


class _LoggingImportHook:
    """A one-shot meta path finder: configures `logging` right after it is
    first imported, so functions that never log do not pay for importing it."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "logging":
            return None
        try:
            sys.meta_path.remove(_LoggingImportHook)
        except ValueError:
            pass
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is not None:
                spec = find(name, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_configure(module):
            exec_module(module)
            _configure_logging(module)

        try:
            spec.loader.exec_module = exec_and_configure
        except AttributeError:
            pass  # configured after the handler import instead (see _init)
        return spec


def _install_logging():
    if "logging" in sys.modules:
        _configure_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, _LoggingImportHook)


# ---------------------------------------------------------------- errors


class _InitError(Exception):
    def __init__(self, error_type, message, stack=None):
        Exception.__init__(self, message)
        self.error_type = error_type
        self.message = message
        self.stack = stack or []


def _safe_str(value):
    try:
        return str(value)
    except Exception:
        return "<unprintable %s object>" % type(value).__name__


def _user_stack(tb):
    """Formatted frames of a traceback as Lambda reports them: one string per
    frame ('  File "/var/task/app.py", line 3, in handler\\n    raise ...\\n'),
    without the runtime's own frames and the import machinery's."""
    import traceback
    frames = [f for f in traceback.extract_tb(tb)
              if f.filename != _THIS_FILE and not f.filename.startswith("<frozen importlib")]
    return traceback.format_list(frames)


def _error_document(exc, request_id=None):
    doc = {"errorMessage": _safe_str(exc), "errorType": type(exc).__name__}
    if request_id is not None:
        doc["requestId"] = request_id
    try:
        doc["stackTrace"] = _user_stack(exc.__traceback__)
    except Exception:
        doc["stackTrace"] = []
    return doc


def _log_error(doc):
    """Print an error the way Lambda's python runtime logs it."""
    lines = ["[ERROR] %s: %s" % (doc.get("errorType"), doc.get("errorMessage"))]
    stack = doc.get("stackTrace")
    if stack:
        lines.append("Traceback (most recent call last):")
        for frame in stack:
            lines.extend(frame.rstrip("\n").split("\n"))
    try:
        sys.stdout.write("\n".join(lines) + "\n")
    except Exception:
        pass


def _flush_stdio():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _header_value(value):
    return "".join(c if " " <= c <= "~" else "_" for c in value)[:256] or "Unknown"


def _fatal(message):
    _flush_stdio()
    try:
        sys.stderr.write("kiln python runtime: %s\n" % message)
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(1)


# ---------------------------------------------------------------- init


def _load_handler(spec):
    try:
        module_name, function_name = spec.rsplit(".", 1)
    except ValueError:
        raise _InitError("Runtime.MalformedHandlerName",
                         "Bad handler '%s': not enough values to unpack (expected 2, got 1)" % spec)
    module_name = module_name.replace("/", ".")
    try:
        __import__(module_name)
        module = sys.modules[module_name]
    except ImportError as e:
        raise _InitError("Runtime.ImportModuleError",
                         "Unable to import module '%s': %s" % (module_name, _safe_str(e)))
    except SyntaxError as e:
        stack = []
        if e.filename:
            text = (e.text or "").strip()
            stack = ['  File "%s" Line %s\n        %s\n' % (e.filename, e.lineno, text)]
        raise _InitError("Runtime.UserCodeSyntaxError",
                         "Syntax error in module '%s': %s" % (module_name, _safe_str(e)), stack)
    except Exception as e:
        doc = _error_document(e)
        raise _InitError(doc["errorType"], doc["errorMessage"], doc["stackTrace"])
    try:
        handler = getattr(module, function_name)
    except AttributeError:
        raise _InitError("Runtime.HandlerNotFound",
                         "Handler '%s' missing on module '%s'" % (function_name, module_name))
    if not callable(handler):
        raise _InitError("Runtime.HandlerNotFound",
                         "Handler '%s' on module '%s' is not callable" % (function_name, module_name))
    return handler


class _EndpointURL:
    """Makes a botocore older than 1.31 (Debian 12's 1.29, which functions
    import from the host's /usr) honour AWS_ENDPOINT_URL, as later ones
    do: Kiln advertises its API there, as Lambda's runtimes ship an SDK
    that finds AWS. It patches botocore.session when that is first
    imported, so that functions that never import it pay nothing."""

    def find_spec(self, name, path=None, target=None):
        if name != "botocore.session":
            return None
        import importlib.machinery
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _default_endpoint(module)
        spec.loader.exec_module = exec_and_patch
        return spec


def _default_endpoint(session_module):
    import botocore
    try:
        if tuple(int(x) for x in botocore.__version__.split(".")[:2]) >= (1, 31):
            return
    except ValueError:
        return
    url = os.environ.get("AWS_ENDPOINT_URL")
    create_client = session_module.Session.create_client

    def with_endpoint(self, service_name, *args, **kwargs):
        if len(args) < 5 and kwargs.get("endpoint_url") is None:
            kwargs["endpoint_url"] = url
        return create_client(self, service_name, *args, **kwargs)
    session_module.Session.create_client = with_endpoint


def _init(api):
    if os.environ.get("AWS_ENDPOINT_URL"):
        sys.meta_path.insert(0, _EndpointURL())
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    # The script's own directory would be sys.path[0]; the task root takes its place.
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.dirname(os.path.realpath(_THIS_FILE)):
        sys.path[0] = task_root
    else:
        sys.path.insert(0, task_root)
    try:
        os.chdir(task_root)
    except OSError:
        pass
    try:
        handler = _load_handler(os.environ.get("_HANDLER", ""))
    except _InitError as e:
        doc = {"errorMessage": e.message, "errorType": e.error_type,
               "requestId": "", "stackTrace": e.stack}
        _log_error(doc)
        _flush_stdio()
        try:
            api.request("POST", _API_PREFIX + "/init/error",
                        json.dumps(doc).encode("utf-8"),
                        {"Lambda-Runtime-Function-Error-Type": _header_value(e.error_type)})
        except _APIError as err:
            _fatal("reporting init error: %s" % err)
        _flush_stdio()
        os._exit(1)
    if "logging" in sys.modules:
        _configure_logging(sys.modules["logging"])
    return handler


# ---------------------------------------------------------------- invoke


def _json_default(value):
    # Decimal (e.g. from DynamoDB) is written as a JSON number.
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(value, decimal.Decimal):
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)


def _run(api, handler):
    global _request_id
    environ = os.environ
    next_path = _API_PREFIX + "/invocation/next"
    while True:
        status, headers, body = api.request("GET", next_path)
        if status != 200:
            raise _APIError("GET %s: HTTP %d: %r" % (next_path, status, body[:200]))
        request_id = headers.get("lambda-runtime-aws-request-id", "")
        _request_id = request_id
        trace_id = headers.get("lambda-runtime-trace-id")
        if trace_id:
            environ["_X_AMZN_TRACE_ID"] = trace_id
        else:
            environ.pop("_X_AMZN_TRACE_ID", None)
        try:
            deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0"))
        except ValueError:
            deadline_ms = 0
        cognito = _json_header(headers, "lambda-runtime-cognito-identity")
        client = _json_header(headers, "lambda-runtime-client-context")
        context = LambdaContext(
            request_id, deadline_ms,
            headers.get("lambda-runtime-invoked-function-arn"),
            CognitoIdentity(cognito),
            ClientContext(client) if client is not None else None)

        error = None
        try:
            event = json.loads(body) if body else {}
        except ValueError as e:
            if body.isspace():
                event = {}
            else:
                    error = {"errorMessage": "Unable to unmarshal input: %s" % _safe_str(e),
                         "errorType": "Runtime.UnmarshalError",
                         "requestId": request_id, "stackTrace": []}
        if error is None:
            try:
                result = handler(event, context)
            except Exception as e:
                error = _error_document(e, request_id)
            else:
                try:
                    payload = json.dumps(result, default=_json_default).encode("utf-8")
                except Exception as e:
                    error = {"errorMessage": "Unable to marshal response: %s" % _safe_str(e),
                             "errorType": "Runtime.MarshalError",
                             "requestId": request_id, "stackTrace": []}

        base = "%s/invocation/%s/" % (_API_PREFIX, request_id)
        if error is None:
            _flush_stdio()
            status, _, body = api.request("POST", base + "response", payload)
        else:
            _log_error(error)
            _flush_stdio()
            status, _, body = api.request(
                "POST", base + "error", json.dumps(error).encode("utf-8"),
                {"Lambda-Runtime-Function-Error-Type": _header_value(error["errorType"])})
        # 4xx (e.g. 413 payload too large, 410 already timed out) concern only
        # this invocation; 5xx means the environment is broken: exit.
        if status >= 500:
            raise _APIError("posting result of %s: HTTP %d: %r" % (request_id, status, body[:200]))


def main():
    try:
        stdout_reconfigure = sys.stdout.reconfigure
    except AttributeError:
        pass
    else:
        # Every line reaches Kiln as soon as it is printed (-u like); partial
        # lines are flushed before each result is posted.
        stdout_reconfigure(line_buffering=True)
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        _fatal("AWS_LAMBDA_RUNTIME_API is not set")
    try:
        api = _RuntimeAPI(address)
    except _APIError as e:
        _fatal(str(e))
    _install_logging()
    handler = _init(api)
    _flush_stdio()  # output of the init phase belongs to no invocation
    try:
        _run(api, handler)
    except _APIError as e:
        _fatal("runtime API: %s" % e)


if __name__ == "__main__":
    main()
