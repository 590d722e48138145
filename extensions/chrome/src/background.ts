// The service worker: relays between each tab's content script and the panels inspecting
// that tab, by tab id. It never reads the messages beyond routing them; when the last panel
// of a tab goes, it tells that tab's page (`detach`) to stop pushing.
import type { PanelMessage } from "qemuweb-runtime";
import { CONTENT_PORT, PANEL_PORT_PREFIX, SOURCE, VERSION, type ToPage, type ToPanel } from "./relay.js";

const contents = new Map<number, chrome.runtime.Port>();
const panels = new Map<number, Set<chrome.runtime.Port>>();

function toPanels(tabId: number, message: ToPanel): void {
  for (const p of panels.get(tabId) ?? []) p.postMessage(message);
}

chrome.runtime.onConnect.addListener((port) => {
  if (port.name === CONTENT_PORT) {
    const tabId = port.sender?.tab?.id;
    // Top frames only (the manifest injects no others); and never another extension.
    if (tabId === undefined || port.sender?.frameId !== 0 || port.sender?.id !== chrome.runtime.id) {
      port.disconnect();
      return;
    }
    contents.get(tabId)?.disconnect();
    contents.set(tabId, port);
    port.onMessage.addListener((message) => toPanels(tabId, { kind: "page", message }));
    port.onDisconnect.addListener(() => {
      if (contents.get(tabId) === port) contents.delete(tabId);
    });
    toPanels(tabId, { kind: "pageConnected" });
    return;
  }
  if (port.name.startsWith(PANEL_PORT_PREFIX)) {
    // Panels are extension pages: a content script cannot open one of these.
    if (port.sender?.id !== chrome.runtime.id || port.sender.url?.startsWith(chrome.runtime.getURL("")) !== true) {
      port.disconnect();
      return;
    }
    const tabId = Number(port.name.slice(PANEL_PORT_PREFIX.length));
    if (!Number.isInteger(tabId)) {
      port.disconnect();
      return;
    }
    let set = panels.get(tabId);
    if (!set) panels.set(tabId, (set = new Set()));
    set.add(port);
    port.onMessage.addListener((m: ToPage) => {
      const content = contents.get(tabId);
      if (content && m?.kind === "toPage") content.postMessage(m.message);
      else if (!content) port.postMessage({ kind: "noPage" } satisfies ToPanel);
    });
    port.onDisconnect.addListener(() => {
      set.delete(port);
      if (set.size > 0) return;
      panels.delete(tabId);
      // No panel listens to this tab any more: the page stops pushing to it.
      const detach: PanelMessage = { source: SOURCE, direction: "panel", version: VERSION, id: 0, command: { type: "detach" } };
      contents.get(tabId)?.postMessage(detach);
    });
    if (!contents.has(tabId)) port.postMessage({ kind: "noPage" } satisfies ToPanel);
  }
});
