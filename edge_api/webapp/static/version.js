// The judge app's version, sent in every heartbeat as app_version. It ships inside the box's
// package, so it is the box's version (a test keeps the two equal).
export const APP_VERSION = "0.1.0";
