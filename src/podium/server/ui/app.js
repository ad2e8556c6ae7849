// podium web UI: plain JavaScript, no framework, no build step.
// Draws from the same HTTP API as the CLI; one EventSource on /v1/events keeps every
// view live (a change re-reads the open view's data), resource figures are re-read
// every 2 s where shown. Text from the cluster is only ever set as text, never as HTML.
"use strict";

const main = document.getElementById("main");
let current = null; // the mounted view: {refresh(), unmount()}
let refreshTimer = null;

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// The browser logs in with a one-use link from `podium ui` (#login=TOKEN): the server
// answers with a session cookie (HttpOnly, SameSite=Strict). Writes carry x-podium-ui,
// which the server asks of every write made with that cookie.
async function api(path, opts = {}) {
  const r = await fetch(path, {
    ...opts,
    headers: { "content-type": "application/json", "x-podium-user": "web-ui", "x-podium-ui": "1", ...(opts.headers || {}) },
  });
  const text = await r.text();
  let body = text;
  try { body = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
  if (r.status === 401) loggedOut((body && body.error) || "");
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

let loginShown = false;
function loggedOut(why) {
  if (loginShown) return;
  loginShown = true;
  if (current && current.unmount) current.unmount();
  current = null;
  document.getElementById("live").className = "live off";
  main.replaceChildren(h("section", { id: "login" },
    h("h1", {}, "Log in"),
    h("p", {}, "This browser is not logged in to podium. In a terminal where the podium CLI works, run"),
    h("pre", { class: "diff" }, "podium ui"),
    h("p", {}, "and open the link it prints here (it works once, for 5 minutes; the session lasts 12 hours)."),
    why ? h("p", { class: "muted" }, why) : null));
}

async function logIn(token) {
  history.replaceState(null, "", `${location.pathname}#/`); // the token leaves the address bar
  try {
    await api("/v1/ui/session", { method: "POST", body: JSON.stringify({ token }) });
  } catch (e) {
    loggedOut(e.message);
    throw e;
  }
}

async function logOut() {
  await api("/v1/ui/session", { method: "DELETE" }).catch(() => null);
  if (events) events.close();
  loggedOut("logged out");
}

const q = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null)).toString();
const badge = (s) => h("span", { class: `badge s-${String(s).replace(/[^a-z_-]/gi, "")}` }, s);
const short = (id) => (id || "").slice(0, 8);
// An alloc id as the CLI shows it: the half of its first field that counts up between the
// copies of a group first (podium/runtime/ids.py short_alloc), so copies differ early.
const shortAlloc = (id) => ((id || "").length < 8 ? id || "" : id.slice(4, 8) + id.slice(0, 4));
const mib = (b) => (b == null ? "-" : `${(b / 1048576).toFixed(1)} MiB`);
const pct = (v) => (v == null ? "-" : `${v.toFixed(1)}%`);
const ago = (t) => {
  if (!t) return "-";
  const d = Math.max(0, Date.now() / 1000 - t);
  return d < 60 ? `${d.toFixed(0)}s ago` : d < 3600 ? `${(d / 60).toFixed(0)}m ago` : `${(d / 3600).toFixed(1)}h ago`;
};
const clock = (t) => new Date(t * 1000).toLocaleTimeString();

function table(columns, rows, attrs = {}) {
  return h("div", { class: "scroll" },
    h("table", attrs,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "none")))));
}

function bar(value, total, label, cls = "") {
  const p = total > 0 ? Math.min(100, (100 * value) / total) : 0;
  return h("div", {},
    h("div", { class: "bar", role: "progressbar", "aria-valuenow": value, "aria-valuemax": total },
      h("span", { class: cls, style: `width:${p.toFixed(1)}%` })),
    h("div", { class: "bar-label" }, label));
}

function toast(msg, err = false) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.className = err ? "toast err" : "toast";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

// Destructive actions ask first.
function confirmAction(text, action = "Confirm") {
  const d = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = action;
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.returnValue = "";
    d.showModal();
  });
}

