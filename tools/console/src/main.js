// The murmur operator console: one page, live over NATS WebSocket.
import { html, render } from "htm/preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { get, post } from "./api.js";
import { EventsView } from "./events.js";
import { agentStats, connect, credsClaims, followHeartbeats, followHistory, lastSequence } from "./nats.js";
import { AgentsView, AssistantView, DeadLettersView, DeployView, KnowledgeView, ProposalsView, ReplayView, TasksView } from "./views.js";
import { CAPABILITY, joinAsAgent } from "./participant.js";
import shopExample from "../../../examples/shop.toml?raw";

/** Events kept in the page (older ones drop off the tail; the log keeps them). */
const KEEP = 20000;
/** The most times a second the page redraws for new events. */
const RENDERS_PER_S = 10;
/** How far back the tail starts when the page opens. */
const BACKLOG = 500;

const VIEWS = ["events", "agents", "tasks", "assistant", "proposals", "knowledge", "dead letters", "replay", "deploy", "compute"];

/** What the log tells the page, mutated in place and re-rendered at most RENDERS_PER_S times a second. */
const store = { events: [], lastSeq: 0, heartbeats: new Map(), stats: new Map() };

function EventModal({ seq, onClose }) {
  const [event, setEvent] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    get(`/api/events/${seq}`).then(setEvent, (e) => setError(e.message));
  }, [seq]);
  return html`<div class="modal" onClick=${onClose}>
    <div class="card" onClick=${(e) => e.stopPropagation()} data-testid="event-detail">
      <button class="close" onClick=${onClose}>close</button>
      <h3>event at sequence ${seq}</h3>
      ${error && html`<p class="error">${error}</p>`}
      ${event &&
      html`<p class=${event.verified ? "ok" : "error"} data-testid="signature">${event.signature}</p>
        <p>subject <span class="mono">${event.subject}</span><br />correlation ${event.correlation_id} · causation ${event.causation_id}</p>
        <pre>${JSON.stringify(event.cloudevent ?? { headers: event.headers, data: event.data_text }, null, 2)}</pre>`}
    </div>
  </div>`;
}

function Credentials({ creds, setCreds }) {
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState("");
  const claims = creds ? credsClaims(creds) : null;
  const load = async (e) => {
    const f = e.target.files[0];
    if (f) setDraft(await f.text());
  };
  if (!editing)
    return html`<div class="creds">
      ${claims ? html`acting as <b>${claims.name}</b> <span class="mono">${claims.sub.slice(0, 8)}…</span>` : html`<span class="muted">read-only</span>`}
      <button data-testid="creds-button" onClick=${() => setEditing(true)}>${claims ? "change" : "act with credentials…"}</button>
      ${claims && html`<button onClick=${() => setCreds("")}>forget</button>`}
    </div>`;
  return html`<div class="creds editing">
    <p>Paste a <code>.creds</code> file (an operator's for redrive and cancel; a voter's to vote). It stays in this tab; the NATS server decides what its role may do.</p>
    <textarea data-testid="creds-text" value=${draft} onInput=${(e) => setDraft(e.target.value)} placeholder="-----BEGIN NATS USER JWT-----"></textarea>
    <input type="file" accept=".creds" onChange=${load} />
    <button data-testid="creds-save" onClick=${() => { setCreds(draft.trim()); setEditing(false); }}>use</button>
    <button onClick=${() => setEditing(false)}>cancel</button>
  </div>`;
}

/** This page as a compute agent: joins with its own key (enrolled with the operator's
 * credentials entered above), runs `compute.js` tasks in a Web Worker. */
const computeAgent = { agent: null, lines: [] };

function ComputeView({ config, creds }) {
  // Kept outside the view: the agent runs on while other views are shown.
  const [agent, setAgentState] = useState(computeAgent.agent);
  const [lines, setLines] = useState(computeAgent.lines);
  const [name, setName] = useState("browser-1");
  const setAgent = (a) => setAgentState((computeAgent.agent = a));
  const log = (line) => {
    computeAgent.lines = [...computeAgent.lines.slice(-200), `${new Date().toLocaleTimeString()} ${line}`];
    setLines(computeAgent.lines);
  };
  if (!config.browser_agents)
    return html`<p class="muted">This console cannot enrol a browser agent: only the <code>murmur up</code> that started the NATS server holds the keys that mint its credentials.</p>`;
  const join = async () => {
    if (!creds) {
      log('joining needs an operator\'s credentials: use "act with credentials…" above');
      return;
    }
    try {
      setAgent(await joinAsAgent(config, creds, name, log));
    } catch (e) {
      log(`could not join: ${e.message}`);
    }
  };
  return html`<section class="compute">
    <p>This page can join the realm as an agent offering <code>${CAPABILITY}</code>: a task carries a function body and its input
      (<code>{"code": "return input.a * input.b", "input": {"a": 6, "b": 7}, "timeout_ms": 1000}</code>); it runs in a Web Worker, stopped at the time limit,
      and the result is reported signed with this page's own key (generated here; an operator's credentials enrol it as a worker).</p>
    ${agent
      ? html`<p>joined as <span class="mono" data-testid="compute-key">${agent.key}</span>
          <button data-testid="compute-leave" onClick=${async () => { await agent.stop(); setAgent(null); }}>leave</button></p>`
      : html`<p><input value=${name} onInput=${(e) => setName(e.target.value)} data-testid="compute-name" />
          <button data-testid="compute-join" onClick=${join}>join as a compute agent</button></p>`}
    <pre data-testid="compute-log">${lines.join("\n")}</pre>
  </section>`;
}

