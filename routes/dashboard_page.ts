/**
 * @module
 * The dashboard page: one HTML document with its style and script inline, so it needs no
 * build step and ships inside a `deno compile`d binary. It renders the state that
 * `/dashboard/events` pushes over SSE; every value goes in through `textContent`, never as
 * markup. Admin buttons call `/admin/*` with the key the operator typed (kept for the tab
 * only, in sessionStorage).
 *
 * Over 350 lines because it is a whole page (markup, style and script); the server side is
 * routes/dashboard.ts.
 */

const STYLE = `
:root { --bg:#0f1216; --panel:#171b21; --line:#262c35; --text:#d8dee9; --dim:#8a93a3;
  --ok:#4cc38a; --warn:#e5b454; --bad:#ef6b73; --accent:#6cb6ff; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, sans-serif; background:var(--bg); color:var(--text); }
header { display:flex; align-items:center; gap:16px; padding:12px 20px;
  border-bottom:1px solid var(--line); flex-wrap:wrap; }
header h1 { font-size:16px; margin:0; font-weight:600; }
.pill { padding:2px 10px; border-radius:999px; font-size:12px; border:1px solid var(--line); }
.pill.ok { color:var(--ok); border-color:var(--ok); }
.pill.bad { color:var(--bad); border-color:var(--bad); }
.pill.warn { color:var(--warn); border-color:var(--warn); }
.spacer { flex:1; }
main { display:grid; grid-template-columns:minmax(280px, 1fr) minmax(0, 2fr); gap:16px;
  padding:16px 20px; }
@media (max-width: 900px) { main { grid-template-columns:1fr; } }
.wide { grid-column:1 / -1; }
section { background:var(--panel); border:1px solid var(--line); border-radius:8px;
  padding:12px 14px; min-width:0; overflow-x:auto; }
section h2 { font-size:12px; text-transform:uppercase; letter-spacing:.08em; color:var(--dim);
  margin:0 0 10px; font-weight:600; }
.big { font-size:28px; font-weight:600; }
.dim { color:var(--dim); }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:4px 5px; border-bottom:1px solid var(--line);
  white-space:nowrap; overflow:hidden; text-overflow:ellipsis; max-width:220px; }
td.id { max-width:150px; font-size:12px; }
td.act { text-align:right; }
th { color:var(--dim); font-weight:500; font-size:12px; }
.state-loaded { color:var(--ok); } .state-loading { color:var(--warn); }
.state-stopped, .state-missing { color:var(--dim); }
.status-ok { color:var(--ok); } .status-bad { color:var(--bad); } .status-gone { color:var(--warn); }
.bar { height:6px; background:var(--line); border-radius:3px; overflow:hidden; margin-top:8px; }
.bar > div { height:100%; background:var(--warn); width:0; transition:width .4s; }
.membar { display:flex; height:18px; background:var(--line); border-radius:3px; overflow:hidden; margin-top:6px; }
.membar > div { height:100%; font-size:11px; line-height:18px; padding:0 4px; overflow:hidden;
  white-space:nowrap; border-right:1px solid var(--bg); box-sizing:border-box; }
.mem-ready { background:var(--ok); color:var(--bg); }
.mem-starting, .mem-draining, .mem-stopping { background:var(--warn); color:var(--bg); }
ol.timeline { list-style:none; margin:0; padding:0; }
ol.timeline li { display:grid; grid-template-columns:72px 1fr 64px; gap:8px; padding:4px 0;
  border-bottom:1px solid var(--line); align-items:center; }
ol.timeline .span { height:8px; background:var(--accent); border-radius:4px; min-width:3px; }
ol.timeline li.failed .span { background:var(--bad); }
ol.timeline .what { grid-column:1 / -1; font-size:12px; }
button { background:#222a35; color:var(--text); border:1px solid var(--line); border-radius:4px;
  padding:2px 8px; cursor:pointer; font:inherit; font-size:12px; }
button:disabled { opacity:.4; cursor:default; }
input { background:#0b0e12; color:var(--text); border:1px solid var(--line); border-radius:4px;
  padding:3px 8px; font:inherit; }
#notice { min-height:1.4em; font-size:12px; }
#notice.bad { color:var(--bad); } #notice.ok { color:var(--ok); }
.empty { color:var(--dim); font-style:italic; padding:6px 0; }
`;

