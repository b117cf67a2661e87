'use strict';
// Kiln's Node.js runtime interface client.
//
// Started by Kiln as `node bootstrap.js` inside a function's sandbox. It talks
// to the Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API, loads the handler named
// by $_HANDLER ("file.export", the export may be a dotted path) from
// $LAMBDA_TASK_ROOT and calls it once per invocation, the way Lambda's managed
// nodejsN.x runtimes do. Only Node's own modules are used.
//
// Handler styles, as on Lambda's nodejs20.x:
//   - async functions / functions returning a promise: the settled promise is
//     the result;
//   - callback style (event, context, callback): the callback is always passed
//     (that is how a `handler.length >= 3` non-async function gets it); whichever
//     of callback, promise, context.succeed/fail/done comes first wins;
//   - callback(null, result) with context.callbackWaitsForEmptyEventLoop true
//     (the default) posts the result once the event loop has drained; errors,
//     promises and succeed/fail/done post at once;
//   - a handler that returns a non-promise value and never calls back: its
//     return value is ignored and the result is null once the event loop has
//     drained (Lambda's behaviour, surprising as it is).
// Response streaming, as on Lambda: a handler wrapped in
// awslambda.streamifyResponse(async (event, responseStream, context) => ...)
// writes to responseStream (a Writable; setContentType before the first
// write), which is posted to the Runtime API as it is written (chunked,
// Lambda-Runtime-Function-Response-Mode: streaming); an error after the
// stream began ends it with the Lambda-Runtime-Function-Error-Type and
// -Error-Body trailers. awslambda.HttpResponseStream.from(stream, prelude)
// starts a function URL's response with its status, headers and cookies.
// Errors: an Error gives errorType = error.name, errorMessage = error.message;
// a thrown non-Error value v gives errorType = typeof v ("string", "number",
// "object") and errorMessage = String(v), as Lambda's runtime does;
// context.fail() / a promise rejected with null or undefined gives
// errorType "string", errorMessage "handled".

const http = require('http');
const { Writable } = require('stream');
const fs = require('fs');
const path = require('path');
const util = require('util');
const { pathToFileURL } = require('url');

const API_PREFIX = '/2018-06-01/runtime';
const env = process.env;

let currentRequestId; // printed as "undefined" outside invocations, like Lambda
let initializing = true;
let active = null; // the invocation being run: { id, finish(err, result) }

// ------------------------------------------------------------- Runtime API

function fatal(message) {
  try {
    process.stderr.write(`kiln node runtime: ${message}\n`);
  } catch (_) {
    // nothing left to tell
  }
  process.exit(1);
}

const apiAddress = env.AWS_LAMBDA_RUNTIME_API || '';
const apiMatch = /^\[?([^\]]*)\]?:(\d+)$/.exec(apiAddress);
if (!apiMatch) fatal(`bad AWS_LAMBDA_RUNTIME_API ${JSON.stringify(apiAddress)}`);
const apiHost = apiMatch[1] || '127.0.0.1';
const apiPort = Number(apiMatch[2]);
// One persistent connection; the agent unrefs it while idle, so it does not
// keep the event loop alive (callbackWaitsForEmptyEventLoop depends on that).
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const userAgent = `kiln-runtime-nodejs/${process.version}`;

function request(method, urlPath, body, headers, retried) {
  return new Promise((resolve, reject) => {
    const h = { 'User-Agent': userAgent };
    if (headers) Object.assign(h, headers);
    let payload;
    if (body !== undefined) {
      payload = Buffer.from(body, 'utf8');
      h['Content-Type'] = 'application/json';
      h['Content-Length'] = payload.length;
    }
    const req = http.request(
      { agent, host: apiHost, port: apiPort, method, path: urlPath, headers: h },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
        res.on('close', () => {
          if (!res.complete) reject(new Error('connection closed inside the response'));
        });
      },
    );
    req.on('error', (err) => {
      // An idle keep-alive connection may have been closed by the server.
      if (req.reusedSocket && !retried) {
        request(method, urlPath, body, headers, true).then(resolve, reject);
      } else {
        reject(err);
      }
    });
    req.end(payload);
  });
}

