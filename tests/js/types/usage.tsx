// What an app writes, type-checked against clarion.d.ts, clarion-react.d.ts and clarion-vue.d.ts:
// a wrong name or shape here fails tests/test_js.py.

import { connect, createInbox, type InboxItem, type InboxState } from '@clarion/client';
import {
  ClarionInbox, ClarionProvider, useClarionEvent, useClarionStatus, useNotifications, useUnreadCount,
} from '@clarion/client/react';
import { createClarion, useNotifications as useVueNotifications, useUnreadCount as useVueUnread } from '@clarion/client/vue';

const client = connect('https://clarion.example.com', { getToken: async () => 'jwt' });
const inbox = createInbox(client, { filter: 'unread', pageSize: 10 });
const state: InboxState = inbox.getState();
const first: InboxItem | undefined = state.items[0];
const unsubscribe: () => void = inbox.subscribe((s) => console.log(s.unread, s.unseen, s.hasMore));
inbox.on('added', ({ notification, replay }) => console.log(notification.title, replay));
inbox.on('error', ({ error, action }) => console.log(error.message, action));
void inbox.markRead(first?.id ?? '').then((accepted: boolean) => accepted);
void client.markSeen(['a']);
unsubscribe();

function Badge() {
  const unread: number = useUnreadCount();
  const { state: connection } = useClarionStatus();
  useClarionEvent('notification', ({ notification }) => console.log(notification.priority));
  return <span title={connection}>{unread}</span>;
}

function List() {
  const { notifications, markRead, loadMore, hasMore } = useNotifications({ filter: 'all' });
  return (
    <ul>
      {notifications.map((n) => <li key={n.id} onClick={() => void markRead(n.id)}>{n.title}</li>)}
      {hasMore && <button onClick={() => void loadMore()}>More</button>}
    </ul>
  );
}

export function App() {
  return (
    <ClarionProvider url="https://clarion.example.com" getToken={() => 'jwt'} transports={['websocket', 'sse']}>
      <ClarionInbox pageSize={10} theme="dark" onNavigate={(event) => event.preventDefault()} />
      <Badge />
      <List />
    </ClarionProvider>
  );
}

export const plugin = createClarion({ url: 'https://clarion.example.com', getToken: async () => 'jwt' });
export function vueSetup() {
  const { notifications, markRead } = useVueNotifications({ filter: 'archived' });
  const unread = useVueUnread();
  return { count: unread.value + notifications.value.length, markRead };
}