async function act(what, fn) {
  try {
    await fn();
    toast(what);
    schedule();
  } catch (e) {
    toast(`${what} failed: ${e.message}`, true);
  }
}

function mount(view) {
  if (current && current.unmount) current.unmount();
  current = view;
  main.replaceChildren(view.el);
  view.refresh().catch(showError);
}

function showError(e) {
  if (current && current.body) current.body.replaceChildren(h("p", { class: "muted" }, `error: ${e.message}`));
}

// Re-read the open view soon (events arrive in bursts: one read for a burst).
function schedule(delay = 150) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => current && current.refresh().catch(showError), delay);
}

// A view: a fixed header (filters keep their focus) and a body redrawn on refresh.
function view(title, draw, { header = null, unmount = null } = {}) {
  const body = h("div", {});
  const el = h("section", {}, h("h1", {}, title), header, body);
  let busy = false;
  return {
    el, body, unmount,
    async refresh() {
      if (busy) return schedule(300);
      busy = true;
      try { body.replaceChildren(...[].concat(await draw())); } finally { busy = false; }
    },
  };
}

// ------------------------------------------------------------------ views

async function overview() {
  const [nodes, jobs, deps, usage, status] = await Promise.all([
    api("/v1/nodes"), api("/v1/jobs"), api("/v1/deployments"), api("/v1/usage").catch(() => null),
    api("/v1/status"),
  ]);
  // Every copy as a chip while that stays readable (and cheap to re-read every 2 s).
  const allocs = status.allocations <= 2000 ? await api("/v1/allocations") : [];
  const count = (xs, f) => xs.filter(f).length;
  const running = deps.filter((d) => d.status === "running" || d.status === "paused");
  const used = Object.fromEntries(((usage && usage.nodes) || []).map((n) => [n.id, n]));
  const cards = h("div", { class: "cards", id: "health" },
    card("nodes ready", count(nodes, (n) => n.status === "ready"), `of ${nodes.length}`),
    card("nodes down", count(nodes, (n) => n.status === "down"), ""),
    card("jobs healthy", count(jobs, (j) => j.status === "running" || j.status === "complete"), `of ${jobs.length}`),
    card("jobs degraded", count(jobs, (j) => j.status === "degraded" || j.status === "pending"), ""),
    card("jobs failed", count(jobs, (j) => j.status === "failed"), ""),
    card("deployments running", running.length, ""));
  const rollouts = running.map((d) => {
    const g = Object.values(d.groups);
    const want = g.reduce((s, x) => s + x.desired_total, 0);
    const ok = g.reduce((s, x) => s + x.healthy, 0);
    return h("div", { class: "card" },
      h("a", { href: `#/job/${encodeURIComponent(d.job)}?ns=${encodeURIComponent(d.namespace)}` }, `${d.job} v${d.job_version}`),
      " ", badge(d.status), bar(ok, want, `${ok}/${want} healthy`, "ok"));
  });
  const topo = nodes.map((n) => {
    const mine = allocs.filter((a) => a.node_id === n.id && a.desired_status === "run" && !["complete", "failed", "lost"].includes(a.client_status));
    const u = used[n.id];
    return h("div", { class: "card node-box", "data-node": n.name },
      h("div", {}, h("a", { href: `#/node/${n.id}` }, n.name), " ", badge(nodeStatus(n))),
      bar(n.used.cpu, n.resources.cpu, `cpu reserved ${n.used.cpu}/${n.resources.cpu} MHz`),
      bar(n.used.memory, n.resources.memory, `memory reserved ${n.used.memory}/${n.resources.memory} MB`),
      u && u.memory_bytes != null ? bar(u.memory_bytes / 1048576, n.resources.memory, `memory used ${mib(u.memory_bytes)}, cpu ${pct(u.cpu_percent)}`, "used") : null,
      allocs.length ? h("div", { class: "chips" }, mine.map((a) => h("a", { class: `chip ${a.healthy === false ? "bad" : ""}`, href: `#/alloc/${a.id}`, title: a.client_status }, a.name)))
        : h("div", { class: "muted" }, `${n.allocations} allocations`));
  });
  return [
    cards,
    h("h2", {}, "Deployments in progress"), rollouts.length ? h("div", { class: "cards" }, rollouts) : h("p", { class: "muted" }, "none"),
    h("h2", {}, "Topology"), h("div", { class: "topo" }, topo),
    h("h2", {}, "Jobs"), jobsTable(jobs),
  ];
}

