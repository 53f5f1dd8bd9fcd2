// clickagg web console. Plain JavaScript, no build step: it polls the
// public JSON APIs every 2 s and draws the partition ring and the charts
// as SVG. See package console's doc.go.
"use strict";

(function () {
  const POLL_MS = 2000;
  const HISTORY_MS = 10 * 60 * 1000; // the charts' span
  const TOKEN_KEY = "clickagg.console.token";
  const SVG = "http://www.w3.org/2000/svg";
  // Owner colours: distinct, readable on white, assigned to aggregators
  // in ID order so a member keeps its colour while membership is stable.
  // The rate chart's series, also the colours of its title's keys (CSS).
  const INGEST_COLOUR = "#17a2b8", APPLIED_COLOUR = "#3559e0";
  const PALETTE = ["#3559e0", "#1f9d55", "#e0803a", "#8e44ad", "#17a2b8", "#d6336c", "#6c8a00", "#b8860b",
    "#5f6fff", "#2e8b57", "#c0392b", "#7f8c8d", "#0b7285", "#a61e4d", "#5c940d", "#862e9c"];

  const $ = (id) => document.getElementById(id);
  const state = {
    selected: null,     // selected partition number
    history: [],        // {t, ingest, rate, lag, lagSeconds, delay}
    lastApplied: null,  // {t, byKey: Map(partition/epoch -> events applied)}
    colours: new Map(),
    status: null,
  };

  // ---- HTTP ----------------------------------------------------------

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  // ApiError carries the HTTP status and the server's message.
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const tok = token();
    if (tok) headers.Authorization = "Bearer " + tok;
    let resp;
    try {
      resp = await fetch(path, { headers, cache: "no-store", credentials: "same-origin" });
    } catch (e) {
      throw new ApiError(0, "the process does not answer (" + e.message + ")");
    }
    const text = await resp.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
    if (!resp.ok) {
      const msg = (body && body.message) || text.trim() || resp.statusText;
      throw new ApiError(resp.status, msg);
    }
    return body;
  }

  // explain turns an API error into a sentence an operator can act on.
  function explain(err, what) {
    const m = err.message || String(err);
    switch (err.status) {
      case 0: return what + ": " + m;
      case 401: return "401 Unauthorized — " + what + " needs a token or a client certificate with the query permission (Token button): " + m;
      case 403: return "403 Forbidden — your identity lacks the query permission for " + what + ": " + m;
      case 404: return "404 — " + what + " is not served by this process: " + m;
      case 503: return "503 Unavailable — " + what + ": " + m;
      default: return err.status + " — " + what + ": " + m;
    }
  }

  // ---- formatting ----------------------------------------------------

  const num = (v) => (v === null || v === undefined || v === "" ? 0 : Number(v));
  const nf = new Intl.NumberFormat("en-US");
  function fmtInt(v) { return nf.format(Math.round(num(v))); }
  function fmtRate(v) {
    v = num(v);
    if (v >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (v >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (v >= 100) return v.toFixed(0);
    return v.toFixed(1);
  }
  function fmtDur(s) {
    s = num(s);
    if (!isFinite(s)) return "–";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 120) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function ts(v) { return v ? new Date(v) : null; }
  function fmtTime(v) {
    const d = ts(v);
    return d ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "–";
  }
  function fmtAgo(v) {
    const d = ts(v);
    return d ? fmtDur((Date.now() - d.getTime()) / 1000) + " ago" : "–";
  }
  function fmtUp(v) {
    const d = ts(v);
    return d ? fmtDur((Date.now() - d.getTime()) / 1000) : "–";
  }
  function pbDuration(v) { return v ? parseFloat(String(v)) : 0; } // "1.5s"

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const k of kids) if (k) e.append(k);
    return e;
  }
  function fill(tbody, rows, cols, empty) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: cols, text: empty }))]));
  }
  function pill(text, kind) { return el("span", { class: "pill " + (kind || text), text }); }

  function colour(member) {
    if (!member) return "#c9d0dc";
    return state.colours.get(member) || "#9aa5b5";
  }

  // ---- rendering -----------------------------------------------------

  function renderTiles(st, asg, handoffs) {
    const members = st.members || [];
    const roles = {};
    for (const m of members) roles[m.role] = (roles[m.role] || 0) + 1;
    $("tile-members").textContent = members.length;
    $("tile-members-sub").textContent = Object.keys(roles).sort().map((r) => roles[r] + " " + r).join(" · ");
    const parts = st.partitions || [];
    const serving = parts.filter((p) => p.state === "serving").length;
    const unavailable = (st.unavailable || []).length;
    $("partition-count").textContent = st.partitionCount;
    $("tile-partitions-sub").textContent = serving + " serving" + (parts.length - serving ? " · " + (parts.length - serving) + " restoring" : "") +
      (unavailable ? " · " + unavailable + " unavailable" : "");
    let rate = 0, lag = 0, maxLagS = 0;
    for (const p of parts) { rate += num(p.eventsPerSecond); lag += num(p.lag); maxLagS = Math.max(maxLagS, num(p.lagSeconds)); }
    $("tile-rate").textContent = fmtRate(rate);
    // Ingest is what the routers accepted, each counting from its own
    // start: the rate is theirs over the last minute, never a difference
    // of totals, which a restarted router would make negative.
    const ing = ingestOf(st);
    $("tile-ingest").textContent = ing.rate === null ? "–" : fmtRate(ing.rate);
    $("tile-ingest").className = "v" + (ing.missing ? " warn" : "");
    $("tile-ingest-total").textContent = fmtInt(ing.accepted) + " accepted";
    $("tile-ingest-total").dataset.total = String(ing.accepted);
    $("tile-ingest-sub").textContent = ing.missing ? "· " + ing.missing + " router" + (ing.missing > 1 ? "s" : "") + " not answering" : "· clicks/s, last minute";
    $("tile-lag").textContent = fmtInt(lag);
    $("tile-lag").className = "v" + (maxLagS > 60 ? " bad" : maxLagS > 10 ? " warn" : "");
    $("tile-lag-sub").textContent = "entries · oldest " + fmtDur(maxLagS);
    const wm = ts(st.minWatermark);
    const delay = wm ? (Date.now() - wm.getTime()) / 1000 : NaN;
    $("tile-fresh").textContent = wm ? fmtDur(delay) : "–";
    $("tile-fresh").className = "v" + (delay > 300 ? " bad" : delay > 150 ? " warn" : "");
    $("tile-fresh-sub").textContent = wm ? "complete through " + fmtTime(st.minWatermark) : "no watermark yet";
    const list = handoffs.handoffs || [];
    const open = list.filter((h) => !h.serving).length;
    $("tile-handoffs").textContent = open ? open + " open" : list.length;
    $("tile-handoffs").className = "v" + (open ? " warn" : "");
    $("tile-handoffs-sub").textContent = open ? "in progress · " + list.length + " recent" : "recent · none in progress";
    const draining = (asg.draining || []).map((d) => d.member);
    $("leader").textContent = "";
    if (st.leader) $("leader").append("leader ", el("strong", { text: st.leader }));
    if (draining.length) $("leader").append(" · draining " + draining.join(", "));
  }

  // ingestOf sums what the routers answered: accepted clicks since each
  // started and accepted clicks/s over the last minute (null when no
  // router answered); missing counts the live routers that did not.
  function ingestOf(st) {
    const routers = st.routers || [];
    const missing = (st.unavailableRouters || []).length;
    let rate = 0, accepted = 0;
    for (const r of routers) { rate += num(r.acceptedPerSecond); accepted += num(r.accepted); }
    return { rate: routers.length || !missing ? rate : null, accepted, missing, byMember: new Map(routers.map((r) => [r.member, r])) };
  }

  function renderMembers(st, asg) {
    const byMember = new Map();
    for (const p of st.partitions || []) {
      const m = byMember.get(p.member) || { parts: 0, rate: 0, lag: 0 };
      m.parts++; m.rate += num(p.eventsPerSecond); m.lag += num(p.lag);
      byMember.set(p.member, m);
    }
    const draining = new Set((asg.draining || []).map((d) => d.member));
    const ing = ingestOf(st);
    const silent = new Set(st.unavailableRouters || []);
    const order = { coordinator: 0, aggregator: 1, router: 2, queryd: 3 };
    const members = [...(st.members || [])].sort((a, b) => (order[a.role] ?? 9) - (order[b.role] ?? 9) || a.id.localeCompare(b.id));
    const rows = members.map((m) => {
      const agg = m.role === "aggregator";
      const router = m.role === "router";
      const rs = ing.byMember.get(m.id);
      // A router's events/s are the clicks it accepted, over its last minute.
      const routerRate = !router ? "" : rs ? fmtRate(rs.acceptedPerSecond) : silent.has(m.id) ? "no answer" : "–";
      const load = byMember.get(m.id) || { parts: 0, rate: 0, lag: 0 };
      const idCell = el("td", { class: "id" });
      if (agg) idCell.append(el("span", { class: "swatch", "data-colour": colour(m.id) }));
      // Members link to each other's consoles; a member of an older version
      // publishes no HTTP address, and its ID stays text.
      if (m.httpAddr) idCell.append(el("a", { href: location.protocol + "//" + m.httpAddr + "/", text: m.id }));
      else idCell.append(m.id);
      if (m.id === st.leader && m.role === "coordinator") idCell.append(pill("leader", "leader"));
      if (draining.has(m.id)) idCell.append(" ", pill("draining"));
      return el("tr", { "data-member-id": m.id, "data-role": m.role },
        idCell,
        el("td", {}, pill(m.role, "role")),
        el("td", { class: "id", text: m.addr }),
        el("td", { class: "id member-version", text: m.version || "–" }),
        el("td", { class: "n", text: agg ? load.parts : "" }),
        el("td", { class: "n", title: router ? "clicks accepted/s" + (rs ? ", " + fmtInt(rs.accepted) + " since it started" : "") : null,
          "data-ingest": router && rs ? String(num(rs.accepted)) : null, text: agg ? fmtRate(load.rate) : routerRate }),
        el("td", { class: "n", text: agg ? fmtInt(load.lag) : "" }),
        el("td", { class: "n muted", title: "registered " + (m.registeredAt || "–"), text: fmtUp(m.registeredAt) }));
    });
    fill($("members").tBodies[0], rows, 8, "no members registered");
    for (const s of document.querySelectorAll("#members .swatch")) s.style.background = s.dataset.colour;
  }

  function assignColours(st) {
    const aggs = (st.members || []).filter((m) => m.role === "aggregator").map((m) => m.id);
    for (const p of st.partitions || []) if (p.member && !aggs.includes(p.member)) aggs.push(p.member);
    aggs.sort();
    state.colours = new Map(aggs.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
  }

  // renderRing draws one arc per partition, coloured by its owner; a
  // restoring partition is hatched, an unavailable one grey and dashed;
  // the inner band's darkness is the partition's lag in seconds.
  function renderRing(st, asg) {
    const ring = $("ring");
    const n = st.partitionCount || 0;
    const cx = 180, cy = 180, r1 = 112, r2 = 160, r0 = 100, rIn = 88;
    const byP = new Map((st.partitions || []).map((p) => [p.partition, p]));
    const owners = new Map((asg.partitions || []).map((a) => [a.partition, a]));
    const unavailable = new Set(st.unavailable || []);
    const kids = [svg("defs", {}, svg("pattern", { id: "hatch", width: 5, height: 5, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      svg("rect", { width: 5, height: 5, fill: "transparent" }), svg("line", { x1: 0, y1: 0, x2: 0, y2: 5, stroke: "#fff", "stroke-width": 2.2, opacity: 0.75 })))];
    const gap = n > 1 ? Math.min(0.012, 0.6 / n) : 0;
    const arc = (a0, a1, ra, rb) => {
      const p = (a, r) => [cx + r * Math.sin(a), cy - r * Math.cos(a)];
      const large = a1 - a0 > Math.PI ? 1 : 0;
      const [x0, y0] = p(a0, rb), [x1, y1] = p(a1, rb), [x2, y2] = p(a1, ra), [x3, y3] = p(a0, ra);
      return `M${x0},${y0} A${rb},${rb} 0 ${large} 1 ${x1},${y1} L${x2},${y2} A${ra},${ra} 0 ${large} 0 ${x3},${y3} Z`;
    };
    const counts = new Map();
    for (let i = 0; i < n; i++) {
      const p = byP.get(i);
      const a = owners.get(i);
      const member = (p && p.member) || (a && a.member) || "";
      counts.set(member, (counts.get(member) || 0) + 1);
      const a0 = (2 * Math.PI * i) / n + gap, a1 = (2 * Math.PI * (i + 1)) / n - gap;
      const down = unavailable.has(i) || !p;
      const title = `partition ${i}\nowner ${member || "none"}` + (a ? ` · epoch ${a.epoch}` : "") +
        (p ? `\nstate ${p.state}\nlag ${fmtInt(p.lag)} entries (${fmtDur(p.lagSeconds)})\nwatermark ${fmtTime(p.watermark)}\n${fmtRate(p.eventsPerSecond)} events/s`
          : "\nno report (owner did not answer)");
      const g = svg("g", { class: "seg-g", "data-partition": i, "data-member": member, "data-state": down ? "unavailable" : p.state });
      g.append(svg("path", {
        class: "seg" + (state.selected === i ? " sel" : ""), d: arc(a0, a1, r1, r2),
        fill: down ? "#d5dae3" : colour(member), "stroke-dasharray": down ? "3 2" : null,
      }, svg("title", { text: title })));
      if (p && p.state === "restoring") g.append(svg("path", { d: arc(a0, a1, r1, r2), fill: "url(#hatch)", "pointer-events": "none" }));
      const lagS = p ? num(p.lagSeconds) : 0;
      const heat = Math.min(1, lagS / 30);
      g.append(svg("path", { d: arc(a0, a1, rIn, r0), fill: heat > 0 ? `rgba(212,63,58,${0.15 + 0.85 * heat})` : "#e6f4ec" }));
      g.addEventListener("click", () => { state.selected = i; render(); });
      kids.push(g);
      if (n <= 64 && (i % Math.max(1, Math.round(n / 16)) === 0)) {
        const am = (a0 + a1) / 2, rr = r2 + 9;
        kids.push(svg("text", { class: "tick", x: cx + rr * Math.sin(am), y: cy - rr * Math.cos(am) + 3, "text-anchor": "middle", text: i }));
      }
    }
    const aggs = (st.members || []).filter((m) => m.role === "aggregator").length;
    kids.push(svg("text", { class: "center-n", x: cx, y: cy + 4, "text-anchor": "middle", text: n }));
    kids.push(svg("text", { class: "center-s", x: cx, y: cy + 24, "text-anchor": "middle", text: "partitions · " + aggs + " aggregators" }));
    kids.push(svg("text", { class: "center-s", x: cx, y: cy + 40, "text-anchor": "middle", text: "inner band: lag" }));
    ring.replaceChildren(...kids);

    const rates = new Map();
    for (const p of st.partitions || []) rates.set(p.member, (rates.get(p.member) || 0) + num(p.eventsPerSecond));
    const legend = [...state.colours.keys()].map((id) => {
      const sw = el("span", { class: "sw" }); sw.style.background = colour(id);
      return el("li", { "data-member": id }, sw, el("span", { class: "id", text: id }),
        el("span", { class: "n", text: (counts.get(id) || 0) + " partitions · " + fmtRate(rates.get(id) || 0) + " events/s" }));
    });
    if (counts.get("")) {
      const sw = el("span", { class: "sw" }); sw.style.background = "#d5dae3";
      legend.push(el("li", {}, sw, el("span", { text: "no owner" }), el("span", { class: "n", text: counts.get("") + " partitions" })));
    }
    const rsw = el("span", { class: "sw restoring" }); rsw.style.backgroundColor = "#9aa5b5";
    legend.push(el("li", { class: "muted" }, rsw, el("span", { text: "hatched: restoring from snapshot and log" })));
    $("legend").replaceChildren(...legend);
    renderDetail(byP, owners);
  }

  function renderDetail(byP, owners) {
    const i = state.selected;
    if (i === null) return;
    const p = byP.get(i) || {}, a = owners.get(i) || {};
    const row = (k, v) => [el("dt", { text: k }), el("dd", { text: v })];
    $("pdetail").replaceChildren(el("dl", {},
      ...row("partition", i), ...row("owner", p.member || a.member || "none"), ...row("epoch", a.epoch ?? p.epoch ?? "–"),
      ...row("pinned to", a.pinnedTo || "–"), ...row("state", p.state || "no report"), ...row("offset", p.offset || "–"),
      ...row("lag", fmtInt(p.lag) + " entries · " + fmtDur(p.lagSeconds)), ...row("watermark", p.watermark || "–"),
      ...row("events/s", fmtRate(p.eventsPerSecond)), ...row("applied", fmtInt(p.eventsApplied)),
      ...row("duplicates · late", fmtInt(p.duplicatesDropped) + " · " + fmtInt(p.lateEvents)),
      ...row("last snapshot", fmtAgo(p.lastSnapshot)), ...row("serving since", fmtAgo(p.servingSince))));
  }

  function renderPartitions(st, asg) {
    const owners = new Map((asg.partitions || []).map((a) => [a.partition, a]));
    const byP = new Map((st.partitions || []).map((p) => [p.partition, p]));
    const unavailable = new Set(st.unavailable || []);
    const rows = [];
    for (let i = 0; i < (st.partitionCount || 0); i++) {
      const p = byP.get(i), a = owners.get(i) || {};
      const owner = (p && p.member) || a.member || "";
      const sw = el("span", { class: "swatch" }); sw.style.background = colour(owner);
      const stateCell = p ? pill(p.state) : pill(unavailable.has(i) ? "unavailable" : "no report", "unavailable");
      rows.push(el("tr", { "data-partition": i },
        el("td", { class: "n", text: i }), el("td", { class: "id" }, sw, owner || "none"),
        el("td", { class: "n", text: a.epoch ?? (p ? p.epoch : "–") }), el("td", {}, stateCell),
        el("td", { class: "n", text: p ? fmtInt(p.lag) : "–" }), el("td", { class: "n", text: p ? fmtDur(p.lagSeconds) : "–" }),
        el("td", { text: p ? fmtTime(p.watermark) : "–" }), el("td", { class: "n", text: p ? fmtRate(p.eventsPerSecond) : "–" }),
        el("td", { class: "n", text: p ? fmtInt(p.eventsApplied) : "–" }), el("td", { class: "n", text: p ? fmtInt(p.duplicatesDropped) : "–" }),
        el("td", { class: "n", text: p ? fmtInt(p.lateEvents) : "–" }), el("td", { class: "id muted", text: p ? p.offset : "–" })));
    }
    fill($("partitions").tBodies[0], rows, 12, "no partitions");
    $("parts-hint").textContent = `assignment version ${asg.version ?? "–"}`;
  }

  function renderHotKeys(hk) {
    const splits = new Map((hk.splits || []).filter((s) => !s.to).map((s) => [s.adId, s]));
    const rows = (hk.keys || []).map((k) => {
      const s = splits.get(k.adId);
      splits.delete(k.adId);
      return el("tr", {}, el("td", { class: "id", text: k.adId }), el("td", { class: "n", text: k.partition }),
        el("td", { class: "n", text: fmtRate(k.eventsPerSecond) }), el("td", { class: "n", text: (num(k.share) * 100).toFixed(1) + "%" }),
        el("td", { class: "id", text: s ? "partitions " + s.partitions.join(", ") : "–" }));
    });
    for (const s of splits.values()) {
      rows.push(el("tr", {}, el("td", { class: "id", text: s.adId }), el("td", { class: "n", text: "–" }), el("td", { class: "n", text: "–" }),
        el("td", { class: "n", text: "–" }), el("td", { class: "id", text: "partitions " + s.partitions.join(", ") + " since " + fmtTime(s.from) })));
    }
    fill($("hotkeys").tBodies[0], rows, 5, hk.error || "no hot keys in the last minute");
  }

  function renderHandoffs(h) {
    const list = [...(h.handoffs || [])].sort((a, b) => (ts(b.stopped) || 0) - (ts(a.stopped) || 0)).slice(0, 8);
    const rows = list.map((x) => el("tr", {},
      el("td", { class: "n", text: x.partition }), el("td", { class: "id", text: x.fromMember || "–" }), el("td", { class: "id", text: x.toMember }),
      el("td", { class: "n", text: x.epoch }), el("td", {}, x.serving ? pill(x.planned ? "planned" : "after loss", x.planned ? "serving" : "restoring") : pill("in progress", "inprogress")),
      el("td", { text: fmtTime(x.stopped) }), el("td", { text: x.serving ? fmtTime(x.serving) : "…" }),
      el("td", { class: "n", text: x.pause ? fmtDur(pbDuration(x.pause)) : "–" })));
    fill($("handoffs").tBodies[0], rows, 8, "no handoffs recorded");
  }

  // ---- history and charts --------------------------------------------

  // sample adds one point per poll. The applied rate is measured between
  // polls from events_applied per (partition, epoch), so a handoff, which
  // restarts a partition's counter under a new epoch, adds no false step.
  function sample(st) {
    const now = Date.now();
    const byKey = new Map();
    let lag = 0, lagS = 0;
    for (const p of st.partitions || []) {
      byKey.set(p.partition + "/" + p.epoch, num(p.eventsApplied));
      lag += num(p.lag);
      lagS = Math.max(lagS, num(p.lagSeconds));
    }
    let rate = null;
    if (state.lastApplied) {
      let d = 0;
      for (const [k, v] of byKey) {
        const before = state.lastApplied.byKey.get(k);
        if (before !== undefined && v >= before) d += v - before;
      }
      const dt = (now - state.lastApplied.t) / 1000;
      if (dt > 0) rate = d / dt;
    }
    state.lastApplied = { t: now, byKey };
    const wm = ts(st.minWatermark);
    state.history.push({ t: now, ingest: ingestOf(st).rate, rate, lag, lagS, delay: wm ? (now - wm.getTime()) / 1000 : null });
    while (state.history.length && state.history[0].t < now - HISTORY_MS) state.history.shift();
  }

  // lineChart draws series of [time, value] over the last HISTORY_MS;
  // minStep keeps the axis of a count (lag entries) on whole numbers.
  function lineChart(node, series, fmt, minStep) {
    const W = 420, H = 160, L = 44, R = 8, T = 10, B = 20;
    const now = Date.now(), t0 = now - HISTORY_MS;
    const pts = series.flatMap((s) => s.points.filter((p) => p[1] !== null));
    const kids = [];
    // Four steps of a round size (1, 2, 2.5 or 5 × 10^k) above the data.
    const top = Math.max(...pts.map((p) => p[1]), 0);
    let max = 4;
    if (top > 0) {
      const raw = top / 4, mag = Math.pow(10, Math.floor(Math.log10(raw)));
      const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((st) => st * 4 >= top);
      max = Math.max(step, minStep || 0) * 4;
    }
    const x = (t) => L + ((t - t0) / HISTORY_MS) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      kids.push(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      kids.push(svg("text", { class: "axis-label", x: L - 6, y: y(v) + 3, "text-anchor": "end", text: fmt(v) }));
    }
    for (let m = 10; m >= 0; m -= 2) {
      kids.push(svg("text", { class: "axis-label", x: x(now - m * 60000), y: H - 5, "text-anchor": m === 0 ? "end" : "middle", text: m ? "−" + m + "m" : "now" }));
    }
    if (pts.length < 2) {
      kids.push(svg("text", { class: "nodata", x: (L + W) / 2, y: H / 2, "text-anchor": "middle", text: "collecting samples…" }));
    }
    for (const s of series) {
      const p = s.points.filter((q) => q[1] !== null);
      if (p.length < 2) continue;
      const d = p.map((q, i) => (i ? "L" : "M") + x(q[0]).toFixed(1) + "," + y(q[1]).toFixed(1)).join("");
      kids.push(svg("path", { class: "area", fill: s.colour, d: d + `L${x(p[p.length - 1][0]).toFixed(1)},${y(0)}L${x(p[0][0]).toFixed(1)},${y(0)}Z` }));
      kids.push(svg("path", { class: "line", stroke: s.colour, d }));
    }
    node.replaceChildren(...kids);
  }

  function renderCharts() {
    const h = state.history;
    const last = h[h.length - 1] || {};
    lineChart($("chart-rate"), [{ colour: INGEST_COLOUR, points: h.map((p) => [p.t, p.ingest]) },
      { colour: APPLIED_COLOUR, points: h.map((p) => [p.t, p.rate]) }], fmtRate);
    lineChart($("chart-lag"), [{ colour: "#e0803a", points: h.map((p) => [p.t, p.lag]) }], fmtInt, 1);
    lineChart($("chart-fresh"), [{ colour: "#1f9d55", points: h.map((p) => [p.t, p.delay]) }], (v) => fmtDur(v));
    const now = [];
    if (last.ingest != null) now.push(fmtRate(last.ingest) + " in");
    if (last.rate != null) now.push(fmtRate(last.rate) + " applied");
    $("chart-rate-now").textContent = now.length ? now.join(" · ") + " /s now" : "";
    $("chart-lag-now").textContent = last.lag != null ? fmtInt(last.lag) + " entries · oldest " + fmtDur(last.lagS) : "";
    $("chart-fresh-now").textContent = last.delay != null ? fmtDur(last.delay) + " behind now" : "";
  }

  // ---- queries -------------------------------------------------------

  function filterParams(prefix) {
    const q = new URLSearchParams();
    const add = (k, id) => { const v = $(prefix + id).value.trim(); if (v) q.set("filter." + k, v); };
    add("country", "-country"); add("ip", "-ip"); add("user_id", "-user");
    return q;
  }

  async function pollTop() {
    const q = filterParams("top");
    q.set("count", $("top-n").value);
    q.set("window_minutes", $("top-minutes").value);
    try {
      const r = await api("/v1/ads/popular_ads?" + q);
      $("top-error").classList.add("hidden");
      const ads = r.ads || [];
      const max = Math.max(1, ...ads.map((a) => num(a.count)));
      const rows = ads.map((a, i) => {
        const b = el("div", { class: "b" }); b.style.width = (100 * num(a.count) / max).toFixed(1) + "%";
        return el("tr", { "data-ad": a.adId }, el("td", { class: "n muted", text: i + 1 }), el("td", { class: "id", text: a.adId }),
          el("td", { class: "bar" }, el("div", { class: "barwrap" }, b, el("span", { class: "c", text: fmtInt(a.count) }))));
      });
      fill($("top").tBodies[0], rows, 3, "no clicks in this window");
      $("top-window").textContent = fmtTime(r.from) + " – " + fmtTime(r.to) + (r.complete ? " · complete" : " · still counting");
    } catch (e) {
      showPanelError("top-error", e, "top ads (queryd)");
      fill($("top").tBodies[0], [], 3, "–");
    }
  }

  async function pollCount() {
    const ad = $("count-ad").value.trim();
    if (!ad) return;
    const q = filterParams("count");
    q.set("last_minutes", $("count-minutes").value);
    try {
      const r = await api("/v1/ads/" + encodeURIComponent(ad) + "/aggregated_count?" + q);
      $("count-error").classList.add("hidden");
      $("count-value").textContent = String(num(r.count));
      $("count-value").dataset.ad = r.adId;
      $("count-meta").textContent = `clicks of ${r.adId}, ${fmtTime(r.from)} – ${fmtTime(r.to)}` + (r.complete ? " · complete" : " · still counting");
    } catch (e) {
      showPanelError("count-error", e, "the count (queryd)");
    }
  }

  function showPanelError(id, e, what) {
    const n = $(id);
    // Only queryd serves /v1/ads/: elsewhere the path is unknown.
    n.textContent = e.status === 404 ? "This process serves no queries (it has no queryd role): open the console on a queryd's HTTP port."
      : explain(e, what);
    n.classList.remove("hidden");
  }

  // ---- main loop -----------------------------------------------------

  let last = null;
  function render() {
    if (!last) return;
    const [st, asg, hk, ho] = last;
    assignColours(st);
    renderTiles(st, asg, ho);
    renderMembers(st, asg);
    renderRing(st, asg);
    renderPartitions(st, asg);
    renderHotKeys(hk);
    renderHandoffs(ho);
    renderCharts();
  }

  function setLive(ok, text) {
    $("live").className = "live " + (ok ? "ok" : "bad");
    $("live-text").textContent = text;
  }

  let timer = null;
  async function poll() {
    clearTimeout(timer);
    const cluster = Promise.all([
      api("/v1/cluster/status"), api("/v1/cluster/assignment"),
      // A coordinator without hot-key tracking refuses (400): say so in
      // the panel and show the rest.
      api("/v1/cluster/hot_keys?count=8").catch((e) => (e.status === 400 ? { keys: [], splits: [], error: explain(e, "hot keys") } : Promise.reject(e))),
      api("/v1/cluster/handoffs"),
    ]);
    const queries = Promise.all([pollTop(), pollCount()]);
    try {
      last = await cluster;
      sample(last[0]);
      render();
      $("banner").classList.add("hidden");
      setLive(true, "live · " + new Date().toLocaleTimeString());
    } catch (e) {
      const b = $("banner");
      b.textContent = explain(e, "the cluster's state (/v1/cluster)");
      b.classList.remove("hidden");
      setLive(false, e.status ? "error " + e.status : "unreachable");
    }
    await queries;
    timer = setTimeout(poll, POLL_MS);
  }

  function init() {
    const dlg = $("token-dialog");
    const refreshTokenButton = () => { $("token-button").textContent = token() ? "Token ✓" : "Token"; };
    $("token-button").addEventListener("click", () => { $("token-input").value = token(); dlg.showModal(); });
    $("token-form").addEventListener("submit", () => {
      const v = $("token-input").value.trim();
      if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
      refreshTokenButton(); poll();
    });
    $("token-clear").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); $("token-input").value = ""; dlg.close(); refreshTokenButton(); poll(); });
    refreshTokenButton();
    for (const id of ["top-minutes", "top-n", "top-country", "top-ip", "top-user"]) $(id).addEventListener("change", pollTop);
    $("top-form").addEventListener("submit", (e) => { e.preventDefault(); pollTop(); });
    $("count-form").addEventListener("submit", (e) => { e.preventDefault(); $("count-value").textContent = "…"; pollCount(); });
    // ?ad=<id> opens the page with the count form filled in.
    const ad = new URLSearchParams(location.search).get("ad");
    if (ad) $("count-ad").value = ad;
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
