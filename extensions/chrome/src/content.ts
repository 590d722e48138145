// The content script (a classic script, so no imports): relays the DevTools hook's messages
// between the page's own window and the extension's service worker. It forwards only what
// the page's window posted to itself with the hook's `source` and `direction: "page"`, and
// posts the panel's messages to the page's window for the page's origin only. It holds
// nothing and decides nothing: the page's hook checks every message it gets.
type RelayPageMessage = import("qemuweb-runtime").PageMessage;
type RelayPanelMessage = import("qemuweb-runtime").PanelMessage;

(() => {
  const SOURCE = "qemuweb-devtools";
  let port: chrome.runtime.Port | null = null;

  function connect(): chrome.runtime.Port {
    const p = chrome.runtime.connect({ name: "content" });
    p.onMessage.addListener((message: RelayPanelMessage) => {
      if (message?.source !== SOURCE || message.direction !== "panel") return;
      window.postMessage(message, window.location.origin);
    });
    // The service worker went (it is restarted on demand): connect again.
    p.onDisconnect.addListener(() => {
      if (port === p) port = null;
      setTimeout(() => { port ??= connect(); }, 100);
    });
    return p;
  }

  window.addEventListener("message", (event: MessageEvent) => {
    if (event.source !== window || event.origin !== window.location.origin) return;
    const data = event.data as RelayPageMessage | undefined;
    if (data?.source !== SOURCE || data.direction !== "page") return;
    port ??= connect();
    port.postMessage(data);
  });
  port = connect();
})();
