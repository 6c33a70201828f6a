// fusionkit pipeline view: source -> stream -> (join) -> train -> serve, each stage with its
// status and live rate. An anywidget ES module: the kernel sets the `stages` trait, this
// draws it as SVG, and tells the kernel that a view is alive (so it stops updating
// dashboards that nobody can see).

const COLUMNS = ["source", "stream", "join", "train", "serve"];
const NODE_W = 188;
const NODE_H = 66;
const COL_W = 232;
const ROW_H = 74;
const TOP = 28;
const HEARTBEAT_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function formatRate(rate, kind) {
  const unit = kind === "serve" ? "rows/s" : "ev/s";
  if (!Number.isFinite(rate)) return `– ${unit}`;
  if (rate >= 1e6) return `${(rate / 1e6).toFixed(1)}M ${unit}`;
  if (rate >= 1e4) return `${(rate / 1e3).toFixed(1)}k ${unit}`;
  return `${Math.round(rate).toLocaleString("en-US")} ${unit}`;
}

function formatCount(n) {
  if (!Number.isFinite(n)) return "0";
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return Math.round(n).toLocaleString("en-US");
}

// The stages a stage reads: a join's two inputs ("left + right"), or the one it is on.
function inputs(s) {
  if (!s.on) return [];
  return s.kind === "join" ? s.on.split(" + ") : [s.on];
}

// Place every node: one column per kind (a join column only with a join stage), rows
// following the upstream's row.
export function layout(stages) {
  const byName = new Map(stages.map((s) => [s.name, s]));
  const columns = COLUMNS.filter((c) => c !== "join" || stages.some((s) => s.kind === "join"));
  const rows = Object.fromEntries(columns.map((c) => [c, []]));
  const nodes = [];
  const edges = [];
  const rowOf = new Map();
  const place = (id, column, data) => {
    const row = rows[column].length;
    rows[column].push(id);
    const node = { id, column, row, ...data };
    nodes.push(node);
    rowOf.set(id, node);
    return node;
  };
  const order = (kind) =>
    stages
      .filter((s) => s.kind === kind)
      .sort((a, b) => {
        const row = (s) => Math.min(1e9, ...inputs(s).map((i) => rowOf.get(i)?.row ?? 1e9));
        const ra = row(a);
        const rb = row(b);
        return ra - rb || a.name.localeCompare(b.name);
      });
  for (const s of order("stream")) {
    const src = place(`source:${s.name}`, "source", { label: s.source || "source", stage: s });
    place(s.name, "stream", { stage: s });
    edges.push({ from: src.id, to: s.name, stage: s });
  }
  for (const kind of ["join", "train", "serve"]) {
    for (const s of order(kind)) {
      place(s.name, kind, { stage: s });
      for (const from of inputs(s)) {
        if (rowOf.has(from)) edges.push({ from, to: s.name, stage: byName.get(from) });
      }
    }
  }
  const height = TOP + Math.max(1, ...Object.values(rows).map((r) => r.length)) * ROW_H;
  for (const n of nodes) {
    n.x = 12 + columns.indexOf(n.column) * COL_W;
    n.y = TOP + n.row * ROW_H;
  }
  return { nodes, edges, height, columns,
    width: 12 + columns.length * COL_W - (COL_W - NODE_W) + 12 };
}

function topology(stages) {
  return stages.map((s) => `${s.kind}:${s.name}<${s.on || ""}|${s.source || ""}|${s.color}`).join(",");
}

function drawNode(g, node) {
  const s = node.stage;
  const isSource = node.column === "source";
  g.setAttribute("class", isSource ? "fk-node fk-source" : `fk-node fk-${s.kind}`);
  g.setAttribute("transform", `translate(${node.x},${node.y})`);
  svg("rect", { class: "fk-node-box", width: NODE_W, height: NODE_H, rx: 8, ry: 8 }, g);
  svg("rect", { class: "fk-node-accent", width: 6, height: NODE_H, rx: 3, fill: s.color }, g);
  const title = svg("text", { class: "fk-node-name", x: 16, y: 22 }, g);
  if (isSource) {
    title.textContent = node.label;
    const sub = svg("text", { class: "fk-node-sub", x: 16, y: 42 }, g);
    sub.textContent = `feeds ${s.name}`;
    return;
  }
  g.dataset.stage = s.name;
  title.textContent = s.name;
  svg("text", { class: "fk-node-sub fk-node-rate", x: 16, y: 40 }, g);
  const pill = svg("g", { class: "fk-pill", transform: `translate(${NODE_W - 78},10)` }, g);
  svg("rect", { width: 70, height: 18, rx: 9, ry: 9 }, pill);
  svg("text", { class: "fk-pill-text", x: 35, y: 13 }, pill);
  svg("text", { class: "fk-node-par", x: 16, y: 57 }, g);
}

