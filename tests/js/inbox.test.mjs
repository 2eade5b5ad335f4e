// The headless inbox's logic (clarion.js `createInbox`), with node's test runner:
// `node --test tests/js/` (tests/test_js.py runs it in the suite).
//
// The client here is a stand-in that records calls and answers like the server: the browser
// tests (tests/e2e/test_frameworks.py) run the same store against a real server.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createInbox, inFilter } from '../../src/clarion/static/clarion.js';

/** A client with the methods the inbox uses; `fail` makes the next calls reject. */
class StubClient extends EventTarget {
  status = { state: 'live', transport: 'websocket' };
  unread = null;
  unseen = null;
  calls = [];
  fail = false;
  pages = [];

  on(name, fn) {
    const wrapped = (e) => fn(e.detail);
    this.addEventListener(name, wrapped);
    return () => this.removeEventListener(name, wrapped);
  }

  emit(name, detail) { this.dispatchEvent(new CustomEvent(name, { detail })); }

  async #answer(name, ...args) {
    this.calls.push([name, ...args]);
    await null;
    if (this.fail) throw Object.assign(new Error('refused'), { status: 503 });
    return {};
  }

  async list(options) {
    this.calls.push(['list', options]);
    return this.pages.shift() ?? { items: [], next_cursor: null, unread: 0 };
  }
  markRead(id) { return this.#answer('markRead', id); }
  markUnread(id) { return this.#answer('markUnread', id); }
  archive(id) { return this.#answer('archive', id); }
  readAll() { return this.#answer('readAll'); }
  clearAll() { return this.#answer('clearAll'); }
  markSeen(ids) { return this.#answer('markSeen', ids); }
  seenAll() { return this.#answer('seenAll'); }
}

let clock = 0;
function item(id, fields = {}) {
  clock += 1000;
  return {
    id, type: 'message', priority: 'normal', title: `t ${id}`, body: null, icon: null, actor: null,
    url: null, actions: [], data: {}, created_at: new Date(1_700_000_000_000 + clock).toISOString(),
    expires_at: null, collapse_key: null, read_at: null, archived_at: null, seen_at: null, ...fields,
  };
}

async function loaded(pageItems, extra = {}) {
  const client = new StubClient();
  client.pages.push({ items: pageItems, next_cursor: null, unread: pageItems.filter((n) => !n.read_at).length, ...extra });
  const inbox = createInbox(client);
  await inbox.load();
  return { client, inbox };
}

const ids = (inbox) => inbox.getState().items.map((n) => n.id);

test('the first page loads, newest first, with the exact counts', async () => {
  const { inbox, client } = await loaded([item('b'), item('a', { read_at: 'x' })]);
  const s = inbox.getState();
  assert.deepEqual(ids(inbox), ['b', 'a']);
  assert.equal(s.unread, 1);
  assert.equal(s.unseen, 1, 'unseen follows unread while the server does not count seen');
  assert.equal(s.loaded, true);
  assert.equal(s.hasMore, false);
  assert.deepEqual(client.calls[0], ['list', { cursor: undefined, limit: 20, filter: 'all' }]);
});

test('pages follow next_cursor and skip what is already shown', async () => {
  const client = new StubClient();
  const [a, b, c] = [item('a'), item('b'), item('c')];
  client.pages.push({ items: [c, b], next_cursor: 'p2', unread: 3 }, { items: [b, a], next_cursor: null, unread: 3 });
  const inbox = createInbox(client, { pageSize: 2 });
  await inbox.load();
  assert.equal(inbox.getState().hasMore, true);
  await inbox.loadMore();
  assert.deepEqual(ids(inbox), ['c', 'b', 'a']);
  assert.equal(client.calls[1][1].cursor, 'p2');
  assert.equal(inbox.getState().hasMore, false);
  await inbox.loadMore();
  assert.equal(client.calls.length, 2, 'no request past the last page');
});

test('the first page waits for the connection to be live', async () => {
  const client = new StubClient();
  client.status = { state: 'connecting', transport: 'websocket' };
  const inbox = createInbox(client);
  await inbox.load();
  assert.equal(client.calls.length, 0);
  client.emit('status', { state: 'live', transport: 'websocket' });
  await null;
  assert.equal(client.calls.length, 1);
  inbox.destroy();
});

test('a snapshot keeps its identity until something changes', async () => {
  const { inbox, client } = await loaded([item('a')]);
  const before = inbox.getState();
  assert.equal(inbox.getState(), before);
  client.emit('unread', { count: 1 });
  assert.equal(inbox.getState(), before, 'the same count changes nothing');
  client.emit('unread', { count: 4 });
  assert.notEqual(inbox.getState(), before);
  assert.ok(Object.isFrozen(inbox.getState()) && Object.isFrozen(inbox.getState().items));
});

test('a live notification goes on top, counts once, and is announced once', async () => {
  const { inbox, client } = await loaded([item('a')]);
  const added = [];
  inbox.on('added', (d) => added.push(d.notification.id));
  let changes = 0;
  inbox.subscribe(() => changes++);
  const n = item('b');
  client.emit('notification', { notification: n, replaces: [], replay: false });
  client.emit('notification', { notification: n, replaces: [], replay: false });
  client.emit('notification', { notification: item('a'), replaces: [], replay: false });
  assert.deepEqual(ids(inbox), ['b', 'a']);
  assert.equal(inbox.getState().unread, 2);
  assert.deepEqual(added, ['b']);
  assert.ok(changes >= 1);
});

test('a collapsed notification takes the place of the ones it replaces, without counting', async () => {
  const { inbox, client } = await loaded([item('a', { collapse_key: 'k' }), item('z')]);
  client.emit('notification', { notification: item('b', { collapse_key: 'k', collapsed: 1 }), replaces: ['a'] });
  assert.deepEqual(ids(inbox), ['b', 'z']);
  assert.equal(inbox.getState().unread, 2);
  // An older server names nothing: an unread one with the same key in the list is replaced.
  client.emit('notification', { notification: item('c', { collapse_key: 'k' }), replaces: [] });
  assert.deepEqual(ids(inbox), ['c', 'z']);
  assert.equal(inbox.getState().unread, 2);
});

test('markRead applies at once and takes the server count', async () => {
  const { inbox, client } = await loaded([item('a'), item('b')]);
  const done = inbox.markRead('a');
  assert.ok(inbox.getState().items[0].read_at, 'optimistic');
  assert.equal(inbox.getState().unread, 1);
  assert.equal(await done, true);
  assert.deepEqual(client.calls.at(-1), ['markRead', 'a']);
});

test('a refused markRead is rolled back and reported', async () => {
  const { inbox, client } = await loaded([item('a'), item('b')]);
  client.fail = true;
  const errors = [];
  inbox.on('error', (d) => errors.push(d.action));
  assert.equal(await inbox.markRead('a'), false);
  const s = inbox.getState();
  assert.equal(s.items[0].read_at, null);
  assert.equal(s.unread, 2);
  assert.equal(s.error?.message, 'refused');
  assert.deepEqual(errors, ['read']);
});

test('markUnread, and its rollback', async () => {
  const { inbox, client } = await loaded([item('a', { read_at: '2024-01-01T00:00:00Z' })]);
  assert.equal(inbox.getState().unread, 0);
  await inbox.markUnread('a');
  assert.equal(inbox.getState().items[0].read_at, null);
  assert.equal(inbox.getState().unread, 1);
  client.fail = true;
  await inbox.markRead('a');
  assert.equal(inbox.getState().items[0].read_at, null);
  assert.equal(inbox.getState().unread, 1);
});

test('archive removes at once and puts it back in place when refused', async () => {
  const { inbox, client } = await loaded([item('c'), item('b'), item('a')]);
  client.fail = true;
  const pending = inbox.archive('b');
  assert.deepEqual(ids(inbox), ['c', 'a']);
  assert.equal(inbox.getState().unread, 2);
  await pending;
  assert.deepEqual(ids(inbox), ['c', 'b', 'a']);
  assert.equal(inbox.getState().unread, 3);
  client.fail = false;
  await inbox.archive('b');
  assert.deepEqual(ids(inbox), ['c', 'a']);
});

test('readAll and clearAll roll back as a whole, keeping what arrived meanwhile', async () => {
  const { inbox, client } = await loaded([item('b'), item('a')]);
  client.fail = true;
  const pending = inbox.readAll();
  assert.equal(inbox.getState().unread, 0);
  assert.ok(inbox.getState().items.every((n) => n.read_at));
  client.emit('notification', { notification: item('new'), replaces: [] });
  await pending;
  assert.deepEqual(ids(inbox), ['new', 'b', 'a']);
  assert.ok(inbox.getState().items.slice(1).every((n) => !n.read_at));
  assert.equal(inbox.getState().unread, 2, 'the count from before the action');
  const clearing = inbox.clearAll();
  assert.deepEqual(ids(inbox), []);
  await clearing;
  assert.deepEqual(ids(inbox), ['new', 'b', 'a']);
});

test('state events from other tabs change the list and take the exact count', async () => {
  const { inbox, client } = await loaded([item('c'), item('b'), item('a')]);
  client.emit('state', { change: 'read', ids: ['c'], at: new Date().toISOString(), unread: 2 });
  assert.ok(inbox.getState().items[0].read_at);
  assert.equal(inbox.getState().unread, 2);
  client.emit('state', { change: 'archived', ids: ['b'], at: new Date().toISOString(), unread: 1 });
  assert.deepEqual(ids(inbox), ['c', 'a']);
  client.emit('state', { change: 'unread', ids: ['c'], at: new Date().toISOString(), unread: 2 });
  assert.equal(inbox.getState().items[0].read_at, null);
});

test('*_all state events spare what was created after their time', async () => {
  const { inbox, client } = await loaded([item('a')]);
  const at = new Date(Date.parse(inbox.getState().items[0].created_at) + 500).toISOString();
  client.emit('notification', { notification: item('later'), replaces: [] });
  client.emit('state', { change: 'archive_all', ids: [], at, unread: 1 });
  assert.deepEqual(ids(inbox), ['later']);
});

test('an unread filter drops what becomes read; an archived filter ignores live ones', async () => {
  const client = new StubClient();
  client.pages.push({ items: [item('b'), item('a')], next_cursor: null, unread: 2 });
  const unread = createInbox(client, { filter: 'unread' });
  await unread.load();
  await unread.markRead('a');
  assert.deepEqual(ids(unread), ['b']);
  const archived = createInbox(client, { filter: 'archived' });
  client.emit('notification', { notification: item('c'), replaces: [] });
  assert.deepEqual(ids(archived), []);
  assert.deepEqual(ids(unread), ['c', 'b']);
  assert.equal(inFilter('archived', item('x', { archived_at: 'y' })), true);
});

test('unseen: the server count when it sends one, seen actions and events adjust it', async () => {
  const { inbox, client } = await loaded([item('b'), item('a')], { unseen: 2 });
  assert.equal(inbox.getState().unseen, 2);
  client.emit('notification', { notification: item('c'), replaces: [] });
  assert.equal(inbox.getState().unseen, 3);
  await inbox.markSeen();
  assert.equal(inbox.getState().unseen, 0);
  assert.ok(inbox.getState().items.every((n) => n.seen_at));
  assert.deepEqual(client.calls.at(-1), ['markSeen', ['c', 'b', 'a']]);
  assert.equal(inbox.getState().unread, 3, 'seen is not read');
  client.emit('state', { change: 'unread', ids: [], at: new Date().toISOString(), unread: 3, unseen: 1 });
  assert.equal(inbox.getState().unseen, 1);
});

test('a refused markSeen is rolled back', async () => {
  const { inbox, client } = await loaded([item('a')], { unseen: 1 });
  client.fail = true;
  assert.equal(await inbox.markSeen(['a']), false);
  assert.equal(inbox.getState().items[0].seen_at, null);
  assert.equal(inbox.getState().unseen, 1);
  assert.equal(await inbox.seenAll(), false);
  assert.equal(inbox.getState().unseen, 1);
});

test('seen is not sent to a server that does not count it', async () => {
  const { inbox, client } = await loaded([item('a')]);
  const calls = client.calls.length;
  assert.equal(await inbox.markSeen(), true);
  assert.equal(await inbox.seenAll(), true);
  assert.equal(client.calls.length, calls);
  assert.equal(inbox.getState().unseen, 1, 'unseen stays equal to unread');
});

test('seen state events mark items seen', async () => {
  const { inbox, client } = await loaded([item('b'), item('a')], { unseen: 2 });
  client.emit('state', { change: 'seen', ids: ['a'], at: new Date().toISOString(), unread: 2, unseen: 1 });
  assert.ok(inbox.getState().items[1].seen_at);
  assert.equal(inbox.getState().items[0].seen_at, null);
  assert.equal(inbox.getState().unseen, 1);
});

test('muted types leave the list; destroy stops listening', async () => {
  const { inbox, client } = await loaded([item('a', { type: 'like' }), item('b')]);
  client.emit('preferences', { muted: ['like'] });
  assert.deepEqual(ids(inbox), ['b']);
  const before = inbox.getState();
  inbox.destroy();
  client.emit('notification', { notification: item('c'), replaces: [] });
  assert.equal(inbox.getState(), before);
});
