// clarion-react.js: React bindings for clarion.js. `react` is a peer dependency: a bundler
// resolves it, or a page maps it with an import map. No JSX and no build step here.
//
// One <ClarionProvider> holds one connection for the app. The hooks read the headless inbox of
// clarion.js (createInbox) through useSyncExternalStore, so every component sees the same
// snapshot in a render (no tearing) and an optimistic "mark read" in one component changes the
// count in another at once. docs/client.md ("React") shows the usage; types: clarion-react.d.ts.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useSyncExternalStore,
} from 'react';
import { connect, createInbox } from './clarion.js';
import './clarion-inbox.js';

/** @typedef {import('./clarion').Client} Client */
/** @typedef {import('./clarion').Inbox} Inbox */
/** @typedef {import('./clarion').InboxState} InboxState */
/** @typedef {import('./clarion').ConnectionStatus} ConnectionStatus */
/** @typedef {import('./clarion').InboxFilter} InboxFilter */

/** @type {ConnectionStatus} */
const NOT_CONNECTED = Object.freeze({ state: 'connecting', transport: null });
/** @type {InboxState} */
const NO_INBOX = Object.freeze({
  items: Object.freeze([]), unread: 0, unseen: 0, status: NOT_CONNECTED,
  loading: false, loaded: false, hasMore: true, error: null,
});
const noSubscription = () => () => {};

/**
 * The connection of one provider, created on the first mount and closed a tick after the last
 * unmount: StrictMode's mount, unmount, mount reuses it instead of opening a second one.
 */
class Session {
  /** @type {Client | null} */ #client = null;
  #owns = false;
  #users = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #closeTimer;
  /** @type {Set<() => void>} */ #listeners = new Set();
  /** @type {Map<string, Inbox>} */ #inboxes = new Map();
  #status = NOT_CONNECTED;
  /** @type {() => void} */ #off = () => {};

  /**
   * @param {() => Client} open
   * @param {boolean} owns whether closing the session closes the client
   */
  constructor(open, owns) {
    this.open = open;
    this.#owns = owns;
  }

