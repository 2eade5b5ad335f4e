// <clarion-inbox>: a drop-in notification center (bell, badge, dropdown, toasts, critical
// modal, desktop notifications) over clarion.js. Framework-free, no build step.
//
// Safety rule of this file: data from notifications only ever reaches the page through
// textContent, Text nodes and attributes set one by one; never through innerHTML. URLs are
// followed only when http(s) or relative (safeUrl).

import { connect, createInbox, safeUrl, TRANSPORTS } from './clarion.js';

/** @typedef {import('./clarion').Client} Client */
/** @typedef {import('./clarion').Notification} Notification */
/** @typedef {import('./clarion').InboxItem} InboxItem */
/** @typedef {import('./clarion').ConnectionStatus} ConnectionStatus */
/** @typedef {import('./clarion').Inbox} Inbox */
/** @typedef {import('./clarion').InboxState} InboxState */
/** @typedef {import('./clarion').InboxAddedDetail} InboxAddedDetail */

const SVG_NS = 'http://www.w3.org/2000/svg';
const TOAST_MS = 5000;
const MAX_TOASTS = 3;
/** A notification replayed after a reconnect still toasts if it is this recent. */
const FRESH_MS = 120_000;
// Statuses after which the client waits for the page (a new token, reconnect()): say why.
const REFUSALS = ['unauthorized', 'forbidden'];

/** Icon paths (24x24 viewBox, stroked with currentColor). */
const PATHS = {
  bell: ['M18 16v-5a6 6 0 0 0-12 0v5l-2 2h16z', 'M10 20.5a2.2 2.2 0 0 0 4 0'],
  message: ['M4 5.5A1.5 1.5 0 0 1 5.5 4h13A1.5 1.5 0 0 1 20 5.5v9a1.5 1.5 0 0 1-1.5 1.5H9l-5 4z', 'M8 9h8', 'M8 12h5'],
  user: ['M9 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8z', 'M2.5 20a6.5 6.5 0 0 1 13 0', 'M19 8v6', 'M16 11h6'],
  heart: ['M12 20s-7.5-4.6-7.5-10.2A4.3 4.3 0 0 1 12 7.3a4.3 4.3 0 0 1 7.5 2.5C19.5 15.4 12 20 12 20z'],
  alert: ['M10.3 4.2 2.6 17.5A2 2 0 0 0 4.3 20.5h15.4a2 2 0 0 0 1.7-3L13.7 4.2a2 2 0 0 0-3.4 0z', 'M12 9.5v4', 'M12 17h.01'],
  close: ['M6 6l12 12', 'M18 6 6 18'],
  checks: ['M2 12.5l4.5 4.5L15 8', 'M10.5 16.5 11 17l9-9'],
  archive: ['M3 5h18v4H3z', 'M5 9v10h14V9', 'M10 13h4'],
  settings: ['M12 15a3 3 0 1 0 0-6 3 3 0 0 0 0 6z', 'M4 12h2', 'M18 12h2', 'M12 4v2', 'M12 18v2', 'M6.3 6.3l1.4 1.4', 'M16.3 16.3l1.4 1.4', 'M6.3 17.7l1.4-1.4', 'M16.3 7.7l1.4-1.4'],
};

/** @type {Record<string, string[] | string>} */
const DEFAULT_TYPE_ICONS = {
  message: PATHS.message,
  friend_request: PATHS.user,
  like: PATHS.heart,
  system_alert: PATHS.alert,
};

/** User-facing text; replace entries of `ClarionInbox.strings` to translate. */
const STRINGS = {
  title: 'Notifications',
  bellLabel: (/** @type {number} */ n) => `Notifications, ${n} unread`,
  markAllRead: 'Mark all read',
  clearAll: 'Clear all',
  markRead: 'Mark as read',
  markUnread: 'Mark as unread',
  dismiss: 'Dismiss',
  closeToast: 'Close',
  empty: "You're all caught up",
  emptyHint: 'New notifications will show up here.',
  loading: 'Loading…',
  loadFailed: "Couldn't load notifications.",
  retry: 'Retry',
  actionFailed: "That didn't work. Please try again.",
  enableDesktop: 'Enable desktop notifications',
  highPriority: 'High priority',
  critical: 'Critical alert',
  acknowledge: 'Acknowledge',
  open: 'Open',
  andOthers: (/** @type {string} */ actor, /** @type {number} */ n) => `${actor} and ${n} ${n === 1 ? 'other' : 'others'}`,
  settings: 'Notification settings',
  back: 'Back',
  typeColumn: 'Type',
  inApp: 'In-app',
  push: 'Push',
  required: 'Required',
  quietHours: 'Quiet hours (push held back)',
  quietFrom: 'From',
  quietTo: 'to',
  timeZone: 'Time zone',
  save: 'Save',
  saved: 'Saved',
  noTypes: 'No notification types yet.',
  newFrom: (/** @type {string} */ actor, /** @type {string} */ title) => (actor ? `New notification from ${actor}: ${title}` : `New notification: ${title}`),
  live: 'Live',
  connecting: 'Connecting…',
  offline: 'Offline',
  // A refusal stops the client until the page acts; say so where the developer looks.
  refused: /** @type {Record<string, string>} */ ({ unauthorized: 'Not connected: token refused', forbidden: 'Not connected: origin or user refused' }),
  transports: /** @type {Record<string, string>} */ ({ websocket: 'WebSocket', sse: 'Server-Sent Events', poll: 'long-polling' }),
};

// ---- DOM helpers -----------------------------------------------------------------------------

/**
 * Create an element. Props are attributes (set one by one), `class`, or `on<event>` listeners;
 * string children become Text nodes. Nothing is ever parsed as HTML.
 * @param {string} tag
 * @param {Record<string, unknown>} [props]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElement}
 */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = String(value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), /** @type {EventListener} */ (value));
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) el.append(child);
  return el;
}

/** @param {string[]} paths @param {number} [size] */
function svg(paths, size = 20) {
  const el = document.createElementNS(SVG_NS, 'svg');
  const attrs = {
    viewBox: '0 0 24 24', width: size, height: size, fill: 'none', stroke: 'currentColor',
    'stroke-width': 2, 'stroke-linecap': 'round', 'stroke-linejoin': 'round', 'aria-hidden': 'true', focusable: 'false',
  };
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const d of paths) {
    const path = document.createElementNS(SVG_NS, 'path');
    path.setAttribute('d', d);
    el.append(path);
  }
  return el;
}

/** @param {unknown} value */
function text(value) {
  return typeof value === 'string' ? value : value === null || value === undefined ? '' : String(value);
}

/** @param {unknown} iso @returns {number} ms, NaN when not a time */
function timeOf(iso) {
  return typeof iso === 'string' ? Date.parse(iso) : NaN;
}

const PRIORITIES = ['low', 'normal', 'high', 'critical'];
/** @param {Notification} n */
function priorityOf(n) {
  return PRIORITIES.includes(/** @type {string} */ (n.priority)) ? n.priority : 'normal';
}

