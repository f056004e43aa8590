/** The status bar item: polls the server and shows model, state and last latency; a click toggles completion. */
import * as vscode from "vscode";
import type { Server } from "./server";
import { isEnabled } from "./settings";
import { describe, type StatusView } from "./status";

export const TOGGLE_COMMAND = "codecomplete.toggle";
/** Often enough to follow a model load and fresh latencies; one local request, so cheap. */
export const POLL_MS = 2000;

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly server: Server) {
    this.item.command = TOGGLE_COMMAND;
    this.render(describe({ kind: "starting" }, isEnabled()));
    this.item.show();
  }

  startPolling(): void {
    this.timer ??= setInterval(() => void this.refresh(), POLL_MS);
  }

  /** Read the server's status now and redraw. */
  async refresh(): Promise<StatusView> {
    const view = describe(await this.server.read(), isEnabled());
    this.render(view);
    return view;
  }

  private render(view: StatusView): void {
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.alarming ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  dispose(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.item.dispose();
  }
}