  get client() { return this.#client; }
  get status() { return this.#status; }

  /** @param {() => void} listener */
  subscribe = (listener) => {
    this.#listeners.add(listener);
    return () => { this.#listeners.delete(listener); };
  };

  acquire() {
    clearTimeout(this.#closeTimer);
    this.#users += 1;
    if (this.#client) return;
    const client = this.open();
    this.#client = client;
    this.#status = client.status;
    this.#off = client.on('status', (status) => { this.#status = status; this.#notify(); });
    this.#notify();
  }

  release() {
    this.#users -= 1;
    if (this.#users > 0) return;
    clearTimeout(this.#closeTimer);
    this.#closeTimer = setTimeout(() => this.#close(), 0);
  }

  /**
   * The shared inbox for a filter (created on first use, kept while the session lives).
   * @param {InboxFilter} filter
   * @param {number | undefined} pageSize
   */
  inbox(filter, pageSize) {
    if (!this.#client) return null;
    const key = `${filter}:${pageSize ?? ''}`;
    let inbox = this.#inboxes.get(key);
    if (!inbox) {
      inbox = createInbox(this.#client, { filter, pageSize });
      this.#inboxes.set(key, inbox);
    }
    return inbox;
  }

  #close() {
    if (this.#users > 0 || !this.#client) return;
    for (const inbox of this.#inboxes.values()) inbox.destroy();
    this.#inboxes.clear();
    this.#off();
    if (this.#owns) this.#client.close();
    this.#client = null;
    this.#status = NOT_CONNECTED;
    this.#notify();
  }

  #notify() {
    for (const listener of [...this.#listeners]) listener();
  }
}

const ClarionContext = createContext(/** @type {Session | null} */ (null));

/**
 * One connection for the components inside: `<ClarionProvider url getToken>` (or `client` to
 * share one you created with connect()).
 * @param {import('./clarion-react').ClarionProviderProps} props
 */
export function ClarionProvider({ url, getToken, transports, client, children }) {
  // getToken is read at each call: an inline arrow function does not reconnect.
  const tokenRef = useRef(getToken);
  tokenRef.current = getToken;
  const transportKey = (transports ?? []).join(',');
  const session = useMemo(() => new Session(
    () => client ?? connect(url ?? globalThis.location?.origin, {
      getToken: () => {
        if (typeof tokenRef.current !== 'function') throw new TypeError('<ClarionProvider>: getToken must be a function');
        return tokenRef.current();
      },
      transports: transportKey ? /** @type {any} */ (transportKey.split(',')) : undefined,
    }),
    !client,
  ), [url, transportKey, client]);
  useEffect(() => {
    session.acquire();
    return () => session.release();
  }, [session]);
  return createElement(ClarionContext.Provider, { value: session }, children);
}

function useSession() {
  const session = useContext(ClarionContext);
  if (!session) throw new Error('Clarion hooks need a <ClarionProvider> above them');
  return session;
}

/** The provider's client (null until the provider mounted). */
export function useClarion() {
  const session = useSession();
  return useSyncExternalStore(session.subscribe, () => session.client, () => null);
}

/** The connection's status: `{state, transport, reason?, message?}`. */
export function useClarionStatus() {
  const session = useSession();
  return useSyncExternalStore(session.subscribe, () => session.status, () => NOT_CONNECTED);
}

/**
 * Call `handler(detail)` for each client event `name` (`notification`, `state`, ...) while
 * mounted. The latest handler is used: no need to memoize it.
 * @param {keyof import('./clarion').ClientEventMap} name
 * @param {(detail: any) => void} handler
 */
export function useClarionEvent(name, handler) {
  const client = useClarion();
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => (client ? client.on(name, (detail) => ref.current(detail)) : undefined), [client, name]);
}

/**
 * @param {InboxFilter} filter
 * @param {number | undefined} pageSize
 */
function useInbox(filter, pageSize) {
  const session = useSession();
  return useSyncExternalStore(session.subscribe, () => session.inbox(filter, pageSize), () => null);
}

/** @param {Inbox | null} inbox @returns {InboxState} */
function useInboxState(inbox) {
  const subscribe = useCallback((/** @type {() => void} */ fn) => (inbox ? inbox.subscribe(fn) : noSubscription()), [inbox]);
  return useSyncExternalStore(subscribe, () => (inbox ? inbox.getState() : NO_INBOX), () => NO_INBOX);
}

/**
 * The live, paged inbox: `{notifications, unread, unseen, status, loading, hasMore, error,
 * loadMore, markRead, markUnread, archive, markSeen, readAll, clearAll, seenAll, refresh}`.
 * Components with the same filter share one list.
 * @param {import('./clarion-react').UseNotificationsOptions} [options]
 */
export function useNotifications({ filter = 'all', pageSize } = {}) {
  const inbox = useInbox(filter, pageSize);
  const state = useInboxState(inbox);
  useEffect(() => { void inbox?.load(); }, [inbox]);
  const actions = useMemo(() => {
    const missing = () => Promise.resolve(false);
    return {
      loadMore: () => inbox?.loadMore() ?? Promise.resolve(),
      refresh: () => inbox?.refresh() ?? Promise.resolve(),
      markRead: (/** @type {string} */ id) => inbox?.markRead(id) ?? missing(),
      markUnread: (/** @type {string} */ id) => inbox?.markUnread(id) ?? missing(),
      archive: (/** @type {string} */ id) => inbox?.archive(id) ?? missing(),
      markSeen: (/** @type {string[] | undefined} */ ids) => inbox?.markSeen(ids) ?? missing(),
      readAll: () => inbox?.readAll() ?? missing(),
      clearAll: () => inbox?.clearAll() ?? missing(),
      seenAll: () => inbox?.seenAll() ?? missing(),
    };
  }, [inbox]);
  return useMemo(() => ({ ...state, notifications: state.items, ...actions }), [state, actions]);
}

/** The exact unread count (the same in every component). */
export function useUnreadCount() {
  const state = useInboxState(useInbox('all', undefined));
  return state.unread;
}

/** The exact unseen count (equal to the unread count on a server that does not count `seen`). */
export function useUnseenCount() {
  const state = useInboxState(useInbox('all', undefined));
  return state.unseen;
}

const EVENT_PROPS = /** @type {const} */ ({
  onNotification: 'clarion-notification',
  onUnread: 'clarion-unread',
  onNavigate: 'clarion-navigate',
  onAction: 'clarion-action',
  onPermission: 'clarion-permission',
});

/**
 * `<clarion-inbox>` on the provider's connection and inbox: its badge, list and the hooks agree.
 * @param {import('./clarion-react').ClarionInboxProps} props
 */
export function ClarionInbox(props) {
  const { pageSize, theme, locale, className, style } = props;
  const session = useSession();
  const inbox = useInbox('all', undefined);
  /** @type {import('react').MutableRefObject<any>} */
  const ref = useRef(null);
  const handlers = useRef(props);
  handlers.current = props;
  useEffect(() => {
    const el = ref.current;
    if (el && inbox) el.inbox = inbox;
  }, [inbox, session]);
  useEffect(() => {
    const el = ref.current;
    if (!el) return undefined;
    const offs = Object.entries(EVENT_PROPS).map(([prop, name]) => {
      /** @param {Event} event */
      const listener = (event) => /** @type {any} */ (handlers.current)[prop]?.(event);
      el.addEventListener(name, listener);
      return () => el.removeEventListener(name, listener);
    });
    return () => { for (const off of offs) off(); };
  }, []);
  return createElement('clarion-inbox', {
    ref,
    'page-size': pageSize,
    theme,
    locale,
    className,
    style,
  });
}
