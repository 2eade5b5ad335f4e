// A Vue 3 app on Clarion: run `npm install && npm start` here (see examples/README.md).
//
// The plugin opens one connection for the app; <UnreadBadge>, <Inbox> and the <ClarionInbox>
// widget read the same inbox, so marking a notification read in one updates the others at once.
// Written with render functions so it needs no compiler; single-file components work the same.

import { createApp, defineComponent, h, ref } from 'vue';
import {
  ClarionInbox,
  createClarion,
  useClarionEvent,
  useClarionStatus,
  useNotifications,
  useUnreadCount,
} from '@clarion/client/vue';

/** Our backend (examples/fastapi_backend) mints a short-lived token for the logged-in user. */
async function getToken() {
  const response = await fetch('/clarion-token');
  if (response.status === 401) location.assign('/login');
  return (await response.json()).token;
}

const UnreadBadge = defineComponent(() => {
  const unread = useUnreadCount();
  return () => h('span', { 'data-testid': 'app-unread' }, `${unread.value} unread`);
});

const Status = defineComponent(() => {
  const status = useClarionStatus();
  return () => h('small', { 'data-testid': 'app-status', 'data-state': status.value.state },
    status.value.transport ? `${status.value.state} · ${status.value.transport}` : status.value.state);
});

const Inbox = defineComponent(() => {
  const { notifications, loaded, hasMore, loadMore, markRead, markUnread, archive, readAll } = useNotifications();
  const last = ref('');
  useClarionEvent('notification', ({ notification }) => { last.value = notification.title; });
  return () => {
    if (!loaded.value) return h('p', 'Loading…');
    return h('section', [
      h('p', { 'data-testid': 'app-last' }, last.value && `Latest: ${last.value}`),
      h('button', { type: 'button', onClick: readAll }, 'Mark all read'),
      h('ul', { 'data-testid': 'app-list' }, notifications.value.map((n) => h('li', {
        key: n.id, 'data-testid': 'app-item', 'data-id': n.id, 'data-read': String(Boolean(n.read_at)),
      }, [
        h('strong', n.title), ` ${n.body ?? ''} `,
        n.read_at
          ? h('button', { type: 'button', onClick: () => markUnread(n.id) }, 'Mark unread')
          : h('button', { type: 'button', 'data-testid': 'app-read', onClick: () => markRead(n.id) }, 'Mark read'),
        h('button', { type: 'button', 'data-testid': 'app-archive', onClick: () => archive(n.id) }, 'Archive'),
      ]))),
      notifications.value.length === 0 ? h('p', { 'data-testid': 'app-empty' }, 'Nothing here.') : null,
      hasMore.value ? h('button', { type: 'button', onClick: loadMore }, 'Load more') : null,
    ]);
  };
});

const App = defineComponent(() => () => [
  h('header', [h('strong', 'Acme'), h(ClarionInbox), h(UnreadBadge), h(Status)]),
  h('main', [h(Inbox)]),
]);

const config = await (await fetch('/api/config')).json();
const app = createApp(App);
app.use(createClarion({ url: config.clarion_url, getToken }));
app.mount('#root');
// Unmounting the app closes its connection: `app.unmount()`.
globalThis.clarionExampleApp = app;