function App() {
  const [config, setConfig] = useState(null);
  const [status, setStatus] = useState("connecting…");
  const [view, setView] = useState(location.hash.slice(1).replace("-", " ") || "events");
  const [version, setVersion] = useState(0);
  const [eventSeq, setEventSeq] = useState(null);
  const [creds, setCredsState] = useState(sessionStorage.getItem("murmur-creds") || "");
  const [notice, setNotice] = useState(null);
  const frame = useRef(0);
  const lastRender = useRef(0);
  const setCreds = (c) => {
    sessionStorage.setItem("murmur-creds", c);
    setCredsState(c);
  };
  // At most RENDERS_PER_S renders a second, each in an animation frame: under a flood of
  // events the page spends its time taking them in, not redrawing what nobody can read.
  const changed = () => {
    if (frame.current) return;
    const wait = Math.max(0, lastRender.current + 1000 / RENDERS_PER_S - performance.now());
    frame.current = setTimeout(() => {
      requestAnimationFrame(() => {
        frame.current = 0;
        lastRender.current = performance.now();
        setVersion((v) => v + 1);
      });
    }, wait);
  };
  useEffect(() => {
    let stop = [];
    (async () => {
      const cfg = await get("/api/config");
      setConfig(cfg);
      if (!cfg.websocket_url) {
        setStatus("this server has no WebSocket URL: start murmur up with --websocket-url");
        return;
      }
      const nc = await connect(cfg);
      setStatus(`live: ${cfg.websocket_url} · realm ${cfg.realm}`);
      nc.closed().then(() => setStatus("disconnected"));
      const last = await lastSequence(nc, cfg);
      store.lastSeq = last;
      stop.push(
        await followHistory(nc, cfg, Math.max(1, last - BACKLOG + 1), (e) => {
          store.events.push(e);
          if (store.events.length > KEEP * 1.25) store.events.splice(0, store.events.length - KEEP);
          store.lastSeq = Math.max(store.lastSeq, e.seq);
          changed();
        })
      );
      // Live counters ($SRV.STATS): attempts, and an inference agent's tokens/s.
      const stats = setInterval(async () => {
        store.stats = await agentStats(nc, cfg).catch(() => store.stats);
        changed();
      }, 2000);
      stop.push(() => clearInterval(stats));
      stop.push(
        followHeartbeats(nc, cfg, (key, data) => {
          store.heartbeats.set(key, { at: Date.now(), data });
          changed();
        })
      );
      window.murmurConsole = { store, nc };
    })().catch((e) => setStatus(`not connected: ${e.message}`));
    const tick = setInterval(changed, 1000);
    return () => {
      stop.forEach((s) => s());
      clearInterval(tick);
      clearTimeout(frame.current);
    };
  }, []);
  const show = (v) => {
    location.hash = v.replace(" ", "-");
    setView(v);
  };
  const act = async (action, body) => {
    if (!creds) {
      setNotice({ error: true, text: `${action} needs credentials: use "act with credentials…" above` });
      return;
    }
    try {
      const r = await post(`/api/actions/${action}`, { ...body, creds });
      setNotice({ error: false, text: `${action}: ${JSON.stringify(r)}` });
    } catch (e) {
      setNotice({ error: true, text: `${action} refused: ${e.message}` });
    }
  };
  const props = { store, version, openEvent: setEventSeq, act };
  return html`<header>
      <h1>murmur</h1>
      <nav>${VIEWS.map((v) => html`<button class=${v === view ? "tab on" : "tab"} data-view=${v} onClick=${() => show(v)}>${v}</button>`)}</nav>
      <${Credentials} creds=${creds} setCreds=${setCreds} />
    </header>
    <p class="status" data-testid="status">${status}</p>
    ${notice && html`<p class=${notice.error ? "notice error" : "notice ok"} data-testid="notice" onClick=${() => setNotice(null)}>${notice.text}</p>`}
    <main>
      ${config && view === "events" && html`<${EventsView} ...${props} />`}
      ${config && view === "agents" && html`<${AgentsView} ...${props} />`}
      ${config && view === "tasks" && html`<${TasksView} ...${props} />`}
      ${config && view === "assistant" && html`<${AssistantView} ...${props} />`}
      ${config && view === "proposals" && html`<${ProposalsView} ...${props} />`}
      ${config && view === "knowledge" && html`<${KnowledgeView} ...${props} />`}
      ${config && view === "dead letters" && html`<${DeadLettersView} ...${props} />`}
      ${config && view === "replay" && html`<${ReplayView} ...${props} />`}
      ${view === "deploy" && html`<${DeployView} example=${shopExample} />`}
      ${config && view === "compute" && html`<${ComputeView} config=${config} creds=${creds} />`}
    </main>
    ${eventSeq && html`<${EventModal} seq=${eventSeq} onClose=${() => setEventSeq(null)} />`}`;
}

render(html`<${App} />`, document.getElementById("app"));
