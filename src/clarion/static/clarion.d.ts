// Types for clarion.js and clarion-inbox.js (the Clarion browser client and inbox widget).
// The wire format they describe is docs/protocol.md; the behaviour is docs/client.md.

export type TransportName = 'websocket' | 'sse' | 'poll';
export type Priority = 'low' | 'normal' | 'high' | 'critical';

export interface Actor {
  id: string;
  name: string;
  avatar: string | null;
}

export interface NotificationAction {
  id: string;
  label: string;
  /** A link to follow; without one the action is a callback the application handles. */
  url?: string | null;
}

/** A notification as published and delivered. */
export interface Notification {
  id: string;
  /** The application's category: `message`, `friend_request`, `like`, `system_alert`, ... */
  type: string;
  priority: Priority;
  title: string;
  body: string | null;
  icon: string | null;
  actor: Actor | null;
  url: string | null;
  actions: NotificationAction[];
  data: Record<string, unknown>;
  /** ISO 8601, UTC. */
  created_at: string;
  expires_at: string | null;
  collapse_key: string | null;
  /** How many earlier unread notifications with the same `collapse_key` this one stands for. */
  collapsed?: number;
}

/** A notification in the user's inbox, with its per-user state. */
export interface InboxItem extends Notification {
  read_at: string | null;
  archived_at: string | null;
  seen_at: string | null;
}

// ---- wire events ----

export interface WelcomeEvent {
  type: 'welcome';
  user: string;
  cursor: string;
  streams: string[];
  heartbeat: number;
  expires_at: number | string | null;
}

export interface NotificationEvent {
  type: 'notification';
  stream: string;
  seq: number;
  /** Other streams of a notification sent to several audiences (the server shows it once). */
  also?: Record<string, number>;
  /** Unread notifications this one replaces (same `collapse_key`), and how many it stands for. */
  replaces?: string[];
  collapsed?: number;
  notification: Notification;
}

/** The user's live connections start (`follow`) or stop (`unfollow`) receiving a topic. */
export interface FollowEvent { type: 'follow' | 'unfollow'; stream: string; seq: number; topic: string; at: number }
/** The user changed preferences: `muted` types are no longer delivered in-app. */
export interface PreferencesEvent { type: 'preferences'; stream: string; seq: number; muted: string[] }

export type StateChange =
  'read' | 'unread' | 'archived' | 'read_all' | 'archive_all' | 'seen' | 'seen_all' | 'removed';

export interface StateEvent {
  type: 'state';
  stream: string;
  seq: number;
  change: StateChange;
  /** The notifications changed; empty for `read_all` and `archive_all`. */
  ids: string[];
  at: string;
  /** The user's unread count after the change; absent on a `removed` (recall) event on a
   * shared stream, whose count differs per follower (the client asks for it). */
  unread?: number;
  /** Not yet shown in an open inbox (`seen`, `seen_all` lower it); absent where `unread` is. */
  unseen?: number;
}

export interface UnreadEvent { type: 'unread'; count: number; unseen: number }
export interface ResyncEvent { type: 'resync'; reason: string }
export interface ErrorEvent { type: 'error'; code: string; message: string }
export interface PongEvent { type: 'pong' }

export type WireEvent =
  | WelcomeEvent | NotificationEvent | StateEvent | FollowEvent | PreferencesEvent
  | UnreadEvent | ResyncEvent | ErrorEvent | PongEvent;

// ---- client events ----

export interface ConnectionStatus {
  /** `connecting` also covers waiting to retry; `offline` is the browser offline, a refusal, or close(). */
  state: 'connecting' | 'live' | 'offline';
  transport: TransportName | null;
  /**
   * Why the client is offline: `offline` (no network or closed), `forbidden` (this origin or
   * user refused: close code 4003, HTTP 403) or `unauthorized` (the token refused, and a fresh
   * one from `getToken()` refused too). After a refusal the client waits for `reconnect()`.
   */
  reason?: 'offline' | 'forbidden' | 'unauthorized';
  /** The server's words for a refusal, e.g. `invalid token: Signature verification failed`. */
  message?: string;
}

