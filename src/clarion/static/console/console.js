// <clarion-console>: the operator's console (docs/console.md). Framework-free, no build step.
//
// Safety rules of this file, as in clarion-inbox.js: data reaches the page only through
// textContent, Text nodes and attributes set one by one, never innerHTML. The admin key is
// typed once, sent once to /console/api/session and dropped: the browser keeps only an
// HttpOnly cookie it cannot read and, in memory, the CSRF token every change sends.

import { compact } from './chart.js';

const SAMPLES = 120; // Live: two minutes at one sample a second
const COLORS = { websocket: '#2563eb', sse: '#7c3aed', poll: '#0d9488', a: '#ea580c', b: '#db2777' };
const PAGES = [
  ['live', 'Live'],
  ['notifications', 'Notifications'],
  ['users', 'Users'],
  ['types', 'Types & topics'],
  ['keys', 'Keys'],
];

let csrf = '';

class ApiError extends Error {
  /** @param {number} status @param {string} message @param {string} [code] */
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * One call to this server, with the session cookie and, for changes, the CSRF token.
 * @param {string} method @param {string} path @param {unknown} [body]
 */
async function api(method, path, body) {
  /** @type {Record<string, string>} */
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) {
    const err = data && data.error;
    if (r.status === 401 && !path.endsWith('/session')) document.querySelector('clarion-console')?.signedOut(err?.message);
    throw new ApiError(r.status, (err && err.message) || r.statusText, err && err.code);
  }
  return data;
}

/** A route another part of Clarion adds (delivery log, recall, presence, profiles,
 * templates): null when this server does not have it yet. */
async function optional(/** @type {string} */ method, /** @type {string} */ path, /** @type {unknown} */ body) {
  try {
    return { value: await api(method, path, body) };
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) return null;
    throw e;
  }
}

/**
 * Build an element: h('td', {class: 'x'}, 'text', child). Strings become Text nodes.
 * @param {string} tag @param {Record<string, unknown> | null} [attrs] @param {...(Node | string | null | undefined | false)} children
 */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), /** @type {EventListener} */ (v));
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

