// The browser side of `murmur-bench --console-tasks N` (tools/src/bin/murmur_bench/console.rs):
// opens the Tasks view of a realm of TASKS tasks and times it, then follows a flood in the
// Events view while recording every frame's duration. Prints "ready" before the flood and one
// JSON line of measurements after the bench writes "flood-done LAST_SEQ" on stdin.
// With FILTER_TYPE=TEXT the Events view follows the flood with its type filter set.
// With PROFILE=FILE the page's CPU profile from the flood's start to the catch-up is written
// to FILE (open it in Chrome DevTools) and its top functions by self time are printed.
import { writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const CONSOLE_URL = process.env.CONSOLE_URL;
const TASKS = Number(process.env.TASKS);
const FLOOD_S = Number(process.env.FLOOD_S);
const stdin = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => stdin.once("line", resolve));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const out = {};
const page = await browser.newPage({ viewport: { width: 1400, height: 850 } });
try {
  page.on("pageerror", (e) => console.error("page error:", e.message));
  let t = Date.now();
  await fetch(`${CONSOLE_URL}api/tasks?limit=200`).then((r) => r.json());
  out.tasks_api_ms = Date.now() - t;
  console.error(`load: /api/tasks answered in ${out.tasks_api_ms} ms; opening the Tasks view`);
  t = Date.now();
  await page.goto(`${CONSOLE_URL}#tasks`);
  await page.waitForFunction(
    (n) => document.querySelectorAll("[data-testid=tasks] tr[data-task]").length === 200 && document.body.textContent.includes(`all ${n}`),
    TASKS,
    { timeout: 60_000, polling: 20 }
  );
  out.tasks_view_ms = Date.now() - t;
  console.error(`load: Tasks view shown in ${out.tasks_view_ms} ms; following the flood`);
  await page.click('nav [data-view="events"]');
  await page.waitForSelector("[data-testid=status] >> text=live:", { timeout: 60_000 });
  // FILTER_TYPE=TEXT follows the flood with the type filter set, as an operator looking
  // for one kind of event would.
  if (process.env.FILTER_TYPE) await page.fill("[data-filter=type]", process.env.FILTER_TYPE);
  // Every frame's duration from requestAnimationFrame, and the events the page has seen.
  await page.evaluate(() => {
    window.frames_ms = [];
    window.received_at_start = window.murmurConsole.store.lastSeq;
    let last = performance.now();
    const loop = (now) => {
      window.frames_ms.push(now - last);
      last = now;
      if (!window.stop_frames) requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  });
  const seqAtStart = await page.evaluate(() => window.murmurConsole.store.lastSeq);
  const profiler = process.env.PROFILE ? await page.context().newCDPSession(page) : null;
  if (profiler) {
    await profiler.send("Profiler.enable");
    await profiler.send("Profiler.setSamplingInterval", { interval: 500 });
    await profiler.send("Profiler.start");
  }
  console.log("ready");
  const done = await nextLine();
  const lastSeq = Number(done.split(" ")[1]);
  const floodEnded = Date.now();
  const seqAtFloodEnd = await page.evaluate(() => window.murmurConsole.store.lastSeq);
  for (let polls = 0; ; polls++) {
    const seen = await page.evaluate(() => window.murmurConsole.store.lastSeq);
    if (seen >= lastSeq) break;
    if (polls % 100 === 0) console.error(`load: the page has seen sequence ${seen} of ${lastSeq}`);
    if (Date.now() - floodEnded > 120_000) throw new Error(`the page stopped at sequence ${seen} of ${lastSeq}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  out.caught_up_after_ms = Date.now() - floodEnded;
  if (profiler) {
    const { profile } = await profiler.send("Profiler.stop");
    writeFileSync(process.env.PROFILE, JSON.stringify(profile));
    printTopFunctions(profile);
  }
  const frames = await page.evaluate(() => {
    window.stop_frames = true;
    return window.frames_ms;
  });
  frames.sort((a, b) => a - b);
  const pct = (p) => Math.round(frames[Math.floor((frames.length - 1) * p)] * 10) / 10;
  out.frames = frames.length;
  out.frame_p50_ms = pct(0.5);
  out.frame_p95_ms = pct(0.95);
  out.frame_p99_ms = pct(0.99);
  out.frame_max_ms = Math.round(frames[frames.length - 1]);
  out.events_received = lastSeq - seqAtStart;
  out.events_per_s_during_flood = Math.round((seqAtFloodEnd - seqAtStart) / FLOOD_S);
  out.behind_at_flood_end = lastSeq - seqAtFloodEnd;
  out.heap_mib = Math.round((await page.evaluate(() => performance.memory?.usedJSHeapSize ?? 0)) / 1048576);
  console.log(JSON.stringify(out));
} catch (e) {
  console.error(e.stack || String(e));
  await page.screenshot({ path: "/tmp/murmur-console-load-failure.png" }).catch(() => {});
  console.error("the page at the failure: /tmp/murmur-console-load-failure.png");
  process.exitCode = 1;
} finally {
  await browser.close();
  stdin.close();
}

/** The profile's functions by self time (samples × interval), the 25 heaviest, on stderr. */
function printTopFunctions(profile) {
  const self = new Map();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const dt = new Map();
  profile.samples.forEach((id, i) => dt.set(id, (dt.get(id) || 0) + (profile.timeDeltas[i] || 0)));
  let total = 0;
  for (const [id, us] of dt) {
    const f = byId.get(id).callFrame;
    const name = `${f.functionName || "(anonymous)"} ${f.url.split("/").pop()}:${f.lineNumber + 1}`;
    self.set(name, (self.get(name) || 0) + us);
    total += us;
  }
  console.error(`profile: ${(total / 1e6).toFixed(1)} s sampled; by self time:`);
  for (const [name, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    console.error(`  ${((100 * us) / total).toFixed(1).padStart(5)}%  ${name}`);
  }
}
