// The tablet protocol (PROTOCOL.md) as this app uses it: same origin, /api/v1, JSON bodies. Every
// call states its timeout and comes back as an answer, never as a thrown error, so the callers
// can follow the protocol's "what a client does with an answer" table.

const BASE = "/api/v1";
const RETRY_AFTER_CAP_MS = 3600 * 1000;

/** Retry-After (seconds, or an HTTP date) -> milliseconds from now, or null. */
export function parseRetryAfter(header) {
  if (!header) return null;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Math.min(Number(text) * 1000, RETRY_AFTER_CAP_MS);
  const when = Date.parse(text);
  if (Number.isNaN(when)) return null;
  return Math.min(Math.max(0, when - Date.now()), RETRY_AFTER_CAP_MS);
}

/**
 * The box's API. `reachable` is true after any HTTP answer and false after a network error or a
 * timeout; a "reachability" event fires when it changes.
 */
export class Api extends EventTarget {
  constructor() {
    super();
    this.reachable = null;
  }

  /** -> {status, ok, body, problem, retryAfter, etag}; status 0 means no answer (network, timeout). */
  async call(method, path, { token, body, headers = {}, timeoutMs = 10000 } = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    const init = {
      method,
      headers: { Accept: "application/json, application/problem+json", ...headers },
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      signal: controller.signal,
    };
    if (token) init.headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    let text;
    try {
      response = await fetch(BASE + path, init);
      text = await response.text();
    } catch {
      this.#setReachable(false);
      const timedOut = controller.signal.aborted;
      return {
        status: 0,
        ok: false,
        body: null,
        problem: {
          title: timedOut ? "The box did not answer in time" : "The box cannot be reached",
          detail: "Check the tablet's Wi-Fi; everything is kept on this tablet meanwhile.",
        },
        retryAfter: null,
        etag: null,
      };
    } finally {
      clearTimeout(timer);
    }
    this.#setReachable(true);
    let parsed = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = null;
      }
    }
    const ok = response.status >= 200 && response.status < 300;
    return {
      status: response.status,
      ok,
      body: ok ? parsed : null,
      problem: ok
        ? null
        : (parsed ?? { title: `The box answered ${response.status}`, status: response.status }),
      retryAfter: parseRetryAfter(response.headers.get("Retry-After")),
      etag: response.headers.get("ETag"),
    };
  }

  #setReachable(reachable) {
    if (this.reachable === reachable) return;
    this.reachable = reachable;
    this.dispatchEvent(new Event("reachability"));
  }

  health() {
    return this.call("GET", "/health", { timeoutMs: 5000 });
  }

  pair(code, deviceName) {
    return this.call("POST", "/pair", { body: { code, device_name: deviceName } });
  }

  event(token, etag) {
    return this.call("GET", "/event", { token, headers: etag ? { "If-None-Match": etag } : {} });
  }

  /** Send queued sheets, in order, in one call (POST /sheets/batch). */
  sheets(token, sheets) {
    return this.call("POST", "/sheets/batch", { token, body: { sheets }, timeoutMs: 20000 });
  }

  /** This judge signs off a session: "I have finished scoring it" (POST /sessions/{id}/final). */
  signOff(token, sessionId) {
    return this.call("POST", `/sessions/${encodeURIComponent(sessionId)}/final`, { token, body: {} });
  }

  heartbeat(token, body) {
    return this.call("POST", "/heartbeat", { token, body, timeoutMs: 8000 });
  }
}
