// The bootgate dashboard: fleet counts, incidents, hosts and the audit log,
// refreshed from the appliance's live stream. Everything the hosts sent is
// shown as text, never as markup; the API escapes its control and
// bidirectional characters (\x1b, \u202e) before it gets here.
"use strict";

const state = { operator: "", tab: "incidents", incident: null, host: null, incNext: 0, hostNext: "" };

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : c === null || c === undefined ? "" : String(c));
  return e;
}

async function api(path, opts) {
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({ message: r.statusText }));
  if (!r.ok) throw new Error(body.message || r.statusText);
  return body;
}

function when(t) {
  if (!t) return "";
  return new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function rules(reasons) {
  return [...new Set((reasons || []).map((r) => r.rule))].join(", ");
}

function setCount(id, n) {
  document.getElementById(id).textContent = n === undefined ? "0" : String(n);
}

function renderSummary(s) {
  setCount("count-admitted", s.hosts.admitted);
  setCount("count-quarantined", s.hosts.quarantined);
  for (const st of ["open", "investigating", "remediated", "closed"]) setCount("count-" + st, s.incidents[st]);
  // Without the DHCP gate there are no leases to count.
  for (const pool of ["production", "quarantine"]) {
    const n = s.leases ? s.leases[pool] || 0 : "–";
    document.getElementById("count-lease-" + pool).textContent = String(n);
  }
}

async function loadIncidents(more) {
  const tbody = document.querySelector("#incidents tbody");
  const q = new URLSearchParams({ state: document.getElementById("incident-state").value, limit: "100" });
  if (more && state.incNext) q.set("before", state.incNext);
  const page = await api("/api/v1/incidents?" + q);
  if (!more) tbody.replaceChildren();
  for (const i of page.incidents) {
    tbody.append(el("tr", { class: "row", "data-incident": i.id, onclick: () => openIncident(i.id) },
      el("td", {}, i.id), el("td", { class: "mono" }, i.host_id), el("td", { class: "state-" + i.state }, i.state),
      el("td", {}, i.failures), el("td", { class: "time" }, when(i.opened)), el("td", {}, i.assignee || ""), el("td", {}, rules(i.reasons))));
  }
  state.incNext = page.next || 0;
  document.getElementById("incidents-more").hidden = !page.next;
}

async function loadHosts(more) {
  const tbody = document.querySelector("#hosts tbody");
  const q = new URLSearchParams({ limit: "100" });
  const st = document.getElementById("host-state").value;
  if (st) q.set("state", st);
  const prefix = document.getElementById("host-prefix").value.trim();
  if (prefix) q.set("prefix", prefix);
  if (more && state.hostNext) q.set("after", state.hostNext);
  const page = await api("/api/v1/hosts?" + q);
  if (!more) tbody.replaceChildren();
  for (const h of page.hosts) {
    const lease = h.lease ? `${h.lease.ip} (${h.lease.pool})` : "";
    tbody.append(el("tr", { class: "row", "data-host": h.id, onclick: () => openHost(h.id) },
      el("td", { class: "mono" }, h.id), el("td", { class: "state-" + h.state }, h.state),
      el("td", { class: "verdict-" + h.last_verdict }, h.last_verdict), el("td", {}, when(h.last_seen)),
      el("td", { class: "mono" }, lease), el("td", {}, h.ek_type)));
  }
  state.hostNext = page.next || "";
  document.getElementById("hosts-more").hidden = !page.next;
}

async function loadAudit() {
  const page = await api("/api/v1/audit?limit=200");
  const tbody = document.querySelector("#audit tbody");
  tbody.replaceChildren(...page.entries.map((a) => el("tr", {},
    el("td", {}, a.id), el("td", {}, when(a.time)), el("td", {}, a.actor), el("td", {}, a.action),
    el("td", { class: "mono" }, a.target), el("td", {}, a.detail))));
}

// show makes one detail panel visible (or none).
function show(panel) {
  for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== panel;
  if (panel !== "detail") state.incident = null;
  if (panel !== "host-detail") state.host = null;
}

async function openHost(id) {
  const h = await api("/api/v1/hosts/" + encodeURIComponent(id));
  show("host-detail");
  state.host = id;
  document.getElementById("host-title").textContent = `Host ${h.id}: ${h.state}`;
  document.getElementById("host-meta").textContent =
    `EK ${h.ek_type}${h.ek_issuer ? " issued by " + h.ek_issuer : ""} · first seen ${when(h.first_seen)} · last seen ${when(h.last_seen)}`;
  document.getElementById("host-lease").textContent = h.lease
    ? `lease ${h.lease.ip} (${h.lease.pool} pool), MAC ${h.lease.mac}, until ${when(h.lease.expires)}` : "no current lease";
  document.getElementById("host-quarantine").hidden = h.state !== "admitted";
  document.querySelector("#host-attestations tbody").replaceChildren(...h.attestations.map((a) =>
    el("tr", {}, el("td", {}, a.id), el("td", { class: "time" }, when(a.time)),
      el("td", { class: "verdict-" + a.verdict }, a.verdict), el("td", {}, rules(a.reasons)))));
  document.querySelector("#host-incidents tbody").replaceChildren(...h.incidents.map((i) =>
    el("tr", { class: "row", "data-incident": i.id, onclick: () => openIncident(i.id) },
      el("td", {}, i.id), el("td", { class: "state-" + i.state }, i.state), el("td", {}, i.failures),
      el("td", { class: "time" }, when(i.opened)))));
}

async function quarantine() {
  const id = state.host;
  const out = document.getElementById("host-result");
  if (!id || !confirm(`Quarantine ${id}? Only a passing attestation admits it again.`)) return;
  try {
    await api(`/api/v1/hosts/${encodeURIComponent(id)}/quarantine`, {
      method: "POST", headers: { "X-Bootgate-Operator": state.operator },
    });
    out.className = "note";
    out.textContent = "quarantined";
    await openHost(id);
  } catch (e) {
    out.className = "note error";
    out.textContent = e.message;
  }
}

async function openIncident(id) {
  const d = await api("/api/v1/incidents/" + id);
  const i = d.incident;
  show("detail");
  state.incident = id;
  document.getElementById("detail-title").textContent = `Incident ${i.id}: ${i.state}`;
  document.getElementById("detail-meta").textContent =
    `host ${i.host_id} · ${i.failures} failure(s)` +
    (i.unrecorded ? ` (${i.unrecorded} counted without their evidence: the store's limits)` : "") +
    ` · opened ${when(i.opened)} · updated ${when(i.updated)}` +
    (i.assignee ? ` · assigned to ${i.assignee}` : "");
  const latest = d.latest || { reasons: [], pcrs: {} };
  document.querySelector("#detail-reasons tbody").replaceChildren(...latest.reasons.map((r) =>
    el("tr", { class: "reason" }, el("td", { class: "rule" }, r.rule), el("td", {}, r.event || ""), el("td", {}, r.detail))));
  const diff = d.diff;
  document.getElementById("diff-title").textContent = diff.against === "last_pass"
    ? `Event log diff against the last pass (attestation ${diff.attestation_id})`
    : diff.against === "reference" ? `Event log diff against ${diff.reference}, the log policy ${diff.policy_name} was learned from`
    : diff.against === "policy" ? `Departures from policy ${diff.policy_name}` : "Event log diff";
  document.getElementById("diff-note").textContent = diff.note || "";
  document.getElementById("diff").textContent = diff.lines.join("\n");
  const ev = document.getElementById("evidence");
  ev.replaceChildren();
  for (const [k, v] of [["attestation", latest.attestation_id], ["time", latest.time], ["policy", `${latest.policy_name} ${latest.policy_digest}`],
    ["EK", `${latest.ek_type} ${latest.ek_subject || ""}`], ["EK issuer", latest.ek_issuer || "(no certificate)"],
    ["event log", `${latest.event_log_bytes} bytes, ${latest.event_log_events || "?"} events`], ["attestations", d.attestations.join(", ")]]) {
    ev.append(el("dt", {}, k), el("dd", {}, v));
  }
  document.querySelector("#pcrs tbody").replaceChildren(...Object.entries(latest.pcrs).map(([n, v]) =>
    el("tr", {}, el("td", {}, n), el("td", { class: "mono" }, v))));
  document.getElementById("bundle").href = `/api/v1/incidents/${i.id}/bundle`;
  document.getElementById("history").replaceChildren(...d.history.map((n) =>
    el("li", {}, `${when(n.time)} ${n.author} ${n.kind}: ${n.text}`)));
  document.getElementById("act").hidden = i.state === "closed";
}

async function act(ev) {
  ev.preventDefault();
  const out = document.getElementById("act-result");
  out.className = "note";
  try {
    await api(`/api/v1/incidents/${state.incident}/actions`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Bootgate-Operator": state.operator },
      body: JSON.stringify({ kind: document.getElementById("act-kind").value, text: document.getElementById("act-text").value }),
    });
    out.textContent = "recorded";
    document.getElementById("act-text").value = "";
  } catch (e) {
    out.className = "note error";
    out.textContent = e.message;
  }
}

