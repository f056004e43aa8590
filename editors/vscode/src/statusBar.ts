/**
 * The status bar item: model, state and last latency, kept up to date by the server's `codecomplete/statusChanged`
 * notifications rather than by polling; a click toggles completion.
 *
 * The status is requested once after each start, after a settings change, and whenever a notification carries
 * no status. A server that has not (yet) sent a notification is still followed: its status is re-read while the
 * model loads (with a growing delay) and after each answered completion, until its first notification arrives.
 */
import * as vscode from "vscode";
import type { Server } from "./server";
import { isEnabled } from "./settings";
import { describe, isLoading, isReady, type Reading, type ServerStatus, type StatusView } from "./status";

export const TOGGLE_COMMAND = "codecomplete.toggle";
/** VS Code's command that asks the inline completion providers again at the cursor. */
export const TRIGGER_INLINE_SUGGEST = "editor.action.inlineSuggest.trigger";
/** Delays between status reads while a server without notifications loads its model. */
export const LOADING_RECHECK_MS = [250, 500, 1000, 2000] as const;

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  private readonly subscriptions: vscode.Disposable[];
  private last: Reading = { kind: "starting" };
  /** Orders readings: one asked for before a later notification arrived is stale when it comes back. */
  private sequence = 0;
  private shown = 0;
  /** The server pushes its status: no re-reads needed. */
  private pushing = false;
  private recheck: NodeJS.Timeout | undefined;
  private rechecks = 0;
  private disposed = false;

  constructor(private readonly server: Server) {
    this.item.command = TOGGLE_COMMAND;
    this.render(describe(this.last, isEnabled()));
    this.item.show();
    this.subscriptions = [
      server.onDidPushStatus((status) => void this.pushed(status)),
      server.onDidAnswerCompletion(() => {
        if (!this.pushing) {
          void this.refresh();
        }
      }),
      server.onDidChangeState(() => this.stateChanged()),
    ];
  }

  /** The client started, stopped or failed: show it; once it runs, ask the (new) server for its status. */
  private stateChanged(): void {
    const known = this.server.localReading();
    if (known === undefined) {
      if (this.last.kind !== "status") {
        void this.refresh();
      }
      return;
    }
    if (known.kind === "starting") {
      this.reset();
    }
    this.show(known, ++this.sequence);
  }

  /** The server starts over (a start or restart): its first notification is awaited afresh. */
  private reset(): void {
    this.pushing = false;
    this.rechecks = 0;
    this.clearRecheck();
  }

  /** Read the server's status now and redraw. */
  async refresh(): Promise<StatusView> {
    const sequence = ++this.sequence;
    const reading = await this.server.read();
    return this.show(reading, sequence);
  }

  /** What the item shows now. */
  get view(): StatusView {
    return describe(this.last, isEnabled());
  }

  /** Redraw from the last reading (after the `enabled` setting changed), without asking the server. */
  redraw(): StatusView {
    const view = this.view;
    this.render(view);
    return view;
  }

  private async pushed(status: ServerStatus | undefined): Promise<void> {
    this.pushing = true;
    this.clearRecheck();
    if (status === undefined) {
      await this.refresh();
    } else {
      this.show({ kind: "status", status }, ++this.sequence);
    }
  }

  private show(reading: Reading, sequence: number): StatusView {
    if (this.disposed || sequence < this.shown) {
      return this.view;
    }
    this.shown = sequence;
    const before = this.last;
    this.last = reading;
    const view = describe(reading, isEnabled());
    this.render(view);
    if (before.kind === "status" && isLoading(before) && isReady(reading)) {
      // The keystrokes typed while the model loaded were answered with nothing: ask again at the cursor. (A
      // server found ready at its start had nothing to answer late: no suggestion is forced on the user.)
      this.triggerSuggestion();
    }
    this.scheduleRecheck(reading);
    return view;
  }

  private triggerSuggestion(): void {
    if (isEnabled() && vscode.window.activeTextEditor !== undefined) {
      void vscode.commands.executeCommand(TRIGGER_INLINE_SUGGEST);
    }
  }

  /** For a server that does not push its status: look again while its model loads. */
  private scheduleRecheck(reading: Reading): void {
    this.clearRecheck();
    if (this.pushing || this.disposed || !(reading.kind === "status" && isLoading(reading))) {
      this.rechecks = 0;
      return;
    }
    const delay = LOADING_RECHECK_MS[Math.min(this.rechecks, LOADING_RECHECK_MS.length - 1)];
    this.rechecks += 1;
    this.recheck = setTimeout(() => {
      this.recheck = undefined;
      void this.refresh();
    }, delay);
  }

  private clearRecheck(): void {
    clearTimeout(this.recheck);
    this.recheck = undefined;
  }

  private render(view: StatusView): void {
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.alarming ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  dispose(): void {
    this.disposed = true;
    this.clearRecheck();
    for (const subscription of this.subscriptions) {
      subscription.dispose();
    }
    this.item.dispose();
  }
}
