// clarion.js: the browser client for a Clarion server.
//
// One connection with fallback (WebSocket, then Server-Sent Events, then long-polling), resume
// by per-stream sequence numbers, token refresh, and the inbox API. No build step and no
// dependency: load it as an ES module from /static/clarion.js. Types live in clarion.d.ts;
// docs/client.md explains the behaviour, and docs/protocol.md the wire contract it speaks.

/** @typedef {import('./clarion').Notification} Notification */
/** @typedef {import('./clarion').ConnectOptions} ConnectOptions */
/** @typedef {import('./clarion').TransportName} TransportName */
/** @typedef {import('./clarion').ConnectionStatus} ConnectionStatus */
/** @typedef {import('./clarion').ListOptions} ListOptions */
/** @typedef {import('./clarion').ListPage} ListPage */
/** @typedef {import('./clarion').StateAnswer} StateAnswer */
/** @typedef {import('./clarion').Preferences} Preferences */
/** @typedef {import('./clarion').PreferencesChange} PreferencesChange */

/** @type {readonly TransportName[]} */
export const TRANSPORTS = Object.freeze(['websocket', 'sse', 'poll']);

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;
/** A transport that gives no welcome in this time counts as unable to connect. */
const WELCOME_TIMEOUT_MS = 10_000;
/** A token with less than this left is replaced before it is used. */
const TOKEN_MARGIN_MS = 15_000;
const POLL_TIMEOUT_S = 25;
/** After a ping, the server has this long to answer before the socket counts as dead. */
const PONG_TIMEOUT_MS = 20_000;
/** A connection that stayed live this long resets the backoff. */
const STABLE_MS = 10_000;
/** The remembered transport is forgotten after this many failed attempts in a row. */
const STICKY_RETRIES = 3;

