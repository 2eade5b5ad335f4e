// A React app on Clarion: run `npm install && npm start` here (see examples/README.md).
//
// <ClarionProvider> opens one connection for the whole app; <UnreadBadge>, <Inbox> and the
// <ClarionInbox /> widget read the same inbox, so marking a notification read in one of them
// updates the others at once.

import { StrictMode, useState } from 'react';
import { createRoot } from 'react-dom/client';
import {
  ClarionInbox,
  ClarionProvider,
  useClarionEvent,
  useClarionStatus,
  useNotifications,
  useUnreadCount,
} from '@clarion/client/react';

/** Our backend (examples/fastapi_backend) mints a short-lived token for the logged-in user. */
async function getToken() {
  const response = await fetch('/clarion-token');
  if (response.status === 401) location.assign('/login');
  return (await response.json()).token;
}

function UnreadBadge() {
  const unread = useUnreadCount();
  return <span data-testid="app-unread" aria-label={`${unread} unread`}>{unread} unread</span>;
}

function Status() {
  const { state, transport } = useClarionStatus();
  return <small data-testid="app-status" data-state={state}>{state}{transport ? ` · ${transport}` : ''}</small>;
}

function Inbox() {
  const { notifications, loaded, hasMore, loadMore, markRead, markUnread, archive, readAll } = useNotifications();
  const [last, setLast] = useState('');
  useClarionEvent('notification', ({ notification }) => setLast(notification.title));
  if (!loaded) return <p>Loading…</p>;
  return (
    <section>
      <p data-testid="app-last">{last && `Latest: ${last}`}</p>
      <button type="button" onClick={readAll}>Mark all read</button>
      <ul data-testid="app-list">
        {notifications.map((n) => (
          <li key={n.id} data-testid="app-item" data-id={n.id} data-read={String(Boolean(n.read_at))}>
            <strong>{n.title}</strong> {n.body}{' '}
            {n.read_at
              ? <button type="button" onClick={() => markUnread(n.id)}>Mark unread</button>
              : <button type="button" data-testid="app-read" onClick={() => markRead(n.id)}>Mark read</button>}
            <button type="button" data-testid="app-archive" onClick={() => archive(n.id)}>Archive</button>
          </li>
        ))}
      </ul>
      {notifications.length === 0 && <p data-testid="app-empty">Nothing here.</p>}
      {hasMore && <button type="button" onClick={loadMore}>Load more</button>}
    </section>
  );
}

function App({ clarionUrl }) {
  // Unchecking "Live" unmounts the provider: its connection closes.
  const [live, setLive] = useState(true);
  const toggle = <label><input type="checkbox" data-testid="app-live" checked={live} onChange={(e) => setLive(e.target.checked)} /> Live</label>;
  if (!live) return <header><strong>Acme</strong>{toggle}</header>;
  return (
    <ClarionProvider url={clarionUrl} getToken={getToken}>
      <header>
        <strong>Acme</strong>
        {toggle}
        <ClarionInbox onNavigate={(event) => event.preventDefault()} />
        <UnreadBadge />
        <Status />
      </header>
      <main>
        <Inbox />
      </main>
    </ClarionProvider>
  );
}

const config = await (await fetch('/api/config')).json();
createRoot(document.getElementById('root')).render(
  <StrictMode>
    <App clarionUrl={config.clarion_url} />
  </StrictMode>,
);
