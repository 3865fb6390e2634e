// The judge app's service worker, used only where the browser allows one (HTTPS the tablet
// trusts, or localhost). It keeps the app's own files so the page opens while the box is out of
// reach; it never touches the API (sheets are queued in IndexedDB by the page, not here).

const VERSION = "0.1.0";
const CACHE = `venuebox-judge-${VERSION}`;
const SHELL = [
  "/",
  "/index.html",
  "/app.css",
  "/app.js",
  "/api.js",
  "/db.js",
  "/dom.js",
  "/heartbeat.js",
  "/ids.js",
  "/judging.js",
  "/outbox.js",
  "/scores.js",
  "/version.js",
  "/view-entry.js",
  "/view-finish.js",
  "/view-pairing.js",
  "/view-sessions.js",
  "/icon.svg",
  "/manifest.webmanifest",
];
const NETWORK_TIMEOUT_MS = 4000;

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

function isAppFile(url) {
  return url.origin === self.location.origin && (url.pathname === "/" || SHELL.includes(url.pathname));
}

// Network first (a box that answers serves the newest app), the kept copy when it does not.
async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  const key = request.mode === "navigate" ? "/" : new URL(request.url).pathname;
  try {
    const response = await Promise.race([
      fetch(request),
      new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), NETWORK_TIMEOUT_MS)),
    ]);
    if (response.ok) await cache.put(key, response.clone());
    return response;
  } catch (error) {
    const kept = await cache.match(key);
    if (kept) return kept;
    throw error;
  }
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || !isAppFile(url)) return;
  event.respondWith(networkFirst(event.request));
});
