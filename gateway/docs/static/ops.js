// The operator page (/admin/ops): asks /admin/ops/data with the operator's token every 2 s and draws it.
// One file, loaded with `defer`, no inline code (the page's CSP has no 'unsafe-inline'). To add a block: a
// <section> with a table in ops.html, and one `rows(...)` line in draw() below.
"use strict";
const KEY = "cg-admin-token";
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) {
  sessionStorage.setItem(KEY, hash.get("token"));
  history.replaceState(null, "", location.pathname);  // the token does not stay in the address bar
}
let previous = null;
const $ = (id) => document.getElementById(id);
function text(v) { return v === null || v === undefined ? "–" : String(v); }
function rows(id, items, cells) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    for (const [value, cls] of cells(item)) {
      const td = document.createElement("td");
      td.textContent = text(value);
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }));
  if (!items.length) {
    const tr = document.createElement("tr"), td = document.createElement("td");
    td.colSpan = $(id).querySelectorAll("th").length; td.className = "l"; td.textContent = "none yet";
    tr.appendChild(td); body.appendChild(tr);
  }
}
function cards(id, pairs) {
  $(id).replaceChildren(...pairs.map(([k, v]) => {
    const span = document.createElement("span"); span.textContent = k + ": " + text(v); return span; }));
}
function draw(data) {
  const before = new Map((previous ? previous.operations : []).map((o) => [o.api + o.version + o.operation, o]));
  const dt = previous ? data.at - previous.at : 0;
  rows("ops", data.operations, (o) => {
    const p = before.get(o.api + o.version + o.operation);
    const rate = dt > 0 ? ((o.requests - (p ? p.requests : 0)) / dt).toFixed(1) : null;
    return [[o.api, "l"], [o.version, "l"], [o.operation, "l"], [o.requests], [rate], [o.client_errors],
            [o.server_errors, o.server_errors ? "bad" : ""], [(o.error_rate * 100).toFixed(1) + " %"],
            [o.p50_ms], [o.p95_ms]];
  });
  const a = data.admission;
  cards("admission", [["admission limit", a.limit], ["in flight", a.in_flight], ["queued", a.queued],
                      ["CPU busy", Math.round(a.cpu_busy * 100) + " %"], ["loop delay", a.loop_delay_ms + " ms"]]);
  const shedBefore = previous ? previous.admission.shed : {};
  rows("shed", Object.entries(a.shed), ([reason, n]) => [[reason, "l"], [n, n ? "bad" : ""],
       [dt > 0 ? ((n - (shedBefore[reason] || 0)) / dt).toFixed(1) : null]]);
  rows("breakers", Object.entries(data.breakers), ([v, s]) => [[v, "l"], [s, "l " + s]]);
  rows("vendors", data.vendor_attempts, (a) => [[a.vendor, "l"], [a.outcome, "l"], [a.count]]);
  rows("drift", data.vendor_drift || [], (d) => [[d.vendor, "l"], [d.operation, "l"], [d.kind, "l bad"], [d.count]]);
  rows("limits", data.ratelimit_rejections, (r) => [[r.operation, "l"], [r.client, "l"], [r.reason, "l"], [r.count]]);
  cards("jobs", [["queue depth", data.jobs.queue_depth], ["oldest job", data.jobs.oldest_age_s + " s"],
                 ["dead letters", data.jobs.dead_letters]]);
  $("board").hidden = false;
  $("status").textContent = "updated " + new Date(data.at * 1000).toISOString() + " · up " + data.uptime_s + " s";
  previous = data;
}
async function refresh() {
  const token = sessionStorage.getItem(KEY);
  if (!token) { $("login").style.display = "block"; $("status").textContent = "a token is needed"; return; }
  try {
    const r = await fetch("/admin/ops/data", {headers: {authorization: "Bearer " + token}, cache: "no-store"});
    if (r.status === 401 || r.status === 403) {
      sessionStorage.removeItem(KEY); $("login").style.display = "block";
      $("status").textContent = "the token was refused (" + r.status + "): paste a gateway:admin token";
      return;
    }
    draw(await r.json());
  } catch (e) { $("status").textContent = "cannot reach the gateway: " + e; }
}
$("login").addEventListener("submit", (e) => {
  e.preventDefault(); sessionStorage.setItem(KEY, $("token").value.trim()); $("login").style.display = "none"; refresh();
});
refresh();
setInterval(refresh, 2000);
