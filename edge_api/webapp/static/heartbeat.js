// Heartbeats: every next_heartbeat_s seconds (the box says how often), report the battery (where
// the browser tells it), the app's version and how many sheets wait on this tablet (sheets kept
// after the box stored them do not wait). The answer says whether the box is frozen and carries
// its safe watermark (app.js hands it to the queue), and a heartbeat that gets through shows the
// box is back.

import { rfc3339 } from "./ids.js";
import { APP_VERSION } from "./version.js";

const DEFAULT_INTERVAL_S = 10;

export class Heartbeat extends EventTarget {
  constructor(api, outbox) {
    super();
    this.api = api;
    this.outbox = outbox;
    this.intervalS = DEFAULT_INTERVAL_S;
    this.token = null;
    this.timer = null;
    this.beating = false;
    this.battery = null;
  }

  start(token) {
    this.token = token;
    this.soon(0);
  }

  stop() {
    this.token = null;
    clearTimeout(this.timer);
  }

  /** Beat after `delayMs` (0: now, e.g. when the tablet wakes up). */
  soon(delayMs) {
    clearTimeout(this.timer);
    if (this.token) this.timer = setTimeout(() => this.beat(), delayMs);
  }

  async beat() {
    if (!this.token || this.beating) return;
    this.beating = true;
    let nextMs = this.intervalS * 1000;
    try {
      const body = {
        sent_at: rfc3339(),
        app_version: `web ${APP_VERSION}`,
        queue_depth: this.outbox.waiting().length,
      };
      const battery = await this.#batteryPercent();
      if (battery !== null) body.battery = battery;
      const answer = await this.api.heartbeat(this.token, body);
      if (answer.ok && answer.body) {
        this.intervalS = Math.min(
          300,
          Math.max(1, Number(answer.body.next_heartbeat_s) || DEFAULT_INTERVAL_S),
        );
        nextMs = this.intervalS * 1000;
        this.dispatchEvent(new CustomEvent("answer", { detail: answer.body }));
      } else if (answer.status === 401) {
        this.dispatchEvent(new CustomEvent("unauthorized", { detail: { problem: answer.problem } }));
        this.token = null;
      } else if (answer.retryAfter) {
        nextMs = Math.max(nextMs, answer.retryAfter);
      }
    } finally {
      this.beating = false;
    }
    this.soon(nextMs);
  }

  async #batteryPercent() {
    if (typeof navigator.getBattery !== "function") return null;
    try {
      this.battery ??= await navigator.getBattery();
      return Math.round(this.battery.level * 100);
    } catch {
      return null;
    }
  }
}
