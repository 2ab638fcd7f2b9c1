"use strict";
// The exception queue page: everything it shows comes from /admin/* with the operator's bearer token (scope
// gateway:admin), kept in sessionStorage for this tab only (shared with the operator page; a #token=... in the
// address is taken once and removed). No inline script or style: the page runs under a strict CSP.
const KEY = "cg-admin-token";
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) {
  sessionStorage.setItem(KEY, hash.get("token"));
  history.replaceState(null, "", location.pathname);
}
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function rows(id, items, cells) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...items.map((item) => {
    const tr = el("tr");
    for (const cell of cells(item)) {
      const td = el("td");
      if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === null || cell === undefined ? "–" : String(cell);
      tr.appendChild(td);
    }
    return tr;
  }));
  if (!items.length) {
    const tr = el("tr"), td = el("td", "none");
    td.colSpan = $(id).querySelectorAll("th").length;
    tr.appendChild(td); body.appendChild(tr);
  }
}

async function api(method, path, body) {
  const token = sessionStorage.getItem(KEY);
  const init = {method, headers: {authorization: "Bearer " + token}, cache: "no-store"};
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["content-type"] = "application/json"; }
  const r = await fetch(path, init);
  if (r.status === 401 || r.status === 403) {
    sessionStorage.removeItem(KEY);
    throw new Error("token refused");
  }
  const data = await r.json();
  if (!r.ok) throw new Error(data.detail || data.title || ("HTTP " + r.status));
  return data;
}

function age(seconds) {
  if (seconds < 120) return Math.round(seconds) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  if (seconds < 172800) return Math.round(seconds / 3600) + " h";
  return Math.round(seconds / 86400) + " days";
}

function itemCard(item) {
  const card = el("div", null, "item");
  card.id = "item-" + item.id;
  card.appendChild(el("h3", item.title));
  card.appendChild(el("div", item.kind + " · " + item.source + " · " + item.id + " · waiting " + age(item.age_s) +
                      (item.occurrences > 1 ? " · seen " + item.occurrences + " times" : ""), "kind"));
  card.appendChild(el("p", "Next step: " + item.suggested_action, "next"));
  const details = el("details");
  details.appendChild(el("summary", "Data snapshot, attempts and vendor answers"));
  details.appendChild(el("pre", JSON.stringify({snapshot: item.snapshot, context: item.context}, null, 2)));
  card.appendChild(details);
  const requeue = el("button", "Requeue", "requeue");
  requeue.type = "button";
  requeue.addEventListener("click", () => act(card, "requeue", item.id));
  card.appendChild(requeue);
  const form = el("form");
  const reason = el("input");
  reason.placeholder = "reason (required)";
  reason.className = "reason";
  const resolve = el("button", "Resolve", "resolve");
  form.append(" ", reason, " ", resolve);
  form.addEventListener("submit", (e) => { e.preventDefault(); act(card, "resolve", item.id, reason.value.trim()); });
  card.appendChild(form);
  card.appendChild(el("span", "", "outcome"));
  return card;
}

async function act(card, action, id, reason) {
  const outcome = card.querySelector(".outcome");
  if (action === "resolve" && !reason) { outcome.textContent = " give a reason"; outcome.className = "outcome error"; return; }
  try {
    const data = await api("POST", "/admin/exceptions/" + encodeURIComponent(id) + "/" + action,
                           action === "resolve" ? {reason} : undefined);
    outcome.textContent = action === "resolve" ? " resolved" : " requeued" + (data.held_until ? " (held until " + data.held_until + ")" : "");
    outcome.className = "outcome done";
    setTimeout(refresh, 500);
  } catch (e) { outcome.textContent = " " + e.message; outcome.className = "outcome error"; }
}

async function silence(alert) {
  try {
    await api("POST", "/admin/alerts/silences", {matchers: {alertname: alert.name, ...labelsOf(alert)}, duration_s: 3600,
                                                 comment: "silenced from the exception queue page"});
    refresh();
  } catch (e) { $("status").textContent = "cannot silence: " + e.message; }
}

function labelsOf(alert) {
  const out = {};
  for (const [k, v] of Object.entries(alert.labels)) if (k !== "severity") out[k] = v;
  return out;
}

function draw(queue, alerts, status) {
  const backlog = queue.backlog;
  const firing = alerts.alerts.filter((a) => a.state === "firing");
  $("backlog").replaceChildren(
    ...Object.entries(backlog).map(([kind, v]) => el("span", kind.replace("_", " ") + ": " + v.open + " open, oldest " + age(v.oldest_age_s))),
    el("span", "alerts firing: " + firing.length));
  rows("alerts", alerts.alerts, (a) => {
    const links = el("span", Object.entries(a.links).filter(([, v]) => v.length).map(([k, v]) => k + ": " + v.join(", ")).join("; "));
    let action = "";
    if (a.state === "firing" && !a.silenced_by.length) {
      action = el("button", "Silence 1 h", "silence"); action.type = "button";
      action.addEventListener("click", () => silence(a));
    }
    const state = a.silenced_by.length ? el("span", a.state + " (silenced)", "silenced") : el("span", a.state, a.state);
    return [state, a.name, a.severity, a.summary, a.starts_at, links, action];
  });
  const items = $("items");
  items.replaceChildren(...queue.exceptions.map(itemCard));
  if (!queue.exceptions.length) items.appendChild(el("p", "Nothing is waiting."));
  rows("rules", status.rules, (r) => {
    const s = r.last_run && r.last_run.summary;
    return [r.rule, r.every, r.last_run && r.last_run.started_at, r.last_run ? r.last_run.state + (s && s.reason ? " (" + s.reason + ")" : "") : "never",
            s ? s.mismatches : null, s ? s.window.join(" – ") : null];
  });
  rows("paths", status.paths, (p) => [p.path, p.every, p.last_run && p.last_run.at, p.last_run ? p.last_run.status : "never",
                                      p.last_run ? p.last_run.steps.map((s) => s.step + " " + s.status + " " + s.ms + " ms").join(", ") : null]);
  rows("slos", status.objectives, (o) => {
    const rates = status.burn_rates[o.operation + ":" + o.slo] || {};
    return [o.operation, o.objective + " (" + o.window_days + " days)", rates["5m"], rates["30m"], rates["1h"], rates["6h"]];
  });
  $("board").hidden = false;
  $("status").textContent = "updated " + new Date().toISOString();
}

async function refresh() {
  if (!sessionStorage.getItem(KEY)) { $("login").hidden = false; $("status").textContent = "a token is needed"; return; }
  try {
    const [queue, alerts, status] = await Promise.all([api("GET", "/admin/exceptions"), api("GET", "/admin/alerts"),
                                                       api("GET", "/admin/monitoring")]);
    draw(queue, alerts, status);
  } catch (e) {
    if (!sessionStorage.getItem(KEY)) { $("login").hidden = false; $("status").textContent = "the token was refused: paste a gateway:admin token"; return; }
    $("status").textContent = "cannot reach the gateway: " + e.message;
  }
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault(); sessionStorage.setItem(KEY, $("token").value.trim()); $("login").hidden = true; refresh();
});
refresh();
setInterval(refresh, 5000);
