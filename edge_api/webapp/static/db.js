// The tablet's own storage: IndexedDB of the box's origin. Two object stores:
//   kv      settings by name: "pairing" (device id, token, judge, event), "event" (the judge's
//           event and its ETag, for working offline), "device_name", "ledger" (the last safe
//           watermark the box sent: {epoch, safe_seq}), "draft:<judge>:<entry>" (scores typed for
//           an entry and not submitted yet: view-entry.js)
//   sheets  every sheet this tablet made, by sheet_id, with its state in the queue (outbox.js);
//           a stored sheet the box could still lose carries `kept` ({seq, epoch}) until it is safe
// Writes use strict durability: a sheet counts as kept only once it is on the tablet's disk.

const NAME = "venuebox-judge";
const VERSION = 1;
let opened = null;

export function openDb() {
  opened ??= new Promise((resolve, reject) => {
    if (!("indexedDB" in globalThis)) {
      reject(new Error("this browser has no IndexedDB, so it cannot keep sheets offline"));
      return;
    }
    const request = indexedDB.open(NAME, VERSION);
    request.onupgradeneeded = (event) => {
      const db = request.result;
      // One step per version, from the tablet's own: an upgrade changes a tablet's queue in
      // place, never drops it. (Fields added to records, as `kept`, need no step: records
      // without them read as before.)
      if (event.oldVersion < 1) {
        db.createObjectStore("kv");
        db.createObjectStore("sheets", { keyPath: "sheet_id" });
      }
    };
    request.onsuccess = () => {
      const db = request.result;
      // Another tab with a newer app wants to upgrade: let it, and reload this one later.
      db.onversionchange = () => db.close();
      resolve(db);
    };
    request.onerror = () => reject(request.error);
    request.onblocked = () => reject(new Error("the tablet's storage is held by another tab of this app"));
  });
  return opened;
}

async function run(store, mode, work) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const options = mode === "readwrite" ? { durability: "strict" } : undefined;
    const transaction = db.transaction(store, mode, options);
    let result;
    const request = work(transaction.objectStore(store));
    if (request) request.onsuccess = () => (result = request.result);
    transaction.oncomplete = () => resolve(result);
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error ?? new Error("storage transaction aborted"));
  });
}

export const kv = {
  get: (key) => run("kv", "readonly", (store) => store.get(key)),
  set: (key, value) => run("kv", "readwrite", (store) => store.put(value, key)),
  delete: (key) => run("kv", "readwrite", (store) => store.delete(key)),
  /** The names that start with `prefix`, in order. */
  keys: (prefix) =>
    run("kv", "readonly", (store) => store.getAllKeys(IDBKeyRange.bound(prefix, `${prefix}\uffff`))),
};

export const sheetStore = {
  all: () => run("sheets", "readonly", (store) => store.getAll()),
  /** Resolves once the record is committed (the transaction completed). */
  put: (record) => run("sheets", "readwrite", (store) => store.put(record)),
  /** Several records in one transaction: all of them committed, or none. */
  putAll: (records) =>
    run("sheets", "readwrite", (store) => {
      for (const record of records) store.put(record);
    }),
};
