// clarion-vue.js: Vue 3 bindings for clarion.js. `vue` is a peer dependency: a bundler resolves
// it, or a page maps it with an import map. No build step here.
//
// `app.use(createClarion({url, getToken}))` opens one connection for the app (closed with
// app.unmount()); the composables return refs over the headless inbox of clarion.js
// (createInbox), shared by every component with the same filter, and stop following it when
// their component goes. docs/client.md ("Vue") shows the usage; types: clarion-vue.d.ts.

import { computed, defineComponent, h, inject, onMounted, onScopeDispose, ref, shallowRef } from 'vue';
import { connect, createInbox } from './clarion.js';
import './clarion-inbox.js';

/** @typedef {import('./clarion').Client} Client */
/** @typedef {import('./clarion').Inbox} Inbox */
/** @typedef {import('./clarion').InboxFilter} InboxFilter */

const KEY = Symbol('clarion');

/**
 * The plugin: one connection and its shared inboxes.
 * @param {import('./clarion-vue').ClarionOptions} options
 */
export function createClarion({ url, getToken, transports, client: given } = {}) {
  /** @type {Client | null} */
  let client = null;
  /** @type {Map<string, Inbox>} */
  const inboxes = new Map();
  const clarion = {
    /** The client, connected when the plugin is installed. */
    get client() {
      client ??= given ?? connect(url ?? globalThis.location?.origin, {
        getToken: () => {
          if (typeof getToken !== 'function') throw new TypeError('createClarion(): getToken must be a function');
          return getToken();
        },
        transports,
      });
      return client;
    },
    /**
     * The shared inbox for a filter.
     * @param {InboxFilter} filter
     * @param {number} [pageSize]
     */
    inbox(filter = 'all', pageSize) {
      const key = `${filter}:${pageSize ?? ''}`;
      let inbox = inboxes.get(key);
      if (!inbox) {
        inbox = createInbox(this.client, { filter, pageSize });
        inboxes.set(key, inbox);
      }
      return inbox;
    },
    /** Close the connection (app.unmount() does); a client passed in is left open. */
    close() {
      for (const inbox of inboxes.values()) inbox.destroy();
      inboxes.clear();
      if (client && !given) client.close();
      client = null;
    },
    /** @param {import('vue').App} app */
    install(app) {
      app.provide(KEY, clarion);
      void clarion.client;
      // Vue >= 3.5 says when the app goes; older apps call clarion.close() themselves.
      /** @type {any} */ (app).onUnmount?.(() => clarion.close());
    },
  };
  return clarion;
}

/** @returns {ReturnType<typeof createClarion>} */
function useSession() {
  const session = /** @type {ReturnType<typeof createClarion> | null} */ (inject(KEY, null));
  if (!session) throw new Error('Clarion composables need app.use(createClarion(...))');
  return session;
}

/** The app's client. */
export function useClarion() {
  return useSession().client;
}

/**
 * A read-only ref of the connection's status, `{state, transport, reason?, message?}`.
 */
export function useClarionStatus() {
  const client = useClarion();
  const status = shallowRef(client.status);
  onScopeDispose(client.on('status', (value) => { status.value = value; }));
  return computed(() => status.value);
}

/**
 * Call `handler(detail)` for each client event `name` while the component lives.
 * @param {keyof import('./clarion').ClientEventMap} name
 * @param {(detail: any) => void} handler
 */
export function useClarionEvent(name, handler) {
  onScopeDispose(useClarion().on(name, handler));
}

/**
 * The inbox's state as a shallow ref, followed until the component goes.
 * @param {Inbox} inbox
 */
function follow(inbox) {
  const state = shallowRef(inbox.getState());
  onScopeDispose(inbox.subscribe((value) => { state.value = value; }));
  return state;
}

/**
 * The live, paged inbox as refs (`notifications`, `unread`, `unseen`, `status`, `loading`,
 * `hasMore`, `error`) and its actions.
 * @param {import('./clarion-vue').UseNotificationsOptions} [options]
 */
export function useNotifications({ filter = 'all', pageSize } = {}) {
  const inbox = useSession().inbox(filter, pageSize);
  const state = follow(inbox);
  void inbox.load();
  return {
    state: computed(() => state.value),
    notifications: computed(() => state.value.items),
    unread: computed(() => state.value.unread),
    unseen: computed(() => state.value.unseen),
    status: computed(() => state.value.status),
    loading: computed(() => state.value.loading),
    loaded: computed(() => state.value.loaded),
    hasMore: computed(() => state.value.hasMore),
    error: computed(() => state.value.error),
    loadMore: () => inbox.loadMore(),
    refresh: () => inbox.refresh(),
    markRead: (/** @type {string} */ id) => inbox.markRead(id),
    markUnread: (/** @type {string} */ id) => inbox.markUnread(id),
    archive: (/** @type {string} */ id) => inbox.archive(id),
    markSeen: (/** @type {string[] | undefined} */ ids) => inbox.markSeen(ids),
    readAll: () => inbox.readAll(),
    clearAll: () => inbox.clearAll(),
    seenAll: () => inbox.seenAll(),
  };
}

/** A read-only ref of the exact unread count (the same in every component). */
export function useUnreadCount() {
  const state = follow(useSession().inbox('all'));
  return computed(() => state.value.unread);
}

/** A read-only ref of the unseen count (equal to unread on a server that does not count `seen`). */
export function useUnseenCount() {
  const state = follow(useSession().inbox('all'));
  return computed(() => state.value.unseen);
}

/**
 * `<ClarionInbox />`: the `<clarion-inbox>` widget on the app's connection and inbox. Its DOM
 * events (`clarion-navigate`, ...) reach listeners such as `@clarion-navigate`.
 */
export const ClarionInbox = defineComponent({
  name: 'ClarionInbox',
  props: { pageSize: Number, theme: String, locale: String },
  setup(props) {
    const session = useSession();
    const el = ref(/** @type {any} */ (null));
    onMounted(() => { el.value.inbox = session.inbox('all'); });
    return () => h('clarion-inbox', {
      ref: el, 'page-size': props.pageSize, theme: props.theme, locale: props.locale,
    });
  },
});
