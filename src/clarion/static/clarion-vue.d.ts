// Types for clarion-vue.js: Vue 3 bindings for the Clarion browser client (docs/client.md, "Vue").

import type { App, ComputedRef, DefineComponent } from 'vue';
import type {
  Client, ClientEventMap, ConnectionStatus, Inbox, InboxFilter, InboxItem, InboxState, TransportName,
} from './clarion';

export interface ClarionOptions {
  /** The Clarion server's base URL; default the page's origin. */
  url?: string;
  /** Returns a user JWT minted by your backend; called whenever a fresh one is needed. */
  getToken?: () => string | Promise<string>;
  transports?: TransportName[];
  /** A client you created with connect(), instead of `url`/`getToken` (you close it). */
  client?: Client;
}

export interface ClarionPlugin {
  readonly client: Client;
  inbox(filter?: InboxFilter, pageSize?: number): Inbox;
  /** Close the connection; app.unmount() does it on Vue >= 3.5. */
  close(): void;
  install(app: App): void;
}

/** `app.use(createClarion({ url, getToken }))`: one connection for the app. */
export declare function createClarion(options?: ClarionOptions): ClarionPlugin;

export interface UseNotificationsOptions {
  filter?: InboxFilter;
  pageSize?: number;
}

export interface NotificationsRefs {
  state: ComputedRef<InboxState>;
  notifications: ComputedRef<readonly InboxItem[]>;
  unread: ComputedRef<number>;
  unseen: ComputedRef<number>;
  status: ComputedRef<ConnectionStatus>;
  loading: ComputedRef<boolean>;
  loaded: ComputedRef<boolean>;
  hasMore: ComputedRef<boolean>;
  error: ComputedRef<Error | null>;
  loadMore(): Promise<void>;
  refresh(): Promise<void>;
  markRead(id: string): Promise<boolean>;
  markUnread(id: string): Promise<boolean>;
  archive(id: string): Promise<boolean>;
  markSeen(ids?: string[]): Promise<boolean>;
  readAll(): Promise<boolean>;
  clearAll(): Promise<boolean>;
  seenAll(): Promise<boolean>;
}

export declare function useNotifications(options?: UseNotificationsOptions): NotificationsRefs;
export declare function useUnreadCount(): ComputedRef<number>;
export declare function useUnseenCount(): ComputedRef<number>;
export declare function useClarionStatus(): ComputedRef<ConnectionStatus>;
export declare function useClarion(): Client;
export declare function useClarionEvent<K extends keyof ClientEventMap>(name: K, handler: (detail: ClientEventMap[K]) => void): void;

/** `<ClarionInbox page-size theme locale />`: the widget on the app's connection and inbox. */
export declare const ClarionInbox: DefineComponent<{ pageSize?: number; theme?: 'light' | 'dark'; locale?: string }>;