function headerValue(s) {
  return String(s).replace(/[^\x20-\x7e]/g, '_').slice(0, 256) || 'Unknown';
}

// ------------------------------------------------------------- streaming

const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HTTP_INTEGRATION = 'application/vnd.awslambda.http-integration-response';

globalThis.awslambda = {
  streamifyResponse(handler) {
    handler[STREAMING] = 'response';
    return handler;
  },
  HttpResponseStream: class HttpResponseStream {
    static from(responseStream, prelude) {
      responseStream.setContentType(HTTP_INTEGRATION);
      responseStream.write(JSON.stringify(prelude || {}));
      responseStream.write(new Uint8Array(8)); // the prelude ends with eight NUL bytes
      return responseStream;
    }
  },
};

// responseStream returns the Writable a streaming handler writes to, and
// fail(err), which ends it with the error trailers. The request to the
// Runtime API starts at the first write (or end), so that setContentType
// can come first; `done` settles when the Runtime API answered.
function responseStream(requestId) {
  let contentType = 'application/octet-stream';
  let req = null;
  let settle;
  const done = new Promise((resolve, reject) => { settle = { resolve, reject }; });
  const open = () => {
    if (req) return req;
    req = http.request({
      agent, host: apiHost, port: apiPort, method: 'POST',
      path: `${API_PREFIX}/invocation/${encodeURIComponent(requestId)}/response`,
      headers: {
        'User-Agent': userAgent,
        'Content-Type': contentType,
        'Lambda-Runtime-Function-Response-Mode': 'streaming',
        'Transfer-Encoding': 'chunked',
        Trailer: 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body',
      },
    }, (res) => {
      res.resume();
      res.on('end', () => settle.resolve(res.statusCode));
      res.on('error', settle.reject);
    });
    req.on('error', settle.reject);
    return req;
  };
  const stream = new Writable({
    write(chunk, _enc, cb) {
      open().write(chunk, cb);
    },
    final(cb) {
      const r = open();
      if (failure) {
        r.addTrailers({
          'Lambda-Runtime-Function-Error-Type': headerValue(failure.errorType),
          'Lambda-Runtime-Function-Error-Body': Buffer.from(JSON.stringify(failure)).toString('base64'),
        });
      }
      r.end();
      cb();
    },
  });
  let failure = null;
  stream.setContentType = (t) => { contentType = String(t); };
  // fail ends the stream, after what was written, with the error trailers
  // (an error after the handler ended the stream itself is too late).
  const fail = (doc) => {
    if (stream.writableEnded) return;
    failure = doc;
    stream.end();
  };
  return { stream, fail, done };
}

// invokeStreaming runs a streamifyResponse handler: the stream ends when
// the handler's promise settles (if the handler has not ended it).
function invokeStreaming(handler, event, context, requestId) {
  const rs = responseStream(requestId);
  const finish = (err) => {
    if (err !== undefined) {
      const doc = errorDocument(err, requestId);
      logError('Invoke Error', doc);
      rs.fail(doc);
    } else if (!rs.stream.writableEnded) {
      rs.stream.end();
    }
    return rs.done.then((status) => {
      if (status >= 500) throw new Error(`posting streamed result of ${requestId}: HTTP ${status}`);
    });
  };
  let ret;
  try {
    ret = handler(event, rs.stream, context);
  } catch (err) {
    return finish(err);
  }
  return Promise.resolve(ret).then(() => finish(undefined), (err) => finish(err === undefined || err === null ? 'handled' : err));
}

// ------------------------------------------------------------- logging

function flushStdio() {
  const waits = [];
  for (const s of [process.stdout, process.stderr]) {
    if (s.writableLength > 0 && !s.destroyed) {
      waits.push(new Promise((resolve) => {
        s.once('drain', resolve);
        s.once('close', resolve);
        s.once('error', resolve);
      }));
    }
  }
  return waits.length ? Promise.all(waits) : Promise.resolve();
}