/** @param {string | undefined} locale */
function makeFormatters(locale) {
  try {
    return {
      relative: new Intl.RelativeTimeFormat(locale, { numeric: 'auto' }),
      absolute: new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' }),
    };
  } catch {
    return { relative: new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' }), absolute: new Intl.DateTimeFormat() };
  }
}

/** @type {[Intl.RelativeTimeFormatUnit, number][]} unit and its length in seconds */
const UNITS = [['year', 31_536_000], ['month', 2_592_000], ['week', 604_800], ['day', 86_400], ['hour', 3600], ['minute', 60]];

/** @param {Intl.RelativeTimeFormat} rtf @param {number} ms */
function relative(rtf, ms) {
  const seconds = (ms - Date.now()) / 1000;
  for (const [unit, length] of UNITS) {
    if (Math.abs(seconds) >= length * (unit === 'minute' ? 0.75 : 1)) return rtf.format(Math.round(seconds / length), unit);
  }
  return rtf.format(0, 'second');
}

// ---- styles ----------------------------------------------------------------------------------

const DARK = `
  --_bg: var(--clarion-bg, #1e2533);
  --_fg: var(--clarion-fg, #eef1f6);
  --_muted: var(--clarion-muted, #9aa5b8);
  --_border: var(--clarion-border, #323b4d);
  --_hover: var(--clarion-hover, rgba(255, 255, 255, .05));
  --_accent: var(--clarion-accent, #fb8a3c);
  --_high: var(--clarion-high, #f87171);
  --_high-bg: var(--clarion-high-bg, rgba(239, 68, 68, .14));
  --_low-bg: var(--clarion-low-bg, #19202c);
  --_bell: var(--clarion-bell, #9aa5b8);
  --_shadow: var(--clarion-shadow, 0 18px 50px -12px rgba(0, 0, 0, .7), 0 0 0 1px rgba(255, 255, 255, .06));
  --_tint: .2;
  --_message: #60a5fa; --_friend: #a78bfa; --_like: #f472b6; --_alert: #fbbf24;
  color-scheme: dark;
`;

const CSS = `
:host {
  --_accent: var(--clarion-accent, #c2410c);
  --_accent-fg: var(--clarion-accent-fg, #fff);
  --_bg: var(--clarion-bg, #fff);
  --_fg: var(--clarion-fg, #111827);
  --_muted: var(--clarion-muted, #636b78);
  --_border: var(--clarion-border, #e7e9ee);
  --_hover: var(--clarion-hover, rgba(17, 24, 39, .04));
  --_high: var(--clarion-high, #b91c1c);
  --_high-bg: var(--clarion-high-bg, #fef2f2);
  --_high-solid: var(--clarion-high-solid, #dc2626);
  --_low-bg: var(--clarion-low-bg, #f4f5f7);
  --_bell: var(--clarion-bell, #6b7280);
  --_badge-bg: var(--clarion-badge-bg, #dc2626);
  --_badge-fg: var(--clarion-badge-fg, #fff);
  --_radius: var(--clarion-radius, 12px);
  --_font: var(--clarion-font, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif);
  --_shadow: var(--clarion-shadow, 0 18px 50px -12px rgba(15, 23, 42, .28), 0 0 0 1px rgba(15, 23, 42, .06));
  --_width: var(--clarion-panel-width, 384px);
  --_z: var(--clarion-z-index, 1000);
  --_tint: .12;
  --_message: #2563eb; --_friend: #7c3aed; --_like: #db2777; --_alert: #d97706;
  display: inline-block;
  position: relative;
  font-family: var(--_font);
  font-size: 14px;
  line-height: 1.4;
  color: var(--_fg);
  color-scheme: light;
}
@media (prefers-color-scheme: dark) { :host(:not([theme="light"])) { ${DARK} } }
:host([theme="dark"]) { ${DARK} }
[hidden] { display: none !important; }
button { font: inherit; color: inherit; }
.sr-only { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
:focus-visible { outline: 2px solid var(--_accent); outline-offset: 2px; }

.bell {
  position: relative; display: grid; place-items: center; width: 40px; height: 40px; padding: 0;
  border: 0; border-radius: 50%; background: transparent; color: var(--_bell); cursor: pointer;
  transition: background-color .15s, color .15s;
}
.bell:hover, .bell[aria-expanded="true"] { background: var(--_hover); }
.bell[data-unread] { color: var(--_accent); }
.bell[data-unread] svg { animation: ring .9s ease-in-out 1; transform-origin: 50% 12%; }
.badge {
  position: absolute; top: 2px; right: 1px; min-width: 18px; height: 18px; padding: 0 5px; box-sizing: border-box;
  border-radius: 9px; background: var(--_badge-bg); color: var(--_badge-fg); font-size: 11px; font-weight: 700;
  line-height: 18px; text-align: center; box-shadow: 0 0 0 2px var(--clarion-badge-ring, var(--_bg));
  font-variant-numeric: tabular-nums;
}
@keyframes ring { 0%, 100% { transform: rotate(0); } 20% { transform: rotate(14deg); } 40% { transform: rotate(-12deg); } 60% { transform: rotate(8deg); } 80% { transform: rotate(-4deg); } }

.panel {
  position: absolute; top: calc(100% + 10px); right: -4px; z-index: var(--_z);
  width: min(var(--_width), calc(100vw - 16px)); max-height: min(600px, calc(100vh - 96px));
  display: flex; flex-direction: column; box-sizing: border-box;
  background: var(--_bg); color: var(--_fg); border-radius: var(--_radius); box-shadow: var(--_shadow);
  overflow: hidden; text-align: left; animation: pop .14s ease-out;
}
.panel:focus { outline: none; }
@keyframes pop { from { opacity: 0; transform: translateY(-4px) scale(.98); } }
@media (min-width: 481px) { .panel.start { left: -4px; right: auto; } }
@media (max-width: 480px) { .panel { position: fixed; top: 64px; left: 8px; right: 8px; width: auto; } }
.head { display: flex; align-items: center; gap: 4px; padding: 14px 12px 12px 16px; border-bottom: 1px solid var(--_border); }
.head h2 { margin: 0 auto 0 0; font-size: 15px; font-weight: 650; letter-spacing: -.01em; }
.link {
  display: inline-flex; align-items: center; gap: 5px; padding: 5px 8px; border: 0; border-radius: 6px;
  background: none; color: var(--_accent); font-size: 13px; font-weight: 550; cursor: pointer; white-space: nowrap;
}
.link:hover { background: var(--_hover); }
.link:disabled { color: var(--_muted); opacity: .6; cursor: default; background: none; }

.list { list-style: none; margin: 0; padding: 0; overflow-y: auto; overscroll-behavior: contain; flex: 1 1 auto; min-height: 0; }
.card {
  position: relative; display: grid; grid-template-columns: minmax(0, 1fr) auto;
  border-bottom: 1px solid var(--_border); background: var(--_bg); transition: background-color .15s;
}
.card:hover { background-image: linear-gradient(var(--_hover), var(--_hover)); }
.card[data-priority="low"] { background-color: var(--_low-bg); }
.card[data-priority="high"], .card[data-priority="critical"] { background-color: var(--_high-bg); box-shadow: inset 3px 0 0 var(--_high); }
.main {
  display: flex; gap: 12px; min-width: 0; padding: 12px 4px 12px 16px; border: 0; background: none;
  color: inherit; text-align: left; text-decoration: none; cursor: pointer;
}
.main:focus-visible { outline-offset: -2px; border-radius: 4px; }
.icon {
  position: relative; flex: none; display: grid; place-items: center; width: 36px; height: 36px; border-radius: 50%;
  color: var(--_muted); background: color-mix(in srgb, currentColor calc(var(--_tint) * 100%), transparent);
}
.icon img { width: 36px; height: 36px; border-radius: 50%; object-fit: cover; }
.icon .glyph { font-size: 18px; line-height: 1; }
[data-type="message"] .icon { color: var(--_message); }
[data-type="friend_request"] .icon { color: var(--_friend); }
[data-type="like"] .icon { color: var(--_like); }
[data-type="system_alert"] .icon { color: var(--_alert); }
.mark {
  position: absolute; right: -3px; bottom: -3px; display: grid; place-items: center; width: 16px; height: 16px;
  border-radius: 50%; background: var(--_high-solid); color: #fff; font-size: 11px; font-weight: 800; line-height: 1;
  box-shadow: 0 0 0 2px var(--_bg);
}
.text { flex: 1; min-width: 0; }
.meta { display: flex; align-items: baseline; gap: 6px; font-size: 12px; color: var(--_muted); }
.actor { min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 600; color: var(--_fg); }
.meta time { flex: none; }
.meta .actor + time::before { content: "·"; margin-right: 6px; }
.title { margin-top: 1px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 500; }
.card[data-read="false"] .title { font-weight: 650; }
.card[data-priority="high"] .title, .card[data-priority="critical"] .title { color: var(--_high); }
.body {
  margin-top: 1px; color: var(--_muted); font-size: 13px; overflow: hidden;
  display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 2; line-clamp: 2; overflow-wrap: anywhere;
}
.actions { grid-column: 1 / -1; display: flex; flex-wrap: wrap; gap: 6px; padding: 0 16px 12px 64px; margin-top: -4px; }
.action {
  padding: 3px 10px; border: 1px solid var(--_border); border-radius: 999px; background: var(--_bg);
  color: var(--_fg); font-size: 12px; font-weight: 550; text-decoration: none; cursor: pointer;
}
.action:hover { border-color: var(--_accent); color: var(--_accent); }
.tools { display: flex; flex-direction: column; align-items: center; gap: 2px; padding: 8px 8px 8px 0; }
.tool {
  display: grid; place-items: center; width: 28px; height: 28px; padding: 0; border: 0; border-radius: 6px;
  background: none; color: var(--_muted); cursor: pointer;
}
.tool:hover { background: var(--_hover); color: var(--_fg); }
.dot { width: 9px; height: 9px; box-sizing: border-box; border-radius: 50%; border: 1.5px solid var(--_muted); opacity: .55; }
.card[data-read="false"] .dot { border: 0; background: var(--_accent); opacity: 1; }
.card .dismiss { opacity: 0; transition: opacity .15s; }
.card:hover .dismiss, .card:focus-within .dismiss { opacity: 1; }
@media (hover: none) { .card .dismiss { opacity: 1; } }
.row { display: flex; align-items: center; justify-content: center; gap: 8px; padding: 14px 16px; color: var(--_muted); font-size: 13px; }
.sentinel { min-height: 1px; }
.empty { display: flex; flex-direction: column; align-items: center; gap: 6px; padding: 44px 24px 48px; text-align: center; }
.empty .art { display: grid; place-items: center; width: 52px; height: 52px; border-radius: 50%; color: var(--_accent); background: color-mix(in srgb, var(--_accent) 12%, transparent); margin-bottom: 6px; }
.empty strong { font-size: 15px; }
.empty span { color: var(--_muted); font-size: 13px; }
.prefs { padding: 8px 16px 14px; overflow-y: auto; flex: 1 1 auto; min-height: 0; font-size: 13px; }
.prefs table { width: 100%; border-collapse: collapse; margin-bottom: 10px; }
.prefs th { text-align: left; font-weight: 600; color: var(--_muted); font-size: 12px; padding: 6px 4px; }
.prefs td { padding: 6px 4px; border-top: 1px solid var(--_border); }
.prefs td:not(:first-child), .prefs th:not(:first-child) { text-align: center; width: 64px; }
.prefs .req { color: var(--_muted); font-size: 11px; margin-left: 6px; }
.prefs fieldset { border: 1px solid var(--_border); border-radius: 8px; padding: 8px 10px; margin: 0 0 10px; display: flex; flex-wrap: wrap; gap: 6px 8px; align-items: center; }
.prefs legend { padding: 0 4px; color: var(--_muted); font-size: 12px; }
.prefs input[type="time"] { font: inherit; color: inherit; background: var(--_bg); border: 1px solid var(--_border); border-radius: 6px; padding: 2px 4px; }
.prefs .row { display: flex; align-items: center; gap: 8px; }
.prefs .saved { color: var(--_muted); }
.foot { display: flex; align-items: center; gap: 8px; min-height: 20px; padding: 8px 12px 8px 16px; border-top: 1px solid var(--_border); font-size: 12px; color: var(--_muted); }
.foot .link { margin-left: auto; font-size: 12px; }
.status { display: inline-flex; align-items: center; gap: 6px; }
.status::before { content: ""; width: 7px; height: 7px; border-radius: 50%; background: #9ca3af; }
.status[data-state="live"]::before { background: #16a34a; box-shadow: 0 0 0 3px color-mix(in srgb, #16a34a 20%, transparent); }
.status[data-state="connecting"]::before { background: #f59e0b; }
.status[data-state="refused"] { color: var(--_high); }
.status[data-state="refused"]::before { background: var(--_high); }
.bell.refused { opacity: .55; }
.error { margin: 0; padding: 8px 16px; background: var(--_high-bg); color: var(--_high); font-size: 13px; }

.toasts {
  position: fixed; right: 16px; bottom: 16px; z-index: calc(var(--_z) + 1);
  display: flex; flex-direction: column; align-items: flex-end; gap: 10px; pointer-events: none;
}
.toast {
  position: relative; display: flex; align-items: flex-start; width: min(360px, calc(100vw - 32px)); box-sizing: border-box;
  background: var(--_bg); color: var(--_fg); border-radius: var(--_radius); box-shadow: var(--_shadow);
  pointer-events: auto; overflow: hidden; animation: slide .22s cubic-bezier(.2, .9, .3, 1.2);
}
.toast[data-priority="high"] { background-image: linear-gradient(var(--_high-bg), var(--_high-bg)); box-shadow: var(--_shadow), inset 3px 0 0 var(--_high); }
.toast .main { flex: 1; padding: 14px 4px 14px 14px; }
.toast .tool { margin: 8px 8px 0 0; }
.toast[data-priority="high"] .title { color: var(--_high); }
@keyframes slide { from { opacity: 0; transform: translateY(12px) scale(.97); } }

dialog.critical {
  width: min(440px, calc(100vw - 32px)); box-sizing: border-box; padding: 0; border: 0; border-radius: 16px;
  background: var(--_bg); color: var(--_fg); box-shadow: var(--_shadow); font-family: var(--_font); font-size: 14px;
  overflow: hidden;
}
dialog.critical::backdrop { background: rgba(15, 23, 42, .55); backdrop-filter: blur(2px); }
.crit-band { display: flex; align-items: center; gap: 8px; padding: 12px 20px; background: var(--_high-solid); color: #fff; font-size: 13px; font-weight: 700; letter-spacing: .02em; text-transform: uppercase; }
.crit-content { padding: 18px 20px 6px; }
.crit-content h2 { margin: 0 0 6px; font-size: 18px; line-height: 1.3; }
.crit-content p { margin: 0 0 10px; overflow-wrap: anywhere; }
.crit-meta { color: var(--_muted); font-size: 12px; }
.crit-buttons { display: flex; justify-content: flex-end; gap: 8px; padding: 8px 20px 20px; }
.btn {
  display: inline-flex; align-items: center; padding: 8px 16px; border: 1px solid var(--_border); border-radius: 8px;
  background: var(--_bg); color: var(--_fg); font-weight: 600; text-decoration: none; cursor: pointer;
}
.btn.primary { border-color: var(--_high-solid); background: var(--_high-solid); color: #fff; }
.btn:disabled { opacity: .6; cursor: progress; }
@media (prefers-reduced-motion: reduce) { *, *::before { animation: none !important; transition: none !important; } }
`;

/**
 * One constructed stylesheet shared by every inbox on the page. Unlike a <style> element, it
 * needs no 'unsafe-inline' in a Content-Security-Policy.
 * @type {CSSStyleSheet | null}
 */
let sharedSheet = null;
function styles() {
  if (!sharedSheet && typeof CSSStyleSheet === 'function' && 'replaceSync' in CSSStyleSheet.prototype) {
    sharedSheet = new CSSStyleSheet();
    sharedSheet.replaceSync(CSS);
  }
  return sharedSheet;
}

// ---- the element -----------------------------------------------------------------------------

/**
 * @typedef {object} Item an inbox entry and its card
 * @property {InboxItem} n
 * @property {HTMLElement} el
 * @property {HTMLElement} toggle
 */

/**
 * @typedef {object} Toast
 * @property {HTMLElement} el
 * @property {number} remaining ms until it goes
 * @property {number} startedAt
 * @property {ReturnType<typeof setTimeout> | undefined} timer
 */

export class ClarionInbox extends HTMLElement {
  static observedAttributes = ['server', 'token', 'transports', 'locale', 'page-size', 'badge'];
  /** Type -> icon: a list of SVG path data (24x24, stroked) or a short text such as an emoji. */
  static typeIcons = /** @type {Record<string, string[] | string>} */ ({ ...DEFAULT_TYPE_ICONS });
  /** User-facing text, in English; replace entries to translate every inbox on the page. */
  static strings = STRINGS;

  /** @type {ShadowRoot} */ #root;
  /** @type {Record<string, HTMLElement>} */ #ui = {};
  /** @type {Client | null} */ #client = null;
  /** @type {Client | null} */ #givenClient = null;
  #ownsClient = false;
  /** @type {(() => string | Promise<string>) | null} */ #getToken = null;
  /** @type {(() => void)[]} */ #unsubscribe = [];

  /** @type {Inbox | null} the list and counts (clarion.js createInbox): this element only draws them */
  #inbox = null;
  /** @type {Inbox | null} */ #givenInbox = null;
  #ownsInbox = false;
  /** @type {Map<string, Item>} the cards drawn, newest first, like the inbox's items */
  #items = new Map();
  #unread = 0;
  #unseen = 0;
  #loadError = false;
  #firstPageSeen = false;
  /** @type {IntersectionObserver | null} */ #observer = null;
  /** @type {ReturnType<typeof setInterval> | undefined} */ #clock;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #errorTimer;
  #formatters = makeFormatters(undefined);

  /** @type {Map<string, Toast>} */ #toasts = new Map();
  #toastsPaused = false;
  /** @type {InboxItem[]} */ #criticalQueue = [];
  /** @type {InboxItem | null} */ #critical = null;
  #acking = false;

  constructor() {
    super();
    this.#root = this.attachShadow({ mode: 'open' });
    this.#build();
  }

  // ---- public API ----

  /** The function the widget calls for a user JWT (resolves to a string). */
  get getToken() { return this.#getToken; }
  set getToken(fn) {
    this.#getToken = typeof fn === 'function' ? fn : null;
    this.#tokenChanged();
  }

  /** The clarion.js client in use. Set it to share a client you created with connect(). */
  get client() { return this.#client; }
  set client(client) {
    this.#givenClient = client ?? null;
    this.#restart();
  }

  /** The unread count. */
  get unread() { return this.#unread; }
  /** Not yet shown in an open inbox: what the badge counts with `badge="unseen"`. */
  get unseen() { return this.#unseen; }
  get isOpen() { return !this.#ui.panel.hidden; }

  open() {
    if (this.isOpen) return;
    const panel = this.#ui.panel;
    panel.hidden = false;
    // Opens towards the page: leftwards from a bell on the right, rightwards from one on the left.
    panel.classList.remove('start');
    if (panel.getBoundingClientRect().left < 0) panel.classList.add('start');
    this.#ui.bell.setAttribute('aria-expanded', 'true');
    document.addEventListener('pointerdown', this.#onOutside, true);
    // What the open inbox shows counts as seen (on a server that counts seen).
    const inbox = this.#inbox;
    if (inbox && !inbox.getState().loaded) void inbox.load({ now: true }).then(() => this.isOpen && inbox.markSeen());
    else void inbox?.markSeen();
    this.#refreshTimes();
    this.#observeSentinel();
    this.#updateDesktopButton();
    this.#ui.panel.focus({ preventScroll: true });
  }

  /** @param {{restoreFocus?: boolean}} [options] */
  close({ restoreFocus = true } = {}) {
    if (!this.isOpen) return;
    const hadFocus = this.#root.activeElement !== null && this.#ui.panel.contains(this.#root.activeElement);
    this.#ui.panel.hidden = true;
    this.#ui.bell.setAttribute('aria-expanded', 'false');
    document.removeEventListener('pointerdown', this.#onOutside, true);
    if (restoreFocus && hadFocus) this.#ui.bell.focus();
  }

  toggle() {
    if (this.isOpen) this.close();
    else this.open();
  }

  /** Reload the list from the server. */
  async refresh() {
    this.#loadError = false;
    await this.#inbox?.refresh();
  }

  /**
   * The headless inbox this element draws (clarion.js `Inbox`), or null while not connected.
   * Set it to share one with your own code (React and Vue bindings do): the badge, the list and
   * your components then agree at once, on one connection.
   */
  get inbox() { return this.#inbox; }
  set inbox(inbox) {
    this.#givenInbox = inbox ?? null;
    this.#restart();
  }

  // ---- life cycle ----

  connectedCallback() {
    for (const name of /** @type {const} */ (['getToken', 'client', 'inbox'])) {
      // A property set before the element was defined shadows the accessor: move it over.
      if (Object.prototype.hasOwnProperty.call(this, name)) {
        const value = /** @type {any} */ (this)[name];
        delete (/** @type {any} */ (this))[name];
        /** @type {any} */ (this)[name] = value;
      }
    }
    this.#refreshTimes();
    this.#clock = setInterval(() => this.#refreshTimes(), 60_000);
    this.#start();
  }

  disconnectedCallback() {
    this.close({ restoreFocus: false });
    clearInterval(this.#clock);
    this.#stop();
  }

  /** @param {string} name @param {string | null} before @param {string | null} after */
  attributeChangedCallback(name, before, after) {
    if (before === after) return;
    if (name === 'server' || name === 'transports') this.#restart();
    else if (name === 'token') this.#tokenChanged();
    else if (name === 'locale') this.#refreshTimes();
    else if (name === 'badge') this.#setUnread(this.#unread, this.#unseen);
  }

  /** A new token source: connect, or try again after a refused token. */
  #tokenChanged() {
    if (this.#client?.status.reason === 'unauthorized') this.#client.reconnect();
    else this.#start();
  }

  #restart() {
    if (!this.#client) return this.#start();
    this.#stop();
    this.#start();
  }

  #start() {
    if (!this.isConnected || this.#client) return;
    let client = this.#givenInbox?.client ?? this.#givenClient;
    if (!client) {
      if (!this.#getToken && !this.hasAttribute('token')) return;
      const transports = (this.getAttribute('transports') ?? '')
        .split(/[\s,]+/).filter((name) => TRANSPORTS.includes(/** @type {any} */ (name)));
      client = connect(this.getAttribute('server') || location.origin, {
        // Read at each call, so a page may swap getToken or the attribute at any time.
        getToken: () => (this.#getToken ? this.#getToken() : this.getAttribute('token') ?? ''),
        transports: transports.length ? /** @type {any} */ (transports) : undefined,
      });
      this.#ownsClient = true;
    }
    this.#client = client;
    const inbox = this.#givenInbox ?? createInbox(client, { pageSize: Number(this.getAttribute('page-size')) || 20 });
    this.#inbox = inbox;
    this.#ownsInbox = !this.#givenInbox;
    this.#unsubscribe = [
      inbox.subscribe((state) => this.#render(state)),
      inbox.on('added', (d) => this.#onAdded(d)),
      inbox.on('error', ({ action }) => {
        if (action === 'load') { this.#loadError = true; this.#render(inbox.getState()); } else this.#showError();
      }),
      client.on('status', (/** @type {ConnectionStatus} */ s) => this.#onStatus(s)),
    ];
    this.#onStatus(client.status);
    this.#render(inbox.getState());
    // The first page is loaded once the connection is live, so nothing published in between is
    // missed (a notification in both the page and the stream is shown once); after 3 s anyway.
    void inbox.load();
  }

  #stop() {
    for (const unsubscribe of this.#unsubscribe) unsubscribe();
    this.#unsubscribe = [];
    if (this.#ownsInbox) this.#inbox?.destroy();
    this.#inbox = null;
    if (this.#ownsClient) this.#client?.close();
    this.#client = null;
    this.#ownsClient = false;
    for (const { el } of this.#items.values()) el.remove();
    this.#items.clear();
    this.#loadError = this.#firstPageSeen = false;
    this.#ui.sentinel.replaceChildren();
    this.#paintEmpty();
    for (const id of [...this.#toasts.keys()]) this.#removeToast(id);
  }

  // ---- building the DOM ----

  #build() {
    const s = ClarionInbox.strings;
    const sheet = styles();
    if (sheet) {
      this.#root.adoptedStyleSheets = [sheet];
    } else {
      const style = document.createElement('style');
      style.textContent = CSS;
      this.#root.append(style);
    }
    const ui = this.#ui;
    ui.badge = h('span', { class: 'badge', part: 'badge', 'data-testid': 'clarion-badge', 'aria-hidden': 'true', hidden: true });
    ui.bell = h('button', {
      class: 'bell', part: 'bell', type: 'button', 'data-testid': 'clarion-bell',
      'aria-haspopup': 'dialog', 'aria-expanded': 'false', 'aria-controls': 'panel', 'aria-label': s.bellLabel(0),
      onclick: () => this.toggle(),
    }, svg(PATHS.bell, 22), ui.badge);
    ui.readAll = h('button', { class: 'link', type: 'button', 'data-testid': 'clarion-read-all', onclick: () => this.#readAll() }, svg(PATHS.checks, 15), s.markAllRead);
    ui.clearAll = h('button', { class: 'link', type: 'button', 'data-testid': 'clarion-clear-all', onclick: () => this.#clearAll() }, s.clearAll);
    ui.settings = h('button', {
      class: 'link', type: 'button', 'data-testid': 'clarion-settings', 'aria-label': s.settings, title: s.settings,
      'aria-expanded': 'false', onclick: () => this.#toggleSettings(),
    }, svg(PATHS.settings, 16));
    ui.prefs = h('form', { class: 'prefs', 'data-testid': 'clarion-prefs', hidden: true, onsubmit: (/** @type {Event} */ e) => this.#savePrefs(e) });
    ui.error = h('p', { class: 'error', role: 'alert', 'data-testid': 'clarion-error', hidden: true });
    ui.sentinel = h('li', { class: 'sentinel', 'aria-hidden': 'true' });
    ui.list = h('ul', { class: 'list', part: 'list', 'data-testid': 'clarion-list', 'aria-labelledby': 'panel-title' }, ui.sentinel);
    ui.empty = h('div', { class: 'empty', 'data-testid': 'clarion-empty', hidden: true },
      h('div', { class: 'art' }, svg(PATHS.checks, 24)), h('strong', {}, s.empty), h('span', {}, s.emptyHint));
    ui.status = h('span', { class: 'status', 'data-testid': 'clarion-status', 'data-state': 'connecting' }, s.connecting);
    ui.desktop = h('button', { class: 'link', type: 'button', 'data-testid': 'clarion-enable-desktop', hidden: true, onclick: () => this.#askDesktopPermission() }, s.enableDesktop);
    ui.panel = h('div', {
      class: 'panel', part: 'panel', id: 'panel', role: 'dialog', 'aria-modal': 'false', 'aria-labelledby': 'panel-title',
      tabindex: '-1', 'data-testid': 'clarion-panel', hidden: true,
    },
    h('div', { class: 'head' }, h('h2', { id: 'panel-title' }, s.title), ui.readAll, ui.clearAll, ui.settings),
    ui.error, ui.list, ui.empty, ui.prefs,
    h('div', { class: 'foot' }, ui.status, ui.desktop));
    ui.toasts = h('div', {
      class: 'toasts', part: 'toasts', 'data-testid': 'clarion-toasts',
      onmouseenter: () => this.#pauseToasts(true), onmouseleave: () => this.#pauseToasts(false),
      onfocusin: () => this.#pauseToasts(true), onfocusout: () => this.#pauseToasts(false),
    });
    ui.critTitle = h('h2', { id: 'crit-title' });
    ui.critBody = h('p', { id: 'crit-body' });
    ui.critMeta = h('p', { class: 'crit-meta' });
    ui.critError = h('p', { class: 'error', role: 'alert', hidden: true });
    ui.critOpen = h('a', { class: 'btn', 'data-testid': 'clarion-critical-open', hidden: true, onclick: (/** @type {MouseEvent} */ e) => this.#acknowledge(e) }, s.open);
    ui.ack = h('button', { class: 'btn primary', type: 'button', autofocus: true, 'data-testid': 'clarion-ack', onclick: () => this.#acknowledge() }, s.acknowledge);
    ui.dialog = h('dialog', {
      class: 'critical', part: 'critical', role: 'alertdialog', 'aria-labelledby': 'crit-title', 'aria-describedby': 'crit-body',
      'data-testid': 'clarion-critical',
      // A critical notification needs an explicit acknowledgement: Escape does not dismiss it.
      oncancel: (/** @type {Event} */ e) => e.preventDefault(),
    },
    h('div', { class: 'crit-band' }, svg(PATHS.alert, 18), s.critical),
    h('div', { class: 'crit-content' }, ui.critTitle, ui.critBody, ui.critMeta, ui.critError),
    h('div', { class: 'crit-buttons' }, ui.critOpen, ui.ack));
    ui.live = h('div', { class: 'sr-only', 'aria-live': 'polite', 'aria-atomic': 'true', 'data-testid': 'clarion-live' });
    const root = h('div', { class: 'root', onkeydown: (/** @type {KeyboardEvent} */ e) => this.#onKey(e) }, ui.bell, ui.panel);
    this.#root.append(root, ui.toasts, ui.dialog, ui.live);
    ui.list.addEventListener('click', (e) => this.#onListClick(e));
  }

  /** @param {InboxItem} n */
  #icon(n) {
    const wrap = h('span', { class: 'icon', 'aria-hidden': 'true' });
    const image = /^https?:/i.test(text(n.icon)) ? safeUrl(n.icon) : null;
    const glyph = ClarionInbox.typeIcons[text(n.type)];
    if (image) wrap.append(h('img', { src: image, alt: '', loading: 'lazy', decoding: 'async', referrerpolicy: 'no-referrer' }));
    else if (typeof glyph === 'string') wrap.append(h('span', { class: 'glyph' }, glyph));
    else wrap.append(svg(Array.isArray(glyph) ? glyph : PATHS.bell, 18));
    const priority = priorityOf(n);
    if (priority === 'high' || priority === 'critical') wrap.append(h('span', { class: 'mark' }, '!'));
    return wrap;
  }

  /**
   * The clickable part of a card or toast: a link when the notification has a safe URL.
   * @param {InboxItem} n
   * @param {string} [testid]
   */
  #mainPart(n, testid) {
    const s = ClarionInbox.strings;
    const url = safeUrl(n.url);
    const priority = priorityOf(n);
    const created = timeOf(n.created_at);
    const others = typeof n.collapsed === 'number' ? n.collapsed : 0;
    const name = text(n.actor?.name);
    const actor = name && others > 0 ? s.andOthers(name, others) : name;
    const time = Number.isNaN(created) ? null : h('time', {
      datetime: new Date(created).toISOString(), 'data-ts': created, title: this.#formatters.absolute.format(created),
    }, relative(this.#formatters.relative, created));
    const title = h('div', { class: 'title' },
      priority === 'high' || priority === 'critical' ? h('span', { class: 'sr-only' }, `${s.highPriority}: `) : null,
      text(n.title));
    return h(url ? 'a' : 'button', {
      class: 'main', href: url, type: url ? null : 'button', 'data-testid': testid, 'data-action': 'open',
    }, this.#icon(n), h('div', { class: 'text' },
      actor || time ? h('div', { class: 'meta' }, actor ? h('span', { class: 'actor' }, actor) : null, time) : null,
      title,
      n.body ? h('div', { class: 'body' }, text(n.body)) : null));
  }

  /** @param {InboxItem} n @returns {Item} */
  #card(n) {
    const s = ClarionInbox.strings;
    const toggle = h('button', { class: 'tool toggle', type: 'button', 'data-testid': 'clarion-toggle-read', 'data-action': 'toggle' }, h('span', { class: 'dot' }));
    const el = h('li', {
      class: 'card', part: 'card', 'data-testid': 'clarion-card', 'data-id': n.id,
      'data-type': text(n.type), 'data-priority': priorityOf(n),
    },
    this.#mainPart(n),
    h('div', { class: 'tools' }, toggle,
      h('button', { class: 'tool dismiss', type: 'button', 'data-testid': 'clarion-dismiss', 'data-action': 'dismiss', 'aria-label': s.dismiss, title: s.dismiss }, svg(PATHS.close, 16))));
    const actions = Array.isArray(n.actions) ? n.actions.filter((a) => a && typeof a === 'object' && a.label) : [];
    if (actions.length) {
      el.append(h('div', { class: 'actions' }, ...actions.slice(0, 3).map((action, index) => {
        const url = safeUrl(action.url);
        return h(url ? 'a' : 'button', {
          class: 'action', href: url, type: url ? null : 'button', 'data-action': 'action', 'data-index': index, 'data-testid': 'clarion-action',
        }, text(action.label));
      })));
    }
    const item = { n, el, toggle };
    this.#paintRead(item);
    return item;
  }

  /** @param {Item} item */
  #paintRead(item) {
    const s = ClarionInbox.strings;
    const read = Boolean(item.n.read_at);
    item.el.dataset.read = String(read);
    item.toggle.setAttribute('aria-label', read ? s.markUnread : s.markRead);
    item.toggle.title = read ? s.markUnread : s.markRead;
  }

  // ---- list ----

  /**
   * Draw the inbox's state: cards are kept by id and moved, added or removed to match; a card
   * whose notification changed (read, unread) is repainted.
   * @param {InboxState} state
   */
  #render(state) {
    const list = this.#ui.list;
    const wanted = new Set(state.items.map((n) => n.id));
    for (const [id, item] of this.#items) {
      if (wanted.has(id)) continue;
      const focused = this.#root.activeElement && item.el.contains(this.#root.activeElement);
      const next = /** @type {HTMLElement | null} */ (item.el.nextElementSibling);
      item.el.remove();
      this.#items.delete(id);
      if (focused) /** @type {HTMLElement | null} */ (next?.querySelector('.main') ?? this.#ui.panel)?.focus();
    }
    /** @type {Map<string, Item>} */
    const items = new Map();
    state.items.forEach((n, index) => {
      let item = this.#items.get(n.id);
      if (!item) item = this.#card(n);
      else if (item.n !== n) { item.n = n; this.#paintRead(item); }
      items.set(n.id, item);
      const at = list.children[index];
      if (at !== item.el) list.insertBefore(item.el, at ?? this.#ui.sentinel);
    });
    this.#items = items;
    if (state.loading) this.#loadError = false;
    if (state.loaded && !this.#firstPageSeen) {
      this.#firstPageSeen = true;
      // Unread critical notifications found on the first page need their acknowledgement too.
      for (const n of state.items) if (priorityOf(n) === 'critical' && !n.read_at) this.#queueCritical(n);
    }
    this.#settle(wanted, state);
    this.#paintSentinel(state);
    this.#setUnread(state.unread, state.unseen);
    this.#paintEmpty();
    if (state.loaded && !state.loading && !this.#loadError) this.#observeSentinel();
  }

  /**
   * Toasts and critical alerts of notifications read or archived (here or in another tab) go.
   * @param {Set<string>} present
   * @param {InboxState} state
   */
  #settle(present, state) {
    const read = new Set(state.items.filter((n) => n.read_at).map((n) => n.id));
    /** @param {string} id */
    const done = (id) => read.has(id) || (state.loaded && !present.has(id));
    for (const id of [...this.#toasts.keys()]) if (done(id)) this.#removeToast(id);
    this.#criticalQueue = this.#criticalQueue.filter((n) => !done(n.id));
    if (this.#critical && !this.#acking && done(this.#critical.id)) this.#nextCritical();
  }

  /** @param {InboxState} state */
  #paintSentinel(state) {
    const s = ClarionInbox.strings;
    if (state.loading) {
      this.#ui.sentinel.replaceChildren(h('div', { class: 'row', 'data-testid': 'clarion-loading' }, s.loading));
    } else if (this.#loadError) {
      this.#ui.sentinel.replaceChildren(h('div', { class: 'row' }, s.loadFailed,
        h('button', { class: 'link', type: 'button', 'data-testid': 'clarion-retry', onclick: () => this.#inbox?.loadMore() }, s.retry)));
    } else {
      this.#ui.sentinel.replaceChildren();
    }
  }

  /** Infinite scroll: a page is loaded whenever the end of the list comes into view. */
  #observeSentinel() {
    const state = this.#inbox?.getState();
    if (!this.isOpen || !state?.loaded || !state.hasMore) return;
    this.#observer ??= new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting) && !this.#loadError) void this.#inbox?.loadMore();
    }, { root: this.#ui.list, rootMargin: '0px 0px 120px 0px' });
    // Observing anew reports the current intersection, so a short list keeps filling up.
    this.#observer.unobserve(this.#ui.sentinel);
    this.#observer.observe(this.#ui.sentinel);
  }

  #paintEmpty() {
    const state = this.#inbox?.getState();
    const empty = Boolean(state?.loaded && !state.loading) && this.#items.size === 0;
    const settings = !this.#ui.prefs.hidden;
    this.#ui.empty.hidden = !empty || settings;
    this.#ui.list.hidden = empty || settings;
    const any = this.#items.size > 0;
    /** @type {HTMLButtonElement} */ (this.#ui.clearAll).disabled = !any;
    /** @type {HTMLButtonElement} */ (this.#ui.readAll).disabled = !any && this.#unread === 0;
  }

  // ---- live events ----

  /** @param {InboxAddedDetail} detail */
  #onAdded({ notification: n, replay }) {
    this.dispatchEvent(new CustomEvent('clarion-notification', { detail: { notification: n, replay } }));
    if (this.isOpen) void this.#inbox?.markSeen([n.id]);
    const expires = timeOf(n.expires_at);
    if (!Number.isNaN(expires) && expires < Date.now()) return;
    const created = timeOf(n.created_at);
    const priority = priorityOf(n);
    // Missed while away: old toasts would be noise, but a critical one still needs its
    // acknowledgement.
    const fresh = !replay || priority === 'critical' || Number.isNaN(created) || Date.now() - created < FRESH_MS;
    if (!fresh || n.read_at) return;
    if (priority === 'critical') this.#queueCritical(n);
    else if (priority !== 'low' && !this.isOpen) this.#toast(n);
    if (priority === 'high' || priority === 'critical') this.#desktopNotify(n);
    if (priority !== 'critical') this.#announce(ClarionInbox.strings.newFrom(text(n.actor?.name), text(n.title)));
  }

  /** @param {ConnectionStatus} status */
  #onStatus(status) {
    const s = ClarionInbox.strings;
    const el = this.#ui.status;
    el.dataset.transport = status.transport ?? '';
    const via = status.transport ? s.transports[status.transport] ?? status.transport : '';
    const refused = status.state === 'offline' && REFUSALS.includes(status.reason ?? '') && s.refused[status.reason ?? ''];
    el.dataset.state = refused ? 'refused' : status.state;
    el.textContent = status.state === 'live' ? (via ? `${s.live} · ${via}` : s.live)
      : status.state === 'connecting' ? s.connecting : refused || s.offline;
    // The server's reason, on the bell too: visible without opening the dropdown.
    const error = this.#ui.error;
    if (refused) {
      clearTimeout(this.#errorTimer);
      error.textContent = `${refused} (${status.message ?? status.reason}).`;
      error.dataset.refused = '';
      error.hidden = false;
    } else if ('refused' in error.dataset) {
      delete error.dataset.refused;
      error.hidden = true;
    }
    this.#ui.bell.classList.toggle('refused', Boolean(refused));
    if (refused) this.#ui.bell.title = `${refused}: ${status.message ?? status.reason}`;
    else this.#ui.bell.removeAttribute('title');
  }

  /** @param {number} count unread @param {number} [unseen] never shown (defaults to unread) */
  #setUnread(count, unseen = count) {
    const unread = Math.max(0, Math.trunc(Number(count) || 0));
    const notSeen = Math.max(0, Math.trunc(Number(unseen) || 0));
    // `badge="unseen"`: the badge counts what was never shown (cleared by opening the inbox).
    const shown = this.getAttribute('badge') === 'unseen' ? notSeen : unread;
    const { bell, badge } = this.#ui;
    if (unread === this.#unread && notSeen === this.#unseen && badge.dataset.count === String(shown)) return;
    this.#unread = unread;
    this.#unseen = notSeen;
    badge.hidden = shown === 0;
    badge.textContent = shown > 99 ? '99+' : String(shown);
    badge.dataset.count = String(shown);
    bell.setAttribute('aria-label', ClarionInbox.strings.bellLabel(this.#unread));
    bell.toggleAttribute('data-unread', this.#unread > 0);
    /** @type {HTMLButtonElement} */ (this.#ui.readAll).disabled = this.#items.size === 0 && this.#unread === 0;
    this.dispatchEvent(new CustomEvent('clarion-unread', { detail: { count: this.#unread, unseen: this.#unseen } }));
  }

  // ---- user actions ----

  /** @param {KeyboardEvent} event */
  #onKey(event) {
    if (event.key === 'Escape' && this.isOpen) {
      event.preventDefault();
      this.close();
      this.#ui.bell.focus();
      return;
    }
    if (event.key === 'ArrowDown' && event.target === this.#ui.bell && !this.isOpen) {
      event.preventDefault();
      this.open();
    }
    if (!this.isOpen || !['ArrowDown', 'ArrowUp', 'Home', 'End'].includes(event.key)) return;
    const mains = /** @type {HTMLElement[]} */ ([...this.#ui.list.querySelectorAll('.card > .main')]);
    if (mains.length === 0) return;
    event.preventDefault();
    const current = this.#root.activeElement?.closest('.card')?.querySelector('.main');
    const at = current ? mains.indexOf(/** @type {HTMLElement} */ (current)) : -1;
    const next = event.key === 'Home' ? 0 : event.key === 'End' ? mains.length - 1
      : event.key === 'ArrowDown' ? Math.min(at + 1, mains.length - 1) : Math.max(at - 1, 0);
    mains[next].focus();
    mains[next].scrollIntoView({ block: 'nearest' });
  }

  /** @param {PointerEvent} event */
  #onOutside = (event) => {
    if (!event.composedPath().includes(this)) this.close({ restoreFocus: false });
  };

  /** @param {MouseEvent} event */
  #onListClick(event) {
    const target = /** @type {HTMLElement} */ (event.target);
    const control = /** @type {HTMLElement | null} */ (target.closest('[data-action]'));
    const card = /** @type {HTMLElement | null} */ (target.closest('.card'));
    const item = card ? this.#items.get(card.dataset.id ?? '') : undefined;
    if (!control || !item) return;
    const action = control.dataset.action;
    if (action === 'toggle') void this.#toggleRead(item);
    else if (action === 'dismiss') void this.#archive(item);
    else if (action === 'open') this.#follow(item.n, event, safeUrl(item.n.url));
    else if (action === 'action') {
      const chosen = item.n.actions?.[Number(control.dataset.index)];
      if (chosen) this.#follow(item.n, event, safeUrl(chosen.url), chosen);
    }
  }

  /**
   * A click on a card, a toast or an action: mark read, then let the link do its work unless
   * the page takes over (cancel `clarion-navigate` to route inside a single-page app).
   * @param {InboxItem} n
   * @param {MouseEvent | null} event
   * @param {string | null} url
   * @param {import('./clarion').NotificationAction} [action]
   */
  #follow(n, event, url, action) {
    if (!(this.#items.get(n.id)?.n ?? n).read_at) void this.#inbox?.markRead(n.id);
    this.#removeToast(n.id);
    if (action && !url) {
      this.dispatchEvent(new CustomEvent('clarion-action', { detail: { notification: n, action } }));
      return;
    }
    if (!url) return;
    const proceed = this.dispatchEvent(new CustomEvent('clarion-navigate', { detail: { notification: n, url, action: action ?? null }, cancelable: true }));
    if (!proceed) event?.preventDefault();
    else if (!event) location.assign(url);
    this.close({ restoreFocus: false });
  }

  /** @param {Item} item */
  #toggleRead(item) {
    return item.n.read_at ? this.#inbox?.markUnread(item.n.id) : this.#inbox?.markRead(item.n.id);
  }

  /** @param {Item} item */
  #archive(item) {
    return this.#inbox?.archive(item.n.id);
  }

  #readAll() {
    return this.#inbox?.readAll();
  }

  // ---- preferences ----

  #toggleSettings() {
    const ui = this.#ui;
    const open = ui.prefs.hidden;
    ui.prefs.hidden = !open;
    ui.list.hidden = open;
    ui.settings.setAttribute('aria-expanded', String(open));
    if (open) {
      ui.empty.hidden = true;
      void this.#loadPrefs();
    } else {
      this.#paintEmpty();
    }
  }

  async #loadPrefs() {
    const client = this.#client;
    const s = ClarionInbox.strings;
    const form = this.#ui.prefs;
    if (!client) return;
    form.replaceChildren(h('p', {}, s.loading));
    let prefs;
    try {
      prefs = await client.preferences();
    } catch {
      form.replaceChildren(h('p', { class: 'error', role: 'alert' }, s.loadFailed));
      return;
    }
    // The types the app configured, the user chose, or that are in the inbox now.
    const types = new Set([...Object.keys(prefs.types), ...[...this.#items.values()].map((i) => text(i.n.type))].filter(Boolean));
    const rows = [...types].sort().map((type) => {
      const ch = prefs.types[type] ?? { in_app: true, push: true, mandatory: false, custom: false };
      const box = (/** @type {string} */ channel, /** @type {boolean} */ on) => h('input', {
        type: 'checkbox', name: `${channel}:${type}`, 'data-testid': `clarion-pref-${channel}-${type}`,
        'aria-label': `${type}: ${channel === 'in_app' ? s.inApp : s.push}`, ...(on ? { checked: true } : {}), ...(ch.mandatory ? { disabled: true } : {}),
      });
      return h('tr', {}, h('td', {}, type, ch.mandatory ? h('span', { class: 'req' }, s.required) : null),
        h('td', {}, box('in_app', ch.in_app)), h('td', {}, box('push', ch.push)));
    });
    const zone = prefs.quiet_hours ? prefs.timezone : Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    const quiet = h('input', { type: 'checkbox', name: 'quiet', 'data-testid': 'clarion-quiet', ...(prefs.quiet_hours ? { checked: true } : {}) });
    const start = h('input', { type: 'time', name: 'quiet_start', value: prefs.quiet_hours?.start ?? '22:00', 'aria-label': s.quietFrom });
    const end = h('input', { type: 'time', name: 'quiet_end', value: prefs.quiet_hours?.end ?? '07:00', 'aria-label': s.quietTo });
    form.dataset.zone = zone;
    form.replaceChildren(
      rows.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, s.typeColumn), h('th', {}, s.inApp), h('th', {}, s.push))), h('tbody', {}, ...rows))
        : h('p', {}, s.noTypes),
      h('fieldset', {}, h('legend', {}, s.quietHours), quiet, s.quietFrom, start, s.quietTo, end,
        h('span', { class: 'saved' }, `${s.timeZone}: ${zone}`)),
      h('div', { class: 'row' },
        h('button', { class: 'link', type: 'submit', 'data-testid': 'clarion-prefs-save' }, s.save),
        h('button', { class: 'link', type: 'button', onclick: () => this.#toggleSettings() }, s.back),
        h('span', { class: 'saved', 'data-testid': 'clarion-prefs-status', 'aria-live': 'polite' })));
  }

  /** @param {Event} event */
  async #savePrefs(event) {
    event.preventDefault();
    const client = this.#client;
    const form = /** @type {HTMLFormElement} */ (this.#ui.prefs);
    if (!client) return;
    /** @type {Record<string, {in_app?: boolean, push?: boolean}>} */
    const types = {};
    for (const input of form.querySelectorAll('input[type="checkbox"][name*=":"]')) {
      const box = /** @type {HTMLInputElement} */ (input);
      if (box.disabled) continue;
      const [channel, type] = [box.name.slice(0, box.name.indexOf(':')), box.name.slice(box.name.indexOf(':') + 1)];
      types[type] = { ...types[type], [channel]: box.checked };
    }
    const field = (/** @type {string} */ name) => /** @type {HTMLInputElement} */ (form.querySelector(`[name="${name}"]`));
    /** @type {import('./clarion').PreferencesChange} */
    const change = { types, timezone: form.dataset.zone };
    if (field('quiet').checked) change.quiet_hours = { start: field('quiet_start').value, end: field('quiet_end').value };
    else change.clear_quiet_hours = true;
    const status = /** @type {HTMLElement} */ (form.querySelector('[data-testid="clarion-prefs-status"]'));
    try {
      await client.setPreferences(change);
      status.textContent = ClarionInbox.strings.saved;
      // Muted types leave the list at once (the server hides them too).
      this.#inbox?.dropTypes(Object.keys(types).filter((type) => types[type].in_app === false));
    } catch {
      status.textContent = ClarionInbox.strings.actionFailed;
    }
  }

  #clearAll() {
    this.#ui.panel.focus();
    return this.#inbox?.clearAll();
  }

  #showError() {
    const el = this.#ui.error;
    el.textContent = ClarionInbox.strings.actionFailed;
    el.hidden = false;
    clearTimeout(this.#errorTimer);
    this.#errorTimer = setTimeout(() => { el.hidden = true; }, 5000);
  }

  // ---- presentation of live notifications ----

  /** @param {InboxItem} n */
  #toast(n) {
    this.#removeToast(n.id);
    while (this.#toasts.size >= MAX_TOASTS) this.#removeToast(/** @type {string} */ (this.#toasts.keys().next().value));
    const main = this.#mainPart(n, 'clarion-toast-open');
    main.addEventListener('click', (event) => this.#follow(n, event, safeUrl(n.url)));
    const el = h('div', {
      class: 'toast', part: 'toast', 'data-testid': 'clarion-toast', 'data-id': n.id,
      'data-type': text(n.type), 'data-priority': priorityOf(n),
    }, main, h('button', {
      class: 'tool', type: 'button', 'data-testid': 'clarion-toast-close', 'aria-label': ClarionInbox.strings.closeToast,
      onclick: () => this.#removeToast(n.id),
    }, svg(PATHS.close, 16)));
    /** @type {Toast} */
    const toast = { el, remaining: TOAST_MS, startedAt: Date.now(), timer: undefined };
    this.#toasts.set(n.id, toast);
    this.#ui.toasts.append(el);
    if (!this.#toastsPaused) toast.timer = setTimeout(() => this.#removeToast(n.id), TOAST_MS);
  }

  /** @param {string} id */
  #removeToast(id) {
    const toast = this.#toasts.get(id);
    if (!toast) return;
    clearTimeout(toast.timer);
    toast.el.remove();
    this.#toasts.delete(id);
    if (this.#toasts.size === 0) this.#toastsPaused = false;
  }

  /** Hovering (or focusing) the stack holds every toast until the pointer leaves. */
  /** @param {boolean} paused */
  #pauseToasts(paused) {
    if (paused === this.#toastsPaused) return;
    this.#toastsPaused = paused;
    const now = Date.now();
    for (const [id, toast] of this.#toasts) {
      clearTimeout(toast.timer);
      if (paused) {
        toast.remaining = Math.max(1000, toast.remaining - (now - toast.startedAt));
      } else {
        toast.startedAt = now;
        toast.timer = setTimeout(() => this.#removeToast(id), toast.remaining);
      }
    }
  }

  /** @param {InboxItem} n */
  #queueCritical(n) {
    if (this.#critical?.id === n.id || this.#criticalQueue.some((queued) => queued.id === n.id)) return;
    this.#criticalQueue.push(n);
    if (!this.#critical) this.#nextCritical();
  }

  #nextCritical() {
    const { dialog, critTitle, critBody, critMeta, critOpen, critError, ack } = this.#ui;
    const n = this.#criticalQueue.shift() ?? null;
    this.#critical = n;
    if (!n) {
      if (/** @type {HTMLDialogElement} */ (dialog).open) /** @type {HTMLDialogElement} */ (dialog).close();
      return;
    }
    critTitle.textContent = text(n.title);
    critBody.textContent = text(n.body);
    critBody.hidden = !n.body;
    const created = timeOf(n.created_at);
    const parts = [text(n.actor?.name), Number.isNaN(created) ? '' : this.#formatters.absolute.format(created)].filter(Boolean);
    critMeta.textContent = parts.join(' · ');
    const url = safeUrl(n.url);
    critOpen.hidden = !url;
    if (url) critOpen.setAttribute('href', url);
    else critOpen.removeAttribute('href');
    critError.hidden = true;
    /** @type {HTMLButtonElement} */ (ack).disabled = false;
    dialog.dataset.id = n.id;
    if (!/** @type {HTMLDialogElement} */ (dialog).open) /** @type {HTMLDialogElement} */ (dialog).showModal();
    ack.focus();
    this.#announce(`${ClarionInbox.strings.critical}: ${text(n.title)}`);
  }

  /** @param {MouseEvent} [event] a click on "Open" (a link) */
  async #acknowledge(event) {
    const n = this.#critical;
    const inbox = this.#inbox;
    if (!n || !inbox) return;
    const url = event ? safeUrl(n.url) : null;
    if (event) event.preventDefault(); // leave only once the acknowledgement is stored
    const { ack, critError } = this.#ui;
    /** @type {HTMLButtonElement} */ (ack).disabled = true;
    // The modal stays until the server stored the acknowledgement (the list shows it read at once).
    this.#acking = true;
    const stored = await inbox.markRead(n.id);
    this.#acking = false;
    if (!stored) {
      /** @type {HTMLButtonElement} */ (ack).disabled = false;
      critError.textContent = ClarionInbox.strings.actionFailed;
      critError.hidden = false;
      return;
    }
    if (this.#critical?.id === n.id) this.#nextCritical();
    if (url && this.dispatchEvent(new CustomEvent('clarion-navigate', { detail: { notification: n, url, action: null }, cancelable: true }))) {
      location.assign(url);
    }
  }

  /** A system notification for a hidden tab, when the user allowed them. */
  /** @param {InboxItem} n */
  #desktopNotify(n) {
    if (!document.hidden || typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
    const icon = /^https?:/i.test(text(n.icon)) ? safeUrl(n.icon) : null;
    try {
      // The tag makes every tab (and the service worker) show one system notification, not one each.
      const shown = new Notification(text(n.title), {
        body: text(n.body), tag: n.id, icon: icon ?? undefined, requireInteraction: priorityOf(n) === 'critical',
      });
      shown.onclick = () => {
        window.focus();
        shown.close();
        this.#follow(n, null, safeUrl(n.url));
      };
    } catch {
      // Some platforms only allow notifications from a service worker (see sw.js).
    }
  }

  #updateDesktopButton() {
    this.#ui.desktop.hidden = typeof Notification === 'undefined' || Notification.permission !== 'default';
  }

  async #askDesktopPermission() {
    if (typeof Notification === 'undefined') return;
    try { await Notification.requestPermission(); } catch { /* older callback-only API: ignore */ }
    this.#updateDesktopButton();
    this.dispatchEvent(new CustomEvent('clarion-permission', { detail: { permission: Notification.permission } }));
  }

  /** @param {string} message */
  #announce(message) {
    const live = this.#ui.live;
    live.textContent = '';
    // A change after a tick is announced even when the text repeats.
    setTimeout(() => { live.textContent = message; }, 50);
  }

  #refreshTimes() {
    const locale = this.getAttribute('locale') || document.documentElement.lang || navigator.language || undefined;
    this.#formatters = makeFormatters(locale);
    for (const el of this.#root.querySelectorAll('time[data-ts]')) {
      const ms = Number(/** @type {HTMLElement} */ (el).dataset.ts);
      el.textContent = relative(this.#formatters.relative, ms);
      el.setAttribute('title', this.#formatters.absolute.format(ms));
    }
  }
}

if (!customElements.get('clarion-inbox')) customElements.define('clarion-inbox', ClarionInbox);