function card(label, num, extra) {
  return h("div", { class: "card" }, h("div", { class: "num" }, num), h("div", { class: "lbl" }, `${label} ${extra}`));
}

function nodeStatus(n) {
  return n.drain ? "draining" : !n.eligible ? "ineligible" : n.status;
}

function jobsTable(jobs) {
  return table(["JOB", "NAMESPACE", "TYPE", "VERSION", "STATUS", "SUBMITTED"],
    jobs.map((j) => h("tr", { "data-job": j.name },
      h("td", {}, h("a", { href: `#/job/${encodeURIComponent(j.name)}?ns=${encodeURIComponent(j.namespace)}` }, j.name)),
      h("td", {}, j.namespace), h("td", {}, j.type), h("td", {}, j.version),
      h("td", {}, badge(j.status)), h("td", {}, ago(j.submit_time)))), { id: "jobs" });
}

function jobsView() {
  const search = h("input", { type: "search", placeholder: "search jobs", id: "job-search", oninput: () => schedule(0) });
  const status = h("select", { id: "job-status", onchange: () => schedule(0) },
    ["", "running", "pending", "sleeping", "degraded", "failed", "complete", "dead"].map((s) => h("option", { value: s }, s || "any status")));
  const type = h("select", { id: "job-type", onchange: () => schedule(0) },
    ["", "service", "batch", "system", "cron"].map((s) => h("option", { value: s }, s || "any type")));
  const ns = h("input", { placeholder: "namespace", id: "job-ns", size: 10, oninput: () => schedule(0) });
  return view("Jobs", async () => {
    const jobs = await api("/v1/jobs");
    const term = search.value.trim().toLowerCase();
    return jobsTable(jobs.filter((j) =>
      (!term || j.name.toLowerCase().includes(term)) && (!status.value || j.status === status.value) &&
      (!type.value || j.type === type.value) && (!ns.value || j.namespace === ns.value.trim())));
  }, { header: h("div", { class: "row" }, search, status, type, ns) });
}