const NA = 'not available on this server';
const notAvailable = (/** @type {string} */ what) => h('p', { class: 'na' }, `${what}: ${NA}`);
const WHEN = { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' };
const when = (/** @type {string | null | undefined} */ iso) => (iso ? new Date(iso).toLocaleString(undefined, /** @type {any} */ (WHEN)) : '–');
const age = (/** @type {number} */ s) => (s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);
// Quantiles come from histogram buckets: "≤ 25 ms" is what is known, not "25 ms".
const ms = (/** @type {number | null} */ s) => (s === null || s === undefined ? '–' : `≤${compact(s * 1000)} ms`);
/** p50 / p99 in one unit, short enough for a tile: "≤10 / ≤100 ms". */
const bounds = (/** @type {{p50: number | null, p99: number | null}} */ q) =>
  (q.p50 === null || q.p99 === null ? '–' : `≤${compact(q.p50 * 1000)} / ${ms(q.p99)}`);

/** @param {unknown} e */
function errorBox(e) {
  const text = e instanceof Error ? e.message : String(e);
  return h('p', { class: 'error', role: 'alert' }, text);
}

function stat(/** @type {string} */ name, /** @type {string} */ label, /** @type {string} */ value, hint = '') {
  return h('div', { class: 'stat', 'data-stat': name }, h('span', { class: 'stat-label' }, label), h('strong', null, value), hint ? h('small', null, hint) : null);
}

// -- Live ------------------------------------------------------------------------------------

class LivePage extends HTMLElement {
  connectedCallback() {
    /** @type {any[]} */
    this.samples = [];
    this.tiles = h('div', { class: 'stats' });
    this.nodes = h('div', { class: 'card nodes' });
    this.charts = {
      connections: h('console-chart', { label: 'Connections by transport, all nodes' }),
      rates: h('console-chart', { label: 'Publishes and deliveries per second, all nodes' }),
      latency: h('console-chart', { label: 'Publish to socket (p50, p99, last 10 s)' }),
      outbox: h('console-chart', { label: 'Outboxes: rows due' }),
    };
    this.status = h('p', { class: 'muted', 'aria-live': 'polite' }, 'Connecting…');
    this.replaceChildren(
      h('header', { class: 'page-head' }, h('h1', null, 'Live'), this.status),
      this.tiles,
      this.nodes,
      h('div', { class: 'charts' }, ...Object.values(this.charts)),
    );
    this.tick();
    this.timer = setInterval(() => this.tick(), 1000);
  }

  disconnectedCallback() {
    clearInterval(this.timer);
  }

  async tick() {
    let s;
    try {
      s = await api('GET', '/console/api/live');
    } catch (e) {
      this.status.textContent = `Not updating: ${e instanceof Error ? e.message : e}`;
      return;
    }
    // The cluster as the nodes' snapshots tell it; when the store does not answer, this node.
    const c = s.cluster || {
      nodes: [], connections: s.transports, publishes_per_second: 0, deliveries_per_second: 0,
      published: s.published, delivered: s.delivered, slow_consumers: s.slow_consumers, latency: s.socket_seconds,
    };
    s.c = c;
    this.samples.push(s);
    if (this.samples.length > SAMPLES) this.samples.shift();
    const count = c.nodes.length;
    const where = s.cluster ? `${count} ${count === 1 ? 'node' : 'nodes'}` : 'this node only: the store is not answering';
    this.status.textContent = `${where} · answered by ${s.node} · broker ${s.broker.kind}${s.draining ? ' · draining' : ''} · updated ${new Date(s.at * 1000).toLocaleTimeString()}`;
    const t = c.connections;
    const total = Object.values(t).reduce((a, b) => a + Number(b), 0);
    /** @param {string} name @param {string} label */
    const outbox = (name, label) => {
      const o = s.outbox && s.outbox[name];
      const waiting = o && o.pending > o.due ? ` · ${compact(o.pending - o.due)} waiting (retry, quiet hours)` : '';
      return stat(`outbox-${name}`, label, o ? compact(o.due) : '–', o ? (o.due ? `due · oldest ${age(o.oldest_due_seconds)}${waiting}` : `nothing due${waiting}`) : 'store not answering');
    };
    this.tiles.replaceChildren(
      stat('connections', 'Connections', compact(total), `${t.websocket} WS · ${t.sse} SSE · ${t.poll} poll`),
      stat('publish-rate', 'Publishes / s', compact(c.publishes_per_second), 'all nodes'),
      stat('published', 'Published', String(c.published), 'by the nodes since they started'),
      stat('delivery-rate', 'Deliveries / s', compact(c.deliveries_per_second), `${compact(c.delivered)} frames since the nodes started`),
      stat('latency', 'Publish → socket', bounds(c.latency), 'p50 / p99, last 10 s'),
      stat('slow', 'Slow-consumer closes', String(c.slow_consumers), 'closed with a resync hint'),
      stat('broker', 'Broker', s.broker.kind, `${s.broker.reconnects} reconnects · ${s.broker.failed_publishes} failed publishes (here)`),
      outbox('push', 'Push outbox'),
      outbox('email', 'Email outbox'),
      outbox('webhook', 'Webhook outbox'),
    );
    this.nodes.replaceChildren(nodeTable(c.nodes, s.node));
    const series = (/** @type {(x: any) => number} */ f) => this.samples.map(f);
    const ch = this.charts;
    /** @type {any} */ (ch.connections).draw(['websocket', 'sse', 'poll'].map((k) => ({ name: k, color: COLORS[/** @type {'sse'} */ (k)], values: series((x) => x.c.connections[k] ?? 0) })), '', SAMPLES);
    // Publishes dashed, over deliveries: the two are equal when each recipient has one tab.
    /** @type {any} */ (ch.rates).draw([
      { name: 'deliveries/s', color: COLORS.websocket, values: series((x) => x.c.deliveries_per_second) },
      { name: 'publishes/s', color: COLORS.a, values: series((x) => x.c.publishes_per_second), dashed: true },
    ], '', SAMPLES);
    /** @type {any} */ (ch.latency).draw([
      { name: 'p50', color: COLORS.poll, values: series((x) => (x.c.latency.p50 ?? 0) * 1000) },
      { name: 'p99', color: COLORS.b, values: series((x) => (x.c.latency.p99 ?? 0) * 1000) },
    ], ' ms', SAMPLES);
    /** @type {any} */ (ch.outbox).draw([
      { name: 'push', color: COLORS.sse, values: series((x) => x.outbox?.push?.due ?? 0) },
      { name: 'email', color: COLORS.a, values: series((x) => x.outbox?.email?.due ?? 0) },
      { name: 'webhook', color: COLORS.poll, values: series((x) => x.outbox?.webhook?.due ?? 0) },
    ], '', SAMPLES);
  }
}

/**
 * One row per node that sent a snapshot lately (a node silent for 3 s drops off).
 * @param {any[]} nodes @param {string} here the node that answered
 */
function nodeTable(nodes, here) {
  if (!nodes.length) return h('p', { class: 'empty' }, 'No node has reported yet (each does once a second).');
  return h('table', { class: 'list compact', 'aria-label': 'Nodes' },
    h('thead', null, h('tr', null, ...['Node', 'WebSocket', 'SSE', 'Poll', 'Users', 'Publishes / s', 'Deliveries / s', 'Publish → socket p99', 'Reported'].map((x) => h('th', null, x)))),
    h('tbody', null, ...nodes.map((n) => h('tr', { 'data-node': n.node },
      h('td', null, n.node, n.node === here ? h('span', { class: 'badge' }, 'answering') : null, n.draining ? h('span', { class: 'badge' }, 'draining') : null),
      h('td', null, String(n.connections.websocket ?? 0)),
      h('td', null, String(n.connections.sse ?? 0)),
      h('td', null, String(n.connections.poll ?? 0)),
      h('td', null, String(n.users)),
      h('td', null, compact(n.publishes_per_second)),
      h('td', null, compact(n.deliveries_per_second)),
      h('td', null, ms(n.latency.p99)),
      h('td', { class: 'muted' }, `${n.age.toFixed(1)} s ago`),
    ))));
}

// -- Notifications ---------------------------------------------------------------------------

class NotificationsPage extends HTMLElement {
  connectedCallback() {
    this.by = h('select', { name: 'by', 'aria-label': 'Search by' },
      ...[['latest', 'Latest'], ['id', 'Id'], ['user', 'User'], ['topic', 'Topic'], ['type', 'Type'], ['idempotency_key', 'Idempotency key']].map(([v, l]) => h('option', { value: v }, l)));
    this.q = h('input', { name: 'q', type: 'search', placeholder: 'id, user, topic, type or key', 'aria-label': 'Search for', autocomplete: 'off' });
    this.type = h('input', { name: 'type', placeholder: 'type (optional)', 'aria-label': 'Only this type', autocomplete: 'off' });
    const form = h('form', { class: 'toolbar', role: 'search', onsubmit: (/** @type {Event} */ e) => { e.preventDefault(); this.search(null); } },
      this.by, this.q, this.type, h('button', { type: 'submit', class: 'primary' }, 'Search'));
    this.results = h('div');
    this.detail = h('div');
    this.replaceChildren(h('header', { class: 'page-head' }, h('h1', null, 'Notifications')), form, h('div', { class: 'split' }, this.results, this.detail));
    const hash = new URLSearchParams(location.hash.split('?')[1] || '');
    if (hash.get('id')) {
      /** @type {HTMLSelectElement} */ (this.by).value = 'id';
      /** @type {HTMLInputElement} */ (this.q).value = hash.get('id') || '';
    }
    this.search(null);
  }

  /** @param {string | null} before */
  async search(before) {
    const by = /** @type {HTMLSelectElement} */ (this.by).value;
    const q = /** @type {HTMLInputElement} */ (this.q).value.trim();
    const type = /** @type {HTMLInputElement} */ (this.type).value.trim();
    const params = new URLSearchParams({ by: q || by === 'latest' ? by : 'latest', q, limit: '25' });
    if (type) params.set('type', type);
    if (before) params.set('before', before);
    let page;
    try {
      page = await api('GET', `/console/api/notifications?${params}`);
    } catch (e) {
      this.results.replaceChildren(errorBox(e));
      return;
    }
    let body = before ? this.results.querySelector('tbody') : null;
    if (!body) {
      body = h('tbody');
      this.results.replaceChildren(
        page.note ? h('p', { class: 'muted' }, page.note) : '',
        h('table', { class: 'list' }, h('thead', null, h('tr', null, ...['Created', 'Title', 'Type', 'Priority', 'Audience'].map((c) => h('th', null, c)))), body),
      );
    }
    this.results.querySelector('.more')?.remove();
    for (const n of page.items) {
      body.append(h('tr', { tabindex: 0, 'data-id': n.id, onclick: () => this.open(n.id), onkeydown: (/** @type {KeyboardEvent} */ e) => { if (e.key === 'Enter') this.open(n.id); } },
        h('td', { class: 'nowrap' }, when(n.created_at)),
        h('td', null, h('span', { class: 'title' }, n.title || '(no title)'), h('code', { class: 'id' }, n.id)),
        h('td', null, n.type),
        h('td', null, h('span', { class: `prio prio-${n.priority}` }, n.priority)),
        h('td', null, n.streams.join(', '))));
    }
    if (!body.children.length) this.results.append(h('p', { class: 'empty' }, 'No notification found.'));
    if (page.next) this.results.append(h('button', { class: 'more', onclick: () => this.search(page.next) }, 'Load more'));
    if (!before && page.items.length === 1 && by === 'id') this.open(page.items[0].id);
  }

  /** @param {string} id */
  async open(id) {
    for (const row of this.results.querySelectorAll('tr[aria-selected]')) row.removeAttribute('aria-selected');
    this.results.querySelector(`tr[data-id="${CSS.escape(id)}"]`)?.setAttribute('aria-selected', 'true');
    let n;
    try {
      n = await api('GET', `/console/api/notifications/${encodeURIComponent(id)}`);
    } catch (e) {
      this.detail.replaceChildren(errorBox(e));
      return;
    }
    const deliveries = h('div', null, h('p', { class: 'muted' }, 'Loading the delivery log…'));
    const recallNote = h('p', { class: 'muted', 'aria-live': 'polite' });
    const recall = h('button', { class: 'danger', onclick: async () => {
      try {
        const done = await optional('DELETE', `/v1/notifications/${encodeURIComponent(n.id)}`);
        recallNote.textContent = done ? 'Recalled: it is gone from every inbox and open tab.' : `Recall: ${NA}`;
      } catch (e) {
        recallNote.textContent = `Recall failed: ${e instanceof Error ? e.message : e}`;
      }
    } }, 'Recall');
    this.detail.replaceChildren(h('section', { class: 'card detail', 'aria-label': 'Notification' },
      h('h2', null, n.title || '(no title)'),
      n.body ? h('p', null, n.body) : '',
      h('dl', { class: 'facts' },
        h('dt', null, 'Id'), h('dd', null, h('code', null, n.id)),
        h('dt', null, 'Type'), h('dd', null, n.type),
        h('dt', null, 'Priority'), h('dd', null, n.priority),
        h('dt', null, 'Created'), h('dd', null, when(n.created_at)),
        h('dt', null, 'Publisher key'), h('dd', null, n.publisher || '–'),
        h('dt', null, 'Streams'), h('dd', null, n.streams.join(', ') || '–')),
      h('h3', null, 'States users gave it'),
      n.states.length
        ? h('table', { class: 'list compact' }, h('tbody', null, ...n.states.map((/** @type {any} */ s) => h('tr', null, h('td', null, s.user), h('td', null, s.read_at ? `read ${when(s.read_at)}` : 'unread'), h('td', null, s.archived_at ? 'archived' : '')))))
        : h('p', { class: 'muted' }, 'No user has read or archived it yet.'),
      h('h3', null, 'Delivery log'), deliveries,
      h('div', { class: 'actions' }, recall), recallNote,
      h('details', null, h('summary', null, 'As clients receive it (JSON)'), h('pre', null, JSON.stringify(n.doc, null, 2)))));
    try {
      const log = await optional('GET', `/v1/notifications/${encodeURIComponent(n.id)}/deliveries`);
      deliveries.replaceChildren(log ? deliveryLog(log.value) : notAvailable('Delivery log'));
    } catch (e) {
      deliveries.replaceChildren(errorBox(e));
    }
  }
}

/**
 * The delivery log (GET /v1/notifications/{id}/deliveries): counts per state, then one row per
 * recipient and channel with the states it went through.
 * @param {any} log
 */
function deliveryLog(log) {
  const counts = Object.entries(log.counts ?? {});
  /** @param {any} s */
  const step = (s) => `${s.state}${s.at ? ` ${when(s.at)}` : ''}${s.detail ? ` (${s.detail})` : ''}`;
  return h('div', null,
    h('p', null, `Status: ${log.status}`, counts.length ? ` · ${counts.map(([k, v]) => `${k} ${v}`).join(', ')}` : ''),
    (log.recipients ?? []).length
      ? h('table', { class: 'list compact', 'aria-label': 'Delivery log' },
        h('thead', null, h('tr', null, h('th', null, 'User'), h('th', null, 'Channel'), h('th', null, 'States'))),
        h('tbody', null, ...log.recipients.map((/** @type {any} */ r) =>
          h('tr', null, h('td', null, r.user), h('td', null, r.channel), h('td', null, r.states.map(step).join(' → '))))))
      : h('p', { class: 'muted' }, 'No recipient has a logged state yet.'),
    log.next_cursor ? h('p', { class: 'muted' }, 'More recipients: page through the API with next_cursor.') : '');
}

// -- Users -----------------------------------------------------------------------------------

class UsersPage extends HTMLElement {
  connectedCallback() {
    this.input = h('input', { name: 'user', placeholder: 'user id', 'aria-label': 'User id', autocomplete: 'off', required: true });
    const form = h('form', { class: 'toolbar', onsubmit: (/** @type {Event} */ e) => { e.preventDefault(); this.load(/** @type {HTMLInputElement} */ (this.input).value.trim()); } },
      this.input, h('button', { type: 'submit', class: 'primary' }, 'Open'));
    this.body = h('div', null, h('p', { class: 'empty' }, 'Open a user to see their inbox, preferences, topics and push subscriptions.'));
    this.replaceChildren(h('header', { class: 'page-head' }, h('h1', null, 'Users')), form, this.body);
    const user = decodeURIComponent(location.hash.split('/')[1] || '');
    if (user) {
      /** @type {HTMLInputElement} */ (this.input).value = user;
      this.load(user);
    }
  }

  /** @param {string} user */
  async load(user, filter = 'all') {
    if (!user) return;
    history.replaceState(null, '', `#users/${encodeURIComponent(user)}`);
    let u;
    try {
      u = await api('GET', `/console/api/users/${encodeURIComponent(user)}?filter=${filter}`);
    } catch (e) {
      this.body.replaceChildren(errorBox(e));
      return;
    }
    const presence = await optional('GET', `/v1/users/${encodeURIComponent(user)}/presence`).catch(() => null);
    const profile = await optional('GET', `/v1/users/${encodeURIComponent(user)}`).catch(() => null);
    const inbox = h('tbody');
    const addItems = (/** @type {any[]} */ items) => {
      for (const n of items) {
        // Read implies seen: "unseen" is worth saying of unread ones only (the badge may count it).
        const states = [n.read_at ? 'read' : 'unread', n.read_at ? '' : n.seen_at ? 'seen' : 'unseen', n.archived_at ? 'archived' : ''].filter(Boolean);
        inbox.append(h('tr', null, h('td', { class: 'nowrap' }, when(n.created_at)), h('td', null, h('a', { href: `#notifications?id=${n.id}` }, n.title || '(no title)')), h('td', null, n.type), h('td', { class: 'nowrap' }, ...states.map((s) => h('span', { class: `badge state-${s}` }, s)))));
      }
    };
    addItems(u.items);
    const more = h('button', { class: 'more', hidden: !u.next_cursor }, 'Load more');
    let cursor = u.next_cursor;
    more.addEventListener('click', async () => {
      const next = await api('GET', `/console/api/users/${encodeURIComponent(user)}?filter=${filter}&cursor=${encodeURIComponent(cursor)}`);
      addItems(next.items);
      cursor = next.next_cursor;
      more.hidden = !cursor;
    });
    const prefs = u.preferences;
    this.body.replaceChildren(
      h('div', { class: 'stats' },
        stat('unread', 'Unread', String(u.unread), 'exact, as the badge shows it'),
        stat('here', 'Live connections', String(u.connections_here), 'on this node'),
        stat('presence', 'Presence', presence ? JSON.stringify(presence.value) : 'n/a', presence ? 'across nodes' : NA),
        stat('pushes', 'Push subscriptions', String(u.push_subscriptions.length), 'browsers reached when offline')),
      h('div', { class: 'split' },
        h('section', { class: 'card', 'aria-label': `Inbox of ${u.user}` }, h('h2', null, `Inbox of ${u.user}`),
          h('div', { class: 'tabs', role: 'group', 'aria-label': 'Show' }, ...[['all', 'All but archived'], ['unread', 'Unread'], ['archived', 'Archived']].map(([f, label]) =>
            h('button', { type: 'button', 'aria-pressed': String(f === filter), onclick: () => this.load(user, f) }, label))),
          inbox.children.length ? h('table', { class: 'list' }, h('thead', null, h('tr', null, ...['Created', 'Title', 'Type', 'State'].map((c) => h('th', null, c)))), inbox) : h('p', { class: 'empty' }, filter === 'all' ? 'The inbox is empty.' : `Nothing ${filter}.`),
          more),
        h('div', null,
          this.sendForm(user),
          h('section', { class: 'card' }, h('h2', null, 'Preferences'),
            h('p', { class: 'muted' }, `Time zone ${prefs.timezone}; quiet hours ${prefs.quiet_hours ? prefs.quiet_hours.join('–') : 'none'}${prefs.quiet_now ? ' (now quiet)' : ''}`),
            Object.keys(prefs.types).length
              ? h('table', { class: 'list compact' }, h('thead', null, h('tr', null, ...['Type', 'In-app', 'Push', 'Source'].map((c) => h('th', null, c)))),
                h('tbody', null, ...Object.entries(prefs.types).map(([t, p]) => h('tr', null, h('td', null, t), h('td', null, p.in_app ? 'on' : 'off'), h('td', null, p.push ? 'on' : 'off'), h('td', null, p.mandatory ? 'mandatory' : p.custom ? 'user choice' : 'default')))))
              : h('p', { class: 'muted' }, 'App defaults for every type.')),
          h('section', { class: 'card' }, h('h2', null, 'Topics followed'),
            u.topics.length ? h('ul', null, ...u.topics.map((/** @type {any} */ t) => h('li', null, t.topic, t.granted ? ' (granted)' : ''))) : h('p', { class: 'muted' }, 'None.')),
          h('section', { class: 'card' }, h('h2', null, 'Push subscriptions'),
            u.push_subscriptions.length ? h('ul', null, ...u.push_subscriptions.map((/** @type {any} */ p) => h('li', null, new URL(p.endpoint).host, h('small', { class: 'muted' }, ` since ${when(p.created_at)}`)))) : h('p', { class: 'muted' }, 'None.')),
          h('section', { class: 'card' }, h('h2', null, 'Profile'),
            profile
              ? h('dl', { class: 'facts' }, ...['email', 'email_status', 'name', 'locale', 'timezone', 'updated_at'].flatMap((k) =>
                [h('dt', null, k.replace('_', ' ')), h('dd', null, k === 'updated_at' ? when(profile.value[k]) : String(profile.value[k] ?? '–'))]))
              : h('p', { class: 'muted' }, 'No profile stored (PUT /v1/users/{id}: email, name, locale).')))),
    );
  }

  /** @param {string} user */
  sendForm(user) {
    const title = h('input', { name: 'title', value: 'Test from the console', 'aria-label': 'Title', required: true });
    const priority = h('select', { name: 'priority', 'aria-label': 'Priority' }, ...['low', 'normal', 'high', 'critical'].map((p) => h('option', { value: p, selected: p === 'normal' }, p)));
    const note = h('p', { class: 'muted', 'aria-live': 'polite' });
    return h('form', { class: 'card', onsubmit: async (/** @type {Event} */ e) => {
      e.preventDefault();
      try {
        const r = await api('POST', '/v1/notifications', { users: [user], type: 'console_test', title: /** @type {HTMLInputElement} */ (title).value, priority: /** @type {HTMLSelectElement} */ (priority).value });
        note.textContent = `Sent: ${r.id}`;
      } catch (err) {
        note.textContent = `Not sent: ${err instanceof Error ? err.message : err}`;
      }
    } }, h('h2', null, 'Send a test notification'), h('div', { class: 'toolbar' }, title, priority, h('button', { type: 'submit', class: 'primary' }, 'Send')), note);
  }
}

// -- Types and topics ------------------------------------------------------------------------

class TypesPage extends HTMLElement {
  async connectedCallback() {
    const types = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
    const templates = h('div');
    const topic = h('input', { name: 'topic', placeholder: 'topic, e.g. project:42', 'aria-label': 'Topic', required: true });
    const followers = h('div');
    const form = h('form', { class: 'toolbar', onsubmit: async (/** @type {Event} */ e) => {
      e.preventDefault();
      const name = /** @type {HTMLInputElement} */ (topic).value.trim();
      try {
        const r = await api('GET', `/console/api/topics/${encodeURIComponent(name)}/followers`);
        followers.replaceChildren(r.users.length ? h('ul', { class: 'chips' }, ...r.users.map((/** @type {string} */ u) => h('li', null, h('a', { href: `#users/${encodeURIComponent(u)}` }, u)))) : h('p', { class: 'muted' }, 'Nobody follows it.'), r.next ? h('p', { class: 'muted' }, 'First 50 shown.') : '');
      } catch (err) {
        followers.replaceChildren(errorBox(err));
      }
    } }, topic, h('button', { type: 'submit', class: 'primary' }, 'Followers'));
    this.replaceChildren(h('header', { class: 'page-head' }, h('h1', null, 'Types and topics')),
      h('section', { class: 'card' }, h('h2', null, 'Types'), h('p', { class: 'muted' }, 'App-wide defaults per type; change them with PUT /v1/types/{type}.'), types),
      h('section', { class: 'card' }, h('h2', null, 'Templates'), templates),
      h('section', { class: 'card' }, h('h2', null, 'Topic followers'), form, followers));
    try {
      const list = await api('GET', '/v1/types');
      types.replaceChildren(list.length
        ? h('table', { class: 'list' }, h('thead', null, h('tr', null, ...['Type', 'In-app', 'Push', 'Mandatory', 'Throttle', 'Digest'].map((c) => h('th', null, c)))),
          h('tbody', null, ...list.map((/** @type {any} */ t) => h('tr', null, h('td', null, t.type), h('td', null, t.in_app ? 'on' : 'off'), h('td', null, t.push ? 'on' : 'off'), h('td', null, t.mandatory ? 'yes' : 'no'), h('td', null, t.throttle ? `${t.throttle.count} per ${t.throttle.seconds} s` : '–'), h('td', null, t.digest_seconds ? `${t.digest_seconds} s window` : '–')))))
        : h('p', { class: 'empty' }, 'No type has settings yet: every type uses in-app on, push for critical.'));
    } catch (e) {
      types.replaceChildren(errorBox(e));
    }
    const tpl = await optional('GET', '/v1/templates').catch(() => null);
    templates.replaceChildren(tpl ? h('pre', null, JSON.stringify(tpl.value, null, 2)) : notAvailable('Templates'));
  }
}

// -- Keys ------------------------------------------------------------------------------------

class KeysPage extends HTMLElement {
  connectedCallback() {
    this.me = /** @type {any} */ (document.querySelector('clarion-console'))?.key?.id;
    this.list = h('div');
    this.created = h('div', { 'aria-live': 'polite' });
    const name = h('input', { name: 'name', placeholder: 'name, e.g. billing-service', 'aria-label': 'Key name', required: true, maxlength: 200 });
    const scope = h('select', { name: 'scope', 'aria-label': 'Scope' }, h('option', { value: 'publish' }, 'publish'), h('option', { value: 'admin' }, 'admin'));
    const form = h('form', { class: 'toolbar', onsubmit: async (/** @type {Event} */ e) => {
      e.preventDefault();
      try {
        const k = await api('POST', '/v1/keys', { name: /** @type {HTMLInputElement} */ (name).value.trim(), scope: /** @type {HTMLSelectElement} */ (scope).value });
        const secret = h('code', { class: 'secret' }, k.secret);
        this.created.replaceChildren(h('div', { class: 'callout', role: 'status' },
          h('strong', null, `Key “${k.name}” created. Copy its secret now: it is not shown again.`), secret,
          h('button', { type: 'button', onclick: () => navigator.clipboard?.writeText(k.secret) }, 'Copy')));
        /** @type {HTMLFormElement} */ (form).reset();
        this.load();
      } catch (err) {
        this.created.replaceChildren(errorBox(err));
      }
    } }, name, scope, h('button', { type: 'submit', class: 'primary' }, 'Create key'));
    this.replaceChildren(h('header', { class: 'page-head' }, h('h1', null, 'API keys')),
      h('section', { class: 'card' }, h('h2', null, 'Create a key'), form, this.created),
      h('section', { class: 'card' }, h('h2', null, 'Keys'), this.list));
    this.load();
  }

  async load() {
    let keys;
    try {
      keys = await api('GET', '/v1/keys');
    } catch (e) {
      this.list.replaceChildren(errorBox(e));
      return;
    }
    keys.sort((/** @type {any} */ a, /** @type {any} */ b) => Number(!!a.revoked_at) - Number(!!b.revoked_at) || b.created_at.localeCompare(a.created_at));
    this.list.replaceChildren(h('table', { class: 'list' },
      h('thead', null, h('tr', null, ...['Name', 'Id', 'Scope', 'Created', 'Last used', 'Expires'].map((c) => h('th', null, c)), h('th', null, h('span', { class: 'sr-only' }, 'Revoke')))),
      h('tbody', null, ...keys.map((/** @type {any} */ k) => h('tr', { 'data-key': k.id, class: k.revoked_at ? 'revoked' : '' },
        h('td', null, k.name, k.id === this.me ? h('span', { class: 'badge' }, 'this session') : ''), h('td', null, h('code', null, k.id)), h('td', null, h('span', { class: `badge scope-${k.scope}` }, k.scope)),
        h('td', { class: 'nowrap' }, when(k.created_at)), h('td', { class: 'nowrap' }, when(k.last_used_at)), h('td', { class: 'nowrap' }, when(k.expires_at)),
        h('td', null, k.revoked_at ? `revoked ${when(k.revoked_at)}` : this.revoke(k)))))));
  }

  /** Two clicks: "Revoke", then "Confirm revoke" (no modal dialog to dismiss). @param {any} k */
  revoke(k) {
    const note = h('span', { class: 'muted' });
    const button = h('button', { class: 'danger', 'aria-label': `Revoke ${k.name}` }, 'Revoke');
    button.addEventListener('click', async () => {
      if (!button.dataset.armed) {
        button.dataset.armed = '1';
        button.textContent = 'Confirm revoke';
        return;
      }
      try {
        await api('DELETE', `/v1/keys/${encodeURIComponent(k.id)}`);
        this.load();
      } catch (e) {
        note.textContent = e instanceof Error ? e.message : String(e);
      }
    });
    return h('span', null, button, note);
  }
}

// -- The shell: sign-in, navigation ----------------------------------------------------------

class ClarionConsole extends HTMLElement {
  async connectedCallback() {
    window.addEventListener('hashchange', () => this.route());
    try {
      const s = await api('GET', '/console/api/session');
      csrf = s.csrf;
      this.key = s.key;
      this.shell();
    } catch {
      this.signIn();
    }
  }

  /** @param {string} [why] */
  signedOut(why) {
    csrf = '';
    this.signIn(why);
  }

  /** @param {string} [why] */
  signIn(why) {
    const key = h('input', { name: 'key', type: 'password', autocomplete: 'off', placeholder: 'clk_…', 'aria-label': 'Admin API key', required: true });
    const error = h('p', { class: 'error', role: 'alert', hidden: !why }, why || '');
    const form = h('form', { class: 'signin card', onsubmit: async (/** @type {Event} */ e) => {
      e.preventDefault();
      const input = /** @type {HTMLInputElement} */ (key);
      try {
        const s = await api('POST', '/console/api/session', { key: input.value.trim() });
        input.value = '';
        csrf = s.csrf;
        this.key = s.key;
        this.shell();
      } catch (err) {
        error.hidden = false;
        error.textContent = err instanceof Error ? err.message : String(err);
      }
    } },
    h('h1', { class: 'brand' }, h('span', { class: 'logo', 'aria-hidden': 'true' }, 'C'), 'Clarion console'),
    h('p', { class: 'muted' }, 'Sign in with an admin API key. It is checked once and never kept by this browser: you get a session cookie for 8 hours.'),
    h('label', null, 'Admin API key', key), error, h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
    this.replaceChildren(h('main', { class: 'center' }, form));
    document.title = 'Sign in · Clarion console';
    /** @type {HTMLInputElement} */ (key).focus();
  }

  shell() {
    this.nav = h('nav', { 'aria-label': 'Console' }, ...PAGES.map(([id, label]) => h('a', { href: `#${id}`, 'data-page': id }, label)));
    this.main = h('main', { id: 'page' });
    const out = h('button', { class: 'link', onclick: async () => {
      await api('DELETE', '/console/api/session').catch(() => null);
      this.signedOut();
    } }, 'Sign out');
    this.replaceChildren(
      h('header', { class: 'topbar' }, h('div', { class: 'brand' }, h('span', { class: 'logo', 'aria-hidden': 'true' }, 'C'), 'Clarion'), this.nav,
        h('div', { class: 'right' }, h('span', { class: 'muted' }, `Signed in with key “${this.key.name}”`), out)),
      this.main);
    this.route();
  }

  route() {
    if (!this.main || !this.nav) return;
    const id = (location.hash.slice(1).split(/[/?]/)[0] || 'live');
    const known = PAGES.some(([p]) => p === id) ? id : 'live';
    for (const a of this.nav.querySelectorAll('a')) {
      if (a.dataset.page === known) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (this.main.firstElementChild?.localName === `console-${known}` && !location.hash.includes('?') && !location.hash.includes('/')) return;
    this.main.replaceChildren(h(`console-${known}`));
  }
}

customElements.define('console-live', LivePage);
customElements.define('console-notifications', NotificationsPage);
customElements.define('console-users', UsersPage);
customElements.define('console-types', TypesPage);
customElements.define('console-keys', KeysPage);
customElements.define('clarion-console', ClarionConsole);