function updateNode(g, s) {
  g.dataset.status = s.status;
  g.dataset.rate = String(s.rate ?? 0);
  g.setAttribute("class", `fk-node fk-${s.kind} fk-status-${s.status}`);
  g.querySelector(".fk-node-rate").textContent =
    `${formatRate(s.rate, s.kind)} · ${formatCount(s.events)} total`;
  g.querySelector(".fk-pill-text").textContent = s.status;
  const n = s.parallelism ?? 1;
  const par = s.kind === "serve" ? `${n} replica${n === 1 ? "" : "s"}`
    : `${n} actor${n === 1 ? "" : "s"}`;
  g.querySelector(".fk-node-par").textContent =
    s.version != null && s.kind !== "stream" ? `${par} · live v${s.version}` : par;
  const title = g.querySelector("title") || svg("title", {}, g);
  title.textContent = `${s.kind} stage ${s.name}: ${s.status}` + (s.error ? ` — ${s.error}` : "");
}

function edgePath(a, b) {
  const x1 = a.x + NODE_W;
  const y1 = a.y + NODE_H / 2;
  const x2 = b.x;
  const y2 = b.y + NODE_H / 2;
  const dx = (x2 - x1) / 2;
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "fk-pipeline";
  el.appendChild(root);
  const canvas = svg("svg", { class: "fk-pipeline-svg", role: "img" }, root);
  const empty = document.createElement("div");
  empty.className = "fk-pipeline-empty";
  empty.textContent = "No stages yet: define one with fk.stream(...) or %%fusion stream.";
  root.appendChild(empty);
  let drawn = null;
  let groups = new Map();
  let edges = [];

  const redraw = () => {
    const stages = model.get("stages") || [];
    empty.style.display = stages.length ? "none" : "block";
    canvas.style.display = stages.length ? "block" : "none";
    const topo = topology(stages);
    if (topo !== drawn) {
      drawn = topo;
      canvas.replaceChildren();
      groups = new Map();
      const { nodes, edges: links, height, width, columns } = layout(stages);
      canvas.setAttribute("viewBox", `0 0 ${width} ${height}`);
      canvas.style.maxWidth = `${width}px`;
      columns.forEach((c, i) => {
        const head = svg("text", { class: "fk-col-head", x: 12 + i * COL_W, y: 16 }, canvas);
        head.textContent = c;
      });
      const byId = new Map(nodes.map((n) => [n.id, n]));
      const edgeLayer = svg("g", { class: "fk-edges" }, canvas);
      edges = links.map((e) => {
        const path = svg("path", { class: "fk-edge", d: edgePath(byId.get(e.from), byId.get(e.to)),
          stroke: e.stage.color }, edgeLayer);
        return { path, from: e.from, to: e.to };
      });
      for (const n of nodes) {
        const g = svg("g", {}, canvas);
        drawNode(g, n);
        if (n.column !== "source") groups.set(n.stage.name, g);
      }
    }
    const status = new Map(stages.map((s) => [s.name, s.status]));
    for (const s of stages) {
      const g = groups.get(s.name);
      if (g) updateNode(g, s);
    }
    for (const e of edges) {
      const target = e.to.startsWith("source:") ? null : status.get(e.to);
      const source = e.from.startsWith("source:") ? "running" : status.get(e.from);
      const flowing = target === "running" && source === "running";
      e.path.setAttribute("class", flowing ? "fk-edge fk-flowing" : "fk-edge");
    }
  };

  model.on("change:stages", redraw);
  redraw();

  const beat = () => {
    if (el.isConnected && document.visibilityState === "visible") model.send({ type: "alive" });
  };
  beat();
  const timer = setInterval(beat, HEARTBEAT_MS);
  document.addEventListener("visibilitychange", beat);
  return () => {
    clearInterval(timer);
    model.send({ type: "gone" });
    document.removeEventListener("visibilitychange", beat);
    model.off("change:stages", redraw);
  };
}

export default { render };