// console.* lines are written to stdout as Lambda writes them:
// "<ISO time>\t<request id>\t<LEVEL>\t<message>", with newlines inside the
// message turned into \r so that one call is one line.
function patchConsole() {
  const levels = { log: 'INFO', info: 'INFO', warn: 'WARN', error: 'ERROR', debug: 'DEBUG', trace: 'TRACE', fatal: 'FATAL' };
  for (const name of Object.keys(levels)) {
    const level = levels[name];
    console[name] = function (...args) {
      const line = `${new Date().toISOString()}\t${currentRequestId}\t${level}\t${util.format(...args)}`;
      process.stdout.write(line.replace(/\n/g, '\r') + '\n');
    };
  }
}

// ------------------------------------------------------------- errors

function isErrorLike(e) {
  return util.types.isNativeError(e) || (e !== null && typeof e === 'object' &&
    typeof e.name === 'string' && typeof e.message === 'string' && typeof e.stack === 'string');
}

function errorDocument(err, requestId) {
  let doc;
  try {
    if (isErrorLike(err)) {
      const lines = typeof err.stack === 'string' ? err.stack.split('\n') : [];
      const first = lines.findIndex((l) => /^\s+at /.test(l));
      doc = {
        errorType: String(err.name),
        errorMessage: String(err.message),
        // Lambda's node runtime reports the stack as "trace" (all lines, the
        // message line included); Kiln's documents carry "stackTrace" (the
        // frame lines only) as the Python runtime does. Both are given.
        stackTrace: first < 0 ? [] : lines.slice(first),
        trace: lines,
      };
    } else {
      doc = { errorType: typeof err, errorMessage: String(err), stackTrace: [], trace: [] };
    }
  } catch (_) {
    doc = {
      errorType: 'handled',
      errorMessage: 'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
      stackTrace: [],
      trace: [],
    };
  }
  if (requestId !== undefined) doc.requestId = requestId;
  return doc;
}

function logError(label, doc) {
  console.error(label, JSON.stringify({ errorType: doc.errorType, errorMessage: doc.errorMessage, stack: doc.trace }));
}

async function postInitError(doc) {
  logError('Init Error', doc);
  await flushStdio();
  try {
    await request('POST', `${API_PREFIX}/init/error`, JSON.stringify(doc),
      { 'Lambda-Runtime-Function-Error-Type': headerValue(doc.errorType) });
  } catch (e) {
    fatal(`reporting init error: ${e.message}`);
  }
  process.exit(1);
}

// ------------------------------------------------------------- init

class InitError extends Error {
  // cause: the error document of the underlying error, if any.
  constructor(errorType, message, cause) {
    super(message);
    this.errorType = errorType;
    this.frames = cause ? cause.stackTrace : [];
    this.lines = cause ? cause.trace : [];
  }
}

function resolvePath(obj, dotted) {
  let v = obj;
  for (const part of dotted.split('.')) {
    if (v === null || v === undefined) return undefined;
    v = v[part];
  }
  return v;
}

async function loadHandler(taskRoot) {
  const spec = env._HANDLER || '';
  const base = path.basename(spec);
  const m = /^([^.]+)\.(.+)$/.exec(base);
  if (!m) throw new InitError('Runtime.MalformedHandlerName', `Bad handler ${spec}`);
  const modBase = path.resolve(taskRoot, path.dirname(spec), m[1]);
  const file = ['.js', '.mjs', '.cjs'].map((ext) => modBase + ext).find((f) => fs.existsSync(f));
  if (!file) {
    throw new InitError('Runtime.ImportModuleError', `Error: Cannot find module '${m[1]}'`);
  }
  let ns;
  try {
    ns = await import(pathToFileURL(file).href);
  } catch (err) {
    const doc = errorDocument(err);
    if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
      throw new InitError('Runtime.ImportModuleError', `${doc.errorType}: ${doc.errorMessage}`, doc);
    }
    if (err instanceof SyntaxError) {
      throw new InitError('Runtime.UserCodeSyntaxError', `${doc.errorType}: ${doc.errorMessage}`, doc);
    }
    throw err;
  }
  // ESM: a named export. CommonJS through import(): module.exports is the
  // default export; named exports are only what Node's static analysis found.
  let handler = resolvePath(ns, m[2]);
  if (handler === undefined && ns.default !== null && ns.default !== undefined) {
    handler = resolvePath(ns.default, m[2]);
  }
  if (handler === undefined) {
    throw new InitError('Runtime.HandlerNotFound', `${base} is undefined or not exported`);
  }
  if (typeof handler !== 'function') {
    throw new InitError('Runtime.HandlerNotFound', `${base} is not a function`);
  }
  return handler;
}

