// What the extension's own parts (panel, service worker, content script) say to each other
// over chrome.runtime ports. The page's messages themselves are the runtime's DevTools hook
// messages (`PanelMessage`, `PageMessage`), typed from qemuweb-runtime's generated
// declarations (src/devtools.rs).
import type { PageMessage, PanelMessage } from "qemuweb-runtime";

/** The name of a panel's port: `panel:<tabId>`. */
export const PANEL_PORT_PREFIX = "panel:";
/** The name of a content script's port (its tab comes from `port.sender`). */
export const CONTENT_PORT = "content";

/** From a panel to the service worker: a message for the page of its tab. */
export interface ToPage {
  kind: "toPage";
  message: PanelMessage;
}

/** From the service worker to a panel. */
export type ToPanel =
  | { kind: "page"; message: PageMessage }
  /** The tab's page (re)loaded its content script: ask it again. */
  | { kind: "pageConnected" }
  /** The tab has no page with the content script (yet). */
  | { kind: "noPage" };

/** The source and version of the hook's messages (`DEVTOOLS_SOURCE`, `DEVTOOLS_VERSION`). */
export const SOURCE = "qemuweb-devtools";
export const VERSION = 1;
