// The projection views: agents, tasks, proposals, dead letters, replay and deployments. Each
// asks the console server for its fold as of the last sequence the page saw, so a change in
// the log shows as soon as the page hears of it.
import { html } from "htm/preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { get, post } from "./api.js";

/** Loads `path` (with `?at_least=` the last sequence seen) now and whenever the log moves,
 * at most every 250 ms; nothing while `path` is null. */
export function useLive(path, lastSeq, deps = []) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const busy = useRef(false);
  const again = useRef(false);
  const latest = useRef(lastSeq);
  latest.current = lastSeq;
  // The path too is read at load time: a reload queued while busy must fetch what is
  // shown now, not what was shown when it was queued.
  const current = useRef(path);
  current.current = path;
  const load = async () => {
    if (!current.current) {
      setData(null);
      return;
    }
    if (busy.current) {
      again.current = true;
      return;
    }
    busy.current = true;
    try {
      const target = current.current;
      const sep = target.includes("?") ? "&" : "?";
      const body = await get(`${target}${sep}at_least=${latest.current}`);
      if (target === current.current) setData(body);
      else again.current = true;
      setError(null);
    } catch (e) {
      setError(e.message);
    } finally {
      setTimeout(() => {
        busy.current = false;
        if (again.current) {
          again.current = false;
          load();
        }
      }, 250);
    }
  };
  useEffect(() => {
    load();
  }, [lastSeq, path, ...deps]);
  return [data, error, load];
}

const short = (key) => (key ? `${key.slice(0, 8)}…` : "");
const ago = (ms) => (ms == null ? "—" : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);

export function Problem({ error }) {
  return error ? html`<p class="error" role="alert">${error}</p>` : null;
}

// An agent's live counters from $SRV.STATS: attempts, and tokens/s where it generates.
const counters = (s) => {
  if (!s) return "—";
  const attempts = `${s.attempts_completed} done · ${s.attempts_failed} failed · ${s.running} running`;
  const g = s.generation;
  if (!g) return attempts;
  const rate = g.seconds > 0 ? (g.generated_tokens / g.seconds).toFixed(1) : "0.0";
  return `${attempts} · ${g.generated_tokens} tokens, ${rate} tokens/s`;
};

