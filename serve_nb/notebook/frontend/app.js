// serve_nb's widget front end (anywidget ES module): the application widget and the dashboard.
// It only draws what the kernel computed (serve_nb/notebook/payload.py) and sends commands back
// ({cmd: ...} messages, handled by AppWidget.handle_command). No dependencies.

const SVGNS = "http://www.w3.org/2000/svg";
const WINDOWS = [["auto", null], ["1m", 60], ["5m", 300], ["15m", 900]];
const MIN_WINDOW_S = 30;
const CHART = { w: 560, h: 170, left: 34, right: 40, top: 8, bottom: 22 };

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children) el.append(c);
  return el;
}

function badge(text, color) {
  return h("span", { class: "serve-nb-badge", style: `background:${color}`, text });
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {  // no clipboard API (plain http, permissions): the old way
    const area = h("textarea", { style: "position:fixed;opacity:0" });
    area.value = text;
    document.body.append(area);
    area.select();
    try { document.execCommand("copy"); } finally { area.remove(); }
  }
  const old = button.textContent;
  button.textContent = "copied";
  setTimeout(() => { button.textContent = old; }, 1200);
}

// The kernel also writes a static snapshot as the output right after the widget's (for saved notebooks);
// while the live widget shows, that snapshot is hidden.
function hideSnapshot(el, id) {
  if (!id) return;
  const selector = `[data-serve-nb-snapshot="${id}"]`;
  let node = el;
  for (let depth = 0; node && depth < 8; depth++, node = node.parentElement) {
    let sib = node.nextElementSibling;
    for (let i = 0; sib && i < 2; i++, sib = sib.nextElementSibling) {
      if (sib.matches?.(selector) || sib.querySelector?.(selector)) {
        sib.style.display = "none";
        return;
      }
    }
  }
}

function niceTicks(top, count = 4) {
  top = Math.max(top, 1);
  const raw = top / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * power).find((v) => v >= raw);
  if (top <= count) step = Math.max(step, 1);
  const ticks = [];
  for (let i = 0; i <= Math.ceil(top / step - 1e-9); i++) ticks.push(+(i * step).toFixed(6));
  return ticks;
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

