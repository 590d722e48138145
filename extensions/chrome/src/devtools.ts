// The DevTools page: adds the QemuWeb panel, connected to the inspected tab.
chrome.devtools.panels.create("QemuWeb", "", `panel.html?tabId=${chrome.devtools.inspectedWindow.tabId}`);
export {};