function jobView(name, ns) {
  const enc = encodeURIComponent(name);
  const nsq = `namespace=${encodeURIComponent(ns)}`;
  const stop = h("button", { class: "danger", id: "stop-job", onclick: async () => {
    if (await confirmAction(`Stop job ${name}? Every copy is stopped.`, "Stop job")) {
      act(`job ${name} stopping`, () => api(`/v1/job/${enc}?${nsq}`, { method: "DELETE" }));
    }
  } }, "Stop job");
  return view(`Job ${name}`, async () => {
    const [s, versions, usage] = await Promise.all([
      api(`/v1/job/${enc}?${nsq}`), api(`/v1/job/${enc}/versions?${nsq}`),
      api(`/v1/usage?job=${enc}&${nsq}`).catch(() => null),
    ]);
    const j = s.job;
    const total = usage && usage.jobs[0];
    const out = [
      h("dl", { class: "kv" },
        h("dt", {}, "status"), h("dd", {}, badge(s.status)),
        h("dt", {}, "type"), h("dd", {}, j.type),
        h("dt", {}, "version"), h("dd", {}, j.version),
        h("dt", {}, "namespace"), h("dd", {}, j.namespace),
        h("dt", {}, "cpu / memory"), h("dd", { id: "job-usage" }, total ? `${pct(total.cpu_percent)} of a core · ${mib(total.memory_bytes)} of ${mib(total.memory_limit_bytes)}` : "-")),
      h("h2", {}, "Groups"),
      table(["GROUP", "DESIRED", "PENDING", "RUNNING", "HEALTHY", "FAILED", "LOST", "RESTARTS"],
        Object.entries(s.groups).map(([g, v]) => h("tr", {},
          [g, v.desired, v.pending, v.running, v.healthy, v.failed, v.lost, v.restarts].map((x) => h("td", {}, x))))),
    ];
    for (const f of s.placement_failures || []) out.push(h("p", { class: "badge s-failed" }, `group ${f.group}: ${f.unplaced} unplaced ${f.message || ""}`));
    const d = s.deployment;
    if (d) out.push(h("h2", {}, "Deployment"), deploymentBox(d, ns));
    out.push(h("h2", {}, "Allocations"), allocTable(s.allocations));
    out.push(h("h2", {}, "Versions"), table(["VERSION", "SUBMITTED", "CHANGES", ""],
      versions.map((v) => h("tr", {},
        h("td", {}, v.version), h("td", {}, ago(v.submit_time)),
        h("td", { class: "msg" }, v.diff.length ? h("pre", { class: "diff" }, v.diff.map((c) => `${c.path}: ${JSON.stringify(c.old)} → ${JSON.stringify(c.new)}`).join("\n")) : "-"),
        h("td", {}, v.version === j.version ? "current" : h("button", { onclick: async () => {
          if (await confirmAction(`Revert ${name} to version ${v.version}? A new version is submitted.`, "Revert")) {
            act(`reverting to version ${v.version}`, () => api(`/v1/job/${enc}/revert?${nsq}`, { method: "POST", body: JSON.stringify({ version: v.version }) }));
          }
        } }, "Revert"))))));
    return out;
  }, { header: h("div", { class: "row" }, stop) });
}

function deploymentBox(d, ns) {
  const id = encodeURIComponent(d.id);
  const nsq = `namespace=${encodeURIComponent(ns)}`;
  const groups = Object.entries(d.groups).map(([g, x]) => h("div", {},
    h("strong", {}, g), " ",
    bar(x.healthy, x.desired_total, `${x.healthy}/${x.desired_total} healthy · ${x.placed} placed${x.desired_canaries ? ` · ${x.desired_canaries} canaries` : ""}${x.unhealthy ? ` · ${x.unhealthy} unhealthy` : ""}`, "ok")));
  const live = d.status === "running" || d.status === "paused";
  return h("div", { class: "card", id: "deployment" },
    h("div", {}, `${short(d.id)} for version ${d.job_version} `, badge(d.status), " ", h("span", { class: "muted" }, d.status_description)),
    groups,
    live ? h("div", { class: "row" },
      h("button", { class: "primary", onclick: () => act("deployment promoted", () => api(`/v1/deployment/${id}/promote?${nsq}`, { method: "POST" })) }, "Promote"),
      h("button", { class: "danger", onclick: async () => {
        if (await confirmAction(`Fail deployment ${short(d.id)}? It may roll back.`, "Fail deployment")) {
          act("deployment failed", () => api(`/v1/deployment/${id}/fail?${nsq}`, { method: "POST" }));
        }
      } }, "Fail")) : null);
}

function allocTable(allocs) {
  return table(["ID", "NAME", "NODE", "VERSION", "DESIRED", "STATUS", "HEALTHY", "RESTARTS", "CREATED"],
    allocs.map((a) => h("tr", { "data-alloc": a.id },
      h("td", {}, h("a", { href: `#/alloc/${a.id}` }, shortAlloc(a.id))), h("td", {}, a.name), h("td", {}, a.node_name),
      h("td", {}, a.job_version), h("td", {}, a.desired_status), h("td", {}, badge(a.client_status)),
      h("td", {}, a.healthy == null ? "-" : badge(a.healthy ? "healthy" : "unhealthy")),
      h("td", {}, a.restarts), h("td", {}, ago(a.create_time)))), { id: "allocs" });
}