/** An HTTP error answered by the server, with its `{"error": {...}}` body unpacked. */
export class ClarionError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {string | null} [field]
   */
  constructor(status, code, message, field = null) {
    super(message || code);
    this.name = 'ClarionError';
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

// ---- cursors ---------------------------------------------------------------------------------

/**
 * Encode a position (stream -> last seq) as a cursor: unpadded base64url of compact UTF-8 JSON.
 * @param {Map<string, number> | Record<string, number>} position
 * @returns {string}
 */
export function encodeCursor(position) {
  const object = position instanceof Map ? Object.fromEntries(position) : position;
  const bytes = new TextEncoder().encode(JSON.stringify(object));
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * Decode a cursor into a position, or null when it is not one.
 * @param {string | null | undefined} cursor
 * @returns {Map<string, number> | null}
 */
export function decodeCursor(cursor) {
  if (typeof cursor !== 'string' || cursor === '') return null;
  try {
    let b64 = cursor.replace(/-/g, '+').replace(/_/g, '/');
    b64 += '='.repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const object = JSON.parse(new TextDecoder().decode(bytes));
    if (object === null || typeof object !== 'object' || Array.isArray(object)) return null;
    const position = new Map();
    for (const [stream, seq] of Object.entries(object)) {
      if (!Number.isSafeInteger(seq) || seq < 0) return null;
      position.set(stream, seq);
    }
    return position;
  } catch {
    return null;
  }
}

// ---- small helpers ---------------------------------------------------------------------------

/**
 * True when `url` may be followed from a notification: http(s), or relative to the page.
 * Everything else (javascript:, data:, blob:, file:, ...) is refused.
 * @param {unknown} url
 * @param {string} [base] what relative URLs resolve against (default: the document's base URL)
 * @returns {string | null} the absolute URL when it is safe, else null
 */
export function safeUrl(url, base) {
  if (typeof url !== 'string' || url.trim() === '') return null;
  try {
    const resolved = new URL(url, base ?? globalThis.document?.baseURI ?? globalThis.location?.href);
    return resolved.protocol === 'https:' || resolved.protocol === 'http:' ? resolved.href : null;
  } catch {
    return null;
  }
}

/**
 * The `exp` of a JWT in milliseconds, or 0 when the token does not say.
 * @param {string} token
 */
function tokenExpiry(token) {
  try {
    const payload = token.split('.')[1];
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((payload.length + 3) % 4));
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' ? exp * 1000 : 0;
  } catch {
    return 0;
  }
}

/**
 * `expires_at` from a welcome: Unix seconds, milliseconds, or an ISO string; 0 when unknown.
 * @param {unknown} value
 */
function parseExpiry(value) {
  if (typeof value === 'number' && Number.isFinite(value)) return value < 1e12 ? value * 1000 : value;
  if (typeof value === 'string') {
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? 0 : ms;
  }
  return 0;
}

/** What a WebSocket close code asks the client to do (docs/protocol.md, "Close codes"). */
/** @param {number} code */
function closeKind(code) {
  switch (code) {
    case 4001: return 'auth';
    case 4002: return 'expired';
    case 4003: return 'forbidden';
    case 4008: return 'now';
    case 1001: case 1012: return 'restart';
    case 4029: return 'ratelimited';
    case 1000: case 1009: case 4000: return 'backoff';
    default: return 'transport';
  }
}

/**
 * The server's reason for refusing a connection attempt over HTTP, for the status and the
 * `error` event (the `message` of its JSON error, else the status text).
 * @param {Response} response
 */
async function refusal(response) {
  let reason = response.statusText;
  try {
    const message = (await response.json())?.error?.message;
    if (typeof message === 'string') reason = message;
  } catch { /* not JSON */ }
  return { status: response.status, reason };
}

/** What an HTTP error status on a connection attempt asks the client to do. */
/** @param {number} status */
function statusKind(status) {
  if (status === 401) return 'auth';
  if (status === 403) return 'forbidden';
  if (status === 429) return 'ratelimited';
  if (status === 400 || status === 422) return 'backoff';
  return 'transport';
}

// ---- the client ------------------------------------------------------------------------------

/**
 * @typedef {object} Connection one attempt on one transport
 * @property {number} gen
 * @property {number} index position of the transport in the client's list
 * @property {TransportName} name
 * @property {boolean} live
 * @property {number} liveAt
 * @property {boolean} done
 * @property {() => void} stop releases sockets, timers and requests
 * @property {(message: object) => void} [send]
 * @property {number} [lastRx]
 * @property {number} [pingAt]
 */

/**
 * A live connection to a Clarion server plus the inbox API of its user.
 * Create it with {@link connect}.
 */
export class Client extends EventTarget {
  /** @type {string} */ #base;
  /** @type {() => string | Promise<string>} */ #getToken;
  /** @type {TransportName[]} */ #transports;
  /** @type {Map<string, number>} */ #position = new Map();

  /** @type {string | null} */ #token = null;
  #tokenExp = 0;
  /** @type {Promise<string> | null} */ #tokenPromise = null;
  #forceToken = false;

  /** @type {Connection | null} */ #conn = null;
  #gen = 0;
  /** Index of the transport that worked, or -1 while still probing. */
  #sticky = -1;
  #stickyFailures = 0;
  #attempt = 0;
  #authFailures = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #retryTimer;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #refreshTimer;
  /** @type {ReturnType<typeof setInterval> | undefined} */ #heartbeatTimer;
  /** Between `welcome` and the first `unread`: events replayed from the cursor. */
  #replay = false;
  /** @type {Set<string>} ids of recent notifications: one copy reaches the app, whatever its routes */
  #recentIds = new Set();
  #closed = false;
  #stopped = false;
  /** @type {ConnectionStatus} */ #status = { state: 'connecting', transport: null };
  /** @type {number | null} */ #unread = null;
  /** @type {number | null} */ #unseen = null;
  #onOnline = () => { if (!this.#closed && !this.#stopped) { this.#attempt = 0; this.#start(); } };
  #onOffline = () => { this.#pause('offline'); };

  /**
   * @param {string} url
   * @param {ConnectOptions} options
   */
  constructor(url, options) {
    super();
    if (typeof options?.getToken !== 'function') throw new TypeError('connect(): options.getToken must be a function');
    this.#base = new URL(url || '/', globalThis.location?.href).href.replace(/\/+$/, '');
    this.#getToken = options.getToken;
    const wanted = options.transports ?? TRANSPORTS;
    this.#transports = wanted.filter((name) => TRANSPORTS.includes(name));
    if (this.#transports.length === 0) throw new TypeError('connect(): no known transport in options.transports');
    const position = decodeCursor(options.cursor);
    if (position) this.#position = position;
    globalThis.addEventListener?.('online', this.#onOnline);
    globalThis.addEventListener?.('offline', this.#onOffline);
    queueMicrotask(() => this.#start());
  }

  // ---- public state ----

  /** @returns {ConnectionStatus} */
  get status() { return { ...this.#status }; }
  /** The transport in use or being tried, or null. */
  get transport() { return this.#status.transport; }
  /** The position to resume from, as an opaque cursor (or null before the first welcome). */
  get cursor() { return this.#position.size ? encodeCursor(this.#position) : null; }
  /** The position as a plain object `{stream: seq}`. */
  get position() { return Object.fromEntries(this.#position); }
  /** The last unread count the server told, or null before the first one. */
  get unread() { return this.#unread; }
  /** The last unseen count the server told, or null (before the first, or from a server without `seen`). */
  get unseen() { return this.#unseen; }

  /**
   * Subscribe to an event; the listener receives its `detail`. Returns the unsubscribe function.
   * @param {string} name
   * @param {(detail: any, event: CustomEvent) => void} listener
   * @returns {() => void}
   */
  on(name, listener) {
    /** @param {Event} event */
    const wrapped = (event) => listener(/** @type {CustomEvent} */ (event).detail, /** @type {CustomEvent} */ (event));
    this.addEventListener(name, wrapped);
    return () => this.removeEventListener(name, wrapped);
  }

  /** Drop the current connection (if any) and connect again at once, keeping the position. */
  reconnect() {
    if (this.#closed) return;
    this.#stopped = false;
    this.#attempt = 0;
    this.#authFailures = 0;
    this.#start();
  }

  /** Close the connection for good. The inbox methods keep working. */
  close() {
    if (this.#closed) return;
    this.#pause('offline');
    this.#closed = true;
    globalThis.removeEventListener?.('online', this.#onOnline);
    globalThis.removeEventListener?.('offline', this.#onOffline);
  }

  // ---- inbox API ----

  /**
   * One page of the inbox, newest first.
   * @param {ListOptions} [options]
   * @returns {Promise<ListPage>}
   */
  list({ cursor, limit, filter } = {}) {
    return this.#request('GET', '/v1/me/notifications', { query: { cursor, limit, filter } });
  }

  /** @param {string} id @returns {Promise<StateAnswer>} */
  markRead(id) { return this.#request('POST', `/v1/me/notifications/${encodeURIComponent(id)}/read`); }
  /** @param {string} id @returns {Promise<StateAnswer>} */
  markUnread(id) { return this.#request('POST', `/v1/me/notifications/${encodeURIComponent(id)}/unread`); }
  /** @param {string} id @returns {Promise<StateAnswer>} */
  archive(id) { return this.#request('POST', `/v1/me/notifications/${encodeURIComponent(id)}/archive`); }
  /**
   * What an open inbox showed (up to 100 ids): `seen_at` is set, other tabs are told, and
   * escalations `unless: seen` of these notifications will not fire.
   * @param {string[]} ids
   * @returns {Promise<StateAnswer>}
   */
  markSeen(ids) { return this.#request('POST', '/v1/me/notifications/seen', { body: { ids } }); }
  /** @returns {Promise<StateAnswer>} */
  seenAll() { return this.#request('POST', '/v1/me/notifications/seen-all'); }
  /** @returns {Promise<StateAnswer>} */
  readAll() { return this.#request('POST', '/v1/me/notifications/read-all'); }
  /** @returns {Promise<StateAnswer>} */
  clearAll() { return this.#request('POST', '/v1/me/notifications/archive-all'); }

  /** Topics the user follows. @returns {Promise<{topics: {topic: string, granted: boolean}[]}>} */
  topics() { return this.#request('GET', '/v1/me/topics'); }
  /**
   * Follow a topic (the token's `topics` claim or the app must allow it); live at once.
   * @param {string} topic
   */
  follow(topic) { return this.#request('PUT', `/v1/me/topics/${encodeURIComponent(topic)}`); }
  /** @param {string} topic */
  unfollow(topic) { return this.#request('DELETE', `/v1/me/topics/${encodeURIComponent(topic)}`); }
  /** Effective preferences per type, time zone and quiet hours. @returns {Promise<Preferences>} */
  preferences() { return this.#request('GET', '/v1/me/preferences'); }
  /**
   * Change preferences: `{types: {comment: {in_app: false}}, timezone, quiet_hours: {start, end}}`.
   * @param {PreferencesChange} change
   * @returns {Promise<Preferences>}
   */
  setPreferences(change) { return this.#request('PUT', '/v1/me/preferences', { body: change }); }

  /** @returns {Promise<number>} */
  async unreadCount() {
    const answer = await this.#request('GET', '/v1/me/unread-count');
    return answer.unread;
  }

  /**
   * Subscribe this browser to Web Push and register the subscription with the server.
   * @param {ServiceWorkerRegistration} registration
   * @param {string | BufferSource} applicationServerKey the server's VAPID public key
   * @returns {Promise<PushSubscription>}
   */
  async subscribePush(registration, applicationServerKey) {
    const key = typeof applicationServerKey === 'string' ? base64UrlBytes(applicationServerKey) : applicationServerKey;
    const subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    await this.#request('POST', '/v1/me/push-subscriptions', { body: subscription.toJSON() });
    return subscription;
  }

  /**
   * Forget this browser's Web Push subscription, here and on the server.
   * @param {ServiceWorkerRegistration} registration
   * @returns {Promise<boolean>} false when there was none
   */
  async unsubscribePush(registration) {
    const subscription = await registration.pushManager.getSubscription();
    if (!subscription) return false;
    await this.#request('DELETE', '/v1/me/push-subscriptions', { body: { endpoint: subscription.endpoint } });
    return subscription.unsubscribe();
  }

  // ---- tokens ----

  /** @param {boolean} [force] */
  async #freshToken(force = false) {
    const usable = this.#token && (!this.#tokenExp || this.#tokenExp - Date.now() > TOKEN_MARGIN_MS);
    if (usable && !force && !this.#forceToken) return /** @type {string} */ (this.#token);
    // Concurrent callers (a reconnect and an inbox call) share one getToken() call.
    this.#tokenPromise ??= (async () => {
      try {
        // Trimmed: a token read from a file or `response.text()` often ends with a newline.
        let token = await this.#getToken();
        if (typeof token !== 'string' || token.trim() === '') throw new TypeError('getToken() must resolve to a non-empty string');
        token = token.trim();
        this.#token = token;
        this.#tokenExp = tokenExpiry(token);
        this.#forceToken = false;
        return token;
      } finally {
        this.#tokenPromise = null;
      }
    })();
    return this.#tokenPromise;
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {{query?: Record<string, unknown>, body?: unknown, retried?: boolean}} [options]
   * @returns {Promise<any>}
   */
  async #request(method, path, { query, body, retried = false } = {}) {
    const token = await this.#freshToken();
    const url = new URL(this.#base + path, globalThis.location?.href);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, String(value));
    }
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      // A click on a card marks it read and then leaves the page: the request must outlive it.
      keepalive: method !== 'GET',
    });
    if (response.status === 401) {
      this.#forceToken = true; // this token was refused: never sent again
      if (!retried) return this.#request(method, path, { query, body, retried: true });
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below if an error */ }
    if (!response.ok) {
      const error = data?.error ?? {};
      throw new ClarionError(response.status, error.code ?? `http_${response.status}`, error.message ?? response.statusText, error.field ?? null);
    }
    if (typeof data?.unread === 'number') this.#setUnread(data.unread, data.unseen);
    return data;
  }

  // ---- connection life cycle ----

  /** @param {string} name @param {unknown} detail */
  #emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  /** @param {ConnectionStatus['state']} state @param {Partial<ConnectionStatus>} [extra] */
  #setStatus(state, extra = {}) {
    const next = { state, transport: this.#conn?.name ?? this.#status.transport, ...extra };
    const same = next.state === this.#status.state && next.transport === this.#status.transport
      && next.reason === this.#status.reason && next.message === this.#status.message;
    this.#status = next;
    if (!same) this.#emit('status', { ...next });
  }

  /** @param {number} count @param {unknown} [unseen] present when the server counts `seen` */
  #setUnread(count, unseen) {
    this.#unread = count;
    /** @type {{count: number, unseen?: number}} */
    const detail = { count };
    if (typeof unseen === 'number') detail.unseen = this.#unseen = unseen;
    // Always emitted, even when unchanged: a listener may have counted a live notification since.
    this.#emit('unread', detail);
  }

  /** Stop the current attempt and every timer; invalidates callbacks still in flight. */
  #teardown() {
    this.#gen++;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#refreshTimer);
    clearInterval(this.#heartbeatTimer);
    const conn = this.#conn;
    this.#conn = null;
    if (conn && !conn.done) {
      conn.done = true;
      conn.stop();
    }
    this.#replay = false;
  }

  /** @param {ConnectionStatus['reason']} reason */
  #pause(reason) {
    this.#teardown();
    this.#setStatus('offline', { reason });
  }

  /** Begin an attempt: on the transport that worked, or from the top of the list. */
  #start() {
    this.#teardown();
    if (this.#closed || this.#stopped) return;
    if (globalThis.navigator?.onLine === false) {
      this.#setStatus('offline', { reason: 'offline' });
      return;
    }
    void this.#open(this.#sticky >= 0 ? this.#sticky : 0);
  }

  /** @param {number} index */
  async #open(index) {
    const gen = ++this.#gen;
    const name = this.#transports[index];
    /** @type {Connection} */
    const conn = { gen, index, name, live: false, liveAt: 0, done: false, stop: () => {} };
    this.#conn = conn;
    this.#setStatus('connecting', { transport: name });
    let token;
    try {
      token = await this.#freshToken();
    } catch (error) {
      if (gen !== this.#gen) return;
      this.#emit('error', { code: 'token_unavailable', message: String(/** @type {Error} */ (error)?.message ?? error) });
      this.#ended(conn, 'backoff');
      return;
    }
    if (gen !== this.#gen) return;
    if (name === 'websocket') this.#openWebSocket(conn, token);
    else if (name === 'sse') void this.#openEventSource(conn, token);
    else void this.#openPoll(conn, token);
  }

  /** @param {Connection} conn */
  #goLive(conn) {
    conn.live = true;
    conn.liveAt = Date.now();
    this.#sticky = conn.index;
    this.#stickyFailures = 0;
    this.#setStatus('live', { transport: conn.name });
  }

  /**
   * A connection attempt ended; decide what comes next.
   * @param {Connection} conn
   * @param {string} kind what the ending asks for (see closeKind)
   * @param {Record<string, unknown>} [info]
   */
  #ended(conn, kind, info = {}) {
    if (conn.done || conn.gen !== this.#gen || this.#closed) return;
    conn.done = true;
    conn.stop();
    this.#conn = null;
    this.#replay = false;
    clearTimeout(this.#refreshTimer);
    clearInterval(this.#heartbeatTimer);
    const lived = conn.live ? Date.now() - conn.liveAt : 0;
    if (lived >= STABLE_MS) {
      // Only a connection that held resets the counters: one dropped right after its welcome
      // (a server that accepts and then refuses) keeps backing off.
      this.#attempt = 0;
      this.#authFailures = 0;
    }
    if (!conn.live && (kind === 'now' || kind === 'restart' || kind === 'backoff')) kind = 'transport';

    switch (kind) {
      case 'forbidden':
        return this.#refused(conn, 'forbidden', info);
      case 'auth':
        // A refused token: ask getToken() for another at once. Refused again, the token can
        // never work (another server's secret, a malformed token): stop until reconnect().
        this.#forceToken = true;
        if (++this.#authFailures === 1) return this.#retry(0);
        return this.#refused(conn, 'unauthorized', info);
      case 'expired':
        // A fresh token at once, the first time; after that the backoff applies.
        this.#forceToken = true;
        if (++this.#authFailures === 1) return this.#retry(0);
        return this.#backoff();
      case 'now':
      case 'restart':
        // A server that drops us right after welcoming us must not be hammered.
        if (lived < 2000) return this.#backoff();
        // Every client of a restarting node comes back at once: spread them over a second.
        return this.#retry(kind === 'restart' ? Math.random() * 1000 : 0);
      case 'ratelimited':
        this.#attempt = Math.max(this.#attempt, 3);
        return this.#backoff();
      case 'transport':
        if (!conn.live) {
          if (this.#sticky < 0) {
            // Still probing: the next transport in the list, at once.
            if (conn.index + 1 < this.#transports.length) return void this.#open(conn.index + 1);
          } else if (++this.#stickyFailures >= STICKY_RETRIES) {
            // The transport that worked keeps failing (a new network, a new proxy): probe again.
            this.#sticky = -1;
            this.#stickyFailures = 0;
          }
        }
        return this.#backoff();
      default:
        return this.#backoff();
    }
  }

  /**
   * The server refused this page's origin or user, or its token twice: retrying cannot help.
   * Say why, in the status and the `error` event (and the console, for the developer).
   * @param {Connection} conn
   * @param {'forbidden' | 'unauthorized'} code
   * @param {Record<string, unknown>} info
   */
  #refused(conn, code, info) {
    this.#stopped = true;
    const message = typeof info.reason === 'string' && info.reason
      ? info.reason
      : code === 'forbidden' ? 'the server refused this origin or user' : 'the server refused the token';
    this.#emit('error', { code, ...info, message });
    console.warn(`clarion: ${code}: ${message}. Not retrying until reconnect().`);
    this.#setStatus('offline', { transport: conn.name, reason: code, message });
  }

  /** Exponential backoff with full jitter. */
  #backoff() {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    this.#retry(Math.random() * ceiling);
  }

  /** @param {number} delay */
  #retry(delay) {
    clearTimeout(this.#retryTimer);
    this.#setStatus('connecting');
    this.#retryTimer = setTimeout(() => this.#start(), delay);
  }

  // ---- events from any transport ----

  /**
   * Fold a stream event into the position: 'ok' when new, 'dup' when already seen. Seqs may
   * jump: the server leaves out what this user does not get (a muted type, a second copy of a
   * notification that reached it through another audience).
   * @param {{stream?: unknown, seq?: unknown}} event
   */
  #fold(event) {
    const { stream, seq } = event;
    if (typeof stream !== 'string' || typeof seq !== 'number') return 'ok';
    const known = this.#position.get(stream);
    if (known !== undefined && seq <= known) return 'dup';
    this.#position.set(stream, seq);
    return 'ok';
  }

  /**
   * Whether a notification id was delivered to the app already (bounded memory).
   * @param {string} id
   */
  #seenBefore(id) {
    if (this.#recentIds.has(id)) return true;
    this.#recentIds.add(id);
    if (this.#recentIds.size > 1000) this.#recentIds.delete(this.#recentIds.values().next().value);
    return false;
  }

  /**
   * Handle one wire event. Returns false when the connection was ended because of it.
   * @param {Connection} conn
   * @param {any} event
   * @param {string} [eventId] the SSE `id:` (the connection's full cursor after this event)
   */
  #receive(conn, event, eventId) {
    if (conn.done || event === null || typeof event !== 'object') return !conn.done;
    conn.lastRx = Date.now();
    this.#emit('raw', event);
    switch (event.type) {
      case 'welcome': {
        const start = decodeCursor(event.cursor);
        if (!conn.live) {
          if (start) this.#position = start;
          this.#goLive(conn);
          this.#replay = true;
          if (conn.name === 'websocket') this.#startHeartbeat(conn, Number(event.heartbeat) || 25);
        } else if (start) {
          // A welcome answering a token refresh: never move backwards.
          for (const [stream, seq] of start) {
            if (!(seq <= (this.#position.get(stream) ?? -1))) this.#position.set(stream, seq);
          }
        }
        if (conn.name === 'websocket') this.#scheduleRefresh(conn, parseExpiry(event.expires_at) || this.#tokenExp);
        this.#emit('welcome', event);
        break;
      }
      case 'notification':
      case 'state':
      case 'follow':
      case 'unfollow':
      case 'preferences': {
        const verdict = this.#fold(event);
        if (eventId) {
          const position = decodeCursor(eventId);
          if (position) this.#position = position;
        }
        if (verdict === 'dup') break;
        if (event.type === 'notification') {
          const n = event.notification;
          if (n && typeof n === 'object' && !this.#seenBefore(String(n.id))) {
            const replaces = Array.isArray(event.replaces) ? event.replaces : [];
            const collapsed = typeof event.collapsed === 'number' ? event.collapsed : 0;
            this.#emit('notification', { notification: { ...n, collapsed }, replaces, stream: event.stream, seq: event.seq, replay: this.#replay });
          }
        } else if (event.type !== 'state') {
          const { type, ...detail } = event;
          this.#emit(type, detail);
        } else {
          const { type: _type, ...state } = event;
          this.#emit('state', { ...state, ids: Array.isArray(event.ids) ? event.ids : [], replay: this.#replay });
          if (typeof event.unread === 'number') this.#setUnread(event.unread, event.unseen);
          // A recall on a shared stream carries no count (it differs per follower): ask.
          else if (event.change === 'removed' && !this.#replay) this.unreadCount().catch(() => {});
        }
        break;
      }
      case 'unread':
        this.#replay = false;
        if (typeof event.count === 'number') this.#setUnread(event.count, event.unseen);
        break;
      case 'resync':
        this.#ended(conn, 'now', { reason: event.reason });
        return false;
      case 'error':
        if (event.code === 'token_expired') this.#forceToken = true;
        this.#emit('error', { code: event.code, message: event.message });
        break;
      default:
        break; // pong, and event types added later
    }
    return true;
  }

  // ---- WebSocket ----

  /** @param {Connection} conn @param {string} token */
  #openWebSocket(conn, token) {
    if (typeof WebSocket === 'undefined') return this.#ended(conn, 'transport');
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new WebSocket(this.#base.replace(/^http/, 'ws') + '/v1/ws');
    } catch {
      return this.#ended(conn, 'transport');
    }
    const welcomeTimer = setTimeout(() => this.#ended(conn, 'transport', { reason: 'no welcome' }), WELCOME_TIMEOUT_MS);
    conn.stop = () => {
      clearTimeout(welcomeTimer);
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000); } catch { /* already closing */ }
    };
    conn.send = (message) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
    };
    ws.onopen = () => {
      /** @type {Record<string, string>} */
      const auth = { type: 'auth', token };
      const cursor = this.cursor;
      if (cursor) auth.cursor = cursor;
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      if (event?.type === 'welcome') clearTimeout(welcomeTimer);
      this.#receive(conn, event);
    };
    ws.onclose = (close) => this.#ended(conn, closeKind(close.code), { code: close.code, reason: close.reason });
  }

  /**
   * The browser answers protocol pings by itself but cannot see them, so a dead socket (a laptop
   * that slept, a NAT that forgot us) is found by an application ping when the line is quiet.
   * @param {Connection} conn
   * @param {number} heartbeatSeconds
   */
  #startHeartbeat(conn, heartbeatSeconds) {
    const quiet = heartbeatSeconds * 1000;
    conn.lastRx = Date.now();
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = setInterval(() => {
      const now = Date.now();
      if (conn.pingAt && (conn.lastRx ?? 0) < conn.pingAt && now - conn.pingAt > PONG_TIMEOUT_MS) {
        this.#ended(conn, 'transport', { reason: 'no pong' });
      } else if (now - (conn.lastRx ?? 0) >= quiet && !(conn.pingAt && now - conn.pingAt < quiet)) {
        conn.pingAt = now;
        conn.send?.({ type: 'ping' });
      }
    }, Math.min(5000, quiet));
  }

  /**
   * Send a fresh token on the open socket before the current one expires.
   * @param {Connection} conn
   * @param {number} expiresAt ms, 0 when unknown
   */
  #scheduleRefresh(conn, expiresAt) {
    clearTimeout(this.#refreshTimer);
    if (!expiresAt) return;
    const left = expiresAt - Date.now();
    const lead = Math.min(60_000, Math.max(left * 0.2, 1000));
    this.#refreshTimer = setTimeout(async () => {
      try {
        const token = await this.#freshToken(true);
        if (conn.done) return;
        conn.send?.({ type: 'auth', token });
        this.#scheduleRefresh(conn, this.#tokenExp);
      } catch {
        // getToken failed: try again shortly; if the token runs out first, the server closes
        // with 4002 and the reconnect asks for a token again.
        if (!conn.done) this.#scheduleRefresh(conn, Date.now() + 6000);
      }
    }, Math.max(0, left - lead));
  }

  // ---- Server-Sent Events ----

  /** @param {Connection} conn @param {string} token */
  async #openEventSource(conn, token) {
    if (typeof EventSource === 'undefined') return this.#ended(conn, 'transport');
    const abort = new AbortController();
    conn.stop = () => abort.abort();
    // EventSource cannot send headers: trade the token for a single-use ticket.
    let ticket;
    try {
      const response = await fetch(this.#base + '/v1/tickets', {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        signal: abort.signal,
        cache: 'no-store',
      });
      if (!response.ok) return this.#ended(conn, statusKind(response.status), await refusal(response));
      ticket = (await response.json()).ticket;
    } catch {
      return this.#ended(conn, 'transport');
    }
    if (conn.done) return;
    if (typeof ticket !== 'string') return this.#ended(conn, 'transport');
    const query = new URLSearchParams({ ticket });
    const cursor = this.cursor;
    if (cursor) query.set('since', cursor);
    const source = new EventSource(`${this.#base}/v1/sse?${query}`);
    const welcomeTimer = setTimeout(() => this.#ended(conn, 'transport', { reason: 'no welcome' }), WELCOME_TIMEOUT_MS);
    conn.stop = () => {
      clearTimeout(welcomeTimer);
      source.onmessage = source.onerror = null;
      source.close();
    };
    source.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      if (event?.type === 'welcome') clearTimeout(welcomeTimer);
      this.#receive(conn, event, message.lastEventId);
    };
    // The browser would reconnect by itself, but with the spent ticket: reconnect ourselves.
    source.onerror = () => this.#ended(conn, 'transport', { reason: 'stream ended' });
  }

  // ---- long-polling ----

  /** @param {Connection} conn @param {string} token */
  async #openPoll(conn, token) {
    /** @type {AbortController | null} */
    let abort = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let deadline;
    conn.stop = () => { clearTimeout(deadline); abort?.abort(); };
    // Each session starts by catching up (timeout=0, so the answers come at once: a replay),
    // then waits for live events.
    let catchingUp = true;
    for (let first = true; !conn.done; first = false) {
      if (!first) {
        try { token = await this.#freshToken(); } catch { return this.#ended(conn, 'backoff'); }
        if (conn.done) return;
      }
      const timeout = catchingUp ? 0 : POLL_TIMEOUT_S;
      const query = new URLSearchParams({ timeout: String(timeout) });
      const cursor = this.cursor;
      if (cursor) query.set('since', cursor);
      abort = new AbortController();
      const current = abort;
      deadline = setTimeout(() => current.abort(), (timeout + 15) * 1000);
      const sentAt = Date.now();
      let answer;
      try {
        const response = await fetch(`${this.#base}/v1/poll?${query}`, {
          headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
          signal: abort.signal,
          cache: 'no-store',
        });
        if (!response.ok) return this.#ended(conn, statusKind(response.status), await refusal(response));
        answer = await response.json();
      } catch {
        return this.#ended(conn, 'transport');
      } finally {
        clearTimeout(deadline);
      }
      if (conn.done) return;
      if (!conn.live) this.#goLive(conn);
      this.#replay = catchingUp;
      const events = Array.isArray(answer?.events) ? answer.events : [];
      for (const event of events) {
        if (!this.#receive(conn, event)) return;
      }
      const position = decodeCursor(answer?.cursor);
      if (position) this.#position = position;
      if (typeof answer?.unread === 'number') this.#setUnread(answer.unread, answer.unseen);
      const wasCatchingUp = catchingUp;
      catchingUp = answer?.more === true;
      this.#replay = false;
      // A wait that ends at once with nothing (a proxy cutting requests short) must not spin.
      if (!wasCatchingUp && !catchingUp && events.length === 0 && Date.now() - sentAt < 1000) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }
}

/** @param {string} value base64url, padded or not */
function base64UrlBytes(value) {
  const b64 = value.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((value.length + 3) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/**
 * Connect to a Clarion server. The client starts connecting at once (on the next microtask, so
 * listeners added right away see every event).
 * @param {string} url the server's base URL, e.g. `location.origin`
 * @param {ConnectOptions} options
 * @returns {Client}
 */
export function connect(url, options) {
  return new Client(url, options);
}

// ---- the headless inbox ------------------------------------------------------------------------
//
// The inbox's state machine, shared by <clarion-inbox>, clarion-react.js and clarion-vue.js (one
// truth), and small enough to bind to any framework: `getState()` returns an immutable snapshot
// that changes identity only when something changed, `subscribe(fn)` says when.

/** @typedef {import('./clarion').InboxItem} InboxItem */
/** @typedef {import('./clarion').InboxState} InboxState */
/** @typedef {import('./clarion').InboxOptions} InboxOptions */
/** @typedef {import('./clarion').InboxFilter} InboxFilter */

/** Until the connection is live the first page waits (so nothing published in between is missed), but no longer than this. */
const FIRST_LOAD_WAIT_MS = 3000;

/** @param {unknown} value ms since the epoch of an ISO time, NaN when absent */
function timeOf(value) {
  return typeof value === 'string' ? Date.parse(value) : Number.NaN;
}

/**
 * Whether a notification belongs in a list with this filter.
 * @param {InboxFilter} filter
 * @param {InboxItem} n
 */
export function inFilter(filter, n) {
  if (filter === 'archived') return Boolean(n.archived_at);
  if (filter === 'unread') return !n.read_at && !n.archived_at;
  return !n.archived_at;
}

/**
 * A live, paged inbox of one user over a {@link Client}: the list (newest first), exact unread
 * and unseen counts, optimistic actions rolled back when the server refuses them, collapse
 * replacements and live changes from other tabs. Create it with {@link createInbox}.
 */
export class Inbox {
  /** @type {Client} */ #client;
  /** @type {InboxFilter} */ #filter;
  #pageSize;
  /** @type {InboxState} */ #state;
  /** @type {Set<(state: InboxState) => void>} */ #listeners = new Set();
  /** @type {Map<string, Set<(detail: any) => void>>} */ #handlers = new Map();
  /** Every id ever shown, so a repeated event neither counts nor shows twice. */
  #known = new Set();
  /** @type {string | null} */ #nextCursor = null;
  /** Whether the server counts `seen` (an `unseen` number came); until then unseen = unread. */
  #unseenKnown = false;
  #generation = 0;
  #wantLoad = false;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #loadTimer;
  /** @type {(() => void)[]} */ #off;
  #destroyed = false;

  /**
   * @param {Client} client
   * @param {InboxOptions} [options]
   */
  constructor(client, { filter = 'all', pageSize = 20 } = {}) {
    this.#client = client;
    this.#filter = filter;
    this.#pageSize = pageSize;
    const unread = client.unread ?? 0;
    const unseen = client.unseen;
    this.#unseenKnown = typeof unseen === 'number';
    this.#state = Object.freeze({
      items: Object.freeze([]), unread, unseen: this.#unseenKnown ? /** @type {number} */ (unseen) : unread,
      status: client.status, loading: false, loaded: false, hasMore: true, error: null,
    });
    this.#off = [
      client.on('notification', (d) => this.#onNotification(d)),
      client.on('state', (d) => this.#onState(d)),
      client.on('unread', (d) => this.#counts(d.count, d.unseen)),
      client.on('status', (s) => this.#onStatus(s)),
      client.on('preferences', (d) => { if (Array.isArray(d.muted)) this.dropTypes(d.muted); }),
    ];
  }

  /** The client this inbox reads and acts through. */
  get client() { return this.#client; }
  get filter() { return this.#filter; }

  /** The current snapshot: the same object until something changes. */
  getState() { return this.#state; }

  /**
   * Call `listener(state)` after every change. Returns the unsubscribe function.
   * @param {(state: InboxState) => void} listener
   */
  subscribe(listener) {
    this.#listeners.add(listener);
    return () => { this.#listeners.delete(listener); };
  }

  /**
   * Events beside the state: `added` `{notification, replay, replaced}` once per new live
   * notification (for toasts), `error` `{error, action}` when a load failed (`action` is
   * `load`) or an action was rolled back.
   * @param {'added' | 'error'} name
   * @param {(detail: any) => void} handler
   */
  on(name, handler) {
    const set = this.#handlers.get(name) ?? new Set();
    this.#handlers.set(name, set);
    set.add(handler);
    return () => { set.delete(handler); };
  }

  /** Stop following the client (which stays open: it may be shared). */
  destroy() {
    this.#destroyed = true;
    this.#generation++;
    clearTimeout(this.#loadTimer);
    for (const off of this.#off) off();
    this.#listeners.clear();
    this.#handlers.clear();
  }

  // ---- loading ----

  /**
   * Load the first page: at once when the connection is live, else once it is (or after 3 s,
   * or at once with `{now: true}`). Later calls do nothing until `refresh()`.
   * @param {{now?: boolean}} [options]
   */
  load({ now = false } = {}) {
    if (this.#destroyed || this.#state.loaded || this.#state.loading) return Promise.resolve();
    const refused = this.#state.status.reason === 'forbidden' || this.#state.status.reason === 'unauthorized';
    if (now || this.#state.status.state === 'live') return this.loadMore();
    this.#wantLoad = true;
    clearTimeout(this.#loadTimer);
    if (!refused) this.#loadTimer = setTimeout(() => { if (this.#wantLoad) void this.loadMore(); }, FIRST_LOAD_WAIT_MS);
    return Promise.resolve();
  }

  /** Load the next page (the first when none is loaded). */
  async loadMore() {
    const s = this.#state;
    if (this.#destroyed || s.loading || (s.loaded && !s.hasMore)) return;
    this.#wantLoad = false;
    clearTimeout(this.#loadTimer);
    const generation = this.#generation;
    this.#set({ loading: true, error: null });
    try {
      const page = await this.#client.list({ cursor: this.#nextCursor ?? undefined, limit: this.#pageSize, filter: this.#filter });
      if (generation !== this.#generation) return;
      const items = [...this.#state.items];
      for (const n of page.items ?? []) {
        if (!n || typeof n.id !== 'string' || this.#known.has(n.id)) continue;
        this.#known.add(n.id);
        items.push(Object.freeze({ ...n }));
      }
      this.#nextCursor = page.next_cursor ?? null;
      this.#set({ items, loading: false, loaded: true, hasMore: Boolean(this.#nextCursor) });
      this.#counts(page.unread, /** @type {any} */ (page).unseen);
    } catch (error) {
      if (generation !== this.#generation) return;
      this.#set({ loading: false, error: /** @type {Error} */ (error) });
      this.#fire('error', { error, action: 'load' });
    }
  }

  /** Forget the list and load the first page again. */
  refresh() {
    this.#generation++;
    this.#known.clear();
    this.#nextCursor = null;
    this.#set({ items: [], loading: false, loaded: false, hasMore: true, error: null });
    return this.loadMore();
  }

  // ---- actions: applied at once, rolled back if the server refuses ----

  /** @param {string} id */
  markRead(id) { return this.#toggle(id, true); }
  /** @param {string} id */
  markUnread(id) { return this.#toggle(id, false); }

  /** @param {string} id @param {boolean} read */
  async #toggle(id, read) {
    const n = this.#find(id);
    const wasRead = n ? Boolean(n.read_at) : !read;
    if (n && wasRead !== read) {
      this.#patch([id], () => ({ read_at: read ? new Date().toISOString() : null }));
      this.#bump(read ? -1 : 1, read ? -Number(!n.seen_at) : 0);
    }
    return this.#act(read ? 'read' : 'unread', () => (read ? this.#client.markRead(id) : this.#client.markUnread(id)), () => {
      if (!n || wasRead === read) return;
      this.#patch([id], () => ({ read_at: n.read_at ?? null }));
      this.#bump(read ? 1 : -1, read ? Number(!n.seen_at) : 0);
    });
  }

  /** @param {string} id */
  async archive(id) {
    const items = this.#state.items;
    const index = items.findIndex((n) => n.id === id);
    const n = index >= 0 ? items[index] : null;
    if (n) {
      this.#set({ items: items.filter((x) => x.id !== id) });
      if (!n.read_at) this.#bump(-1, -Number(!n.seen_at));
    }
    return this.#act('archive', () => this.#client.archive(id), () => {
      if (!n || this.#find(id)) return;
      const now = [...this.#state.items];
      now.splice(Math.min(index, now.length), 0, n);
      this.#set({ items: now });
      if (!n.read_at) this.#bump(1, Number(!n.seen_at));
    });
  }

  /** Mark every notification read (`read_all`). */
  async readAll() {
    const before = this.#state;
    const at = new Date().toISOString();
    this.#patch(null, (n) => (n.read_at ? null : { read_at: at }));
    this.#set({ unread: 0, unseen: this.#unseenKnown ? before.unseen : 0 });
    if (this.#filter === 'unread') this.#set({ items: [] });
    return this.#act('read_all', () => this.#client.readAll(), () => {
      this.#set({ items: this.#restore(before.items), unread: before.unread, unseen: before.unseen });
    });
  }

  /** Archive everything (`archive_all`, "clear all"). */
  async clearAll() {
    const before = this.#state;
    this.#set({ items: this.#filter === 'archived' ? before.items : [], unread: 0, unseen: 0 });
    const generation = this.#generation;
    const done = this.#act('archive_all', () => this.#client.clearAll(), () => {
      this.#set({ items: this.#restore(before.items), unread: before.unread, unseen: before.unseen });
    });
    // Nothing older is left to page through.
    if ((await done) && generation === this.#generation && this.#filter !== 'archived' && this.#state.loaded) this.#set({ hasMore: false });
    return done;
  }

  /**
   * Mark notifications seen: by default every unseen one in the list (what an open inbox shows).
   * Nothing is sent until the server has shown that it counts seen (an `unseen` number).
   * @param {string[]} [ids]
   */
  async markSeen(ids) {
    if (!this.#unseenKnown) return true;
    const targets = (ids ?? this.#state.items.map((n) => n.id)).filter((id) => {
      const n = this.#find(id);
      return n ? !n.seen_at : ids !== undefined;
    });
    if (targets.length === 0) return true;
    const fresh = targets.filter((id) => this.#find(id));
    const newlySeen = fresh.filter((id) => !this.#find(id)?.read_at).length;
    const at = new Date().toISOString();
    this.#patch(fresh, () => ({ seen_at: at }));
    if (this.#unseenKnown) this.#bump(0, -newlySeen);
    return this.#act('seen', () => this.#client.markSeen(targets), () => {
      this.#patch(fresh, (n) => (n.seen_at === at ? { seen_at: null } : null));
      if (this.#unseenKnown) this.#bump(0, newlySeen);
    });
  }

  /** Mark everything seen (`seen-all`): the badge of an app that counts unseen drops to 0. */
  async seenAll() {
    if (!this.#unseenKnown) return true;
    const before = this.#state;
    const at = new Date().toISOString();
    this.#patch(null, (n) => (n.seen_at ? null : { seen_at: at }));
    this.#set({ unseen: 0 });
    return this.#act('seen_all', () => this.#client.seenAll(), () => {
      this.#patch(null, (n) => (n.seen_at === at ? { seen_at: null } : null));
      this.#set({ unseen: before.unseen });
    });
  }

  /**
   * Take notifications of these types out of the list (the user muted them in-app).
   * @param {string[]} types
   */
  dropTypes(types) {
    const muted = new Set(types);
    const items = this.#state.items.filter((n) => !muted.has(String(n.type)));
    if (items.length !== this.#state.items.length) this.#set({ items });
  }

  /**
   * Run a server call; on failure undo, keep the error in the state and emit `error`.
   * @param {string} action
   * @param {() => Promise<any>} call
   * @param {() => void} undo
   * @returns {Promise<boolean>} whether the server accepted it
   */
  async #act(action, call, undo) {
    const generation = this.#generation;
    try {
      const answer = await call();
      if (generation === this.#generation && typeof answer?.unread === 'number') this.#counts(answer.unread, answer.unseen);
      return true;
    } catch (error) {
      if (generation !== this.#generation || this.#destroyed) return false;
      undo();
      this.#set({ error: /** @type {Error} */ (error) });
      this.#fire('error', { error, action });
      return false;
    }
  }

  // ---- live events ----

  /** @param {import('./clarion').NotificationEventDetail} detail */
  #onNotification({ notification, replay, replaces }) {
    if (!notification || typeof notification.id !== 'string' || this.#known.has(notification.id)) return;
    this.#known.add(notification.id);
    /** @type {InboxItem} */
    const n = Object.freeze({ read_at: null, archived_at: null, seen_at: null, ...notification });
    // collapse_key: the newer notification takes the place of the unread ones the server names
    // (or, from an older server, of an unread one in the list with the same key).
    const gone = new Set(Array.isArray(replaces) ? replaces : []);
    let replaced = gone.size > 0;
    if (n.collapse_key && !replaced) {
      const twin = this.#state.items.find((x) => x.collapse_key === n.collapse_key && !x.read_at);
      if (twin) { gone.add(twin.id); replaced = true; }
    }
    const rest = this.#state.items.filter((x) => !gone.has(x.id));
    if (inFilter(this.#filter, n)) this.#set({ items: [n, ...rest] });
    else if (rest.length !== this.#state.items.length) this.#set({ items: rest });
    if (!n.read_at && !replaced) this.#bump(1, n.seen_at ? 0 : 1);
    this.#fire('added', { notification: n, replay: Boolean(replay), replaced: [...gone] });
  }

  /** @param {import('./clarion').StateEventDetail} detail */
  #onState({ change, ids, at, unread, unseen }) {
    const when = typeof at === 'string' ? at : new Date().toISOString();
    const cutoff = timeOf(when);
    // *_all changes apply to what existed at `at`: a notification from another stream may
    // arrive before the state change that was made without it.
    /** @param {InboxItem} n */
    const before = (n) => Number.isNaN(cutoff) || !(timeOf(n.created_at) > cutoff);
    const targets = change.endsWith('_all') ? null : new Set(ids ?? []);
    /** @param {InboxItem} n */
    const hit = (n) => (targets ? targets.has(n.id) : before(n));
    /** @type {Partial<InboxItem> | null} */
    let fields = null;
    if (change === 'read' || change === 'read_all') fields = { read_at: when };
    else if (change === 'unread') fields = { read_at: null };
    else if (change === 'archived' || change === 'archive_all') fields = { archived_at: when };
    else if (change === 'seen' || change === 'seen_all') fields = { seen_at: when };
    if (change === 'removed') {
      // A recalled notification leaves every list; the count comes with the event, or the
      // client asks for it (a recall on a shared stream carries none).
      const items = this.#state.items.filter((n) => !hit(n));
      if (items.length !== this.#state.items.length) this.#set({ items });
    } else if (fields) {
      const patch = /** @type {Partial<InboxItem>} */ (fields);
      const items = [];
      for (const n of this.#state.items) {
        const changed = hit(n) ? Object.freeze({ ...n, ...keepEarlier(n, patch) }) : n;
        if (inFilter(this.#filter, changed)) items.push(changed);
      }
      this.#set({ items });
    }
    this.#counts(unread, unseen);
  }

  /** @param {import('./clarion').ConnectionStatus} status */
  #onStatus(status) {
    this.#set({ status });
    if (status.state === 'live' && this.#wantLoad) void this.loadMore();
    if (status.reason === 'forbidden' || status.reason === 'unauthorized') clearTimeout(this.#loadTimer);
  }

  // ---- helpers ----

  /** @param {string} id */
  #find(id) { return this.#state.items.find((n) => n.id === id); }

  /**
   * Replace items by a patch (all items when `ids` is null); a null patch leaves one as it is.
   * @param {string[] | null} ids
   * @param {(n: InboxItem) => Partial<InboxItem> | null} change
   */
  #patch(ids, change) {
    const wanted = ids ? new Set(ids) : null;
    let touched = false;
    const items = [];
    for (const n of this.#state.items) {
      const fields = !wanted || wanted.has(n.id) ? change(n) : null;
      const next = fields ? Object.freeze({ ...n, ...fields }) : n;
      touched ||= next !== n;
      if (inFilter(this.#filter, next)) items.push(next);
      else touched = true;
    }
    if (touched) this.#set({ items });
  }

  /**
   * The list as it was before an action, with what arrived since kept in front.
   * @param {readonly InboxItem[]} before
   */
  #restore(before) {
    const ids = new Set(before.map((n) => n.id));
    return [...this.#state.items.filter((n) => !ids.has(n.id)), ...before];
  }

  /** @param {number} unread @param {number} unseen */
  #bump(unread, unseen) {
    const s = this.#state;
    const nextUnread = Math.max(0, s.unread + unread);
    this.#set({ unread: nextUnread, unseen: this.#unseenKnown ? Math.max(0, s.unseen + unseen) : nextUnread });
  }

  /** The server's exact counts. @param {unknown} unread @param {unknown} unseen */
  #counts(unread, unseen) {
    if (typeof unseen === 'number') this.#unseenKnown = true;
    if (typeof unread !== 'number') return;
    this.#set({ unread, unseen: typeof unseen === 'number' ? unseen : this.#unseenKnown ? this.#state.unseen : unread });
  }

  /** @param {Partial<Omit<InboxState, 'items'>> & {items?: readonly InboxItem[]}} change */
  #set(change) {
    const prev = this.#state;
    const keys = /** @type {(keyof InboxState)[]} */ (Object.keys(change));
    if (keys.every((key) => prev[key] === change[key])) return;
    const next = { ...prev, ...change };
    if (change.items) next.items = Object.freeze([...change.items]);
    this.#state = Object.freeze(next);
    for (const listener of [...this.#listeners]) listener(this.#state);
  }

  /** @param {string} name @param {unknown} detail */
  #fire(name, detail) {
    for (const handler of [...(this.#handlers.get(name) ?? [])]) handler(detail);
  }
}

/**
 * A state change keeps an earlier time already known (a read notification stays read since then).
 * @param {InboxItem} n
 * @param {Partial<InboxItem>} patch
 */
function keepEarlier(n, patch) {
  /** @type {Record<string, unknown>} */
  const out = { ...patch };
  for (const [key, value] of Object.entries(patch)) {
    if (value !== null && /** @type {any} */ (n)[key]) out[key] = /** @type {any} */ (n)[key];
  }
  return out;
}

/**
 * The headless inbox over a client: bind its `getState()`/`subscribe()` to any framework.
 * @param {Client} client
 * @param {InboxOptions} [options]
 */
export function createInbox(client, options) {
  return new Inbox(client, options);
}
