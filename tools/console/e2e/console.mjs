// The console in a real browser (Debian's Chromium, driven by playwright-core) against a
// running `murmur up`: tests/console.rs starts the platform and runs this with
//   CONSOLE_URL, NATS_URL, MURMUR_BIN, MURMUR_DATA_DIR, OUT_DIR [, DOCS_DIR]
// It starts agents and submits tasks with the murmur CLI, publishes a malformed message as
// the operator, and checks each view follows the log live. Screenshots go to OUT_DIR (and
// one per view to DOCS_DIR when set). Prints one JSON line of measurements; exits non-zero
// on the first failed check.
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, copyFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { wsconnect, credsAuthenticator, headers as natsHeaders } from "@nats-io/nats-core";
import { jetstream } from "@nats-io/jetstream";
import { createUser, fromSeed } from "@nats-io/nkeys";
import { seal } from "../src/envelope.js";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (tests/console.rs sets it)`);
  return v;
};
const CONSOLE_URL = env("CONSOLE_URL");
const NATS_URL = env("NATS_URL");
const MURMUR = env("MURMUR_BIN");
const DATA = env("MURMUR_DATA_DIR");
const OUT = env("OUT_DIR");
const DOCS = process.env.DOCS_DIR;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** Generous: a check waits this long for what it expects, never sleeps then asserts. */
const DEADLINE = 30_000;
mkdirSync(OUT, { recursive: true });

const measured = {};
const children = [];
const cliArgs = ["--server", NATS_URL, "--data-dir", DATA];
const murmur = (...args) =>
  execFileSync(MURMUR, [...cliArgs, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();

/** The murmur CLI without blocking this process: Playwright resumes each new Web Worker of
 * the page from here, so a synchronous call would keep the page's workers from starting. */
const murmurAsync = (...args) =>
  new Promise((resolve) => {
    const child = spawn(MURMUR, [...cliArgs, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("exit", (code) => resolve({ code, stdout: stdout.trim(), stderr }));
  });

function startAgent(name, capability) {
  const child = spawn(
    MURMUR,
    [...cliArgs, "agent", "run", "worker", "--builtin-handler", "--ephemeral-identity", "--name", name, "--capability", capability, "--heartbeat-ms", "500"],
    { stdio: ["ignore", "pipe", "pipe"] }
  );
  children.push(child);
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.stdout.once("data", (d) => resolve({ child, id: String(d).trim(), joinedAt: Date.now() }));
    child.once("exit", (code) => reject(new Error(`agent ${name} exited (${code}): ${stderr}`)));
    setTimeout(() => reject(new Error(`agent ${name} did not join: ${stderr}`)), DEADLINE);
  });
}

async function shot(page, name) {
  const path = join(OUT, `console-${name}.png`);
  await page.screenshot({ path });
  if (DOCS) copyFileSync(path, join(DOCS, `console-${name}.png`));
}

async function view(page, name) {
  await page.click(`nav [data-view="${name}"]`);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.error(`ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