function allocView(id) {
  const pre = h("pre", { class: "logs", id: "log" });
  const stream = h("select", { id: "log-stream" }, h("option", { value: "stdout" }, "stdout"), h("option", { value: "stderr" }, "stderr"));
  let abort = null;
  async function tail(job, ns) {
    if (abort) abort.abort();
    abort = new AbortController();
    pre.textContent = "";
    const url = `/v1/job/${encodeURIComponent(job)}/logs?${q({ namespace: ns, alloc: id, type: stream.value, follow: "true", since: "10m" })}`;
    try {
      const r = await fetch(url, { signal: abort.signal });
    if (r.status === 401) return loggedOut("");
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        const lines = buf.split("\n");
        buf = lines.pop();
        const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        for (const ln of lines) {
          if (!ln) continue;
          const o = JSON.parse(ln);
          if (o.line !== undefined) pre.append(document.createTextNode(`${o.line}\n`));
        }
        if (pre.childNodes.length > 2000) pre.replaceChildren(...[...pre.childNodes].slice(-1500));
        if (stick) pre.scrollTop = pre.scrollHeight;
      }
    } catch (e) {
      if (e.name !== "AbortError") pre.append(document.createTextNode(`[log stream ended: ${e.message}]\n`));
    }
  }
  let started = false;
  const v = view(`Allocation ${shortAlloc(id)}`, async () => {
    const [a, events, stats] = await Promise.all([
      api(`/v1/allocation/${id}`), api(`/v1/events?${q({ alloc: id, limit: 30 })}`),
      api(`/v1/allocation/${id}/stats`).catch(() => null),
    ]);
    if (!started) {
      started = true;
      stream.onchange = () => tail(a.job, a.namespace);
      tail(a.job, a.namespace);
    }
    return [
      h("dl", { class: "kv" },
        h("dt", {}, "name"), h("dd", {}, `${a.job}.${a.group}[${a.index}]`),
        h("dt", {}, "job"), h("dd", {}, h("a", { href: `#/job/${encodeURIComponent(a.job)}?ns=${encodeURIComponent(a.namespace)}` }, a.job), ` v${a.job_version}`),
        h("dt", {}, "node"), h("dd", {}, h("a", { href: `#/node/${a.node_id}` }, a.node_name)),
        h("dt", {}, "status"), h("dd", {}, badge(a.client_status), " ", a.client_description),
        h("dt", {}, "healthy"), h("dd", {}, a.healthy == null ? "-" : badge(a.healthy ? "healthy" : "unhealthy")),
        h("dt", {}, "ports"), h("dd", {}, Object.entries(a.ports).map(([k, p]) => `${k}=${p}`).join(", ") || "-"),
        h("dt", {}, "cpu / memory"), h("dd", { id: "alloc-usage" }, stats ? `${pct(stats.cpu_percent)} of a core · ${mib(stats.memory_bytes)} of ${mib(stats.memory_limit_bytes)}` : "-")),
      h("h2", {}, "Tasks"),
      table(["TASK", "STATE", "PID", "RESTARTS", "EXIT", "STARTED", "MESSAGE"],
        Object.entries(a.task_states).map(([n, t]) => h("tr", {},
          h("td", {}, n), h("td", {}, badge(t.state + (t.failed ? " (failed)" : ""))), h("td", {}, t.pid || "-"),
          h("td", {}, t.restarts), h("td", {}, t.exit_code == null ? "-" : t.exit_code), h("td", {}, ago(t.started_at)),
          h("td", { class: "msg" }, t.message)))),
      h("h2", {}, "Health checks"),
      table(["CHECK", "STATUS", "OUTPUT", "CHECKED"], a.checks.map((c) => h("tr", {},
        h("td", {}, c.name), h("td", {}, badge(c.status)), h("td", { class: "msg" }, c.output.trim().slice(0, 200)), h("td", {}, ago(c.checked_at))))),
      h("h2", {}, "Events"),
      eventsTable(events.slice().reverse()),
    ];
  }, { header: null, unmount: () => abort && abort.abort() });
  v.el.append(h("h2", {}, "Logs ", stream), pre);
  return v;
}