export interface NotificationEventDetail {
  notification: Notification;
  /** Ids of the unread notifications it replaces (remove them from view). */
  replaces: string[];
  stream: string;
  seq: number;
  /** True for events replayed after (re)connecting: missed while away, not just arrived. */
  replay: boolean;
}

export interface StateEventDetail {
  stream: string;
  seq: number;
  change: StateChange;
  ids: string[];
  at: string;
  unread: number;
  /** Present when the server counts `seen` (docs/client.md, "Seen and unseen"). */
  unseen?: number;
  replay: boolean;
}

export interface UnreadEventDetail { count: number; unseen?: number }
export interface ClientErrorDetail { code: string; message: string; [key: string]: unknown }

export interface ClientEventMap {
  notification: NotificationEventDetail;
  state: StateEventDetail;
  unread: UnreadEventDetail;
  status: ConnectionStatus;
  welcome: WelcomeEvent;
  follow: Omit<FollowEvent, 'type'>;
  unfollow: Omit<FollowEvent, 'type'>;
  preferences: Omit<PreferencesEvent, 'type'>;
  /** Every event as received from the server, duplicates included. */
  raw: WireEvent;
  error: ClientErrorDetail;
}

// ---- client ----

export interface ConnectOptions {
  /**
   * Returns a user JWT. Called at start, when the token is within 15 s of its `exp`, when the
   * server refuses it (4001, 4002, HTTP 401), and ahead of expiry on a WebSocket.
   */
  getToken: () => string | Promise<string>;
  /** The transports to try, in order. Default `['websocket', 'sse', 'poll']`. */
  transports?: TransportName[];
  /** A cursor to resume from (for instance `client.cursor` saved earlier). */
  cursor?: string | null;
}

export interface ListOptions {
  /** `next_cursor` from the previous page. */
  cursor?: string | null;
  limit?: number;
  filter?: 'all' | 'unread' | 'archived';
}

export interface ListPage {
  items: InboxItem[];
  next_cursor: string | null;
  unread: number;
  unseen: number;
}

/** Every state call answers JSON holding at least the new unread count. */
export interface Channels { in_app: boolean; push: boolean; email: boolean; mandatory: boolean; custom: boolean }
export interface QuietHours { start: string; end: string }
export interface Preferences {
  timezone: string;
  quiet_hours: QuietHours | null;
  quiet_now: boolean;
  types: Record<string, Channels>;
}
export interface PreferencesChange {
  timezone?: string;
  quiet_hours?: QuietHours;
  clear_quiet_hours?: boolean;
  /** null: back to the app's default. */
  types?: Record<string, { in_app?: boolean | null; push?: boolean | null; email?: boolean | null }>;
}

export interface StateAnswer {
  unread: number;
  unseen: number;
  [key: string]: unknown;
}

export declare class ClarionError extends Error {
  readonly name: 'ClarionError';
  /** HTTP status. */
  readonly status: number;
  /** The server's error code, or `http_<status>`. */
  readonly code: string;
  readonly field: string | null;
  constructor(status: number, code: string, message: string, field?: string | null);
}

export declare class Client extends EventTarget {
  constructor(url: string, options: ConnectOptions);
  readonly status: ConnectionStatus;
  readonly transport: TransportName | null;
  /** The position to resume from, as an opaque cursor; null before the first welcome. */
  readonly cursor: string | null;
  /** The position as `{stream: seq}`. */
  readonly position: Record<string, number>;
  /** The last unread count the server sent, or null before the first. */
  readonly unread: number | null;
  /** The last unseen count the server sent, or null (before the first, or a server without `seen`). */
  readonly unseen: number | null;

