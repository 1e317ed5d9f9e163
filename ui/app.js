// The operator console: a single page with hash routes (#/overview, #/nodes,
// #/node/{id}, #/alerts, #/alerts/{operator id} (admins), #/admin). Plain DOM, no framework. Everything that comes from the API is
// inserted as text (textContent / text nodes), never parsed as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "lucid.console.token";
  const STATUSES = ["online", "offline", "registered", "suspended", "deregistered"];
  const DAY = 86400;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    token: null,
    claims: null,
    keys: null,
  };
  let renderSeq = 0;

  // ---------- DOM helpers -------------------------------------------------------------

  function append(parent, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(parent, c);
      else if (c instanceof Node) parent.appendChild(c);
      else parent.appendChild(document.createTextNode(String(c)));
    }
    return parent;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "on") {
        for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      } else if (k === "dataset") {
        for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv);
      } else if (k === "text") {
        node.textContent = String(v);
      } else if (v === true) {
        node.setAttribute(k, "");
      } else {
        node.setAttribute(k, String(v));
      }
    }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    return append(node, children);
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    return append(node, children);
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  const $ = (id) => document.getElementById(id);

  function message(kind, text) {
    return el("p", { class: "message " + kind, role: kind === "error" ? "alert" : null }, text);
  }

  function tableWrap(table) {
    return el("div", { class: "table-wrap" }, table);
  }

  function statusBadge(status) {
    return el("span", { class: "badge status-" + status }, status);
  }

  // ---------- money and time ----------------------------------------------------------

  // USDT amounts travel as decimal strings; sums are done exactly in micro-USDT.
  function micros(s) {
    const m = /^(-?)(\d+)(?:\.(\d{0,6}))?$/.exec(String(s || "0").trim());
    if (!m) return 0n;
    const v = BigInt(m[2]) * 1000000n + BigInt((m[3] || "").padEnd(6, "0"));
    return m[1] ? -v : v;
  }

  function fmtMicros(v) {
    const neg = v < 0n;
    const a = neg ? -v : v;
    return (neg ? "-" : "") + (a / 1000000n).toString() + "." + (a % 1000000n).toString().padStart(6, "0");
  }

  function fmtTime(iso) {
    if (!iso) return "never";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toLocaleString();
  }

  function ago(iso) {
    if (!iso) return "";
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (!isFinite(s)) return "";
    if (s < 0) return "in the future";
    if (s < 90) return s + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 2 * DAY) return Math.round(s / 3600) + " h ago";
    return Math.round(s / DAY) + " days ago";
  }

  function timeCell(iso) {
    return el("span", { title: iso || "" }, fmtTime(iso), iso ? el("small", { class: "muted" }, " " + ago(iso)) : null);
  }

  function fmtDuration(sec) {
    if (sec < 120) return sec + " s";
    if (sec < 7200) return Math.round(sec / 60) + " min";
    if (sec < 2 * DAY) return (sec / 3600).toFixed(1) + " h";
    return (sec / DAY).toFixed(1) + " days";
  }

  // ---------- API ---------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || "HTTP " + status);
      this.status = status;
      this.problem = problem || {};
    }
  }

  // Thrown after a 401: the console has signed out; views stop quietly.
  class SignedOut extends Error {}

  async function api(path, options) {
    const opts = options || {};
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    let body;
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.body);
    }
    let resp;
    try {
      resp = await fetch(path, { method: opts.method || "GET", headers, body, cache: "no-store", credentials: "omit" });
    } catch (e) {
      throw new ApiError(0, { detail: "the appliance cannot be reached (" + e.message + ")" });
    }
    const textBody = await resp.text();
    let data = null;
    if (textBody) {
      try {
        data = JSON.parse(textBody);
      } catch (e) {
        data = null;
      }
    }
    if (resp.status === 401 && !opts.noSignOut) {
      signOut(unauthorizedMessage(data));
      throw new SignedOut("signed out");
    }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }

  function unauthorizedMessage(problem) {
    const type = problem && problem.type;
    const detail = problem && problem.detail ? " (" + problem.detail + ")" : "";
    if (type === "token-expired") {
      return "Your token has expired" + detail + ". Ask an admin for a new one and sign in again.";
    }
    if (type === "token-revoked") {
      return "Your token has been revoked" + detail + ". Ask an admin for a new one and sign in again.";
    }
    return "The token was not accepted" + detail + ". Check that you pasted all of it, or ask an admin for a new one.";
  }

  // Follows `next_cursor` until the end, or until `stop(page items)` says enough.
  async function listAll(path, stop) {
    const items = [];
    let cursor = null;
    for (;;) {
      const sep = path.includes("?") ? "&" : "?";
      const url = path + sep + "limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      const page = await api(url);
      items.push(...page.items);
      cursor = page.next_cursor;
      if (!cursor || (stop && stop(page.items))) break;
    }
    return items;
  }

  async function proofKey() {
    if (!state.keys) state.keys = await api("/api/v1/keys");
    return state.keys.proof;
  }

  // Runs `fn` over `items` with at most `n` at a time.
  async function pool(items, n, fn) {
    const out = new Array(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
    return out;
  }

  // ---------- sign-in -----------------------------------------------------------------

  // Shows who is signed in; the server alone decides what the token may do.
  function decodeClaims(token) {
    try {
      const part = token.split(".")[1];
      const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(
        Array.from(atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), "=")), (c) =>
          "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
      );
      const claims = JSON.parse(json);
      return claims && typeof claims === "object" ? claims : null;
    } catch (e) {
      return null;
    }
  }

  function showSignIn(msg) {
    $("sign-in").hidden = false;
    $("nav").hidden = true;
    $("who").hidden = true;
    clear($("view"));
    delete $("view").dataset.ready;
    const m = $("sign-in-message");
    m.textContent = msg || "";
    m.hidden = !msg;
    $("sign-in-button").disabled = false;
  }

  function signOut(msg) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.claims = null;
    renderSeq++;
    showSignIn(msg);
  }

  async function signIn(event) {
    event.preventDefault();
    let token = $("token-input").value.trim().replace(/^Bearer\s+/i, "");
    if (!token) return;
    $("sign-in-button").disabled = true;
    state.token = token;
    try {
      // Any authenticated read tells whether the token is accepted.
      await api("/api/v1/nodes?limit=1");
    } catch (e) {
      if (!(e instanceof SignedOut)) {
        state.token = null;
        showSignIn("Could not sign in: " + e.message);
      }
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/overview";
    else route();
  }

  function showSignedIn() {
    state.claims = decodeClaims(state.token) || {};
    $("sign-in").hidden = true;
    $("nav").hidden = false;
    $("who").hidden = false;
    $("nav-admin").hidden = state.claims.role !== "admin";
    $("nav-alerts").hidden = !["admin", "operator"].includes(state.claims.role);
    const who = [state.claims.sub || "unknown", " (", state.claims.role || "?", ")"].join("");
    const exp = state.claims.exp ? " · token valid until " + new Date(state.claims.exp * 1000).toLocaleString() : "";
    $("who-text").textContent = who + exp;
  }

  // ---------- router ------------------------------------------------------------------

  function parseRoute() {
    const h = location.hash.replace(/^#\/?/, "");
    const parts = h.split("/").filter(Boolean).map(decodeURIComponent);
    if (parts[0] === "node" && parts[1]) return { name: "node", id: parts[1] };
    if (parts[0] === "alerts") return { name: "alerts", id: parts[1] || null };
    if (["overview", "nodes", "admin"].includes(parts[0])) return { name: parts[0] };
    return { name: "overview" };
  }

  async function route() {
    const seq = ++renderSeq;
    if (!state.token) {
      showSignIn($("sign-in-message").hidden ? "" : $("sign-in-message").textContent);
      return;
    }
    showSignedIn();
    const r = parseRoute();
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.dataset.route === r.name || (r.name === "node" && a.dataset.route === "nodes"));
    }
    const view = $("view");
    delete view.dataset.ready;
    clear(view).appendChild(message("info", "Loading…"));
    const views = { overview: viewOverview, nodes: viewNodes, node: viewNode, alerts: viewAlerts, admin: viewAdmin };
    const current = () => seq === renderSeq;
    try {
      const content = await views[r.name](r, current);
      if (!current()) return;
      clear(view).appendChild(content);
      view.dataset.ready = r.name;
      window.scrollTo(0, 0);
    } catch (e) {
      if (e instanceof SignedOut || !current()) return;
      clear(view).appendChild(message("error", e.status === 404 ? "Not found: " + e.message : "Could not load this page: " + e.message));
      view.dataset.ready = "error";
    }
  }

  // ---------- shared data -------------------------------------------------------------

  async function loadPools() {
    try {
      return await listAll("/api/v1/pools");
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) return [];
      throw e;
    }
  }

  function poolNames(pools) {
    const m = new Map();
    for (const p of pools) m.set(p.pool_id, p.name);
    return m;
  }

  // Pending payouts of the nodes the caller sees: admins read the export, others each
  // node's payouts.
  async function pendingPayouts(nodes) {
    if (state.claims.role === "admin") return listAll("/api/v1/payouts?state=pending");
    const lists = await pool(nodes, 4, (n) => api("/api/v1/payouts/" + encodeURIComponent(n.node_id)));
    return lists.flatMap((l) => l.payouts.filter((p) => p.state === "pending"));
  }

  // ---------- overview ----------------------------------------------------------------

  async function viewOverview(_r, current) {
    const [health, nodes, pools] = await Promise.all([api("/health"), listAll("/api/v1/nodes"), loadPools()]);
    if (!current()) return null;
    const pending = await pendingPayouts(nodes);
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    let unpaid = 0n;
    for (const n of nodes) {
      counts[n.status] = (counts[n.status] || 0) + 1;
      unpaid += micros(n.balance_usdt);
    }
    const pendingSum = pending.reduce((a, p) => a + micros(p.amount_usdt), 0n);
    const admin = state.claims.role === "admin";

    const statusList = el("ul", { class: "counts" },
      el("li", null, el("strong", { id: "count-total" }, String(nodes.length)), " nodes"),
      STATUSES.map((s) => el("li", { class: "status-" + s },
        el("strong", { id: "count-" + s, dataset: { status: s } }, String(counts[s])), " " + s)));

    const poot = health.poot || {};
    const mirror = health.mirror;
    const mirrorText = !mirror
      ? "not configured"
      : [mirror.enabled === false ? "disabled" : mirror.connected ? "connected" : "not connected",
        mirror.outbox !== undefined ? "outbox " + mirror.outbox : null,
        mirror.last_sync_at ? "last sync " + fmtTime(mirror.last_sync_at) : null,
        mirror.reason ? "(" + mirror.reason + ")" : null].filter(Boolean).join(", ");

    const cards = el("div", { class: "cards" },
      el("section", { class: "card" }, el("h2", null, admin ? "Fleet" : "Your nodes"), statusList),
      el("section", { class: "card" }, el("h2", null, "Money"),
        el("dl", null,
          el("dt", null, "Unpaid balances"), el("dd", { id: "unpaid-total" }, fmtMicros(unpaid) + " USDT"),
          el("dt", null, "Pending payouts"),
          el("dd", { id: "pending-payouts" }, pending.length + " · " + fmtMicros(pendingSum) + " USDT"))),
      el("section", { class: "card" }, el("h2", null, "PoOT epochs"),
        el("dl", null,
          el("dt", null, "Last closed epoch"),
          el("dd", { id: "last-epoch" }, poot.last_closed_epoch === null || poot.last_closed_epoch === undefined ? "none yet" : "#" + poot.last_closed_epoch),
          el("dt", null, "Closed"), el("dd", null, poot.closed_at ? timeCell(poot.closed_at) : "–"),
          el("dt", null, "Epoch length"), el("dd", null, poot.epoch_length_seconds ? fmtDuration(poot.epoch_length_seconds) : "–"))),
      el("section", { class: "card" }, el("h2", null, "Appliance"),
        el("dl", null,
          el("dt", null, "Status"), el("dd", null, health.status),
          el("dt", null, "Version"), el("dd", { id: "version" }, health.version),
          el("dt", null, "MongoDB mirror"), el("dd", { id: "mirror" }, mirrorText))));

    const names = poolNames(pools);
    const poolTable = el("table", { class: "pools" },
      el("thead", null, el("tr", null, el("th", null, "Pool"), el("th", null, "Region"), el("th", null, "Fill"), el("th", null, "Online"))),
      el("tbody", null, pools.map((p) => el("tr", null,
        el("td", null, p.name),
        el("td", null, p.region || "–"),
        el("td", { class: "fill" },
          el("progress", { max: p.capacity, value: p.member_count }),
          " " + p.member_count + " / " + p.capacity),
        el("td", null, String(p.online_count))))));

    const shown = nodes.slice().sort((a, b) => a.name.localeCompare(b.name)).slice(0, 25);
    const nodeTable = el("table", { class: "nodes", id: "overview-nodes" },
      el("thead", null, el("tr", null, el("th", null, "Name"), el("th", null, "Status"), el("th", null, "Pool"), el("th", null, "Last heartbeat"), el("th", { class: "num" }, "Balance"))),
      el("tbody", null, shown.map((n) => nodeRow(n, names))));

    return el("div", null,
      el("h1", null, "Overview"),
      cards,
      el("section", { class: "card" }, el("h2", null, admin ? "Nodes" : "Your nodes"),
        nodes.length ? tableWrap(nodeTable) : el("p", { class: "muted" }, "No nodes yet."),
        nodes.length > shown.length ? el("p", null, el("a", { href: "#/nodes" }, "All " + nodes.length + " nodes")) : null),
      el("section", { class: "card" }, el("h2", null, "Pools"), pools.length ? tableWrap(poolTable) : el("p", { class: "muted" }, "No pools visible.")));
  }

  function nodeLink(n) {
    return el("a", { href: "#/node/" + encodeURIComponent(n.node_id), class: "node-link" }, n.name);
  }

  function nodeRow(n, names) {
    return el("tr", { dataset: { nodeId: n.node_id } },
      el("td", null, nodeLink(n), el("div", { class: "muted small" }, n.node_id)),
      el("td", null, statusBadge(n.status)),
      el("td", null, n.pool_id ? names.get(n.pool_id) || n.pool_id : "–"),
      el("td", null, timeCell(n.last_heartbeat_at)),
      el("td", { class: "num" }, n.balance_usdt));
  }

  // ---------- nodes table -------------------------------------------------------------

  async function viewNodes(_r, current) {
    const [nodes, pools] = await Promise.all([listAll("/api/v1/nodes"), loadPools()]);
    if (!current()) return null;
    const names = poolNames(pools);

    const status = el("select", { id: "filter-status" },
      el("option", { value: "" }, "any status"), STATUSES.map((s) => el("option", { value: s }, s)));
    const poolSel = el("select", { id: "filter-pool" },
      el("option", { value: "" }, "any pool"), el("option", { value: "-" }, "no pool"),
      pools.map((p) => el("option", { value: p.pool_id }, p.name)));
    const search = el("input", { id: "filter-search", type: "search", placeholder: "name contains…", autocomplete: "off" });
    const sort = el("select", { id: "sort" },
      el("option", { value: "heartbeat-desc" }, "last heartbeat, newest first"),
      el("option", { value: "heartbeat-asc" }, "last heartbeat, oldest first"),
      el("option", { value: "balance-desc" }, "balance, highest first"),
      el("option", { value: "balance-asc" }, "balance, lowest first"),
      el("option", { value: "name-asc" }, "name"));
    const tbody = el("tbody");
    const countLine = el("p", { class: "muted", id: "nodes-count" });

    const hbKey = (n) => (n.last_heartbeat_at ? Date.parse(n.last_heartbeat_at) : -Infinity);
    const sorters = {
      "heartbeat-desc": (a, b) => hbKey(b) - hbKey(a) || a.name.localeCompare(b.name),
      "heartbeat-asc": (a, b) => hbKey(a) - hbKey(b) || a.name.localeCompare(b.name),
      "balance-desc": (a, b) => (micros(b.balance_usdt) > micros(a.balance_usdt) ? 1 : micros(b.balance_usdt) < micros(a.balance_usdt) ? -1 : a.name.localeCompare(b.name)),
      "balance-asc": (a, b) => (micros(a.balance_usdt) > micros(b.balance_usdt) ? 1 : micros(a.balance_usdt) < micros(b.balance_usdt) ? -1 : a.name.localeCompare(b.name)),
      "name-asc": (a, b) => a.name.localeCompare(b.name),
    };
    function redraw() {
      const q = search.value.trim().toLowerCase();
      const rows = nodes.filter((n) =>
        (!status.value || n.status === status.value) &&
        (!poolSel.value || (poolSel.value === "-" ? !n.pool_id : n.pool_id === poolSel.value)) &&
        (!q || n.name.toLowerCase().includes(q)));
      rows.sort(sorters[sort.value]);
      clear(tbody);
      append(tbody, rows.map((n) => nodeRow(n, names)));
      countLine.textContent = rows.length + " of " + nodes.length + " nodes";
    }
    for (const c of [status, poolSel, sort]) c.addEventListener("change", redraw);
    search.addEventListener("input", redraw);
    search.addEventListener("change", redraw);
    redraw();

    return el("div", null,
      el("h1", null, "Nodes"),
      el("form", { class: "filters", on: { submit: (e) => e.preventDefault() } },
        el("label", null, "Status ", status),
        el("label", null, "Pool ", poolSel),
        el("label", null, "Search ", search),
        el("label", null, "Sort by ", sort)),
      countLine,
      tableWrap(el("table", { class: "nodes", id: "nodes-table" },
        el("thead", null, el("tr", null, el("th", null, "Name"), el("th", null, "Status"), el("th", null, "Pool"), el("th", null, "Last heartbeat"), el("th", { class: "num" }, "Balance"))),
        tbody)));
  }

  // ---------- node page ---------------------------------------------------------------

  async function viewNode(r, current) {
    const id = r.id;
    const enc = encodeURIComponent(id);
    const now = Date.now();
    const weekAgo = now - 7 * DAY * 1000;
    const [node, payouts, proofs, health, pools] = await Promise.all([
      api("/api/v1/nodes/" + enc),
      api("/api/v1/payouts/" + enc),
      // Newest first; stop once a page reaches back more than 7 days.
      listAll("/api/v1/poot/" + enc + "/history", (items) =>
        items.length > 0 && Date.parse(items[items.length - 1].window_end) < weekAgo),
      api("/health"),
      loadPools(),
    ]);
    if (!current()) return null;
    const names = poolNames(pools);
    const epochLen = proofs.length
      ? (Date.parse(proofs[0].window_end) - Date.parse(proofs[0].window_start)) / 1000
      : (health.poot && health.poot.epoch_length_seconds) || 300;
    const registeredMs = Date.parse(node.registered_at);

    const header = el("section", { class: "card" },
      el("h1", { id: "node-name" }, node.name),
      el("dl", { class: "wide" },
        el("dt", null, "Status"), el("dd", { id: "node-status" }, statusBadge(node.status)),
        el("dt", null, "Last heartbeat"), el("dd", { id: "node-last-heartbeat" }, timeCell(node.last_heartbeat_at)),
        el("dt", null, "Node id"), el("dd", null, el("code", null, node.node_id)),
        el("dt", null, "Operator"), el("dd", null, node.operator_id),
        el("dt", null, "Region"), el("dd", null, node.region || "–"),
        el("dt", null, "Pool"), el("dd", null, node.pool_id ? names.get(node.pool_id) || node.pool_id : "–"),
        el("dt", null, "Payout address"), el("dd", null, node.payout_address ? el("code", null, node.payout_address) : "none (no payouts until one is set)"),
        el("dt", null, "Registered"), el("dd", null, timeCell(node.registered_at)),
        el("dt", null, "Operational time"), el("dd", null, fmtDuration(node.operational_seconds_total))));

    const charts = el("section", { class: "card" }, el("h2", null, "Uptime"),
      el("div", { class: "charts" },
        uptimeChart(proofs, DAY, now, registeredMs, epochLen, "Last 24 hours", 96, "chart-24h"),
        uptimeChart(proofs, 7 * DAY, now, registeredMs, epochLen, "Last 7 days", 168, "chart-7d")));

    return el("div", null,
      el("p", null, el("a", { href: "#/nodes" }, "← all nodes")),
      header,
      charts,
      earnings(node, payouts, proofs, now, registeredMs),
      payoutSection(node, payouts),
      await proofSection(proofs));
  }

  // Uptime per bucket from the proofs' operational seconds (epochs without a proof were
  // not up at all). The range starts no earlier than the node's registration.
  function uptimeChart(proofs, rangeSec, nowMs, registeredMs, epochLen, title, maxBars, id) {
    const W = 640, H = 180, L = 40, R = 8, T = 10, B = 26;
    const endMs = nowMs;
    const startMs = Math.max(nowMs - rangeSec * 1000, Math.floor(registeredMs / (epochLen * 1000)) * epochLen * 1000);
    const spanMs = Math.max(endMs - startMs, epochLen * 1000);
    const bucketMs = Math.max(epochLen * 1000, Math.ceil(spanMs / maxBars));
    const n = Math.max(1, Math.ceil(spanMs / bucketMs));
    const up = new Array(n).fill(0);
    let upTotal = 0;
    for (const p of proofs) {
      const ws = Date.parse(p.window_start), we = Date.parse(p.window_end);
      if (we <= startMs || ws >= endMs || we <= ws) continue;
      const first = Math.max(0, Math.floor((ws - startMs) / bucketMs));
      const last = Math.min(n - 1, Math.floor((we - 1 - startMs) / bucketMs));
      for (let i = first; i <= last; i++) {
        const b0 = startMs + i * bucketMs, b1 = Math.min(b0 + bucketMs, endMs);
        const overlap = Math.max(0, Math.min(we, b1) - Math.max(ws, b0));
        const sec = (p.operational_seconds * overlap) / (we - ws);
        up[i] += sec;
        upTotal += sec;
      }
    }
    const x = (ms) => L + ((ms - startMs) / (startMs + n * bucketMs - startMs)) * (W - L - R);
    const y = (pct) => T + (1 - pct / 100) * (H - T - B);
    const chart = svg("svg", { class: "uptime-chart", id, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title + " uptime" });
    for (const pct of [0, 50, 100]) {
      chart.appendChild(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(pct), y2: y(pct) }));
      chart.appendChild(svg("text", { class: "axis", x: L - 4, y: y(pct) + 4, "text-anchor": "end" }, pct + "%"));
    }
    let bars = 0;
    for (let i = 0; i < n; i++) {
      const b0 = startMs + i * bucketMs, b1 = Math.min(b0 + bucketMs, endMs);
      const len = (b1 - b0) / 1000;
      if (len <= 0) continue;
      const pct = Math.min(100, (100 * up[i]) / len);
      const x0 = x(b0), x1 = x(b0 + bucketMs);
      const rect = svg("rect", {
        class: "bar" + (pct >= 99 ? " full" : pct > 0 ? " partial" : " none"),
        x: x0.toFixed(2), y: y(pct).toFixed(2),
        width: Math.max(0.5, x1 - x0 - 0.5).toFixed(2), height: Math.max(0, y(0) - y(pct)).toFixed(2),
      }, svg("title", null, new Date(b0).toLocaleString() + ": " + pct.toFixed(1) + "% up"));
      chart.appendChild(rect);
      bars++;
    }
    chart.appendChild(svg("text", { class: "axis", x: L, y: H - 6 }, new Date(startMs).toLocaleString()));
    chart.appendChild(svg("text", { class: "axis", x: W - R, y: H - 6, "text-anchor": "end" }, "now"));
    chart.dataset.bars = String(bars);
    const share = Math.min(100, (100 * upTotal) / (spanMs / 1000));
    return el("figure", { class: "chart" },
      chart,
      el("figcaption", null, title + ": ", el("strong", { class: "uptime-share" }, share.toFixed(1) + "% up"),
        " over " + fmtDuration(Math.round(spanMs / 1000))));
  }

  function earnings(node, payouts, proofs, nowMs, registeredMs) {
    const since = nowMs - DAY * 1000;
    let last24 = 0n;
    for (const p of proofs) if (Date.parse(p.window_end) > since) last24 += micros(p.credits_usdt);
    // The rate over the part of the last 24 h the node existed.
    const observed = Math.min(DAY, Math.max(1, (nowMs - registeredMs) / 1000));
    const perDayMicros = (Number(last24) * DAY) / observed;
    const balance = micros(payouts.balance_usdt);
    const threshold = micros(payouts.threshold_usdt);
    let when;
    if (balance >= threshold) {
      when = node.payout_address ? "reached: paid at the next payout run" : "reached, but the node has no payout address";
    } else if (perDayMicros > 0) {
      const days = Number(threshold - balance) / perDayMicros;
      when = days > 3650 ? "in more than ten years at this rate" : new Date(nowMs + days * DAY * 1000).toLocaleDateString() + " (in " + fmtDuration(Math.round(days * DAY)) + ")";
    } else {
      when = "not at the current rate (no credits in the last 24 h)";
    }
    return el("section", { class: "card" }, el("h2", null, "Earnings"),
      el("dl", { class: "wide" },
        el("dt", null, "Balance"), el("dd", { id: "node-balance" }, payouts.balance_usdt + " USDT"),
        el("dt", null, "Payout threshold"), el("dd", null, payouts.threshold_usdt + " USDT"),
        el("dt", null, "Credits, last 24 h"), el("dd", null, fmtMicros(last24) + " USDT"),
        el("dt", null, "Estimate per day"), el("dd", { id: "per-day" }, (perDayMicros / 1e6).toFixed(6) + " USDT"),
        el("dt", null, "Threshold reached"), el("dd", { id: "threshold-date" }, when)),
      el("p", { class: "muted small" }, "The estimate assumes the last 24 hours' rate continues."));
  }

  const CSV_COLUMNS = ["payout_id", "node_id", "amount_usdt", "payout_address", "state", "created_at", "updated_at", "tx_hash", "attempts", "error"];

  function csvField(v) {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  // The same columns as the admin export (GET /api/v1/payouts?format=csv).
  function payoutsCsv(list) {
    const lines = [CSV_COLUMNS.join(",")];
    for (const p of list) lines.push(CSV_COLUMNS.map((c) => csvField(p[c])).join(","));
    return lines.join("\n") + "\n";
  }

  function download(filename, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el("a", { href: url, download: filename, class: "hidden" });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function payoutSection(node, payouts) {
    const list = payouts.payouts.slice().reverse(); // newest first on screen
    const button = el("button", {
      type: "button", id: "download-csv", class: "secondary",
      on: { click: () => download("payouts-" + node.node_id + ".csv", payoutsCsv(payouts.payouts), "text/csv;charset=utf-8") },
    }, "Download CSV");
    const table = el("table", { id: "payouts-table" },
      el("thead", null, el("tr", null, el("th", null, "Created"), el("th", { class: "num" }, "Amount"), el("th", null, "State"), el("th", null, "Transaction"), el("th", null, "Payout id"))),
      el("tbody", null, list.map((p) => el("tr", null,
        el("td", null, timeCell(p.created_at)),
        el("td", { class: "num" }, p.amount_usdt),
        el("td", null, el("span", { class: "badge payout-" + p.state }, p.state), p.error ? el("div", { class: "muted small" }, p.error) : null),
        el("td", null, p.tx_hash ? el("code", { class: "hash" }, p.tx_hash) : "–"),
        el("td", null, el("code", null, p.payout_id))))));
    return el("section", { class: "card" },
      el("div", { class: "card-head" }, el("h2", null, "Payouts"), button),
      list.length ? tableWrap(table) : el("p", { class: "muted" }, "No payouts yet."));
  }

  async function proofSection(proofs) {
    const key = await proofKey();
    const shown = proofs.slice(0, 200);
    const rows = shown.map((p, i) => {
      const result = el("span", { class: "verify-result" });
      const button = el("button", {
        type: "button", class: "verify small",
        on: {
          click: async () => {
            button.disabled = true;
            result.className = "verify-result";
            result.textContent = "checking…";
            // The previous proof is the next older one; fetched when not loaded.
            let prev = proofs[i + 1] || null;
            try {
              if (!prev && p.prev_proof_hash) prev = await previousProof(p);
              const out = await window.LucidVerify.verifyProof(p, prev, key.public_key);
              result.className = "verify-result " + (out.ok ? "ok" : "bad");
              result.textContent = out.ok ? "valid (" + out.checks.join(", ") + ")" : "invalid: " + out.failed;
            } catch (e) {
              if (e instanceof SignedOut) return;
              result.className = "verify-result bad";
              result.textContent = "could not check: " + e.message;
            } finally {
              button.disabled = false;
            }
          },
        },
      }, "verify");
      return el("tr", { dataset: { epoch: p.epoch } },
        el("td", null, "#" + p.epoch),
        el("td", null, timeCell(p.window_start)),
        el("td", { class: "num" }, fmtDuration(p.operational_seconds)),
        el("td", { class: "num" }, p.score + "%"),
        el("td", { class: "num" }, String(p.heartbeat_count)),
        el("td", { class: "num" }, p.credits_usdt),
        el("td", null, button, " ", result));
    });
    return el("section", { class: "card" },
      el("h2", null, "Proofs"),
      el("p", { class: "muted small" },
        "“verify” checks a proof here, in the browser: its hash, the chain to the previous proof, the inclusion path to the epoch root and the epoch's signature with the proof key " + (key.key_id || "") + "."),
      proofs.length > shown.length ? el("p", { class: "muted small" }, "Showing the newest " + shown.length + " of " + proofs.length + " proofs.") : null,
      proofs.length
        ? tableWrap(el("table", { id: "proofs-table" },
          el("thead", null, el("tr", null, el("th", null, "Epoch"), el("th", null, "Window"), el("th", { class: "num" }, "Up"), el("th", { class: "num" }, "Score"), el("th", { class: "num" }, "Heartbeats"), el("th", { class: "num" }, "Credits"), el("th", null, "Check"))),
          el("tbody", null, rows)))
        : el("p", { class: "muted" }, "No proofs yet: they appear when an epoch with heartbeats from this node closes."));
  }

  // The proof just before `p` (the loaded history ended at `p`).
  async function previousProof(p) {
    const page = await api("/api/v1/poot/" + encodeURIComponent(p.node_id) + "/history?limit=2&cursor=" +
      encodeURIComponent(b64url(String(p.epoch))));
    return page.items.find((q) => q.epoch < p.epoch) || null;
  }

  function b64url(s) {
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // ---------- admin -------------------------------------------------------------------

  function formResult() {
    return el("p", { class: "message", role: "status", hidden: true });
  }

  function showResult(node, kind, text) {
    node.className = "message " + kind;
    node.textContent = text;
    node.hidden = false;
  }

  async function viewAdmin(_r, current) {
    if (state.claims.role !== "admin") {
      return el("div", null, el("h1", null, "Admin"), message("error", "This page is for admins; your token's role is " + (state.claims.role || "unknown") + "."));
    }
    const [pending, pools, issued] = await Promise.all([
      listAll("/api/v1/payouts?state=pending"), loadPools(), api("/api/v1/tokens?limit=100")]);
    if (!current()) return null;

    // Tokens issued through the API that have not expired (from the audit log), each with
    // a revoke button; and revoking every token of a subject.
    const tokensBody = el("tbody");
    const tokensEmpty = el("p", { class: "muted" }, "No unexpired tokens were issued here (tokens from the token issue command and node logins are not listed).");
    const tokensTable = el("table", { id: "issued-tokens" },
      el("thead", null, el("tr", null, el("th", null, "Subject"), el("th", null, "Role"), el("th", null, "Issued"), el("th", null, "Expires"), el("th", null, "Token id"), el("th", null, "State"))),
      tokensBody);
    const tokensWrap = tableWrap(tokensTable);
    function revokedCell(t) {
      return el("span", { class: "badge status-revoked", title: t.revoked_at ? "revoked " + t.revoked_at : "" }, "revoked");
    }
    function tokenRow(t) {
      const state = el("td", { class: "token-state" });
      const row = el("tr", { dataset: { jti: t.jti } },
        el("td", null, t.subject), el("td", null, t.role), el("td", null, timeCell(t.issued_at)),
        el("td", null, timeCell(t.expires_at)), el("td", null, el("code", null, t.jti)), state);
      if (t.revoked) {
        append(state, [revokedCell(t)]);
        return row;
      }
      // Two clicks: the first arms the button, the second revokes.
      const button = el("button", { type: "button", class: "small danger revoke-token" }, "Revoke");
      const result = el("div", { class: "small" });
      button.addEventListener("click", async () => {
        if (button.dataset.armed !== "yes") {
          button.dataset.armed = "yes";
          button.textContent = "Really revoke?";
          return;
        }
        button.disabled = true;
        try {
          const r = await api("/api/v1/tokens/revoke", { method: "POST", body: { jti: t.jti } });
          append(clear(state), [revokedCell({ revoked_at: r.revoked_at })]);
        } catch (err) {
          if (!(err instanceof SignedOut)) {
            button.disabled = false;
            result.className = "small message error";
            result.textContent = "Not revoked: " + err.message;
          }
        }
      });
      append(state, [button, result]);
      return row;
    }
    function showTokens(list) {
      append(clear(tokensBody), list.items.map(tokenRow));
      tokensWrap.hidden = list.items.length === 0;
      tokensEmpty.hidden = list.items.length !== 0;
    }
    async function refreshTokens() {
      const list = await api("/api/v1/tokens?limit=100");
      if (current()) showTokens(list);
    }
    showTokens(issued);

    const revokeSubject = el("input", { id: "revoke-subject", required: true, maxlength: 128, pattern: "[A-Za-z0-9_.@:\\-]+", autocomplete: "off", placeholder: "op-1 or node_…" });
    const revokeResult = formResult();
    const revokeForm = el("form", { id: "revoke-subject-form", class: "stack" },
      el("label", null, "Subject (operator id, admin name or node id)", revokeSubject),
      el("button", { type: "submit", class: "danger" }, "Revoke all tokens of this subject"), revokeResult);
    revokeForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const who = revokeSubject.value.trim();
      try {
        const r = await api("/api/v1/tokens/revoke", { method: "POST", body: { subject: who } });
        showResult(revokeResult, "ok", "Every token of " + r.subject + " issued up to " + fmtTime(r.revoked_at) + " is revoked.");
        revokeForm.reset();
        await refreshTokens();
      } catch (err) {
        if (!(err instanceof SignedOut)) showResult(revokeResult, "error", "Not revoked: " + err.message);
      }
    });

    // Create a pool.
    const poolName = el("input", { id: "pool-name", required: true, maxlength: 128, autocomplete: "off" });
    const poolRegion = el("input", { id: "pool-region", maxlength: 128, autocomplete: "off" });
    const poolCapacity = el("input", { id: "pool-capacity", type: "number", min: 1, step: 1, placeholder: "default" });
    const poolResult = formResult();
    const poolForm = el("form", { id: "create-pool", class: "stack" },
      el("label", null, "Name", poolName), el("label", null, "Region (optional)", poolRegion),
      el("label", null, "Capacity (optional)", poolCapacity),
      el("button", { type: "submit" }, "Create pool"), poolResult);
    poolForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = { name: poolName.value.trim() };
      if (poolRegion.value.trim()) body.region = poolRegion.value.trim();
      if (poolCapacity.value) body.capacity = Number(poolCapacity.value);
      try {
        const p = await api("/api/v1/pools", { method: "POST", body });
        showResult(poolResult, "ok", "Created pool " + p.name + " (" + p.pool_id + "), capacity " + p.capacity + ".");
        poolForm.reset();
      } catch (err) {
        if (!(err instanceof SignedOut)) showResult(poolResult, "error", "Not created: " + err.message);
      }
    });

    // Issue a token.
    const role = el("select", { id: "token-role" }, el("option", { value: "operator" }, "operator"), el("option", { value: "admin" }, "admin"));
    const subject = el("input", { id: "token-subject", required: true, maxlength: 128, pattern: "[A-Za-z0-9_.@:\\-]+", autocomplete: "off", placeholder: "op-1" });
    const ttl = el("input", { id: "token-ttl", type: "number", min: 1, max: 8784, step: 1, value: 24 });
    const tokenResult = formResult();
    const tokenOut = el("div", { class: "token-out", hidden: true });
    const tokenForm = el("form", { id: "issue-token", class: "stack" },
      el("label", null, "Role", role), el("label", null, "Subject (operator id)", subject),
      el("label", null, "Valid for (hours)", ttl),
      el("button", { type: "submit" }, "Issue token"), tokenResult, tokenOut);
    tokenForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const t = await api("/api/v1/tokens", {
          method: "POST",
          body: { role: role.value, subject: subject.value.trim(), ttl_seconds: Math.round(Number(ttl.value) * 3600) },
        });
        const area = el("textarea", { id: "issued-token", readonly: true, rows: 4, spellcheck: "false" });
        area.value = t.token;
        const copy = el("button", {
          type: "button", class: "secondary",
          on: {
            click: async () => {
              area.select();
              try {
                await navigator.clipboard.writeText(t.token);
                copy.textContent = "Copied";
              } catch (err) {
                copy.textContent = "Press Ctrl+C to copy";
              }
            },
          },
        }, "Copy");
        clear(tokenOut).hidden = false;
        append(tokenOut, [el("p", null, "Token for " + subject.value.trim() + " (" + role.value + "), valid until " + fmtTime(t.expires_at) + ". It is shown once:"), area, copy]);
        tokenResult.hidden = true;
        await refreshTokens();
      } catch (err) {
        if (!(err instanceof SignedOut)) showResult(tokenResult, "error", "Not issued: " + err.message);
      }
    });

    // Pending payouts: confirm with a transaction hash or fail with a reason.
    const payoutRows = pending.map((p) => {
      const tx = el("input", { class: "tx-hash", placeholder: "transaction hash (64 hex)", maxlength: 66, autocomplete: "off" });
      const reason = el("input", { class: "fail-reason", placeholder: "reason", maxlength: 500, autocomplete: "off" });
      const result = el("div", { class: "small" });
      const row = el("tr", { dataset: { payoutId: p.payout_id } });
      const act = async (what, body) => {
        try {
          const out = await api("/api/v1/payouts/" + encodeURIComponent(p.payout_id) + "/" + what, { method: "POST", body });
          clear(row);
          append(row, [el("td", { colspan: 5 }, el("code", null, p.payout_id), " " + out.state + (out.tx_hash ? " · " + out.tx_hash : ""))]);
        } catch (err) {
          if (!(err instanceof SignedOut)) {
            result.className = "small message error";
            result.textContent = err.message;
          }
        }
      };
      const confirmForm = el("form", { class: "inline" }, tx, el("button", { type: "submit", class: "small" }, "Confirm"));
      confirmForm.addEventListener("submit", (e) => { e.preventDefault(); act("confirm", { tx_hash: tx.value.trim() }); });
      const failForm = el("form", { class: "inline" }, reason, el("button", { type: "submit", class: "small danger" }, "Fail"));
      failForm.addEventListener("submit", (e) => { e.preventDefault(); act("fail", { reason: reason.value.trim() }); });
      append(row, [
        el("td", null, el("code", null, p.payout_id), el("div", { class: "muted small" }, timeCell(p.created_at))),
        el("td", null, el("a", { href: "#/node/" + encodeURIComponent(p.node_id) }, p.node_id)),
        el("td", { class: "num" }, p.amount_usdt),
        el("td", null, el("code", { class: "hash" }, p.payout_address)),
        el("td", null, confirmForm, failForm, result),
      ]);
      return row;
    });

    const poolRows = pools.map((p) => el("tr", null, el("td", null, p.name), el("td", null, p.region || "–"), el("td", null, p.member_count + " / " + p.capacity), el("td", null, el("code", null, p.pool_id))));

    return el("div", null,
      el("h1", null, "Admin"),
      el("div", { class: "cards" },
        el("section", { class: "card" }, el("h2", null, "Create a pool"), poolForm),
        el("section", { class: "card" }, el("h2", null, "Issue a token"), tokenForm)),
      el("section", { class: "card", id: "tokens-card" }, el("h2", null, "Issued tokens"), tokensWrap, tokensEmpty),
      el("section", { class: "card" }, el("h2", null, "Revoke tokens"), revokeForm),
      el("section", { class: "card" }, el("h2", null, "Pending payouts (" + pending.length + ")"),
        pending.length
          ? tableWrap(el("table", { id: "pending-table" },
            el("thead", null, el("tr", null, el("th", null, "Payout"), el("th", null, "Node"), el("th", { class: "num" }, "Amount"), el("th", null, "Address"), el("th", null, "Close it"))),
            el("tbody", null, payoutRows)))
          : el("p", { class: "muted" }, "Nothing pending.")),
      el("section", { class: "card" }, el("h2", null, "Pools"),
        tableWrap(el("table", null, el("thead", null, el("tr", null, el("th", null, "Name"), el("th", null, "Region"), el("th", null, "Fill"), el("th", null, "Id"))), el("tbody", null, poolRows)))));
  }

  // ---------- alerts ------------------------------------------------------------------

  const ALERT_EVENTS = [
    ["node.offline", "a node is offline (after the grace time)"],
    ["node.online", "a node is back (after an offline alert)"],
    ["payout.created", "a payout was created"],
    ["payout.confirmed", "a payout was confirmed"],
    ["payout.failed", "a payout failed"],
  ];

  // Operators: their own webhook. Admins: the fleet-wide hook (#/alerts) or one
  // operator's (#/alerts/{operator id}).
  async function viewAlerts(r, current) {
    const role = state.claims.role;
    if (role !== "admin" && role !== "operator") {
      return el("div", null, el("h1", null, "Alerts"),
        message("error", "Alerts are set by operators and admins; your token's role is " + (role || "unknown") + "."));
    }
    const admin = role === "admin";
    const operatorId = admin ? r.id : null;
    const path = "/api/v1/alerts" + (operatorId ? "?operator_id=" + encodeURIComponent(operatorId) : "");
    const whom = !admin
      ? "Your webhook: alerts about your nodes."
      : operatorId
        ? "Operator " + operatorId + "'s webhook: alerts about their nodes."
        : "The fleet-wide hook: alerts about every node.";

    let settings = null;
    let loadError = null;
    try {
      settings = await api(path);
    } catch (e) {
      // An admin who typed a wrong operator id keeps the chooser to fix it.
      if (!admin || !operatorId || !(e instanceof ApiError)) throw e;
      loadError = e;
    }
    if (!current()) return null;

    const page = el("div", null, el("h1", null, "Alerts"));
    if (admin) {
      page.appendChild(el("section", { class: "card alerts-card" },
        el("h2", null, "Whose alerts"), alertScopeChooser(operatorId)));
    }
    if (loadError) {
      const m = message("error", "Could not load the settings: " + loadError.message);
      m.id = "alert-load-error";
      page.appendChild(m);
      return page;
    }

    const url = el("input", {
      id: "alert-url", type: "url", maxlength: 2048, autocomplete: "off", spellcheck: "false",
      placeholder: "https://receiver.example/lucid",
    });
    const secret = el("input", { id: "alert-secret", type: "password", maxlength: 256, autocomplete: "new-password" });
    const grace = el("input", { id: "alert-grace", type: "number", min: 1, max: 604800, step: 1 });
    const boxes = ALERT_EVENTS.map(([name]) =>
      el("input", { type: "checkbox", name: "event", value: name, id: "alert-event-" + name.replace(".", "-") }));
    const status = el("p", { id: "alert-status", class: "muted" });
    const result = formResult();
    result.id = "alert-result";
    const save = el("button", { type: "submit", id: "alert-save" }, "Save");
    const remove = el("button", { type: "button", id: "alert-remove", class: "secondary" }, "Remove");
    const cancel = el("button", { type: "button", id: "alert-remove-cancel", class: "secondary", hidden: true }, "Cancel");
    let armed = false;

    function disarm() {
      armed = false;
      remove.textContent = "Remove";
      remove.className = "secondary";
      cancel.hidden = true;
    }

    function busy(on) {
      for (const b of [save, remove, cancel]) b.disabled = on;
    }

    function fill(s) {
      settings = s;
      url.value = s.webhook_url || "";
      secret.value = "";
      secret.placeholder = s.secret_set ? "unchanged" : "required";
      grace.value = String(s.offline_after_seconds);
      for (const b of boxes) b.checked = s.events.includes(b.value);
      clear(status);
      if (s.configured) {
        status.className = "ok-text";
        append(status, ["Configured", s.updated_at ? ", last changed " + fmtTime(s.updated_at) : "", "."]);
      } else {
        status.className = "muted";
        status.textContent = "No webhook set: nothing is sent.";
      }
      remove.hidden = !s.configured;
      disarm();
    }

    const form = el("form", { id: "alerts-form", class: "stack", novalidate: true },
      el("label", null, "Webhook URL", url,
        el("span", { class: "hint" }, "https:// or http:// (a receiver on the local network). Events are POSTed as JSON.")),
      el("label", null, "Secret", secret,
        el("span", { class: "hint" }, "Signs every delivery (X-Lucid-Signature: HMAC-SHA256). It is never shown again; leave empty to keep it.")),
      el("label", null, "Offline grace (seconds)", grace,
        el("span", { class: "hint" }, "node.offline is sent only once a node has been silent this long (default 300).")),
      el("fieldset", { id: "alert-events" }, el("legend", null, "Events"),
        ALERT_EVENTS.map(([name, what], i) =>
          el("label", { class: "check", for: boxes[i].id }, boxes[i], el("span", null, el("code", null, name), " – " + what)))),
      el("div", { class: "actions" }, save, remove, cancel),
      result);

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      disarm();
      const body = { webhook_url: url.value.trim(), events: boxes.filter((b) => b.checked).map((b) => b.value) };
      if (secret.value) body.secret = secret.value;
      if (grace.value.trim() !== "") body.offline_after_seconds = Number(grace.value);
      busy(true);
      try {
        const saved = await api(path, { method: "PUT", body });
        fill(saved);
        showResult(result, "ok", "Saved: events go to " + saved.webhook_url + " (" +
          (saved.events.length ? saved.events.join(", ") : "no events selected") + ").");
      } catch (err) {
        if (!(err instanceof SignedOut)) showResult(result, "error", "Not saved: " + err.message);
      } finally {
        busy(false);
      }
    });

    // Two clicks: "Remove", then "Really remove?" (no native dialog).
    remove.addEventListener("click", async () => {
      if (!armed) {
        armed = true;
        remove.textContent = "Really remove?";
        remove.className = "danger";
        cancel.hidden = false;
        showResult(result, "info", "Removing the webhook also drops the alerts still queued for it. Click “Really remove?” to go on.");
        return;
      }
      busy(true);
      try {
        await api(path, { method: "DELETE" });
        showResult(result, "ok", "Removed: no more alerts are sent to this webhook.");
        try {
          fill(await api(path));
        } catch (err) {
          if (err instanceof SignedOut) return;
          fill(Object.assign({}, settings, { configured: false, webhook_url: null, secret_set: false, updated_at: null }));
        }
      } catch (err) {
        if (!(err instanceof SignedOut)) showResult(result, "error", "Not removed: " + err.message);
      } finally {
        busy(false);
      }
    });
    cancel.addEventListener("click", () => {
      disarm();
      result.hidden = true;
    });

    fill(settings);
    page.appendChild(el("section", { class: "card alerts-card" },
      el("h2", { id: "alert-whom" }, whom), status, form));
    return page;
  }

  // Admins choose whose settings: the fleet-wide hook or one operator's.
  function alertScopeChooser(operatorId) {
    const scope = el("select", { id: "alert-scope" },
      el("option", { value: "fleet" }, "the fleet-wide hook (all nodes)"),
      el("option", { value: "operator" }, "one operator's webhook"));
    scope.value = operatorId ? "operator" : "fleet";
    const opInput = el("input", {
      id: "alert-operator", maxlength: 128, autocomplete: "off", spellcheck: "false",
      placeholder: "op-1",
    });
    opInput.value = operatorId || "";
    const opLabel = el("label", null, "Operator id ", opInput);
    const note = el("p", { class: "message error", role: "alert", hidden: true });
    const sync = () => { opLabel.hidden = scope.value !== "operator"; };
    scope.addEventListener("change", () => {
      sync();
      if (scope.value === "operator") opInput.focus();
    });
    sync();
    const form = el("form", { id: "alert-scope-form", class: "filters" },
      el("label", null, "Settings of ", scope), opLabel,
      el("button", { type: "submit", id: "alert-scope-show" }, "Show"), note);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const id = opInput.value.trim();
      if (scope.value === "operator" && !id) {
        note.textContent = "Type the operator id (the subject of their token).";
        note.hidden = false;
        opInput.focus();
        return;
      }
      const hash = scope.value === "operator" ? "#/alerts/" + encodeURIComponent(id) : "#/alerts";
      if (location.hash === hash) route();
      else location.hash = hash;
    });
    return form;
  }

  // ---------- start -------------------------------------------------------------------

  function start() {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    window.addEventListener("hashchange", route);
    state.token = sessionStorage.getItem(TOKEN_KEY);
    route();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