function eventsTable(events) {
  return table(["TIME", "INDEX", "TYPE", "JOB", "ALLOC", "MESSAGE"], events.map((e) => h("tr", {},
    h("td", {}, clock(e.time)), h("td", {}, e.seq), h("td", {}, e.type), h("td", {}, e.job),
    h("td", {}, e.alloc ? h("a", { href: `#/alloc/${e.alloc}` }, shortAlloc(e.alloc)) : ""), h("td", { class: "msg" }, e.message))), { id: "events" });
}

function nodesView() {
  return view("Nodes", async () => {
    const [nodes, usage] = await Promise.all([api("/v1/nodes"), api("/v1/usage").catch(() => null)]);
    const used = Object.fromEntries(((usage && usage.nodes) || []).map((n) => [n.id, n]));
    return table(["NODE", "STATUS", "ADDRESS", "ALLOCS", "CPU RESERVED", "MEMORY RESERVED", "CPU USED", "MEMORY USED", "HEARTBEAT"],
      nodes.map((n) => h("tr", { "data-node": n.name },
        h("td", {}, h("a", { href: `#/node/${n.id}` }, n.name)), h("td", {}, badge(nodeStatus(n))), h("td", {}, n.address),
        h("td", {}, n.allocations),
        h("td", {}, bar(n.used.cpu, n.resources.cpu, `${n.used.cpu}/${n.resources.cpu} MHz`)),
        h("td", {}, bar(n.used.memory, n.resources.memory, `${n.used.memory}/${n.resources.memory} MB`)),
        h("td", {}, pct(used[n.id] && used[n.id].cpu_percent)), h("td", {}, mib(used[n.id] && used[n.id].memory_bytes)),
        h("td", {}, ago(n.last_heartbeat)))), { id: "nodes" });
  });
}

function nodeView(id) {
  return view("Node", async () => {
    const [n, allocs] = await Promise.all([api(`/v1/node/${id}`), api(`/v1/allocations?node=${encodeURIComponent(id)}`)]);
    const drain = h("button", { class: "danger", id: "drain", onclick: async () => {
      const enable = !n.drain;
      if (await confirmAction(enable ? `Drain node ${n.name}? Its allocations move to other nodes.` : `Cancel the drain of ${n.name}?`, enable ? "Drain" : "Cancel drain")) {
        act(enable ? `draining ${n.name}` : `drain of ${n.name} cancelled`, () => api(`/v1/node/${n.id}/drain`, { method: "POST", body: JSON.stringify({ enable }) }));
      }
    } }, n.drain ? "Cancel drain" : "Drain");
    const elig = h("button", { id: "eligibility", onclick: async () => {
      const eligible = !n.eligible;
      if (await confirmAction(eligible ? `Make ${n.name} eligible for placements?` : `Make ${n.name} ineligible? Nothing new is placed on it.`, eligible ? "Make eligible" : "Make ineligible")) {
        act(`${n.name} ${eligible ? "eligible" : "ineligible"}`, () => api(`/v1/node/${n.id}/eligibility`, { method: "POST", body: JSON.stringify({ eligible }) }));
      }
    } }, n.eligible ? "Make ineligible" : "Make eligible");
    return [
      h("h2", {}, n.name, " ", badge(nodeStatus(n))),
      h("div", { class: "row" }, drain, elig),
      h("dl", { class: "kv" },
        h("dt", {}, "id"), h("dd", {}, n.id), h("dt", {}, "address"), h("dd", {}, n.address),
        h("dt", {}, "datacenter"), h("dd", {}, n.datacenter),
        h("dt", {}, "drivers"), h("dd", {}, Object.entries(n.drivers).map(([k, d]) => `${k}${d.healthy ? "" : " (unhealthy)"}`).join(", ")),
        h("dt", {}, "labels"), h("dd", {}, Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "-"),
        h("dt", {}, "status"), h("dd", {}, n.status_description || "-")),
      h("h2", {}, "Resources"),
      bar(n.used.cpu, n.resources.cpu, `cpu reserved ${n.used.cpu}/${n.resources.cpu} MHz`),
      bar(n.used.memory, n.resources.memory, `memory reserved ${n.used.memory}/${n.resources.memory} MB`),
      h("h2", {}, "Allocations"), allocTable(allocs),
    ];
  });
}