const SCRIPT = `
"use strict";
var state = null;
var adminKey = sessionStorage.getItem("lqp-admin-key") || "";

function el(tag, props, children) {
  var node = document.createElement(tag);
  if (props) for (var k in props) {
    if (k === "text") node.textContent = props[k];
    else if (k === "cls") node.className = props[k];
    else if (k.indexOf("data-") === 0) node.setAttribute(k, props[k]);
    else node[k] = props[k];
  }
  (children || []).forEach(function (c) { if (c) node.appendChild(c); });
  return node;
}
function secs(s) {
  if (s === null || s === undefined) return "–";
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 90) return Math.round(s) + " s";
  return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
}
function ms(v) { return v === null || v === undefined ? "–" : secs(v / 1000); }
function clock(at) { return new Date(at).toLocaleTimeString([], { hour12: false }); }
function replace(id, nodes) {
  var box = document.getElementById(id);
  box.replaceChildren.apply(box, nodes);
}
function pill(id, ok, text) {
  var p = document.getElementById(id);
  p.className = "pill " + (ok ? "ok" : "bad");
  p.textContent = text;
  p.title = text;
}
function notice(text, ok) {
  var n = document.getElementById("notice");
  n.textContent = text;
  n.className = ok ? "ok" : "bad";
}
function adminButton(action, label, extra) {
  if (!state || !state.admin) return null;
  var b = el("button", Object.assign({ text: label, "data-action": action }, extra || {}));
  b.disabled = !adminKey;
  if (!adminKey) b.title = "enter the admin key first";
  b.onclick = function () { act(action, b); };
  return b;
}

function act(action, button) {
  var req;
  var model = button.getAttribute("data-model");
  var job = button.getAttribute("data-job");
  if (action === "load") req = ["POST", "/admin/load", JSON.stringify({ model: model })];
  if (action === "unload") req = ["POST", "/admin/unload", JSON.stringify({ model: model })];
  if (action === "cancel") req = ["DELETE", "/admin/queue/" + encodeURIComponent(job), null];
  notice(action + " …", true);
  var headers = { authorization: "Bearer " + adminKey };
  if (req[2]) headers["content-type"] = "application/json";
  fetch(req[1], { method: req[0], headers: headers, body: req[2] })
    .then(function (res) {
      return res.json().then(function (body) {
        if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
        var done = { load: "loaded " + model, unload: "unloaded " + (body.unloaded || "nothing"),
          cancel: "cancelled " + job };
        notice(done[action], true);
      });
    })
    .catch(function (err) { notice(action + " failed: " + err.message, false); });
}

function renderNow(s) {
  var cur = s.current;
  var ready = s.resident.filter(function (r) { return r.phase === "ready"; })
    .map(function (r) { return r.model; });
  document.getElementById("current-model").textContent = ready.join(" + ") || "none";
  var phase = cur.phase;
  var text = phase === "ready" ? "loaded " + secs(cur.since_s) + " ago"
    : phase === "starting" || phase === "stopping" ? "loading " + cur.target + " · " + secs(cur.since_s)
    : phase === "reconciling" ? "checking what runs…" : "no model loaded";
  document.getElementById("phase").textContent = text;
  document.getElementById("phase").setAttribute("data-phase", phase);
  var bar = document.getElementById("load-bar");
  var loading = cur.target !== null && (phase === "starting" || phase === "stopping");
  bar.parentElement.style.visibility = loading ? "visible" : "hidden";
  if (loading) {
    var estimate = (s.models.find(function (m) { return m.id === cur.target; }) || {}).load_s || 1;
    bar.style.width = Math.min(100, (100 * cur.since_s) / estimate) + "%";
  }
  renderMemory(s);
  document.getElementById("workers").textContent = s.workers.busy + " / " + s.workers.total;
  replace("inflight", s.running.length === 0 ? [el("div", { cls: "empty", text: "idle" })]
    : s.running.map(function (r) {
      return el("div", { text: r.model + " · " + r.id + " · " + secs(r.running_s) +
        (r.stream ? " · stream" : "") });
    }));
}

/** With a memory_budget: one segment per resident model, its share of the budget. */
function renderMemory(s) {
  var box = document.getElementById("memory");
  box.style.display = s.memory_budget_gb === null ? "none" : "";
  if (s.memory_budget_gb === null) return;
  var used = 0;
  replace("memory-bar", s.resident.map(function (r) {
    used += r.memory_gb || 0;
    var node = el("div", { cls: "mem-" + r.phase, text: r.model, "data-model": r.model,
      title: r.model + ": " + r.memory_gb + " GB, " + r.phase });
    node.style.width = (100 * (r.memory_gb || 0)) / s.memory_budget_gb + "%";
    return node;
  }));
  document.getElementById("memory-text").textContent =
    used + " of " + s.memory_budget_gb + " GB declared";
}

function renderModels(s) {
  replace("models-body", s.models.map(function (m) {
    var unload = m.state === "loaded" ? adminButton("unload", "Unload", { "data-model": m.id }) : null;
    var load = m.state !== "loaded" ? adminButton("load", "Load", { "data-model": m.id }) : null;
    return el("tr", { "data-model": m.id }, [
      el("td", { text: m.id }),
      el("td", { cls: "state state-" + m.state, text: m.state }),
      el("td", { cls: "dim", text: m.container }),
      el("td", { text: String(m.waiting.interactive) + (m.waiting.batch ? " + " + m.waiting.batch + " batch" : "") }),
      el("td", { text: secs(m.load_s) + (m.load_learned ? "" : " (guess)") }),
      el("td", { text: m.ttl_s === null ? "–" : secs(m.ttl_s) }),
      el("td", { cls: "act" }, [load, unload]),
    ]);
  }));
}

function renderQueue(s) {
  var shown = s.queue.length < s.queue_total ? " (first " + s.queue.length + " shown)" : "";
  document.getElementById("queue-count").textContent =
    s.queue_total + " waiting" + shown + " · policy " + s.policy;
  replace("queue-body", s.queue.length === 0
    ? [el("tr", {}, [el("td", { cls: "empty", colSpan: 7, text: "nothing waits" })])]
    : s.queue.map(function (j) {
      return el("tr", { "data-job": j.id }, [
        el("td", { text: String(j.position) }),
        el("td", { text: j.model }),
        el("td", { text: j.priority }),
        el("td", { text: secs(j.waited_s) }),
        el("td", { text: "~" + secs(j.eta_s) }),
        el("td", { cls: "dim id", text: j.id, title: j.id }),
        el("td", { cls: "act" }, [adminButton("cancel", "Cancel", { "data-job": j.id })]),
      ]);
    }));
}

function renderSwaps(s) {
  var longest = Math.max.apply(null, [1].concat(s.swaps.map(function (w) { return w.ms; })));
  var items = s.swaps.map(function (w) {
    var what = (w.from || "none") + " → " + (w.to || "none");
    var note = w.error ? "failed: " + w.error : w.cause ? w.cause : "";
    if (w.kv_saved_tokens !== null || w.kv_restored_tokens !== null) {
      note += (note ? " · " : "") + "KV " + (w.kv_saved_tokens || 0) + " tokens saved, " +
        (w.kv_restored_tokens || 0) + " restored in " + ms(w.kv_ms);
    }
    return el("li", { cls: w.ok ? "" : "failed", "data-swap": what }, [
      el("span", { cls: "dim", text: clock(w.at) }),
      el("div", {}, [el("div", { cls: "span", style: "width:" + (100 * w.ms) / longest + "%" })]),
      el("span", { text: ms(w.ms) }),
      el("div", { cls: "what", text: what + (note ? " · " + note : "") }),
    ]);
  });
  replace("swaps", items.length ? items : [el("li", { cls: "empty", text: "no swaps yet" })]);
}

function renderRequests(s) {
  replace("requests-body", s.requests.length === 0
    ? [el("tr", {}, [el("td", { cls: "empty", colSpan: 9, text: "no requests yet" })])]
    : s.requests.map(function (r) {
      var cls = r.status < 400 ? "status-ok" : r.status === 499 ? "status-gone" : "status-bad";
      var tokens = r.completion_tokens === null ? "–" : r.prompt_tokens + " → " + r.completion_tokens;
      return el("tr", { "data-request": r.id }, [
        el("td", { cls: "dim", text: clock(r.at) }),
        el("td", { text: r.model, title: r.path }),
        el("td", { cls: "dim", text: r.key || "–" }),
        el("td", { cls: "status " + cls, text: String(r.status) + (r.reason ? " " + r.reason : "") }),
        el("td", { text: ms(r.wait_ms) }),
        el("td", { text: r.swap_ms ? ms(r.swap_ms) : "–" }),
        el("td", { text: ms(r.total_ms) }),
        el("td", { text: tokens }),
        el("td", { cls: "dim id", text: r.id, title: r.id }),
      ]);
    }));
}

/** In a cluster: every live node, what it has resident and what waits there. */
function renderNodes(s) {
  var section = document.getElementById("nodes");
  section.style.display = s.cluster ? "" : "none";
  if (!s.cluster) return;
  replace("nodes-body", s.cluster.nodes.map(function (n) {
    var waiting = Object.keys(n.queue_depth).map(function (m) { return m + " " + n.queue_depth[m]; });
    return el("tr", { "data-node": n.node }, [
      el("td", { text: n.node + (n.self ? " (this one)" : ""), title: n.url }),
      el("td", { text: n.resident_models.map(function (r) { return r.model + " " + r.phase; }).join(", ") || "–" }),
      el("td", { text: waiting.join(", ") || "–" }),
      el("td", { text: String(n.running) }),
      el("td", { text: String(n.free_workers) }),
    ]);
  }));
}

function render(s) {
  state = s;
  pill("health-docker", s.health.docker.ok, s.health.docker.ok ? "Docker ok" : "Docker: " + s.health.docker.error);
  pill("health-store", s.health.store.ok, s.health.store.ok ? "Store " + s.health.store.name : "Store: " + s.health.store.error);
  document.getElementById("uptime").textContent = "up " + secs(s.uptime_s);
  document.getElementById("admin").style.display = s.admin ? "" : "none";
  renderNow(s);
  renderNodes(s);
  renderModels(s);
  renderQueue(s);
  renderSwaps(s);
  renderRequests(s);
}

document.getElementById("admin-key").value = adminKey;
document.getElementById("admin-form").onsubmit = function (e) {
  e.preventDefault();
  adminKey = document.getElementById("admin-key").value.trim();
  sessionStorage.setItem("lqp-admin-key", adminKey);
  notice(adminKey ? "admin key set for this tab" : "admin key cleared", true);
  if (state) render(state);
};

var live = document.getElementById("live");
var source = new EventSource("dashboard/events");
source.addEventListener("state", function (e) {
  live.className = "pill ok";
  live.textContent = "live";
  render(JSON.parse(e.data));
});
source.onerror = function () {
  live.className = "pill warn";
  live.textContent = "reconnecting…";
};
`;

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LLM Queue Proxy</title>
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>LLM Queue Proxy</h1>
  <span id="live" class="pill warn">connecting…</span>
  <span id="health-docker" class="pill">Docker</span>
  <span id="health-store" class="pill">Store</span>
  <span id="uptime" class="dim"></span>
  <span class="spacer"></span>
  <div id="admin" style="display:none">
    <span id="notice"></span>
    <form id="admin-form" style="display:inline">
      <input id="admin-key" type="password" placeholder="admin key" autocomplete="off">
      <button type="submit">Use</button>
    </form>
  </div>