// ------------------------------------------------------------- invoke

// Called when the event loop has nothing left to do. Set per invocation.
let onEmptyEventLoop = null;
process.on('beforeExit', () => {
  const f = onEmptyEventLoop;
  onEmptyEventLoop = null;
  if (f) f();
  else if (initializing) fatal('the function\'s module never finished loading (the event loop drained)');
});

function jsonHeader(headers, name) {
  const raw = headers[name];
  if (!raw) return undefined;
  try {
    return JSON.parse(raw);
  } catch (_) {
    return undefined;
  }
}

const memoryLimitInMB = env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE || '128';

async function post(requestId, err, result) {
  const base = `${API_PREFIX}/invocation/${encodeURIComponent(requestId)}`;
  let body;
  let errorDoc;
  if (err === undefined) {
    try {
      body = JSON.stringify(result === undefined ? null : result);
      if (body === undefined) body = 'null';
    } catch (e) {
      errorDoc = {
        errorType: 'Runtime.MarshalError',
        errorMessage: `Unable to stringify response body: ${e && e.message}`,
        requestId,
        stackTrace: [],
        trace: [],
      };
    }
  } else {
    errorDoc = errorDocument(err, requestId);
  }
  let res;
  if (errorDoc) {
    logError('Invoke Error', errorDoc);
    await flushStdio();
    res = await request('POST', `${base}/error`, JSON.stringify(errorDoc),
      { 'Lambda-Runtime-Function-Error-Type': headerValue(errorDoc.errorType) });
  } else {
    await flushStdio();
    res = await request('POST', `${base}/response`, body);
  }
  // 4xx (payload too large, invocation already timed out) concern only this
  // invocation; 5xx means the environment is broken.
  if (res.status >= 500) throw new Error(`posting result of ${requestId}: HTTP ${res.status}`);
}

function invoke(handler, res) {
  const h = res.headers;
  const requestId = h['lambda-runtime-aws-request-id'] || '';
  const deadline = Number(h['lambda-runtime-deadline-ms']) || 0;
  const traceId = h['lambda-runtime-trace-id'];
  if (traceId) env._X_AMZN_TRACE_ID = traceId;
  else delete env._X_AMZN_TRACE_ID;
  currentRequestId = requestId;

  return new Promise((resolve, reject) => {
    let finished = false;
    // finish reports the outcome once; err === undefined means success.
    const finish = (err, result) => {
      if (finished) return;
      finished = true;
      onEmptyEventLoop = null;
      active = null;
      post(requestId, err, result).then(resolve, reject);
    };
    const fail = (err) => finish(err === undefined || err === null ? 'handled' : err);
    const done = (err, result) => (err === undefined || err === null ? finish(undefined, result) : finish(err));
    const context = {
      callbackWaitsForEmptyEventLoop: true,
      functionName: env.AWS_LAMBDA_FUNCTION_NAME,
      functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
      invokedFunctionArn: h['lambda-runtime-invoked-function-arn'],
      memoryLimitInMB,
      awsRequestId: requestId,
      logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
      logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
      identity: jsonHeader(h, 'lambda-runtime-cognito-identity'),
      clientContext: jsonHeader(h, 'lambda-runtime-client-context'),
      getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
      succeed: (result) => finish(undefined, result),
      fail,
      done,
    };
    const callback = (err, result) => {
      if (finished) return;
      if (err !== undefined && err !== null) {
        finish(err);
      } else if (context.callbackWaitsForEmptyEventLoop) {
        onEmptyEventLoop = () => setImmediate(() => finish(undefined, result));
      } else {
        finish(undefined, result);
      }
    };
    active = { id: requestId, finish };

    let event;
    const text = res.body.toString('utf8');
    try {
      event = text.trim() === '' ? {} : JSON.parse(text);
    } catch (e) {
      const err = new Error(`Unable to unmarshal input: ${e.message}`);
      err.name = 'Runtime.UnmarshalError';
      finish(err);
      return;
    }
    if (handler[STREAMING] === 'response') {
      active = null;
      invokeStreaming(handler, event, context, requestId).then(resolve, reject);
      return;
    }
    // Nothing reported by the time the event loop drains: the result is null.
    onEmptyEventLoop = () => finish(undefined, null);
    let ret;
    try {
      ret = handler(event, context, callback);
    } catch (err) {
      finish(err);
      return;
    }
    if (ret !== null && (typeof ret === 'object' || typeof ret === 'function') && typeof ret.then === 'function') {
      ret.then((v) => finish(undefined, v), fail);
    }
  });
}