function servicesView() {
  return view("Services", async () => {
    const s = await api("/v1/services");
    return table(["SERVICE", "NAMESPACE", "HEALTHY", "TAGS"], s.services.map((x) => h("tr", {},
      h("td", {}, x.name), h("td", {}, x.namespace),
      h("td", {}, bar(x.healthy, x.total, `${x.healthy}/${x.total} healthy`, "ok")),
      h("td", {}, (x.tags || []).join(", ")))), { id: "services" });
  });
}

function eventsView() {
  const topic = h("select", { id: "event-topic", onchange: () => schedule(0) },
    ["", "job", "alloc", "node", "deployment", "service", "scaling", "store"].map((t) => h("option", { value: t }, t || "every topic")));
  const key = h("input", { placeholder: "job, alloc or node", id: "event-key", oninput: () => schedule(300) });
  return view("Events", async () => {
    const evs = await api(`/v1/events?${q({ topic: topic.value, key: key.value.trim(), limit: 200 })}`);
    return eventsTable(evs.slice().reverse());
  }, { header: h("div", { class: "row" }, topic, key) });
}

// ------------------------------------------------------------------ routing, live feed

function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = (path || "/").split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] || "overview";
  for (const a of document.querySelectorAll("[data-nav]")) {
    const on = a.dataset.nav === section || (a.dataset.nav === "jobs" && section === "job") || (a.dataset.nav === "nodes" && section === "node");
    a.classList.toggle("active", on);
  }
  const ns = params.get("ns") || "default";
  const views = {
    overview: () => view("Cluster", overview),
    jobs: jobsView,
    job: () => jobView(parts[1], ns),
    alloc: () => allocView(parts[1]),
    nodes: nodesView,
    node: () => nodeView(parts[1]),
    services: servicesView,
    events: eventsView,
  };
  mount((views[section] || views.overview)());
}

let events = null;
function live() {
  const dot = document.getElementById("live");
  const es = events = new EventSource("/v1/events?follow=true&limit=0");
  es.onopen = () => { dot.className = "live on"; };
  es.onmessage = () => schedule();
  es.onerror = () => { dot.className = "live off"; }; // EventSource reconnects by itself
}

// One keystroke to each section (k9s style), "/" to the jobs search; not while typing.
const KEYS = { o: "#/", j: "#/jobs", n: "#/nodes", s: "#/services", e: "#/events" };
window.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || /^(INPUT|SELECT|TEXTAREA)$/.test(ev.target.tagName)) return;
  if (document.getElementById("confirm").open) return;
  if (ev.key === "/") {
    ev.preventDefault();
    if (location.hash !== "#/jobs") location.hash = "#/jobs";
    setTimeout(() => { const s = document.getElementById("job-search"); if (s) s.focus(); }, 50);
  } else if (KEYS[ev.key]) {
    location.hash = KEYS[ev.key];
  }
});

window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#login=")) start().catch(() => null);
  else if (!loginShown) route();
});
document.getElementById("logout").addEventListener("click", (ev) => { ev.preventDefault(); logOut(); });
setInterval(() => { if (!document.hidden && !loginShown) schedule(0); }, 2000); // resource figures move on their own

async function start() {
  const login = location.hash.match(/^#login=([A-Za-z0-9_-]+)/);
  if (login) {
    await logIn(login[1]);
    loginShown = false;
  }
  route();
  if (events) events.close();
  live();
}
start().catch(() => null);
