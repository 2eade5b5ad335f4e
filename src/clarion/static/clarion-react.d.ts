// Types for clarion-react.js: React bindings for the Clarion browser client (docs/client.md, "React").

import type { CSSProperties, ReactElement, ReactNode } from 'react';
import type {
  Client, ClientEventMap, ConnectionStatus, InboxFilter, InboxNavigateDetail, InboxState,
  Notification, InboxItem, NotificationAction, TransportName,
} from './clarion';

export interface ClarionProviderProps {
  /** The Clarion server's base URL; default the page's origin. Changing it reconnects. */
  url?: string;
  /** Returns a user JWT minted by your backend; called whenever a fresh one is needed. */
  getToken?: () => string | Promise<string>;
  /** The transports to try, in order (default WebSocket, SSE, long-polling). */
  transports?: TransportName[];
  /** A client you created with connect(), instead of `url`/`getToken` (you close it). */
  client?: Client;
  children?: ReactNode;
}

/** One connection for every Clarion hook and `<ClarionInbox />` inside it. */
export declare function ClarionProvider(props: ClarionProviderProps): ReactElement;

export interface UseNotificationsOptions {
  /** `all` (default: not archived), `unread` or `archived`. Components with the same filter share a list. */
  filter?: InboxFilter;
  pageSize?: number;
}

export interface NotificationsResult extends InboxState {
  /** The list, newest first (the same array as `items`). */
  notifications: readonly InboxItem[];
  loadMore(): Promise<void>;
  refresh(): Promise<void>;
  /** Optimistic: applied at once, undone when the server refuses (resolves false, `error` is set). */
  markRead(id: string): Promise<boolean>;
  markUnread(id: string): Promise<boolean>;
  archive(id: string): Promise<boolean>;
  /** The ids given, or every unseen one in the list. */
  markSeen(ids?: string[]): Promise<boolean>;
  readAll(): Promise<boolean>;
  clearAll(): Promise<boolean>;
  seenAll(): Promise<boolean>;
}

export declare function useNotifications(options?: UseNotificationsOptions): NotificationsResult;
export declare function useUnreadCount(): number;
export declare function useUnseenCount(): number;
export declare function useClarionStatus(): ConnectionStatus;
/** The provider's client, or null before the provider mounted. */
export declare function useClarion(): Client | null;
export declare function useClarionEvent<K extends keyof ClientEventMap>(name: K, handler: (detail: ClientEventMap[K]) => void): void;

export interface ClarionInboxProps {
  pageSize?: number;
  theme?: 'light' | 'dark';
  locale?: string;
  className?: string;
  style?: CSSProperties;
  onNotification?: (event: CustomEvent<{ notification: Notification; replay: boolean }>) => void;
  onUnread?: (event: CustomEvent<{ count: number }>) => void;
  /** Cancelable: call `event.preventDefault()` to route in your app instead of a page load. */
  onNavigate?: (event: CustomEvent<InboxNavigateDetail>) => void;
  onAction?: (event: CustomEvent<{ notification: InboxItem | Notification; action: NotificationAction }>) => void;
  onPermission?: (event: CustomEvent<{ permission: NotificationPermission }>) => void;
}

/** The `<clarion-inbox>` widget on the provider's connection and inbox. */
export declare function ClarionInbox(props: ClarionInboxProps): ReactElement;