  /** Listen to an event; the listener gets its detail. Returns a function that unsubscribes. */
  on<K extends keyof ClientEventMap>(name: K, listener: (detail: ClientEventMap[K], event: CustomEvent<ClientEventMap[K]>) => void): () => void;
  addEventListener<K extends keyof ClientEventMap>(name: K, listener: (event: CustomEvent<ClientEventMap[K]>) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(name: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof ClientEventMap>(name: K, listener: (event: CustomEvent<ClientEventMap[K]>) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(name: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;

  /** Reconnect at once, keeping the position (also after a 4003 stop). */
  reconnect(): void;
  /** Close the connection for good; the inbox methods keep working. */
  close(): void;

  list(options?: ListOptions): Promise<ListPage>;
  markRead(id: string): Promise<StateAnswer>;
  markUnread(id: string): Promise<StateAnswer>;
  archive(id: string): Promise<StateAnswer>;
  readAll(): Promise<StateAnswer>;
  /** What an open inbox showed (POST /v1/me/notifications/seen, up to 100 ids). */
  markSeen(ids: string[]): Promise<StateAnswer>;
  seenAll(): Promise<StateAnswer>;
  /** Archive everything (POST /v1/me/notifications/archive-all). */
  clearAll(): Promise<StateAnswer>;
  /** POST /v1/me/notifications/seen `{"ids"}`: shown in an open inbox. */
  markSeen(ids: string[]): Promise<StateAnswer>;
  /** POST /v1/me/notifications/seen-all. */
  seenAll(): Promise<StateAnswer>;
  unreadCount(): Promise<number>;
  topics(): Promise<{ topics: { topic: string; granted: boolean }[] }>;
  /** Follow a topic (allowed by the token's `topics` claim or by the app); live at once. */
  follow(topic: string): Promise<{ topic: string; following: boolean }>;
  unfollow(topic: string): Promise<{ topic: string; following: boolean }>;
  preferences(): Promise<Preferences>;
  setPreferences(change: PreferencesChange): Promise<Preferences>;

  /** Subscribe to Web Push and register it (POST /v1/me/push-subscriptions). */
  subscribePush(registration: ServiceWorkerRegistration, applicationServerKey: string | BufferSource): Promise<PushSubscription>;
  /** Unsubscribe from Web Push, here and on the server (DELETE /v1/me/push-subscriptions). */
  unsubscribePush(registration: ServiceWorkerRegistration): Promise<boolean>;
}

export declare const TRANSPORTS: readonly TransportName[];
export declare function connect(url: string, options: ConnectOptions): Client;
export declare function encodeCursor(position: Map<string, number> | Record<string, number>): string;
export declare function decodeCursor(cursor: string | null | undefined): Map<string, number> | null;
/** The absolute URL when `url` is http(s) or relative, else null (javascript:, data:, ...). */
export declare function safeUrl(url: unknown, base?: string): string | null;

// ---- the headless inbox ----

export type InboxFilter = 'all' | 'unread' | 'archived';

export interface InboxOptions {
  /** Which notifications the list holds; default `all` (everything not archived). */
  filter?: InboxFilter;
  /** Notifications per page; default 20. */
  pageSize?: number;
}

/** An immutable snapshot: a new object after each change, the same one otherwise. */
export interface InboxState {
  /** Newest first; each item is frozen and replaced (not mutated) when it changes. */
  readonly items: readonly InboxItem[];
  /** Exact unread count (the server's, adjusted at once by optimistic actions and live events). */
  readonly unread: number;
  /** Exact unseen count from a server that counts `seen`; otherwise equal to `unread`. */
  readonly unseen: number;
  readonly status: ConnectionStatus;
  readonly loading: boolean;
  /** The first page arrived. */
  readonly loaded: boolean;
  /** More pages wait on the server (false once the last page is loaded). */
  readonly hasMore: boolean;
  /** The last failed load or action (its optimistic change was undone), or null. */
  readonly error: Error | null;
}

export interface InboxAddedDetail {
  notification: InboxItem;
  replay: boolean;
  /** Ids it replaced (collapse_key). */
  replaced: string[];
}

/** The inbox state machine that `<clarion-inbox>`, React and Vue bind to. */
export declare class Inbox {
  constructor(client: Client, options?: InboxOptions);
  readonly client: Client;
  readonly filter: InboxFilter;
  getState(): InboxState;
  /** Called after every change; returns the unsubscribe function. */
  subscribe(listener: (state: InboxState) => void): () => void;
  on(name: 'added', handler: (detail: InboxAddedDetail) => void): () => void;
  on(name: 'error', handler: (detail: { error: Error; action: string }) => void): () => void;
  /** The first page: once the connection is live (or after 3 s, or at once with `now`). */
  load(options?: { now?: boolean }): Promise<void>;
  loadMore(): Promise<void>;
  refresh(): Promise<void>;
  /** Optimistic actions: applied at once, undone if the server refuses; resolve to whether it accepted. */
  markRead(id: string): Promise<boolean>;
  markUnread(id: string): Promise<boolean>;
  archive(id: string): Promise<boolean>;
  readAll(): Promise<boolean>;
  clearAll(): Promise<boolean>;
  /** Mark seen: the given ids, or every unseen one in the list. */
  markSeen(ids?: string[]): Promise<boolean>;
  seenAll(): Promise<boolean>;
  /** Remove notifications of these types from the list (muted in-app). */
  dropTypes(types: string[]): void;
  /** Stop following the client (which stays open). */
  destroy(): void;
}

export declare function createInbox(client: Client, options?: InboxOptions): Inbox;
export declare function inFilter(filter: InboxFilter, notification: InboxItem): boolean;

// ---- <clarion-inbox> ----

export interface InboxStrings {
  title: string;
  bellLabel: (unread: number) => string;
  markAllRead: string;
  clearAll: string;
  markRead: string;
  markUnread: string;
  dismiss: string;
  closeToast: string;
  empty: string;
  emptyHint: string;
  loading: string;
  loadFailed: string;
  retry: string;
  actionFailed: string;
  enableDesktop: string;
  highPriority: string;
  critical: string;
  acknowledge: string;
  open: string;
  newFrom: (actor: string, title: string) => string;
  live: string;
  connecting: string;
  offline: string;
  transports: Record<string, string>;
}

export interface InboxNavigateDetail {
  notification: InboxItem | Notification;
  url: string;
  action: NotificationAction | null;
}

export interface InboxEventMap {
  /** A new notification (once per id). */
  'clarion-notification': CustomEvent<{ notification: Notification; replay: boolean }>;
  'clarion-unread': CustomEvent<{ count: number; unseen: number }>;
  /** Cancelable: call preventDefault() to route inside a single-page app instead. */
  'clarion-navigate': CustomEvent<InboxNavigateDetail>;
  /** An action without a URL was clicked: the application handles it. */
  'clarion-action': CustomEvent<{ notification: InboxItem | Notification; action: NotificationAction }>;
  'clarion-permission': CustomEvent<{ permission: NotificationPermission }>;
}

/**
 * `<clarion-inbox server="https://..." token="...">`: bell, badge, dropdown inbox, toasts,
 * critical modal and desktop notifications. Attributes: `server` (default: the page's origin),
 * `token` (simple pages; prefer the `getToken` property), `transports` (e.g. `"sse,poll"`),
 * `locale`, `page-size`, `theme` (`light` | `dark`; default follows prefers-color-scheme).
 */
export declare class ClarionInbox extends HTMLElement {
  static observedAttributes: string[];
  /** Type -> icon: SVG path data (24x24 viewBox, stroked) or a short text such as an emoji. */
  static typeIcons: Record<string, string[] | string>;
  static strings: InboxStrings;

  /** Returns a user JWT; takes precedence over the `token` attribute. */
  getToken: (() => string | Promise<string>) | null;
  /** The client in use; set it to share a client created with connect(). */
  client: Client | null;
  /** The headless inbox it draws; set it to share one (the React and Vue bindings do). */
  inbox: Inbox | null;
  readonly unread: number;
  /** Not yet shown in an open inbox; the badge counts it with `badge="unseen"`. */
  readonly unseen: number;
  readonly isOpen: boolean;
  open(): void;
  close(options?: { restoreFocus?: boolean }): void;
  toggle(): void;
  refresh(): Promise<void>;

  addEventListener<K extends keyof InboxEventMap>(type: K, listener: (this: ClarionInbox, ev: InboxEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener<K extends keyof HTMLElementEventMap>(type: K, listener: (this: ClarionInbox, ev: HTMLElementEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
}

declare global {
  interface HTMLElementTagNameMap {
    'clarion-inbox': ClarionInbox;
  }
}