// The chart: replicas (left axis) and ongoing requests (right axis) as step lines over a window that follows the
// activity ("auto": from the first point), events as dashed vertical markers, values under the pointer.
function drawChart(box, data, windowName, now, pointer) {
  const history = data.history || [];
  const fixed = Object.fromEntries(WINDOWS)[windowName];
  const start = fixed ? now - fixed : Math.min(history.length ? history[0][0] : now, now - MIN_WINDOW_S);
  const span = Math.max(now - start, 1e-6);
  const { w, h: H, left, right, top, bottom } = CHART;
  const pw = w - left - right, ph = H - top - bottom;
  const before = history.filter((p) => p[0] < start);
  const visible = (before.length ? [[start, before.at(-1)[1], before.at(-1)[2]]] : []).concat(
    history.filter((p) => p[0] >= start));
  const repTicks = niceTicks(Math.max(1, ...visible.map((p) => p[1])));
  const loadTicks = niceTicks(Math.max(1, ...visible.map((p) => p[2])));
  const x = (t) => +(left + ((t - start) / span) * pw).toFixed(1);
  const y = (v, ticks) => +(top + ph - (v / ticks.at(-1)) * ph).toFixed(1);
  const steps = (i, ticks) => {
    const pts = [];
    visible.forEach((p, k) => {
      if (k) pts.push(`${x(p[0])},${y(visible[k - 1][i], ticks)}`);
      pts.push(`${x(p[0])},${y(p[i], ticks)}`);
    });
    if (visible.length) pts.push(`${x(now)},${y(visible.at(-1)[i], ticks)}`);
    return pts.join(" ");
  };
  const colors = data.colors || { replicas: "#0969da", load: "#fb8500" };
  const svg = s("svg", { class: "serve-nb-chart", viewBox: `0 0 ${w} ${H}`, width: "100%",
                         preserveAspectRatio: "xMinYMin meet" });
  svg.append(s("rect", { x: left, y: top, width: pw, height: ph, fill: "#f6f8fa", stroke: "#d0d7de" }));
  for (const v of repTicks) {
    svg.append(s("line", { x1: left, x2: left + pw, y1: y(v, repTicks), y2: y(v, repTicks), stroke: "#eaeef2" }));
    const label = s("text", { class: "axis-left", x: left - 4, y: y(v, repTicks) + 3, "text-anchor": "end",
                              fill: colors.replicas });
    label.textContent = String(v);
    svg.append(label);
  }
  for (const v of loadTicks) {
    const label = s("text", { class: "axis-right", x: left + pw + 4, y: y(v, loadTicks) + 3, fill: colors.load });
    label.textContent = String(v);
    svg.append(label);
  }
  for (let i = 0; i <= 4; i++) {
    const t = start + (span * i) / 4;
    const label = s("text", { class: "axis-time", x: x(t), y: top + ph + 14, "text-anchor": "middle" });
    label.textContent = clock(t);
    svg.append(label);
  }
  for (const e of data.events || []) {
    if (e.t < start || e.t > now) continue;
    const line = s("line", { class: `serve-nb-event serve-nb-event-${e.kind}`, x1: x(e.t), x2: x(e.t), y1: top,
                             y2: top + ph, stroke: e.color, "stroke-dasharray": "3,2", "stroke-width": 1.5 });
    const title = s("title");
    title.textContent = `${clock(e.t)} ${e.text}`;
    line.append(title);
    svg.append(line);
  }
  if (visible.length) {
    svg.append(s("polyline", { class: "serve-nb-load", fill: "none", stroke: colors.load, "stroke-width": 2,
                               points: steps(2, loadTicks) }));
    svg.append(s("polyline", { class: "serve-nb-replicas", fill: "none", stroke: colors.replicas,
                               "stroke-width": 2, points: steps(1, repTicks) }));
  }
  const cursor = s("line", { y1: top, y2: top + ph, stroke: "#57606a", visibility: "hidden" });
  svg.append(cursor);
  const hover = h("div", { class: "serve-nb-hover" });
  const showAt = (px) => {
    if (px < left || px > left + pw || !visible.length) { hover.textContent = ""; return; }
    const t = start + ((px - left) / pw) * span;
    const point = [...visible].reverse().find((p) => p[0] <= t) || visible[0];
    const near = (data.events || []).filter((e) => Math.abs(x(e.t) - px) < 4).map((e) => e.text);
    cursor.setAttribute("x1", px);
    cursor.setAttribute("x2", px);
    cursor.setAttribute("visibility", "visible");
    hover.textContent = `${clock(t)} · replicas ${point[1]} · ongoing requests ${(+point[2]).toFixed(1)}` +
      (near.length ? ` · ${near.join("; ")}` : "");
  };
  // The pointer's place outlives a redraw (once a second), so the values under it stay shown.
  svg.addEventListener("mousemove", (ev) => {
    const rect = svg.getBoundingClientRect();
    pointer.px = ((ev.clientX - rect.left) / rect.width) * w;
    showAt(pointer.px);
  });
  svg.addEventListener("mouseleave", () => {
    pointer.px = null;
    cursor.setAttribute("visibility", "hidden");
    hover.textContent = "";
  });
  const legend = h("div", { class: "serve-nb-legend" },
    h("span", { style: `color:${colors.replicas}`, text: "━ replicas (left axis)" }),
    h("span", { style: `color:${colors.load}`, text: "━ ongoing requests (right axis)" }),
    h("span", { class: "serve-nb-muted", text: "┆ scale / rollout / failure" }));
  box.replaceChildren(svg, legend, hover);
  if (pointer.px !== null) showAt(pointer.px);
}

