"""The status page served at ``GET /``: plain HTML and a small inline script, no build step.

The script polls ``/status.json`` (same origin, so the browser sends the view cookie and no
``Origin``) every two seconds and fills the tables with ``textContent`` (nothing from the
server is ever parsed as HTML). Served with a Content-Security-Policy that allows nothing but
this inline script and style and requests to the page's own origin.
"""

from __future__ import annotations

__all__ = ["LOGIN_PAGE", "STATUS_PAGE"]

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1f24; background: #fff; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; min-width: 40em; }
th, td { text-align: left; padding: .25em .8em; border-bottom: 1px solid #d0d7de; }
th { background: #f6f8fa; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #57606a; } .big { font-size: 1.6em; font-weight: 600; } .err { color: #b42318; }
#spark { vertical-align: middle; margin-left: 1em; }
"""

STATUS_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>openenv-gym status</title>
<link rel="icon" href="data:,"><style>{_STYLE}</style></head>
<body>
<h1>openenv-gym server</h1>
<div class="muted" id="summary">loading /status.json ...</div>
<h2>Steps per second (last minute)</h2>
<span class="big" id="rate">-</span><svg id="spark" width="240" height="40"></svg>
<h2>Hosted specs</h2><div id="specs" class="muted">-</div>
<h2>Totals by spec</h2>
<table><thead><tr><th>spec</th><th>protocol</th><th>live sessions</th><th>envs</th>
<th>env steps</th><th>errors</th><th>p50 step ms</th></tr></thead>
<tbody id="totals"></tbody></table>
<h2>Live sessions</h2>
<table><thead><tr><th>session</th><th>worker</th><th>protocol</th><th>spec</th><th>envs</th>
<th>env steps</th><th>requests</th><th>errors</th><th>idle s</th></tr></thead>
<tbody id="sessions"></tbody></table>
<h2>Recent errors</h2>
<table><thead><tr><th>time</th><th>session</th><th>spec</th><th>type</th><th>message</th></tr>
</thead><tbody id="errors"></tbody></table>
<script>
"use strict";
const BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
  0.1, 0.25, 0.5, 1, 2.5, 5, 10, Infinity];
function cell(row, text, numeric) {{
  const td = document.createElement("td");
  td.textContent = String(text);
  if (numeric) td.className = "n";
  row.appendChild(td);
}}
function fill(id, rows, empty) {{
  const body = document.getElementById(id);
  body.replaceChildren();
  if (!rows.length) {{
    const tr = document.createElement("tr"); cell(tr, empty, false);
    tr.firstChild.colSpan = 9; tr.className = "muted"; body.appendChild(tr); return;
  }}
  for (const values of rows) {{
    const tr = document.createElement("tr");
    for (const v of values) cell(tr, v, typeof v === "number");
    body.appendChild(tr);
  }}
}}
function p50ms(buckets) {{
  const total = buckets.reduce((a, b) => a + b, 0);
  if (!total) return "-";
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {{
    seen += buckets[i];
    if (seen * 2 >= total) return BUCKETS[i] === Infinity ? "> 10000" : "<= " + BUCKETS[i] * 1000;
  }}
  return "-";
}}
function spark(series) {{
  const svg = document.getElementById("spark");
  const max = Math.max(1, ...series);
  const w = 240 / Math.max(1, series.length);
  svg.replaceChildren();
  series.forEach((v, i) => {{
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const h = Math.max(1, 38 * v / max);
    r.setAttribute("x", i * w); r.setAttribute("y", 40 - h);
    r.setAttribute("width", Math.max(1, w - 1)); r.setAttribute("height", h);
    r.setAttribute("fill", "#2f81f7"); svg.appendChild(r);
  }});
}}
function show(s) {{
  const workers = s.workers.length;
  document.getElementById("summary").textContent =
    s.live_sessions + " live session(s), " + s.live_envs + " env(s), " + workers +
    " worker process(es); updated " + new Date().toLocaleTimeString();
  document.getElementById("rate").textContent = s.steps_per_s.toFixed(1);
  spark(s.rate_series || []);
  document.getElementById("specs").textContent =
    s.specs.length ? s.specs.join(", ") : "any gymnasium id (--allow-any-id)";
  // Sessions that closed without building an env (readiness probes) are not worth a row.
  const totals = s.totals.filter(t => t.spec !== "none" || t.live_sessions ||
    Object.keys(t.errors).length);
  fill("totals", totals.map(t => [t.spec, t.protocol, t.live_sessions, t.live_envs, t.steps,
    Object.values(t.errors).reduce((a, b) => a + b, 0), p50ms(t.latency_buckets)]), "none yet");
  fill("sessions", s.sessions.map(x => ["#" + x.id, x.worker, x.protocol, x.spec, x.num_envs,
    x.steps, x.requests, x.errors, x.idle_s.toFixed(1)]), "no live session");
  fill("errors", s.recent_errors.map(e => [new Date(e.time * 1000).toLocaleTimeString(),
    "#" + e.session, e.spec, e.type, e.message]), "no error");
}}
async function poll() {{
  try {{
    const reply = await fetch("/status.json", {{cache: "no-store", credentials: "same-origin"}});
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    show(await reply.json());
  }} catch (e) {{
    const summary = document.getElementById("summary");
    summary.textContent = "cannot read /status.json: " + e.message;
    summary.className = "err";
  }}
}}
poll();
setInterval(poll, 2000);
</script>
</body></html>
""".encode()

LOGIN_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>openenv-gym status: token</title>
<link rel="icon" href="data:,"><style>{_STYLE}</style></head>
<body><h1>openenv-gym server</h1>
<p>This server requires its token (the one clients present as <code>Authorization: Bearer</code>).
</p>
<form method="get" action="/"><input type="password" name="token" autocomplete="off" size="40">
<button type="submit">show status</button></form>
</body></html>
""".encode()