export function AgentsView({ store }) {
  const [data, error] = useLive("/api/agents", store.lastSeq);
  const now = Date.now();
  const agents = data?.agents || [];
  return html`<section class="view">
    <${Problem} error=${error} />
    <p class="muted">${agents.length} agents · registry as of sequence ${data?.position ?? "…"}</p>
    <table data-testid="agents">
      <thead><tr><th>name</th><th>kind</th><th>status</th><th>capabilities</th><th>labels</th>
        <th>hardware</th><th>load</th><th>slots</th><th>counters</th><th>heartbeat</th><th>key</th></tr></thead>
      <tbody>
        ${agents.map((a) => {
          const beat = store.heartbeats.get(a.id);
          const hw = a.hardware || {};
          return html`<tr data-agent=${a.name} class=${`status-${a.status}`}>
            <td>${a.name}</td><td>${a.kind}</td><td class="agent-status">${a.status}${a.lame_duck ? " (lame duck)" : ""}</td>
            <td>${(a.capabilities || []).join(", ")}</td>
            <td>${Object.entries(a.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ")}</td>
            <td>${hw.cores ?? "?"} cores, ${hw.memory_mib ?? "?"} MiB${(hw.accelerators || []).length ? `, ${hw.accelerators.join(", ")} (${hw.vram_mib} MiB)` : ""}</td>
            <td>${(beat?.data?.load ?? a.load ?? 0).toFixed(2)} · queue ${beat?.data?.queue_depth ?? a.queue_depth}</td>
            <td>${a.slots}</td>
            <td class="counters">${counters(store.stats.get(a.id))}</td>
            <td>${beat ? ago(now - beat.at) : "none heard yet"}</td>
            <td class="mono" title=${a.id}>${short(a.id)}</td>
          </tr>`;
        })}
      </tbody>
    </table>
  </section>`;
}

/** Layers a task graph by depth (longest path from a root) and draws it as SVG. */
export function layout(tasks) {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const depth = new Map();
  const visit = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const t = byId.get(id);
    const d = t ? Math.max(-1, ...t.depends_on.filter((p) => byId.has(p)).map((p) => visit(p, seen))) + 1 : 0;
    depth.set(id, d);
    return d;
  };
  tasks.forEach((t) => visit(t.id));
  const layers = [];
  tasks.forEach((t) => (layers[depth.get(t.id)] ||= []).push(t));
  const pos = new Map();
  layers.forEach((layer, x) => layer.forEach((t, y) => pos.set(t.id, { x: 20 + x * 190, y: 20 + y * 50 })));
  return { pos, width: 40 + layers.length * 190, height: 40 + Math.max(1, ...layers.map((l) => l.length)) * 50 };
}

function Dag({ tasks, current, onOpen }) {
  if (!tasks || tasks.length < 2) return null;
  const { pos, width, height } = layout(tasks);
  return html`<svg class="dag" width=${width} height=${height} data-testid="dag">
    ${tasks.flatMap((t) =>
      t.depends_on.filter((p) => pos.has(p)).map((p) => {
        const a = pos.get(p), b = pos.get(t.id);
        return html`<line x1=${a.x + 160} y1=${a.y + 15} x2=${b.x} y2=${b.y + 15} class="edge" />`;
      })
    )}
    ${tasks.map((t) => {
      const p = pos.get(t.id);
      return html`<g class=${`node state-${t.state}${t.id === current ? " current" : ""}`} onClick=${() => onOpen(t.id)}>
        <rect x=${p.x} y=${p.y} width="160" height="30" rx="4" />
        <text x=${p.x + 6} y=${p.y + 19}>${t.id.slice(0, 14)} · ${t.state}</text>
      </g>`;
    })}
  </svg>`;
}

export function TasksView({ store, openEvent, act }) {
  const [state, setState] = useState("");
  const [text, setText] = useState("");
  const [open, setOpen] = useState(null);
  const q = `/api/tasks?limit=200${state ? `&state=${state}` : ""}${text ? `&text=${encodeURIComponent(text)}` : ""}`;
  const [data, error] = useLive(q, store.lastSeq);
  const [detail, detailError] = useLive(open ? `/api/tasks/${encodeURIComponent(open)}` : null, store.lastSeq, [open]);
  const counts = data?.counts || [];
  return html`<section class="view">
    <${Problem} error=${error} />
    <div class="toolbar">
      <button class=${state === "" ? "chip on" : "chip"} onClick=${() => setState("")}>all ${data?.total ?? ""}</button>
      ${counts.map(
        ([name, n]) => html`<button class=${state === name ? "chip on" : "chip"} data-state=${name} onClick=${() => setState(name)}>${name} <b>${n}</b></button>`
      )}
      <input placeholder="id or capability" value=${text} onInput=${(e) => setText(e.target.value)} />
      <span class="muted">as of sequence ${data?.position ?? "…"}</span>
    </div>
    <div class="split">
      <table data-testid="tasks">
        <thead><tr><th>id</th><th>state</th><th>capability</th><th>attempt</th><th>agent</th></tr></thead>
        <tbody>
          ${(data?.tasks || []).map(
            (t) => html`<tr data-task=${t.id} class=${`state-${t.state}${t.id === open ? " selected" : ""}`} onClick=${() => setOpen(t.id)}>
              <td class="mono">${t.id}</td><td class="state">${t.state}</td><td>${t.capability}</td>
              <td>${t.attempt}/${t.max_attempts}</td><td class="mono">${short(t.agent)}</td>
            </tr>`
          )}
        </tbody>
      </table>
      ${open &&
      html`<div class="detail" data-testid="task-detail">
        <h3>task ${open}</h3>
        <${Problem} error=${detailError} />
        ${detail?.row &&
        html`<p>state <b data-testid="task-state">${detail.row.state}</b>, attempt ${detail.row.attempt}/${detail.row.max_attempts}, submitted by <span class="mono">${short(detail.row.submitter)}</span>
          ${!["completed", "dead_lettered", "cancelled"].includes(detail.row.state) &&
          html` <button onClick=${() => act("cancel", { task: open, reason: "cancelled from the console" })}>cancel</button>`}</p>
          <${Dag} tasks=${detail.graph} current=${open} onOpen=${setOpen} />
          <h4>timeline</h4>
          <ol class="timeline">
            ${(detail.events || []).map(
              (e) => html`<li onClick=${() => openEvent(e.sequence)}><span class="seq">${e.sequence}</span> ${new Date(e.stored_at).toISOString().slice(11, 23)} <b>${(e.type || "").replace("dev.murmur.", "")}</b> by <span class="mono">${short(e.source)}</span> ${e.verified ? "✓" : html`<span class="error">${e.signature}</span>`}</li>`
            )}
          </ol>
          <details><summary>input / output</summary><pre>${JSON.stringify({ input: detail.task?.input, output: detail.task?.output, failures: detail.task?.failures }, null, 2)}</pre></details>`}
      </div>`}
    </div>
  </section>`;
}

// A step's result in a line: a tool's counts, a recall's matches, a command's exit, a model's
// text or planned call; the whole output is one click away in the Tasks view.
const stepResult = (r) => {
  if (!r) return "";
  if (r.failure) return `failed: ${r.failure}`;
  if (r.json) return JSON.stringify(r.json);
  if (typeof r.text === "string") return r.text;
  if (r.lines != null) return `${r.lines} lines`;
  if (Array.isArray(r.entries)) return `${r.entries.length} entries`;
  if (Array.isArray(r.matches)) return `${r.matches.length} matches${r.method ? ` by ${r.method}` : ""}`;
  if (r.exit_code !== undefined) return `exit ${r.exit_code}: ${(r.stdout || "").slice(0, 80)}`;
  return JSON.stringify(r).slice(0, 120);
};

export function AssistantView({ store }) {
  const [data, error] = useLive("/api/assistant", store.lastSeq);
  const [open, setOpen] = useState(null);
  const requests = data?.requests || [];
  const shown = requests.find((r) => r.id === open);
  return html`<section class="view">
    <${Problem} error=${error} />
    <div class="split">
      <table data-testid="assistant">
        <thead><tr><th>request</th><th>question</th><th>state</th><th>answer</th><th>run by</th></tr></thead>
        <tbody>
          ${requests.map(
            (r) => html`<tr data-request=${r.id} class=${r.id === open ? "selected" : ""} onClick=${() => setOpen(r.id)}>
              <td class="mono">${r.id}</td><td>${r.question || "—"}</td><td class="state">${r.state}</td>
              <td>${(r.answer || "").slice(0, 120)}</td><td class="mono">${r.orchestrator ? short(r.orchestrator) : "the asker"}</td>
            </tr>`
          )}
        </tbody>
      </table>
      ${shown &&
      html`<div class="detail" data-testid="request-detail">
        <h3>${shown.question || shown.id}</h3>
        ${shown.cached_from && html`<p>answered from memory: the answer of <span class="mono">${shown.cached_from}</span></p>`}
        <ol class="timeline">
          ${shown.steps.map(
            (s) => html`<li data-step=${s.step}><b>${s.step}</b> <span class="mono">${s.capability}</span> ${s.state} by <span class="mono">${short(s.agent)}</span>: ${stepResult(s.result)}</li>`
          )}
        </ol>
        ${shown.answer && html`<p data-testid="answer"><b>answer</b> ${shown.answer}</p>`}
      </div>`}
    </div>
  </section>`;
}

export function ProposalsView({ store, act }) {
  const [data, error] = useLive("/api/proposals", store.lastSeq);
  const [reason, setReason] = useState("");
  return html`<section class="view">
    <${Problem} error=${error} />
    <table data-testid="proposals">
      <thead><tr><th>id</th><th>state</th><th>rule</th><th>electorate</th><th>votes</th><th>refused</th><th>decision</th><th>vote</th></tr></thead>
      <tbody>
        ${(data?.proposals || []).map(
          (p) => html`<tr data-proposal=${p.id}>
            <td class="mono">${p.id}</td><td>${p.state}</td>
            <td>${JSON.stringify(p.opened?.protocol ?? p.opened?.rule ?? "")}</td>
            <td>${p.electorate.length}</td>
            <td>${Object.entries(p.votes).map(
              ([v, c]) => html`<div><span class="mono">${short(v)}</span> ${JSON.stringify(c)}${p.reasons?.[v] ? html` <span class="reason">— ${p.reasons[v]}</span>` : ""}</div>`
            )}</td>
            <td>${p.refused.map((r) => html`<div><span class="mono">${short(r.voter)}</span> ${r.reason}</div>`)}</td>
            <td>${p.decided ? JSON.stringify(p.decided.outcome) : p.withdrawn ? `withdrawn: ${p.withdrawn}` : "open"}</td>
            <td>${p.state === "open" &&
            html`${["approve", "reject", "abstain"].map(
              (choice) => html`<button onClick=${() => act("vote", { proposal: p.id, choice, reason })}>${choice}</button>`
            )}`}</td>
          </tr>`
        )}
      </tbody>
    </table>
    <label>reason for a vote <input value=${reason} onInput=${(e) => setReason(e.target.value)} /></label>
  </section>`;
}

const fromBase64 = (b64) => {
  try {
    return new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  } catch {
    return "";
  }
};

export function DeadLettersView({ store, act }) {
  const [data, error] = useLive("/api/dead-letters", store.lastSeq);
  return html`<section class="view">
    <${Problem} error=${error} />
    <table data-testid="dead-letters">
      <thead><tr><th>seq</th><th>when</th><th>reason</th><th>subject</th><th>size · sha256</th><th>detail</th><th>bytes</th><th></th></tr></thead>
      <tbody>
        ${(data?.dead_letters || []).map(
          (d) => html`<tr data-dead-letter=${d.sequence}>
            <td>${d.sequence}</td><td>${d.stored_at ? new Date(d.stored_at).toISOString().slice(0, 19) : ""}</td>
            <td>${d.reason || (d.type || "").replace("dev.murmur.", "")}</td><td class="mono">${d.original_subject ?? d.data?.subject}</td>
            <td>${d.original_size != null && html`${d.original_size} B · <span class="mono" title=${d.sha256}>${(d.sha256 || "").slice(0, 12)}</span>`}</td>
            <td>${d.detail || d.error || (d.data?.dead_letter_sequence != null ? `redrove dead letter ${d.data.dead_letter_sequence}` : "")}</td>
            <td><pre class="bytes">${fromBase64(d.body_base64 || d.prefix_base64 || "").slice(0, 200)}</pre></td>
            <td>${d.redrivable ? html`<button onClick=${() => act("redrive", { sequence: d.sequence })}>redrive</button>` : d.reason ? "prefix only" : ""}</td>
          </tr>`
        )}
      </tbody>
    </table>
  </section>`;
}

export function ReplayView({ store }) {
  const [seq, setSeq] = useState(store.lastSeq);
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    const t = setTimeout(() => {
      get(`/api/as-of/${seq}`).then(setData, (e) => setError(e.message));
    }, 150);
    return () => clearTimeout(t);
  }, [seq]);
  return html`<section class="view">
    <${Problem} error=${error} />
    <div class="toolbar">
      <input type="range" min="1" max=${Math.max(1, store.lastSeq)} value=${seq} data-testid="scrubber" onInput=${(e) => setSeq(Number(e.target.value))} />
      <span>as of sequence <b data-testid="as-of">${data?.as_of ?? seq}</b> of ${store.lastSeq}</span>
    </div>
    ${data &&
    html`<div class="cards">
      <div data-testid="replay-agents"><h4>agents</h4>${data.agents.map((a) => html`<div>${a.name}: ${a.status}</div>`)}</div>
      <div><h4>tasks</h4>${data.task_counts.map(([k, v]) => html`<div>${k}: ${v}</div>`)}</div>
      <div><h4>proposals</h4>${data.proposals.map((p) => html`<div>${p.id}: ${p.state}</div>`)}</div>
    </div>`}
  </section>`;
}