function table(headers, rows, cls) {
  if (!rows.length) return h("i", { text: "none" });
  return h("div", { class: "serve-nb-table-box" }, h("table", { class: cls },
    h("tr", {}, headers.map((t) => h("th", { text: t }))),
    rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

// One application's view. `src` abstracts where its data lives: the AppWidget's own model, or a dashboard row.
function renderApp(root, src) {
  let windowName = "auto";
  let offset = 0;  // kernel clock minus page clock
  let confirming = false;
  const header = h("div", { class: "serve-nb-status" });
  const deploy = h("div", { class: "serve-nb-deploy" });
  const target = h("select", { class: "serve-nb-scale-target", title: "the deployment + and − act on",
                               onchange: () => src.set("scale_target", target.value) });
  const minus = h("button", { class: "serve-nb-scale-down", title: "one replica fewer", text: "−",
                              onclick: () => src.send({ cmd: "scale", step: -1 }) });
  const plus = h("button", { class: "serve-nb-scale-up", title: "one replica more", text: "+",
                             onclick: () => src.send({ cmd: "scale", step: 1 }) });
  const del = h("button", { class: "serve-nb-delete", text: "Delete app",
                            onclick: () => { confirming = true; update(); } });
  const confirm = h("span", { class: "serve-nb-confirm" });
  const notice = h("div", { class: "serve-nb-notice" });
  const deployments = h("div", { class: "serve-nb-deployments" });
  const windows = h("span", { class: "serve-nb-windows" });
  const chartBox = h("div", { class: "serve-nb-chart-box" });
  const replicas = h("div", { class: "serve-nb-replicas" });
  const autoscaling = h("div", { class: "serve-nb-autoscaling" });
  const form = h("div", { class: "serve-nb-form" });
  const answer = h("pre", { class: "serve-nb-answer" });
  const filter = h("input", { class: "serve-nb-log-filter", placeholder: "request id: show only its lines",
                              oninput: () => src.set("log_filter", filter.value) });
  const logs = h("pre", { class: "serve-nb-logs" });
  for (const [name] of WINDOWS) {
    windows.append(h("button", { class: "serve-nb-window", "data-window": name, text: name,
                                 onclick: () => { windowName = name; drawWindows(); drawChartNow(); } }));
  }
  const drawWindows = () => windows.querySelectorAll("button").forEach(
    (b) => b.classList.toggle("serve-nb-selected", b.dataset.window === windowName));
  drawWindows();
  root.append(
    header, deploy,
    h("div", { class: "serve-nb-controls" }, h("label", { text: "scale " }), target, minus, plus, del, confirm),
    notice, deployments,
    h("div", { class: "serve-nb-chart-head" }, h("b", { text: "Replicas and load " }), windows),
    chartBox,
    h("details", { class: "serve-nb-section" }, h("summary", { text: "Replicas" }), replicas),
    h("details", { class: "serve-nb-section" }, h("summary", { text: "Autoscaling" }), autoscaling),
    h("details", { class: "serve-nb-section" }, h("summary", { text: "Send a request" }), form, answer),
    h("details", { class: "serve-nb-section" }, h("summary", { text: "Logs" }), filter, logs));

  // Leaving the deployments table's inputs lets it redraw again (it waits while one has the focus).
  deployments.addEventListener("focusout", () => setTimeout(() => { if (!busy(deployments)) update(); }, 0));
  const pointer = { px: null };
  const drawChartNow = () => drawChart(chartBox, src.get("data") || {}, windowName, Date.now() / 1000 + offset,
                                       pointer);
  const busy = (box) => box.contains(document.activeElement);
  // Manual/Adaptive picked in the page but not applied yet, by deployment: kept over the feed's redraws.
  const pickedMode = new Map();

  function drawHeader(d) {
    const parts = [h("b", { text: d.name || src.name }), " ", badge(d.status || "…", d.color || "#6e7781")];
    if (d.url) {
      parts.push(" ", h("a", { href: d.url, target: "_blank", text: d.url }),
                 h("button", { class: "serve-nb-copy", text: "copy URL", onclick: (e) => copyText(d.url, e.target) }));
    }
    if (d.dashboard_url) parts.push(" ", h("a", { href: d.dashboard_url, target: "_blank", text: "Ray dashboard" }));
    const lines = [h("div", {}, parts)];
    if (d.curl) {
      lines.push(h("div", { class: "serve-nb-curl-line" }, h("code", { class: "serve-nb-curl", text: d.curl }),
        h("button", { class: "serve-nb-copy", text: "copy curl", onclick: (e) => copyText(d.curl, e.target) })));
    }
    const connection = src.get("connection");
    if (connection) lines.push(unreachable(connection));
    // A failed deploy's error is shown by the deploy block, cut down to the user's cell: not twice, raw.
    const shown = (src.get("deploy")?.failure ? "" : d.failure) || (d.deleted ? d.message : "");
    if (shown) lines.push(h("pre", { class: "serve-nb-error", text: shown }));
    header.replaceChildren(...lines);
  }

  function drawDeploy(state) {
    if (!state || (!state.stages?.length && !state.failure)) { deploy.replaceChildren(); return; }
    const items = (state.stages || []).map((st) => h("div", { class: `serve-nb-stage serve-nb-stage-${st.state}` },
      `${st.icon} ${st.label}${st.detail ? " " + st.detail : ""}`));
    if (state.failure) {
      items.push(h("pre", { class: "serve-nb-error serve-nb-failure", text: state.failure.error }));
      if (state.failure.note) items.push(h("div", { class: "serve-nb-failure-note", text: state.failure.note }));
      if (state.failure.log_lines.length) {
        items.push(h("pre", { class: "serve-nb-failure-logs", text: state.failure.log_lines.join("\n") }));
      }
      items.push(h("div", {},
        src.get("can_retry") ? h("button", { class: "serve-nb-retry", text: "Retry",
                                             onclick: () => src.send({ cmd: "retry" }) }) : null,
        h("button", { class: "serve-nb-failure-delete", text: "Delete",
                      onclick: () => src.send({ cmd: "delete" }) })));
    }
    deploy.replaceChildren(...items);
  }

  function drawDeployments(d) {
    if (busy(deployments)) return;  // the user is typing a count: redraw after
    const batching = (d.deployments || []).some((r) => r.batches);
    const rows = (d.deployments || []).map((r) => {
      const adaptive = !!r.autoscaling;
      const cfg = r.autoscaling_config || {};
      const off = !d.controls;
      const num = (cls, value, title, step = 1) => h("input", { type: "number", min: step < 1 ? 0 : 1, step,
                                                                  class: cls, value, title, disabled: off });
      const done = (button) => { button.blur(); update(); };  // done editing: let the table follow the feed
      const mode = h("select", { class: "serve-nb-mode", disabled: off, title: "Manual: a fixed size; " +
                                 "Adaptive: the autoscaler sizes it within min..max" },
        h("option", { value: "manual", text: "Manual" }), h("option", { value: "adaptive", text: "Adaptive" }));
      const current = adaptive ? "adaptive" : "manual";
      if (pickedMode.get(r.name) === current) pickedMode.delete(r.name);  // the cluster now does what was picked
      mode.value = pickedMode.get(r.name) ?? current;
      const box = num("serve-nb-replica-count", r.target, "replicas");
      const set = h("button", { class: "serve-nb-set-replicas", text: "set", disabled: off, onclick: () => {
        src.send(adaptive ? { cmd: "set_mode", deployment: r.name, adaptive: false, replicas: Number(box.value) }
                          : { cmd: "set_replicas", deployment: r.name, replicas: Number(box.value) });
        pickedMode.delete(r.name);
        done(set);
      } });
      box.addEventListener("keydown", (e) => { if (e.key === "Enter") set.click(); });
      const min = num("serve-nb-min", cfg.min_replicas ?? 1, "min replicas");
      const max = num("serve-nb-max", cfg.max_replicas ?? Math.max(2, r.target), "max replicas");
      const target = num("serve-nb-target", cfg.target_ongoing_requests ?? 2, "target ongoing requests per replica",
                         0.5);
      const apply = h("button", { class: "serve-nb-apply-autoscaling", text: "apply", disabled: off, onclick: () => {
        src.send({ cmd: "set_mode", deployment: r.name, adaptive: true, min_replicas: Number(min.value),
                   max_replicas: Number(max.value), target_ongoing_requests: Number(target.value) });
        pickedMode.delete(r.name);
        done(apply);
      } });
      const manualPart = h("span", {}, box, set);
      const adaptivePart = h("span", { class: "serve-nb-adaptive" }, " min ", min, " max ", max, " target ", target,
                             apply);
      const show = () => {
        manualPart.style.display = mode.value === "manual" ? "" : "none";
        adaptivePart.style.display = mode.value === "adaptive" ? "" : "none";
      };
      mode.addEventListener("change", () => { pickedMode.set(r.name, mode.value); show(); });
      show();
      return [r.name, badge(r.status, r.color), r.replicas, r.requests, ...(batching ? [r.batches] : []),
              h("span", { class: "serve-nb-set" }, mode, " ", manualPart, adaptivePart), r.message];
    });
    deployments.replaceChildren(table(["deployment", "status", "running / target", d.requests_header || "requests",
      ...(batching ? ["batching"] : []), "replicas", ""], rows, "serve-nb-table"));
  }

  function drawReplicas(d) {
    const models = (d.replicas || []).some((r) => r.models);
    replicas.replaceChildren(table(["deployment", "replica", "state", "node", "pid", "ongoing", "up",
      ...(models ? ["models"] : [])], (d.replicas || []).map((r) => [r.deployment, r.replica_id, r.state, r.node,
      r.pid, String(r.ongoing), r.uptime, ...(models ? [r.models] : [])]), "serve-nb-table"));
  }

  function drawAutoscaling(d) {
    const parts = d.autoscaling_note ? [h("i", { text: d.autoscaling_note })] : [];
    for (const a of d.autoscaling || []) {
      parts.push(h("div", {}, h("b", { text: a.deployment }), `: ${a.settings}`),
                 h("div", {}, "latest decision: ", h("i", { text: a.last_decision })),
                 h("ul", {}, a.events.map((e) => h("li", { text: e }))));
    }
    autoscaling.replaceChildren(...parts);
  }

  let formKey = null;
  function drawForm() {
    const spec = src.get("form") || {};
    const key = JSON.stringify(spec);
    if (key === formKey) return;
    formKey = key;
    if (spec.kind === "handle") {
      const method = h("select", { class: "serve-nb-call-method" }, spec.methods.map((m) => h("option", { text: m })));
      const args = h("textarea", { class: "serve-nb-call-args", rows: 2, placeholder: 'JSON arguments, e.g. ["hello"]' });
      form.replaceChildren(h("div", {}, "handle.", method, ".remote(*args)"), args,
        h("button", { class: "serve-nb-send", text: "Call",
                      onclick: () => src.send({ cmd: "call", method: method.value, args: args.value }) }));
      return;
    }
    const routes = spec.routes || [];
    const method = h("select", { class: "serve-nb-method" }, ["GET", "POST", "PUT", "DELETE"].map(
      (m) => h("option", { text: m })));
    const path = h("input", { class: "serve-nb-path", placeholder: "/sub/path?x=1" });
    const fields = h("div", { class: "serve-nb-fields" });
    const body = h("textarea", { class: "serve-nb-body", rows: 3, placeholder: 'JSON body, e.g. {"text": "hello"}' });
    const routeSelect = h("select", { class: "serve-nb-route" },
      h("option", { value: "", text: "any request" }),
      routes.map((r, i) => h("option", { value: String(i), text: `${r.method} ${r.path}${r.doc ? " — " + r.doc : ""}` })));
    const inputs = {};
    const pick = () => {
      const r = routes[Number(routeSelect.value)];
      fields.replaceChildren();
      for (const k of Object.keys(inputs)) delete inputs[k];
      if (!r || routeSelect.value === "") return;
      method.value = r.method;
      path.value = r.path === "/" ? "" : r.path;
      for (const f of r.fields) {
        inputs[f.name] = h("input", { type: f.type === "int" || f.type === "float" ? "number" : "text",
                                      value: f.default ?? "", placeholder: f.required ? "required" : "" });
        fields.append(h("label", {}, `${f.name} (${f.type}) `, inputs[f.name]));
      }
    };
    routeSelect.addEventListener("change", pick);
    if (routes.length) { routeSelect.value = "0"; pick(); }
    const send = h("button", { class: "serve-nb-send", text: "Send", onclick: () => {
      const query = Object.entries(inputs).filter(([, el]) => el.value !== "")
        .map(([k, el]) => `${encodeURIComponent(k)}=${encodeURIComponent(el.value)}`).join("&");
      const p = path.value + (query ? (path.value.includes("?") ? "&" : "?") + query : "");
      src.send({ cmd: "request", method: method.value, path: p, body: body.value });
    } });
    form.replaceChildren(routes.length ? h("div", {}, "route ", routeSelect) : "", h("div", {}, method, path), fields,
                         body, send);
  }

  function update() {
    const d = src.get("data") || {};
    if (d.now) offset = d.now - Date.now() / 1000;
    drawHeader(d);
    drawDeploy(src.get("deploy"));
    const options = d.scale_options || [];
    if ([...target.options].map((o) => o.value).join("\n") !== options.join("\n")) {
      target.replaceChildren(...options.map((n) => h("option", { value: n, text: n })));
    }
    target.value = src.get("scale_target") || "";
    target.disabled = minus.disabled = plus.disabled = !src.get("scale_target");
    del.disabled = !d.controls;
    if (!d.controls) confirming = false;
    confirm.replaceChildren(...(confirming ? [
      "Really delete? ",
      h("button", { class: "serve-nb-confirm-delete", text: `Delete '${d.name}'`,
                    onclick: () => { confirming = false; src.send({ cmd: "delete" }); update(); } }),
      h("button", { text: "Cancel", onclick: () => { confirming = false; update(); } })] : []));
    notice.textContent = src.get("notice") || "";
    drawDeployments(d);
    drawChartNow();
    drawReplicas(d);
    drawAutoscaling(d);
    drawForm();
    answer.textContent = src.get("answer") || "";
    if (!busy(filter)) filter.value = src.get("log_filter") || "";
    logs.textContent = src.get("logs") || "";
  }
  update();
  const timer = setInterval(() => { if (!(src.get("data") || {}).deleted) drawChartNow(); }, 1000);
  return { update, stop: () => clearInterval(timer) };
}

// The controller stopped answering: said over the last state shown, which stays readable.
function unreachable(state) {
  return h("div", { class: "serve-nb-unreachable", text: `⚠ ${state}: showing the last state it reported` });
}

function modelSource(model) {
  return {
    name: "",
    get: (k) => model.get(k),
    set: (k, v) => { model.set(k, v); model.save_changes(); },
    send: (msg) => model.send(msg),
  };
}

function renderDashboard(model, el) {
  const list = h("div", { class: "serve-nb-dashboard-list" });
  const shown = new Map();  // app name -> {row, detail view}
  const connection = h("div");
  el.append(h("div", {}, h("b", { text: model.get("running") ? "serve_nb applications" :
    "serve_nb is not running: deploy with %%serve or serve.run()." })), connection, list);
  function draw() {
    connection.replaceChildren(...(model.get("connection") ? [unreachable(model.get("connection"))] : []));
    const rows = model.get("rows") || [];
    const expanded = model.get("expanded") || [];
    for (const [name, item] of shown) {
      if (!rows.some((r) => r.name === name)) { item.view?.stop(); shown.delete(name); }
    }
    if (!rows.length) { list.replaceChildren(h("i", { text: "No applications." })); return; }
    list.replaceChildren(...rows.map((r) => {
      let item = shown.get(r.name);
      if (!item) {
        const toggle = h("button", { class: "serve-nb-toggle", title: "show the application" });
        const summary = h("span");
        const holder = h("div", { class: "serve-nb-app serve-nb-nested" });
        item = { row: h("div", { class: "serve-nb-row" }, h("div", {}, toggle, summary), holder), toggle, summary,
                 holder, view: null };
        toggle.addEventListener("click", () => {
          const open = model.get("expanded") || [];
          model.set("expanded", open.includes(r.name) ? open.filter((n) => n !== r.name) : [...open, r.name]);
          model.save_changes();
        });
        shown.set(r.name, item);
      }
      item.summary.replaceChildren(" ", h("b", { text: r.name }), " ", badge(r.status, r.color),
        ` ${r.route_prefix} · ${r.replicas}`, ...r.requests.map((l) => h("div", { class: "serve-nb-muted", text: l })));
      const open = expanded.includes(r.name);
      item.toggle.textContent = open ? "▾" : "▸";
      const detail = (model.get("details") || {})[r.name];
      if (open && detail && !item.view) {
        const src = {
          name: r.name,
          get: (k) => ((model.get("details") || {})[r.name] || {})[k],
          set: (k, v) => model.send({ cmd: "set", app: r.name, name: k, value: v }),
          send: (msg) => model.send({ ...msg, app: r.name }),
        };
        item.view = renderApp(item.holder, src);
      } else if (!open && item.view) {
        item.view.stop();
        item.view = null;
        item.holder.replaceChildren();
      } else if (item.view) {
        item.view.update();
      }
      return item.row;
    }));
  }
  draw();
  return draw;
}

export default {
  render({ model, el }) {
    el.classList.add("serve-nb-root");
    // The snapshot output may be attached after this view: look again a few times.
    for (const ms of [0, 50, 250, 1000, 3000]) setTimeout(() => hideSnapshot(el, model.get("snapshot_id")), ms);
    if (model.get("kind") === "dashboard") {
      const draw = renderDashboard(model, el);
      const names = ["rows", "expanded", "details", "running", "connection"];
      for (const n of names) model.on(`change:${n}`, draw);
      return () => { for (const n of names) model.off(`change:${n}`, draw); };
    }
    const view = renderApp(el, modelSource(model));
    const names = ["data", "deploy", "form", "notice", "answer", "logs", "log_filter", "scale_target", "can_retry",
                   "connection"];
    const redraw = () => { hideSnapshot(el, model.get("snapshot_id")); view.update(); };
    for (const n of names) model.on(`change:${n}`, redraw);
    return () => { view.stop(); for (const n of names) model.off(`change:${n}`, redraw); };
  },
};
