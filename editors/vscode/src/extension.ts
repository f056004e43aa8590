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
      // The settings listener tells the server and reads its status; the item follows the setting at once.
      status.redraw();
    }),
    vscode.commands.registerCommand(RESTART_COMMAND, () => active.restart()),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration(SECTION)) {
        return;
      }
      if (event.affectsConfiguration(`${SECTION}.serverPath`) || active.failed) {
        // A new executable, or another try for one that did not start (PATH or the file may be fixed now).
        await active.restart();
      } else {
        await active.sendSettings();
        await status.refresh();
      }
    }),
  );
  // The status is read once the client runs (StatusBar follows the client's state).
  await active.start();
}

/** VS Code awaits this, so the server gets a clean shutdown/exit rather than a killed pipe. */
export async function deactivate(): Promise<void> {
  const active = server;
  server = undefined;
  await active?.dispose();
}