</header>
<main>
  <section>
    <h2>Now on the GPU</h2>
    <div id="current-model" class="big">–</div>
    <div id="phase" class="dim"></div>
    <div class="bar"><div id="load-bar"></div></div>
    <div id="memory" style="display:none">
      <h2 style="margin-top:14px">Memory <span id="memory-text" class="dim"></span></h2>
      <div id="memory-bar" class="membar"></div>
    </div>
    <h2 style="margin-top:14px">Workers busy <span id="workers"></span></h2>
    <div id="inflight"></div>
  </section>
  <section id="nodes" style="display:none">
    <h2>Nodes</h2>
    <table>
      <thead><tr><th>node</th><th>resident</th><th>waiting</th><th>running</th>
        <th>free workers</th></tr></thead>
      <tbody id="nodes-body"></tbody>
    </table>
  </section>
  <section>
    <h2>Models</h2>
    <table>
      <thead><tr><th>model</th><th>state</th><th>container</th><th>waiting</th>
        <th>load time</th><th>ttl</th><th></th></tr></thead>
      <tbody id="models-body"></tbody>
    </table>
  </section>
  <section>
    <h2>Swaps</h2>
    <ol id="swaps" class="timeline"></ol>
  </section>
  <section>
    <h2>Queue · <span id="queue-count"></span></h2>
    <table>
      <thead><tr><th>#</th><th>model</th><th>priority</th><th>waited</th><th>eta</th>
        <th>id</th><th></th></tr></thead>
      <tbody id="queue-body"></tbody>
    </table>
  </section>
  <section class="wide">
    <h2>Recent requests</h2>
    <table>
      <thead><tr><th>time</th><th>model</th><th>key</th><th>status</th><th>wait</th><th>swap</th>
        <th>total</th><th>tokens</th><th>id</th></tr></thead>
      <tbody id="requests-body"></tbody>
    </table>
  </section>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