let failed = false;
const page = await browser.newPage({ viewport: { width: 1400, height: 850 } });
try {
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(CONSOLE_URL);
  await page.waitForSelector("[data-testid=status] >> text=live:", { timeout: DEADLINE });
  check(true, "the page follows the log over NATS WebSocket with observer credentials");

  // Agents: one joining shows within the deadline; the time is measured from the moment its
  // process printed that it joined.
  await view(page, "agents");
  const agent = await startAgent("console-worker", "echo");
  await page.waitForSelector(`tr[data-agent="console-worker"]`, { timeout: DEADLINE });
  measured.agent_visible_ms = Date.now() - agent.joinedAt;
  check(true, `a joining agent appears in the Agents view (${measured.agent_visible_ms} ms after it joined)`);
  await page.waitForFunction(() => !document.querySelector('tr[data-agent="console-worker"] td:nth-child(10)')?.textContent.includes("none"), null, { timeout: DEADLINE });
  await shot(page, "agents");

  // Tasks: a submitted task's state changes live, without reload.
  await view(page, "tasks");
  const slow = murmur("task", "submit", "--capability", "echo", "--input", '{"sleep_ms": 3000}');
  const slowId = slow.split(/\s+/).pop();
  await page.click(`tr[data-task="${slowId}"]`, { timeout: DEADLINE });
  await page.waitForSelector(`[data-testid=task-state] >> text=running`, { timeout: DEADLINE });
  const runningAt = Date.now();
  await page.waitForSelector(`[data-testid=task-state] >> text=completed`, { timeout: DEADLINE });
  measured.task_running_to_completed_ms = Date.now() - runningAt;
  check(true, `a task's state changes live: running → completed`);
  // A task graph is drawn as a DAG.
  const graphFile = join(OUT, "graph.toml");
  execFileSync("sh", ["-c", `cat > ${graphFile} <<'G'
[[tasks]]
id = "fetch"
capability = "echo"
input = { sleep_ms = 200 }
[[tasks]]
id = "build"
capability = "echo"
depends_on = ["fetch"]
[[tasks]]
id = "ship"
capability = "echo"
depends_on = ["build"]
G`]);
  murmur("task", "graph", "submit", graphFile);
  await page.click(`tr[data-task$="ship"]`, { timeout: DEADLINE });
  await page.waitForSelector(`[data-testid=dag] .node.state-completed >> nth=2`, { timeout: DEADLINE });
  check(true, "a task graph is drawn as a DAG whose nodes turn completed live");
  await shot(page, "tasks");

  // Live counters ($SRV.STATS): the worker's completed attempts.
  await view(page, "agents");
  await page.waitForFunction(() => /^[1-9]\d* done/.test(document.querySelector('tr[data-agent="console-worker"] td.counters')?.textContent || ""), null, { timeout: DEADLINE });
  check(true, "an agent's live $SRV.STATS counters show in the Agents view");

  // Assistant: a request's steps, question and answer, read from the log. The steps here
  // are run by the echo worker (its output is its input), so the view's reading of the
  // log is what is checked, not a model.
  murmur("task", "submit", "--id", "ask-console-tool", "--capability", "echo", "--input", '{"op": "read", "path": "src/lib.rs", "lines": 12}');
  let again = null;
  try {
    murmur("task", "submit", "--id", "ask-console-tool", "--capability", "echo");
  } catch (e) {
    again = String(e.stderr || e.message);
  }
  check(again?.includes("an id that exists is refused"), `a second submit under the same --id is refused: ${again?.trim().split("\n").pop()}`);
  murmur("task", "submit", "--id", "ask-console-answer", "--capability", "echo", "--input", JSON.stringify({
    messages: [{ role: "user", content: "Result of read_file(src/lib.rs):\n\nUsing this result, answer briefly: How many lines does src/lib.rs have?" }],
    text: "It has 12 lines.",
  }));
  await view(page, "assistant");
  await page.click(`tr[data-request="ask-console"]`, { timeout: DEADLINE });
  await page.waitForSelector(`[data-testid=request-detail] h3 >> text=How many lines does src/lib.rs have?`, { timeout: DEADLINE });
  await page.waitForSelector(`[data-testid=answer] >> text=It has 12 lines.`, { timeout: DEADLINE });
  await page.waitForSelector(`[data-testid=request-detail] li[data-step="tool"] >> text=12 lines`, { timeout: DEADLINE });
  check(true, "the Assistant view shows a request's question, steps and answer from the log");
  await shot(page, "assistant");
  await view(page, "tasks");

  // Cancel with the operator's credentials from the page.
  const operatorCreds = readFileSync(join(DATA, "operator.creds"), "utf8");
  const observerCreds = (await (await fetch(`${CONSOLE_URL}api/config`)).json()).observer_creds;
  const useCreds = async (creds) => {
    await page.click("[data-testid=creds-button]");
    await page.fill("[data-testid=creds-text]", creds);
    await page.click("[data-testid=creds-save]");
  };
  const stuck = murmur("task", "submit", "--capability", "nobody.has.this").split(/\s+/).pop();
  await page.click(`tr[data-task="${stuck}"]`, { timeout: DEADLINE });
  await useCreds(operatorCreds);
  await page.click("[data-testid=task-detail] button >> text=cancel");
  await page.waitForSelector(`[data-testid=task-state] >> text=cancelled`, { timeout: DEADLINE });
  check(true, "a task is cancelled from the page with operator credentials");

  // Vote from the page, with a reason, as the participant the credentials name; the vote
  // shows with its reason and the tallier decides.
  const operatorUser = JSON.parse(Buffer.from(operatorCreds.split("\n")[1].split(".")[1], "base64url")).sub;
  const proposal = murmur("vote", "propose", "--question", "ship it?", "--voter", operatorUser, "--deadline-s", "120").split(/\s+/).pop();
  await view(page, "proposals");
  await page.fill("label >> text=reason for a vote >> input", "the tests pass");
  await page.click(`tr[data-proposal="${proposal}"] button >> text=approve`, { timeout: DEADLINE });
  await page.waitForSelector(`tr[data-proposal="${proposal}"] .reason >> text=the tests pass`, { timeout: DEADLINE });
  await page.waitForSelector(`tr[data-proposal="${proposal}"] td >> text=approved`, { timeout: DEADLINE });
  check(true, "a vote cast from the page shows with its reason, and the proposal is decided");
  await view(page, "tasks");

  // Dead letters: a malformed message published as the operator is dead-lettered by the
  // auditor, shows in the view, is refused a redrive with observer credentials and redriven
  // with the operator's.
  const nc = await wsconnect({
    servers: (await (await fetch(`${CONSOLE_URL}api/config`)).json()).websocket_url,
    authenticator: credsAuthenticator(new TextEncoder().encode(operatorCreds)),
    inboxPrefix: `_INBOX.${JSON.parse(Buffer.from(operatorCreds.split("\n")[1].split(".")[1], "base64url")).sub}`,
  });
  nc.publish("murmur.v1.default.evt.task.garbage.submitted", new TextEncoder().encode("this is not a CloudEvent"));
  await nc.flush();
  await view(page, "dead letters");
  const row = page.locator("tr[data-dead-letter]").first();
  await row.waitFor({ timeout: DEADLINE });
  const seq = await row.getAttribute("data-dead-letter");
  await useCreds(observerCreds);
  await row.locator("button >> text=redrive").click();
  await page.waitForSelector("[data-testid=notice] >> text=refused", { timeout: DEADLINE });
  const refusal = await page.textContent("[data-testid=notice]");
  check(/Permissions Violation/i.test(refusal), `redrive with observer credentials is refused by the server: ${refusal.slice(0, 140)}`);
  await useCreds(operatorCreds);
  await row.locator("button >> text=redrive").click();
  await page.waitForSelector(`[data-testid=notice] >> text=redriven`, { timeout: DEADLINE });
  check(true, `dead letter ${seq} is redriven with operator credentials`);
  // The redriven message is still malformed: the auditor dead-letters it again.
  await page.waitForFunction(() => document.querySelectorAll("tr[data-dead-letter]").length >= 2, null, { timeout: DEADLINE });
  check(true, "the redriven malformed message is dead-lettered again");
  await shot(page, "dead-letters");

  // An event sealed in JavaScript (src/envelope.js: the same canonical bytes as the Rust
  // side) verifies in murmur; the same event with its data changed after signing is
  // refused and dead-lettered with the reason.
  const seed = operatorCreds.split("-----BEGIN USER NKEY SEED-----")[1].trim().split(/\s/)[0];
  const operatorKey = fromSeed(new TextEncoder().encode(seed));
  const sealed = seal(operatorKey, {
    realm: "default",
    domain: "agent",
    aggregate: operatorKey.getPublicKey(),
    verb: "load_changed",
    type: "dev.murmur.agent.load_changed",
    payload: { v: 1, load: 0.5, queue_depth: 0, lame_duck: false },
  });
  const js = jetstream(nc);
  const publish = async (body, id) => {
    const h = natsHeaders();
    h.set("Content-Type", "application/cloudevents+json");
    h.set("Nats-Msg-Id", id);
    return (await js.publish(sealed.subject, new TextEncoder().encode(body), { headers: h })).seq;
  };
  const signedSeq = await publish(sealed.body, sealed.headers["Nats-Msg-Id"]);
  const signed = await (await fetch(`${CONSOLE_URL}api/events/${signedSeq}`)).json();
  check(signed.verified && signed.signature.includes(operatorKey.getPublicKey()), `an event sealed in JavaScript verifies in murmur: ${signed.signature}`);
  const forgedId = sealed.headers["Nats-Msg-Id"].replace(/.$/, (c) => (c === "0" ? "1" : "0"));
  const forgedBody = sealed.body.replace('"load":0.5', '"load":0.9').replaceAll(sealed.headers["Nats-Msg-Id"], forgedId);
  const forgedSeq = await publish(forgedBody, forgedId);
  const forged = await (await fetch(`${CONSOLE_URL}api/events/${forgedSeq}`)).json();
  check(!forged.verified, `the same event changed after signing is refused: ${forged.signature}`);
  const deadline = Date.now() + DEADLINE;
  for (;;) {
    const letters = (await (await fetch(`${CONSOLE_URL}api/dead-letters`)).json()).dead_letters;
    const letter = letters.find((d) => d.original_subject === sealed.subject && d.reason === "bad_signature");
    if (letter) {
      check(true, `the auditor dead-letters it: ${letter.reason}: ${letter.detail}`);
      break;
    }
    if (Date.now() > deadline) throw new Error("the forged event was not dead-lettered");
    await new Promise((r) => setTimeout(r, 200));
  }
  await nc.close();

  // Knowledge: a fact asserted with the CLI shows in its space with its author.
  await view(page, "knowledge");
  murmur("kb", "open", "docs");
  const factId = murmur("kb", "put", "docs", "murmur", "language", "Rust").split(/\s+/).pop();
  await page.waitForSelector(`[data-space="docs"] tr[data-fact="${factId}"]`, { timeout: DEADLINE });
  await page.click(`tr[data-fact="${factId}"]`);
  await page.waitForSelector("[data-testid=knowledge] .detail li", { timeout: DEADLINE });
  check(true, "a fact asserted in a space shows in the Knowledge view with its history");
  await shot(page, "knowledge");

  // Events: the live tail, one event opened with its signature status.
  await view(page, "events");
  await page.fill("[data-filter=type]", "task.completed");
  const completed = page.locator(".vrow").first();
  await completed.waitFor({ timeout: DEADLINE });
  await completed.click();
  await page.waitForSelector("[data-testid=signature] >> text=valid Ed25519 signature", { timeout: DEADLINE });
  check(true, "an event opens as its CloudEvent with its signature verified");
  await shot(page, "event");
  await page.click("[data-testid=event-detail] .close");
  await page.fill("[data-filter=type]", "");
  await shot(page, "events");

  // Replay: the projections as of an early sequence hold fewer tasks than now.
  await view(page, "replay");
  // As of sequence 3 (the realm's claim and grants) no agent had joined; at the end one has.
  const lastSeq = await page.evaluate(() => window.murmurConsole.store.lastSeq);
  await page.locator("[data-testid=scrubber]").fill(String(lastSeq));
  await page.waitForSelector(`[data-testid=as-of] >> text=${lastSeq}`, { timeout: DEADLINE });
  await page.waitForSelector("[data-testid=replay-agents] >> text=console-worker", { timeout: DEADLINE });
  await page.locator("[data-testid=scrubber]").fill("3");
  await page.waitForSelector("[data-testid=as-of] >> text=3", { timeout: DEADLINE });
  await page.waitForFunction(() => !document.querySelector("[data-testid=replay-agents]").textContent.includes("console-worker"), null, { timeout: DEADLINE });
  check(true, "the replay scrubber shows the projections as of a chosen sequence (no agent at 3, the worker at the end)");
  await shot(page, "replay");

  // Deployments: every problem of an invalid graph at once, next to its node.
  await view(page, "deploy");
  await page.waitForSelector("[data-testid=deploy-status] >> text=valid", { timeout: DEADLINE });
  await shot(page, "deploy");
  // The form: a node added like web-a on web-a's own host clashes on its port, and the
  // problem shows next to it; on another host it is valid; removed, the graph is as before.
  const nodesIn = async () => Number(/(\d+) nodes/.exec(await page.textContent("[data-testid=deploy-status]"))[1]);
  const before = await nodesIn();
  await page.fill("[data-testid=new-node-name]", "web-c");
  await page.selectOption("[data-testid=new-node-like]", "web-a");
  await page.selectOption("[data-testid=new-node-host]", "app-1");
  await page.click("[data-testid=add-node]");
  await page.waitForSelector(`[data-testid=graph-form] li[data-node="web-c"] .error`, { timeout: DEADLINE });
  check(true, `a node added in the form that clashes shows its problem next to it: ${await page.textContent('li[data-node="web-c"] .error')}`);
  await page.click(`li[data-node="web-c"] [data-testid=remove-node]`);
  await page.waitForSelector(`[data-testid=deploy-status] >> text=valid: ${before} nodes`, { timeout: DEADLINE });
  await page.fill("[data-testid=new-node-name]", "web-d");
  await page.selectOption("[data-testid=new-node-like]", "web-a");
  await page.selectOption("[data-testid=new-node-host]", "edge-1");
  await page.click("[data-testid=add-node]");
  await page.waitForSelector(`[data-testid=deploy-status] >> text=valid: ${before + 1} nodes`, { timeout: DEADLINE });
  await page.selectOption("[data-testid=new-edge-from]", "web-d");
  await page.selectOption("[data-testid=new-edge-to]", "api");
  await page.selectOption("[data-testid=new-edge-type]", "connects_to");
  await page.fill("[data-testid=new-edge-port]", "9000");
  await page.click("[data-testid=add-edge]");
  await page.waitForSelector(`li[data-edge="web-d->api"]`, { timeout: DEADLINE });
  await page.waitForSelector(`[data-testid=deploy-status] >> text=valid: ${before + 1} nodes`, { timeout: DEADLINE });
  check(true, `nodes and edges added in the form keep the graph valid (${before} → ${before + 1} nodes)`);
  await page.click(`li[data-node="web-d"] [data-testid=remove-node]`);
  await page.waitForSelector(`[data-testid=deploy-status] >> text=valid: ${before} nodes`, { timeout: DEADLINE });
  check(true, "a node removed in the form takes its edges with it");
  await page.fill(
    "[data-testid=graph-text]",
    `name = "broken"
[hosts.h]
address = "10.0.0.1"
[[nodes]]
name = "a"
host = "nowhere"
type = "service"
command = "/bin/true"
[[nodes]]
name = "b"
host = "elsewhere"
type = "service"
command = "/bin/true"
[[edges]]
from = "a"
to = "ghost"
type = "depends_on"
`
  );
  await page.waitForSelector("[data-testid=deploy-status] >> text=problem", { timeout: DEADLINE });
  const problems = await page.locator("[data-testid=problems] li.error").count();
  check(problems >= 3, `an invalid graph shows all its problems (${problems})`);
  measured.deploy_problems = problems;
  await shot(page, "deploy-errors");

  // The page as a compute agent: its own key (generated in the page), enrolled as a worker
  // by the operator's credentials, runs compute.js tasks in a Web Worker.
  const stranger = createUser().getPublicKey();
  const enrolled = await fetch(`${CONSOLE_URL}api/participants`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ creds: observerCreds, public_key: stranger, name: "stranger" }),
  });
  check(enrolled.status === 403, `enrolling a browser key with observer credentials is refused by the server (${enrolled.status})`);
  await useCreds(operatorCreds);
  await view(page, "compute");
  await page.click("[data-testid=compute-join]");
  const browserKey = (await page.textContent("[data-testid=compute-key]", { timeout: DEADLINE })).trim();
  check(/^U[A-Z2-7]{55}$/.test(browserKey), `the page joined as a compute agent with its own key ${browserKey.slice(0, 8)}…`);
  const submitted = Date.now();
  const ran = await murmurAsync(
    "task", "submit", "--capability", "compute.js", "--watch",
    "--input", JSON.stringify({ code: "return input.a * input.b", input: { a: 6, b: 7 }, timeout_ms: 1000 })
  );
  check(ran.code === 0, `the compute.js task completed: ${ran.stderr}`);
  const answer = ran.stdout.split("\n").pop();
  measured.browser_task_ms = Date.now() - submitted;
  const output = JSON.parse(answer);
  check(output.value === 42 && output.by === "browser", `a compute.js task ran in the page's Web Worker: ${answer} (${measured.browser_task_ms} ms submit → completed)`);
  const endless = await murmurAsync(
    "task", "submit", "--capability", "compute.js", "--watch", "--max-attempts", "1",
    "--input", JSON.stringify({ code: "for (;;) {}", input: null, timeout_ms: 300 })
  );
  check(endless.code !== 0 && endless.stderr.includes("time limit of 300 ms exceeded"), "code that never ends is stopped at its time limit and the attempt fails");
  await page.waitForSelector("[data-testid=compute-log] >> text=time limit", { timeout: DEADLINE });
  await shot(page, "compute");
  await page.click("[data-testid=compute-leave]");
  await page.waitForSelector("[data-testid=compute-log] >> text=left", { timeout: DEADLINE });
  check(true, "the compute agent leaves when asked");
} catch (e) {
  failed = true;
  console.error(e.stack || String(e));
  await page.screenshot({ path: join(OUT, "console-failure.png") }).catch(() => {});
  console.error(`the page at the failure: ${join(OUT, "console-failure.png")}`);
} finally {
  await browser.close();
  for (const c of children) c.kill();
}
console.log(JSON.stringify(measured));
process.exit(failed ? 1 : 0);
