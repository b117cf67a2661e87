// Kiln's console: hash routes (#/, #/fn/ACCOUNT/NAME, #/fleet), each view
// fed by one EventSource on /console/api/stream. Every name, message and
// log line goes into the page as text (textContent), never as markup; the
// Content-Security-Policy allows no inline script besides.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const sections = ["signin", "functions", "function", "fleet"];
  let me = null;
  let source = null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.append(c); else td.textContent = c === undefined || c === null ? "" : String(c);
      tr.append(td);
    }
    return tr;
  }
  function show(id) {
    for (const s of sections) $(s).hidden = s !== id;
  }
  function status(text) { $("status").textContent = text; }
  const when = (t) => (t ? new Date(t).toLocaleTimeString() : "never");

  // ---- signing in ----
  async function signIn(ev) {
    ev.preventDefault();
    $("signin-error").textContent = "";
    const akid = $("akid").value.trim();
    const secret = $("secret").value;
    try {
      const n = await (await fetch("api/nonce", { credentials: "same-origin" })).json();
      // SigV4's key derivation, for the nonce's date, Kiln's region and the
      // service kiln-console; then a signature of the nonce and key ID.
      const { hmac, utf8, hex } = kilnSHA256;
      const date = new Date(Number(n.nonce.split(".")[0]) * 1000).toISOString().slice(0, 10).replace(/-/g, "");
      let k = hmac(utf8("AWS4" + secret), utf8(date));
      for (const part of [n.region, n.service, "aws4_request"]) k = hmac(k, utf8(part));
      const proof = hex(hmac(k, utf8("KILN-CONSOLE-SIGNIN\n" + n.nonce + "\n" + akid)));
      const r = await fetch("api/signin", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ accessKeyId: akid, nonce: n.nonce, proof }) });
      if (!r.ok) {
        const e = await r.json().catch(() => ({}));
        $("signin-error").textContent = e.message || ("sign-in failed: " + r.status);
        return;
      }
      $("secret").value = "";
      await start();
    } catch (e) {
      $("signin-error").textContent = String(e);
    }
  }

  async function start() {
    const r = await fetch("api/whoami", { credentials: "same-origin" });
    if (!r.ok) {
      me = null;
      $("nav").hidden = true;
      $("signout").hidden = true;
      $("who").textContent = "";
      stop();
      show("signin");
      return;
    }
    me = await r.json();
    $("nav").hidden = false;
    $("signout").hidden = false;
    $("nav-fleet").hidden = !me.admin;
    $("who").textContent = "account " + me.account + (me.admin ? " (admin: all accounts)" : "");
    route();
  }

  function stop() {
    if (source) source.close();
    source = null;
  }

  function listen(params, onView, onLogs) {
    stop();
    source = new EventSource("api/stream?" + new URLSearchParams(params), { withCredentials: true });
    source.addEventListener("view", (e) => { onView(JSON.parse(e.data)); status("live · updated " + new Date().toLocaleTimeString()); });
    if (onLogs) source.addEventListener("logs", (e) => onLogs(JSON.parse(e.data)));
    source.addEventListener("failure", (e) => { status(JSON.parse(e.data).message); stop(); });
    // A refused stream (not found, not this key's, signed out) is not
    // retried by the browser; a dropped one is.
    source.onerror = () => status(source && source.readyState === EventSource.CLOSED
      ? "This view is not available: the function does not exist, is another account's, or the session ended."
      : "reconnecting…");
  }

  function route() {
    if (!me) return;
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    if (parts[0] === "fn" && parts.length >= 3) {
      show("function");
      $("logs").replaceChildren();
      listen({ view: "function", account: parts[1], name: parts[2] }, renderFunction, appendLogs);
    } else if (parts[0] === "fleet") {
      show("fleet");
      listen({ view: "fleet" }, renderFleet);
    } else {
      show("functions");
      listen({ view: "functions" }, renderFunctions);
    }
  }

  // ---- functions ----
  function concurrency(f) {
    const out = [];
    if (f.reservedConcurrency !== undefined && f.reservedConcurrency !== null) out.push("reserved " + f.reservedConcurrency);
    for (const p of f.provisioned) out.push("provisioned " + p.qualifier + ": " + p.allocated + "/" + p.requested + " " + p.status);
    return out.join("; ") || "unreserved";
  }
  function aliases(f) {
    return f.aliases.map((a) => {
      const w = Object.entries(a.weights || {});
      const rest = 1 - w.reduce((s, [, x]) => s + x, 0);
      return a.name + " → " + [[a.version, rest]].concat(w).map(([v, x]) => v + " " + Math.round(x * 100) + "%").join(", ");
    }).join("; ");
  }
  function renderFunctions(list) {
    const body = $("fn-table").tBodies[0];
    body.replaceChildren();
    $("fn-empty").hidden = list.length > 0;
    for (const f of list) {
      const link = el("a", f.name);
      link.href = "#/fn/" + encodeURIComponent(f.account) + "/" + encodeURIComponent(f.name);
      const tr = row([link, f.account, f.runtime || f.packageType, f.memoryMB + " MB", f.versions.join(", ") || "$LATEST only", aliases(f),
        concurrency(f), when(f.lastInvoke), f.invocations, (f.errorRate * 100).toFixed(1) + "%"]);
      tr.dataset.name = f.name;
      tr.cells[5].className = "aliases";
      tr.cells[6].className = "concurrency";
      tr.cells[8].className = "num invocations";
      tr.cells[9].className = "num";
      body.append(tr);
    }
  }

  // ---- one function ----
  function renderFunction(v) {
    const f = v.function;
    $("fn-name").textContent = f.name;
    $("fn-meta").textContent = "account " + f.account + " · " + (f.runtime || f.packageType) + " · " + f.memoryMB + " MB · timeout " +
      f.timeout + " s · " + (f.state || "") + " · versions " + (f.versions.join(", ") || "$LATEST only") + " · " + concurrency(f) +
      (f.aliases.length ? " · aliases " + aliases(f) : "") + " · last invoke " + when(f.lastInvoke);
    $("fn-invocations").textContent = f.invocations;
    $("fn-errors").textContent = f.errors;
    $("fn-throttles").textContent = f.throttles;
    $("fn-queue").textContent = v.async.queueDepth === undefined ? "–" : v.async.queueDepth;
    const s = v.series;
    lineChart($("chart-count"), s, [(p) => p.invocations, (p) => p.errors, (p) => p.throttles], ["invocations", "errors", "throttles"]);
    lineChart($("chart-duration"), s, [(p) => p.p50, (p) => p.p99], ["p50", "p99"]);
    lineChart($("chart-init"), s, [(p) => p.initP50, (p) => p.initP99, (p) => coldTotal(p)], ["init p50", "init p99", "cold starts"]);
    const order = { busy: 0, initializing: 1, idle: 2 };
    const envs = v.environments.slice().sort((a, b) => (order[a.state] - order[b.state]) || a.worker.localeCompare(b.worker));
    const eb = $("env-table").tBodies[0];
    eb.replaceChildren();
    for (const e of envs) {
      const tr = row([e.state + (e.provisioned ? " (provisioned)" : ""), e.id, e.version, e.worker, e.zone || ""]);
      tr.cells[0].className = "state-" + e.state;
      eb.append(tr);
    }
    const ab = $("async-table").tBodies[0];
    ab.replaceChildren();
    for (const c of v.async.configs) ab.append(row([c.qualifier, c.maxRetryAttempts ?? "2", c.maxEventAgeSeconds ?? "21600", c.onSuccess || "–", c.onFailure || "–"]));
    const mb = $("esm-table").tBodies[0];
    mb.replaceChildren();
    for (const m of v.mappings) mb.append(row([m.uuid, m.source, m.state, m.batchSize, m.lastProcessingResult]));
  }
  function appendLogs(events) {
    const box = $("logs");
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    for (const e of events) {
      const line = el("div", null, "line");
      line.append(el("span", new Date(e.timestamp).toLocaleTimeString(), "ts"), document.createTextNode(e.message));
      box.append(line);
    }
    while (box.childElementCount > 2000) box.firstElementChild.remove();
    if (atEnd) box.scrollTop = box.scrollHeight;
  }
  const coldTotal = (p) => Object.values(p.coldStarts || {}).reduce((a, b) => a + b, 0);

  // ---- charts (SVG, 600×140) ----
  const NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function frame(box, max) {
    box.replaceChildren(svg("line", { x1: 40, y1: 120, x2: 595, y2: 120, class: "axis" }),
      svg("line", { x1: 40, y1: 10, x2: 595, y2: 10, class: "axis" }),
      svg("text", { x: 36, y: 14, "text-anchor": "end" }, fmt(max)),
      svg("text", { x: 36, y: 123, "text-anchor": "end" }, "0"),
      svg("text", { x: 40, y: 135 }, "−60 min"), svg("text", { x: 595, y: 135, "text-anchor": "end" }, "now"));
  }
  const fmt = (x) => (x >= 100 ? Math.round(x) : +x.toPrecision(2)).toString();
  const xOf = (i, n) => 40 + (555 * i) / Math.max(n - 1, 1);
  function lineChart(box, points, series, names) {
    const max = Math.max(1, ...points.flatMap((p) => series.map((f) => f(p))));
    frame(box, max);
    series.forEach((f, k) => {
      const d = points.map((p, i) => (i ? "L" : "M") + xOf(i, points.length).toFixed(1) + " " + (120 - (110 * f(p)) / max).toFixed(1)).join(" ");
      box.append(svg("path", { d, class: "s" + k }));
      box.append(svg("text", { x: 130 + k * 90, y: 135, class: "legend s" + k }, "— " + names[k]));
    });
  }
  function coldChart(box, points) {
    const causes = ["scale-up", "idle-reap", "failover"];
    const max = Math.max(1, ...points.map(coldTotal));
    frame(box, max);
    const w = 555 / points.length;
    points.forEach((p, i) => {
      let y = 120;
      for (const c of causes) {
        const n = (p.coldStarts || {})[c] || 0;
        if (!n) continue;
        const h = (110 * n) / max;
        y -= h;
        const r = svg("rect", { x: (40 + i * w).toFixed(1), y: y.toFixed(1), width: Math.max(w - 1, 1).toFixed(1), height: h.toFixed(1), class: c });
        r.append(svg("title", {}, n + " " + c));
        box.append(r);
      }
    });
  }

  // ---- fleet ----
  function bar(used, capacity, unit) {
    const b = el("div", null, "bar");
    const fill = el("div");
    fill.style.width = capacity > 0 ? Math.min(100, (100 * used) / capacity) + "%" : "0%";
    b.append(fill, el("span", used + (capacity > 0 ? " / " + capacity : "") + " " + unit + " booked"));
    return b;
  }
  function renderFleet(f) {
    $("fleet-mode").textContent = "(" + f.mode + ")";
    coldChart($("chart-cold"), f.coldStarts);
    const perWorker = {};
    for (const e of f.environments) (perWorker[e.worker] = perWorker[e.worker] || []).push(e);
    const zones = {};
    for (const w of f.workers) (zones[w.zone || "(no zone)"] = zones[w.zone || "(no zone)"] || []).push(w);
    const box = $("zones");
    box.replaceChildren();
    for (const z of Object.keys(zones).sort()) {
      const zone = el("div", null, "zone");
      zone.append(el("h3", "zone " + z));
      for (const w of zones[z]) {
        const line = el("div", null, "worker");
        line.dataset.worker = w.id;
        const id = el("div", null, "id");
        id.append(el("strong", w.id), el("br"));
        const envs = perWorker[w.id] || [];
        const count = el("span", envs.length + " environments", "envs");
        id.append(count);
        if (!w.healthy) id.append(" ", el("span", "unhealthy", "unhealthy"));
        if (w.draining) id.append(" ", el("span", "draining", "draining"));
        const byFn = {};
        for (const e of envs) byFn[e.account + "/" + e.function] = (byFn[e.account + "/" + e.function] || 0) + 1;
        const list = el("div", Object.entries(byFn).map(([k, n]) => k + " ×" + n).join(", "), "meta");
        line.append(id, bar(w.bookedMB, w.memoryMB, "MB"), bar(w.bookedCpuMillis, w.cpuMillis, "mCPU"), list);
        zone.append(line);
      }
      box.append(zone);
    }
    const pb = $("part-table").tBodies[0];
    pb.replaceChildren();
    for (const p of f.partitions) {
      const members = Object.entries(p.members || {}).map(([z, ms]) => (z || "(no zone)") + ": " + ms.join(", ")).join("; ");
      const envs = Object.entries(p.environments || {}).map(([s, n]) => s + " " + n).join(", ");
      pb.append(row([p.id, p.leader + (p.leaderZone ? " @" + p.leaderZone : ""), p.epoch, members, envs]));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", async () => {
      await fetch("api/signout", { method: "POST", credentials: "same-origin" });
      $("akid").value = "";
      location.hash = "#/";
      start();
    });
    window.addEventListener("hashchange", route);
    start();
  });
})();
