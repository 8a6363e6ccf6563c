// The Events view: a live tail of the log, filtered, in a virtualized list (only the rows on
// screen are in the DOM, so ten thousand events a second do not freeze the page).
import { html } from "htm/preact";
import { useEffect, useRef, useState } from "preact/hooks";

const ROW = 22;

export function matches(e, f) {
  const has = (value, needle) => !needle || (value || "").toLowerCase().includes(needle.toLowerCase());
  return (
    has(e.subject, f.subject) &&
    has(e.type, f.type) &&
    has(e.source, f.source) &&
    (!f.text || [e.subject, e.type, e.source, e.id, String(e.seq)].some((v) => has(v, f.text)))
  );
}

/** The kept events that match a filter, kept up to date as events arrive and old ones drop
 * off: each event is tested once, not on every render. */
export class FilteredEvents {
  constructor(filter) {
    this.filter = filter;
    this.rows = [];
    this.lastSeq = 0;
  }

  /** The matching events of `events` (ascending by sequence, as the log delivers them). */
  update(events) {
    const oldest = events.length ? events[0].seq : Infinity;
    let drop = 0;
    while (drop < this.rows.length && this.rows[drop].seq < oldest) drop++;
    if (drop) this.rows.splice(0, drop);
    let from = events.length;
    while (from > 0 && events[from - 1].seq > this.lastSeq) from--;
    for (let i = from; i < events.length; i++) {
      if (matches(events[i], this.filter)) this.rows.push(events[i]);
    }
    if (events.length) this.lastSeq = Math.max(this.lastSeq, events[events.length - 1].seq);
    return this.rows;
  }
}

export function EventsView({ store, version, openEvent }) {
  const [filter, setFilter] = useState({ subject: "", type: "", source: "", text: "" });
  const [scroll, setScroll] = useState(0);
  const [height, setHeight] = useState(600);
  const [follow, setFollow] = useState(true);
  const box = useRef(null);
  // Without a filter the store is the list; with one, each event is tested once.
  const filtered = useRef(null);
  const filtering = Object.values(filter).some((v) => v);
  if (!filtering) filtered.current = null;
  else if (filtered.current?.filter !== filter) filtered.current = new FilteredEvents(filter);
  const rows = filtering ? filtered.current.update(store.events) : store.events;
  // Newest first.
  const count = rows.length;
  const first = Math.max(0, Math.floor(scroll / ROW) - 5);
  const visible = Math.ceil(height / ROW) + 10;
  // The rows are keyed by their position on screen: under a flood the same elements show
  // the newest events with their text replaced, rather than being created and removed every
  // frame.
  const slice = [];
  for (let i = first; i < Math.min(count, first + visible); i++) slice.push(rows[count - 1 - i]);
  useEffect(() => {
    if (box.current) setHeight(box.current.clientHeight);
  }, []);
  useEffect(() => {
    if (follow && box.current) box.current.scrollTop = 0;
  }, [version, follow]);
  const field = (name, placeholder) => html`<input
    placeholder=${placeholder}
    value=${filter[name]}
    data-filter=${name}
    onInput=${(ev) => setFilter({ ...filter, [name]: ev.target.value })}
  />`;
  return html`<section class="view events">
    <div class="toolbar">
      ${field("subject", "subject contains")} ${field("type", "type contains")}
      ${field("source", "source key")} ${field("text", "any text")}
      <label><input type="checkbox" checked=${follow} onChange=${(e) => setFollow(e.target.checked)} /> follow</label>
      <span class="muted" data-testid="event-count">${count} of ${store.events.length} events (last seq ${store.lastSeq})</span>
    </div>
    <div class="vlist" ref=${box} onScroll=${(e) => setScroll(e.target.scrollTop)}>
      <div style=${`height:${count * ROW}px;position:relative`}>
        ${slice.map(
          (e, i) => html`<div
            class="vrow"
            key=${first + i}
            data-seq=${e.seq}
            style=${`top:${(first + i) * ROW}px`}
            onClick=${() => openEvent(e.seq)}
          >
            <span class="seq">${e.seq}</span>
            <span class="time">${e.time.toISOString().slice(11, 23)}</span>
            <span class="type">${(e.type || "(no type)").replace("dev.murmur.", "")}</span>
            <span class="subject">${e.subject}</span>
            <span class="source">${(e.source || "").slice(0, 12)}</span>
          </div>`
        )}
      </div>
    </div>
  </section>`;
}