async function refresh() {
  try {
    if (state.tab === "incidents") await loadIncidents(false);
    if (state.tab === "hosts") await loadHosts(false);
    if (state.tab === "audit") await loadAudit();
    if (state.incident) await openIncident(state.incident);
    if (state.host) await openHost(state.host);
  } catch (e) {
    console.error(e);
  }
}

let pending = null;
function refreshSoon() {
  clearTimeout(pending);
  pending = setTimeout(refresh, 200);
}

function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/v1/events");
  let first = true;
  es.addEventListener("summary", (m) => {
    live.className = "live";
    live.textContent = "live";
    renderSummary(JSON.parse(m.data));
    // The page loaded its lists itself; later summaries mean a change (or
    // the heartbeat, which keeps leases and times current).
    if (!first) refreshSoon();
    first = false;
  });
  es.onerror = () => { live.className = "live off"; live.textContent = "reconnecting…"; };
}

async function main() {
  try {
    state.operator = (await api("/api/v1/whoami")).operator;
    document.getElementById("whoami").textContent = "operator " + state.operator;
  } catch (e) {
    document.getElementById("whoami").textContent = e.message;
    return;
  }
  for (const b of document.querySelectorAll(".tab")) {
    b.addEventListener("click", () => {
      state.tab = b.dataset.tab;
      for (const o of document.querySelectorAll(".tab")) o.classList.toggle("active", o === b);
      for (const p of document.querySelectorAll(".pane")) p.hidden = p.id !== "tab-" + state.tab;
      refresh();
    });
  }
  document.getElementById("incident-state").addEventListener("change", () => loadIncidents(false));
  document.getElementById("host-state").addEventListener("change", () => loadHosts(false));
  let typing = null;
  document.getElementById("host-prefix").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => loadHosts(false), 250);
  });
  document.getElementById("incidents-more").addEventListener("click", () => loadIncidents(true));
  document.getElementById("hosts-more").addEventListener("click", () => loadHosts(true));
  for (const b of document.querySelectorAll(".panel .close")) b.addEventListener("click", () => show(null));
  document.getElementById("host-quarantine").addEventListener("click", quarantine);
  document.getElementById("act").addEventListener("submit", act);
  connect();
  refresh();
}

main();
