/** Entry point: start the codecomplete language server, keep it in step with the settings, show its status. */
import * as vscode from "vscode";
import { Server } from "./server";
import { SECTION, toggleEnabled } from "./settings";
import { StatusBar, TOGGLE_COMMAND } from "./statusBar";

export const RESTART_COMMAND = "codecomplete.restartServer";

let server: Server | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const active = new Server();
  const status = new StatusBar(active);
  server = active;
  context.subscriptions.push(
    status,
    vscode.commands.registerCommand(TOGGLE_COMMAND, async () => {
      await toggleEnabled();
      await status.refresh();
    }),
    vscode.commands.registerCommand(RESTART_COMMAND, async () => {
      await active.restart();
      await status.refresh();
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration(`${SECTION}.serverPath`)) {
        await active.restart();
      } else if (event.affectsConfiguration(SECTION)) {
        await active.sendSettings();
      } else {
        return;
      }
      await status.refresh();
    }),
  );
  await active.start();
  await status.refresh();
  status.startPolling();
}

/** VS Code awaits this, so the server gets a clean shutdown/exit rather than a killed pipe. */
export async function deactivate(): Promise<void> {
  const active = server;
  server = undefined;
  await active?.dispose();
}