/** Adds and removes nodes and edges of a deployment graph; each node shows its problems. */
function GraphForm({ spec, edit, problems }) {
  const [name, setName] = useState("");
  const [like, setLike] = useState("");
  const [host, setHost] = useState("");
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const [kind, setKind] = useState("depends_on");
  const [port, setPort] = useState("");
  const names = spec.nodes.map((n) => n.name);
  const hosts = Object.keys(spec.hosts || {});
  const pick = (value, options) => (options.includes(value) ? value : options[0] || "");
  const addNode = () => {
    const model = spec.nodes.find((n) => n.name === pick(like, names));
    if (!model || !name) return;
    edit((g) => g.nodes.push({ ...structuredClone(model), name, host: pick(host, hosts) }));
    setName("");
  };
  const addEdge = () =>
    edit((g) =>
      g.edges.push(
        kind === "connects_to"
          ? { from: pick(from, names), to: pick(to, names), type: kind, port: Number(port) }
          : { from: pick(from, names), to: pick(to, names), type: kind }
      )
    );
  const select = (value, set, options, testid) =>
    html`<select data-testid=${testid} value=${pick(value, options)} onChange=${(e) => set(e.target.value)}>${options.map((o) => html`<option>${o}</option>`)}</select>`;
  return html`<div class="graph-form" data-testid="graph-form">
    <h4>nodes</h4>
    <ul>
      ${spec.nodes.map(
        (n) => html`<li data-node=${n.name}><b>${n.name}</b> ${n.type} on ${n.host}
          <button data-testid="remove-node" onClick=${() => edit((g) => {
            g.nodes = g.nodes.filter((m) => m.name !== n.name);
            g.edges = g.edges.filter((e) => e.from !== n.name && e.to !== n.name);
          })}>remove</button>
          ${(problems.get(n.name) || []).map((m) => html`<div class="error">${m}</div>`)}</li>`
      )}
    </ul>
    <p>add <input data-testid="new-node-name" placeholder="name" value=${name} onInput=${(e) => setName(e.target.value)} />
      like ${select(like, setLike, names, "new-node-like")} on ${select(host, setHost, hosts, "new-node-host")}
      <button data-testid="add-node" onClick=${addNode}>add node</button></p>
    <h4>edges</h4>
    <ul>
      ${spec.edges.map(
        (e, i) => html`<li data-edge=${`${e.from}->${e.to}`}>${e.from} → ${e.to} (${e.type}${e.port ? ` ${e.port}` : ""})
          <button onClick=${() => edit((g) => g.edges.splice(i, 1))}>remove</button></li>`
      )}
    </ul>
    <p>add ${select(from, setFrom, names, "new-edge-from")} → ${select(to, setTo, names, "new-edge-to")}
      ${select(kind, setKind, ["depends_on", "connects_to"], "new-edge-type")}
      ${kind === "connects_to" && html`port <input data-testid="new-edge-port" size="5" value=${port} onInput=${(e) => setPort(e.target.value)} />`}
      <button data-testid="add-edge" onClick=${addEdge}>add edge</button></p>
  </div>`;
}