// Errors escaping the handler asynchronously are reported for the running
// invocation and end the process, as on Lambda (exit codes 129 and 128).
function escaped(err, exitCode, label) {
  const doc = errorDocument(err);
  if (initializing) {
    postInitError(doc);
    return;
  }
  logError(label, doc);
  const inv = active;
  active = null;
  if (!inv) {
    flushStdio().then(() => process.exit(exitCode));
    return;
  }
  onEmptyEventLoop = null;
  post(inv.id, err).catch(() => {}).then(() => process.exit(exitCode));
}

process.on('uncaughtException', (err) => escaped(err, 129, 'Uncaught Exception'));
process.on('unhandledRejection', (reason) => {
  const err = new Error(reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason));
  err.name = 'Runtime.UnhandledPromiseRejection';
  if (reason instanceof Error && reason.stack) err.stack = `${err.name}: ${err.message}\n${reason.stack.split('\n').slice(1).join('\n')}`;
  escaped(err, 128, 'Unhandled Promise Rejection');
});

// ------------------------------------------------------------- main

async function main() {
  patchConsole();
  const taskRoot = env.LAMBDA_TASK_ROOT || process.cwd();
  try {
    process.chdir(taskRoot);
  } catch (_) {
    // keep the current directory
  }
  // As on Lambda, bare require()s from the function also resolve against the
  // task root (NODE_PATH), after the layers' directories the worker lists.
  const nodePath = env.NODE_PATH ? env.NODE_PATH.split(path.delimiter) : [];
  if (!nodePath.includes(taskRoot)) nodePath.push(taskRoot);
  env.NODE_PATH = nodePath.join(path.delimiter);
  const Module = require('module');
  if (typeof Module._initPaths === 'function') Module._initPaths();

  let handler;
  try {
    handler = await loadHandler(taskRoot);
  } catch (err) {
    let doc;
    if (err instanceof InitError) {
      doc = { errorType: err.errorType, errorMessage: err.message, stackTrace: err.frames, trace: err.lines };
    } else {
      doc = errorDocument(err);
    }
    doc.requestId = '';
    await postInitError(doc);
    return;
  }
  initializing = false;

  const nextPath = `${API_PREFIX}/invocation/next`;
  for (;;) {
    let res;
    try {
      res = await request('GET', nextPath);
    } catch (e) {
      fatal(`runtime API: GET ${nextPath}: ${e.message}`);
    }
    if (res.status !== 200) fatal(`runtime API: GET ${nextPath}: HTTP ${res.status}`);
    try {
      await invoke(handler, res);
    } catch (e) {
      fatal(`runtime API: ${e.message}`);
    }
  }
}

main();
