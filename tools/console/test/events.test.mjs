// The Events view's filter kept up to date as events arrive and drop off: it must list what
// filtering all kept events afresh lists. Run by scripts/test.sh (`node --test`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { FilteredEvents, matches } from "../src/events.js";

const event = (seq, type) => ({ seq, type, subject: `murmur.v1.default.evt.task.t${seq}.x`, source: "UABC", id: `id-${seq}` });

test("a filter kept up to date lists what filtering afresh lists", () => {
  const filter = { subject: "", type: "completed", source: "", text: "" };
  const kept = new FilteredEvents(filter);
  const events = [];
  const same = (step) =>
    assert.deepEqual(
      kept.update(events).map((e) => e.seq),
      events.filter((e) => matches(e, filter)).map((e) => e.seq),
      step
    );
  for (let seq = 1; seq <= 10; seq++) events.push(event(seq, seq % 3 ? "task.completed" : "task.started"));
  same("the first events");
  same("nothing new");
  for (let seq = 11; seq <= 20; seq++) events.push(event(seq, seq % 2 ? "task.completed" : "task.started"));
  same("more arrived");
  events.splice(0, 12);
  same("the oldest dropped off");
  events.splice(0, events.length);
  same("every event dropped off");
  for (let seq = 21; seq <= 25; seq++) events.push(event(seq, "task.completed"));
  same("new events after none");
});

test("a text filter matches the subject, type, source, id or sequence", () => {
  const e = event(42, "dev.murmur.task.completed");
  for (const text of ["t42", "COMPLETED", "uabc", "id-42", "42"]) {
    assert.ok(matches(e, { subject: "", type: "", source: "", text }), text);
  }
  assert.ok(!matches(e, { subject: "", type: "started", source: "", text: "" }));
});