export function DeployView({ example }) {
  const [text, setText] = useState(example);
  const [format, setFormat] = useState("toml");
  const [result, setResult] = useState(null);
  const [file, setFile] = useState("flake.nix");
  const check = async (t = text, f = format) => setResult(await post("/api/flake", { text: t, format: f }));
  useEffect(() => {
    const id = setTimeout(() => check(), 300);
    return () => clearTimeout(id);
  }, [text, format]);
  const openFile = async (e) => {
    const f = e.target.files[0];
    if (!f) return;
    setFormat(f.name.endsWith(".json") ? "json" : "toml");
    setText(await f.text());
  };
  const download = () => {
    const blob = new Blob([result.files[file]], { type: "text/plain" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = file.split("/").pop();
    a.click();
  };
  const byNode = new Map();
  (result?.problems || []).forEach((p) => (p.nodes.length ? p.nodes : ["(graph)"]).forEach((n) => byNode.set(n, [...(byNode.get(n) || []), p.message])));
  // The form edits the graph the server parsed and sends it back as JSON: no second parser
  // or validator in the page.
  const spec = result?.spec;
  const edit = (change) => {
    // The text as it is now when it is JSON (an edit made before the server answered the
    // last one is not lost), else what the server parsed.
    let next;
    try {
      next = format === "json" ? JSON.parse(text) : structuredClone(spec);
    } catch {
      next = structuredClone(spec);
    }
    change(next);
    setFormat("json");
    setText(JSON.stringify(next, null, 2));
  };
  return html`<section class="view deploy">
    <div class="toolbar">
      <input type="file" accept=".toml,.json" onChange=${openFile} />
      <select value=${format} onChange=${(e) => setFormat(e.target.value)}><option>toml</option><option>json</option></select>
      <span data-testid="deploy-status" class=${result?.ok ? "ok" : "error"}>${result ? (result.ok ? `valid: ${result.nodes.length} nodes on ${result.hosts} hosts, ${result.edges} edges` : `${result.problems.length} problem(s)`) : "…"}</span>
    </div>
    <div class="split">
      <textarea data-testid="graph-text" spellcheck="false" value=${text} onInput=${(e) => {
        // Typed or pasted: JSON when it opens with a brace, else TOML.
        setFormat(e.target.value.trimStart().startsWith("{") ? "json" : "toml");
        setText(e.target.value);
      }}></textarea>
      <div class="detail">
        ${result && !result.ok &&
        html`<ul data-testid="problems">${[...byNode.entries()].map(
          ([node, messages]) => html`<li><b>${node}</b><ul>${messages.map((m) => html`<li class="error">${m}</li>`)}</ul></li>`
        )}</ul>`}
        ${spec && html`<${GraphForm} spec=${spec} edit=${edit} problems=${byNode} />`}
        ${result?.ok &&
        html`<div class="tabs">${Object.keys(result.files).map((f) => html`<button class=${f === file ? "chip on" : "chip"} onClick=${() => setFile(f)}>${f}</button>`)}
          <button onClick=${download}>download ${file}</button></div>
          <pre data-testid="flake-file">${result.files[file] ?? ""}</pre>`}
      </div>
    </div>
  </section>`;
}

export function KnowledgeView({ store }) {
  const [data, error] = useLive("/api/knowledge", store.lastSeq);
  const [open, setOpen] = useState(null);
  const [history, setHistory] = useState(null);
  useEffect(() => {
    if (!open) return;
    get(`/api/knowledge/${encodeURIComponent(open.space)}/${encodeURIComponent(open.id)}`).then(setHistory, (e) => setHistory({ error: e.message }));
  }, [open?.space, open?.id, store.lastSeq]);
  const value = (d) => JSON.stringify(d?.winner?.value?.value ?? d?.winner?.value ?? d);
  return html`<section class="view" data-testid="knowledge">
    <${Problem} error=${error} />
    ${(data?.spaces || []).map(
      (s) => html`<div class="space" data-space=${s.space}>
        <h3>${s.space} <span class="muted">owner <span class="mono">${short(s.owner)}</span> · ${s.fact_count} facts · ${s.conflicts.length} in conflict</span></h3>
        <table>
          <thead><tr><th>fact</th><th>subject · predicate</th><th>value</th><th>author</th><th>confidence</th><th>conflicts</th></tr></thead>
          <tbody>
            ${s.facts.map((f) => {
              const conflict = s.conflicts.find((c) => c.id === f.id);
              return html`<tr data-fact=${f.id} class=${conflict ? "conflict" : ""} onClick=${() => setOpen({ space: s.space, id: f.id })}>
                <td class="mono">${f.id.slice(0, 10)}</td>
                <td>${f.core.subject} · ${f.core.predicate}</td>
                <td>${JSON.stringify(f.core.object)}${Object.entries(f.fields).map(([k, d]) => html`<div>${k} = ${value(d)}</div>`)}</td>
                <td class="mono">${short(f.core.author)}</td>
                <td>${Object.entries(f.confidences).map(([a, c]) => `${c.toFixed(2)} (${short(a)})`).join(", ")}</td>
                <td>${conflict ? conflict.fields.map((field) => html`<div class="error">${field}: ${[f.fields[field].winner, ...f.fields[field].others].map((o) => `${JSON.stringify(o.value?.value ?? o.value)} by ${short(o.author)}`).join(" vs ")}</div>`) : ""}</td>
              </tr>`;
            })}
          </tbody>
        </table>
      </div>`
    )}
    ${open &&
    html`<div class="detail"><h4>history of ${open.id}</h4>
      ${history?.error && html`<p class="error">${history.error}</p>`}
      <ol>${(history?.history || []).map((h) => html`<li><span class="seq">${h.sequence}</span> ${Object.entries(h.fact.fields).map(([k, d]) => `${k}=${value(d)}`).join(" ")} ${h.fact.status ? JSON.stringify(h.fact.status.winner.value) : ""}</li>`)}</ol>
    </div>`}
  </section>`;
}
