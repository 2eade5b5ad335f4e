// Clarion service worker: shows Web Push notifications and opens their link on click.
//
// Register it from your page (its scope decides which pages it controls):
//   navigator.serviceWorker.register('/static/sw.js', { scope: '/' })
// A scope above /static/ needs the server to send `Service-Worker-Allowed: /` with this file.
// Clarion's push payload is `{id, type, priority, title, body, url, icon}` (docs/audiences.md);
// a full notification object (docs/protocol.md) or `{"notification": {...}}` works too.

const PRIORITIES = ['low', 'normal', 'high', 'critical'];

/**
 * The absolute URL when `url` is http(s) or relative to this worker's scope, else null:
 * javascript:, data: and the like are never opened.
 * @param {unknown} url
 */
function safeUrl(url) {
  if (typeof url !== 'string' || url.trim() === '') return null;
  try {
    const resolved = new URL(url, self.registration.scope);
    return resolved.protocol === 'https:' || resolved.protocol === 'http:' ? resolved.href : null;
  } catch {
    return null;
  }
}

/** @param {PushEvent} event */
function readPayload(event) {
  if (!event.data) return {};
  try {
    const payload = event.data.json();
    return payload && typeof payload === 'object' && payload.notification && typeof payload.notification === 'object'
      ? payload.notification
      : payload ?? {};
  } catch {
    return { title: event.data.text() };
  }
}

self.addEventListener('push', (event) => {
  const n = readPayload(/** @type {PushEvent} */ (event));
  const priority = PRIORITIES.includes(n.priority) ? n.priority : 'normal';
  const icon = typeof n.icon === 'string' && /^https?:/i.test(n.icon) ? safeUrl(n.icon) : null;
  const title = typeof n.title === 'string' && n.title ? n.title : 'New notification';
  /** @type {NotificationOptions & Record<string, unknown>} */
  const options = {
    body: typeof n.body === 'string' ? n.body : '',
    // One system notification per Clarion notification, even when an open tab shows it too.
    tag: typeof n.id === 'string' ? n.id : undefined,
    data: { id: n.id ?? null, url: safeUrl(n.url) },
    requireInteraction: priority === 'critical',
    silent: priority === 'low',
  };
  if (icon) options.icon = icon;
  // Chrome counts a push that shows nothing against the site: always show one.
  /** @type {ExtendableEvent} */ (event).waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener('notificationclick', (event) => {
  const click = /** @type {NotificationEvent} */ (event);
  click.notification.close();
  const url = safeUrl(click.notification.data?.url) ?? self.registration.scope;
  click.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    // A tab already on that page: focus it. Else a tab of this site: focus it and navigate.
    const exact = windows.find((client) => client.url === url);
    if (exact) return exact.focus();
    const sameOrigin = windows.find((client) => new URL(client.url).origin === new URL(url).origin);
    if (sameOrigin) {
      const focused = await sameOrigin.focus();
      return focused.navigate(url).catch(() => self.clients.openWindow(url));
    }
    return self.clients.openWindow(url);
  })());
});

// Take over at once on update, so a fixed worker does not wait for every tab to close.
self.addEventListener('install', () => { self.skipWaiting(); });
self.addEventListener('activate', (event) => {
  /** @type {ExtendableEvent} */ (event).waitUntil(self.clients.claim());
});
