/**
 * A stand-in for the `vscode` module (VS Code cannot run here). It implements only what the extension and the
 * language client's constructor touch, reads setting defaults from the real package.json, and records what the
 * extension did so tests can assert on it.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";

type Listener<T> = (event: T) => unknown;

interface Contributed {
  default?: unknown;
  scope?: string;
}

const manifest = JSON.parse(readFileSync(join(__dirname, "..", "..", "package.json"), "utf8"));
const contributed: Record<string, Contributed> = manifest.contributes.configuration.properties;

/** The oldest VS Code the manifest admits ("^1.91.0" → "1.91.0"); the real language client checks it. */
export let version: string = manifest.engines.vscode.replace(/^[^\d]*/, "");

export function setVersion(value: string): void {
  version = value;
}

export enum StatusBarAlignment {
  Left = 1,
  Right = 2,
}

export enum ConfigurationTarget {
  Global = 1,
  Workspace = 2,
  WorkspaceFolder = 3,
}

export enum LogLevel {
  Off = 0,
  Trace = 1,
  Debug = 2,
  Info = 3,
  Warning = 4,
  Error = 5,
}

/** Base classes the real language client extends when it loads; their bodies do not matter here. */
export class CompletionItem {}
export class CodeLens {}
export class DocumentLink {}
export class InlayHint {}
export class CallHierarchyItem {}
export class TypeHierarchyItem {}
export class SymbolInformation {}
export class CodeAction {}
export class Diagnostic {}
export class CancellationError extends Error {}
export const CodeActionKind = Object.fromEntries(
  ["Empty", "QuickFix", "Refactor", "RefactorExtract", "RefactorInline", "RefactorRewrite", "Source"]
    .concat(["SourceOrganizeImports"])
    .map((kind) => [kind, { value: kind }]),
);

/** Value types the real client converts LSP results into. */
export class Position {
  constructor(
    readonly line: number,
    readonly character: number,
  ) {}
}

export class Range {
  readonly start: Position;
  readonly end: Position;
  constructor(start: Position | number, end: Position | number, endLine?: number, endCharacter?: number) {
    if (typeof start === "number" && typeof end === "number") {
      this.start = new Position(start, end);
      this.end = new Position(endLine ?? start, endCharacter ?? end);
    } else {
      this.start = start as Position;
      this.end = end as Position;
    }
  }
}

export class InlineCompletionItem {
  constructor(
    readonly insertText: string | { value: string },
    readonly range?: Range,
    readonly command?: unknown,
  ) {}
}

export class InlineCompletionList {
  constructor(readonly items: InlineCompletionItem[]) {}
}

export enum InlineCompletionTriggerKind {
  Invoke = 0,
  Automatic = 1,
}

export class Uri {
  private constructor(
    readonly scheme: string,
    readonly fsPath: string,
  ) {}
  static file(path: string): Uri {
    return new Uri("file", path);
  }
  static parse(value: string): Uri {
    const [scheme, rest] = value.split(":", 2);
    return new Uri(scheme, decodeURIComponent(rest.replace(/^\/\//, "")));
  }
  toString(): string {
    return `${this.scheme}://${encodeURI(this.fsPath)}`;
  }
}

/** `remoteName` is set in a remote window (SSH, containers, WSL, code-server). */
export const env = { appName: "VS Code (mock)", language: "en", remoteName: undefined as string | undefined };

export class ThemeColor {
  constructor(readonly id: string) {}
}

export class Disposable {
  constructor(private readonly onDispose: () => void) {}
  dispose(): void {
    this.onDispose();
  }
}

export class EventEmitter<T> {
  private listeners: Listener<T>[] = [];
  readonly event = (listener: Listener<T>): Disposable => {
    this.listeners.push(listener);
    return new Disposable(() => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    });
  };
  fire(value: T): void {
    for (const listener of this.listeners) {
      listener(value);
    }
  }
  dispose(): void {
    this.listeners = [];
  }
}

export class FakeStatusBarItem {
  text = "";
  tooltip: string | undefined;
  command: string | undefined;
  backgroundColor: ThemeColor | undefined;
  visible = false;
  disposed = false;
  constructor(
    readonly alignment: StatusBarAlignment,
    readonly priority: number | undefined,
  ) {}
  show(): void {
    this.visible = true;
  }
  hide(): void {
    this.visible = false;
  }
  dispose(): void {
    this.disposed = true;
  }
}

/** Everything the extension did to the mocked editor, plus the settings it sees. */
export const state = {
  /** Settings by full key ("codecomplete.model"), as written in the user's / the workspace's settings.json. */
  global: new Map<string, unknown>(),
  workspace: new Map<string, unknown>(),
  statusBarItems: [] as FakeStatusBarItem[],
  commands: new Map<string, (...args: unknown[]) => unknown>(),
  configListeners: [] as Listener<{ affectsConfiguration(section: string): boolean }>[],
  /** Promises returned by configuration listeners, so a test can wait for the extension to finish reacting. */
  pending: [] as unknown[],
  outputChannels: [] as string[],
  /** Inline completion providers registered (by the real language client), with their document selectors. */
  inlineProviders: [] as { selector: unknown; provider: { provideInlineCompletionItems: Function } }[],
  messages: [] as string[],
  /** Commands executed through `vscode.commands.executeCommand`, with their arguments. */
  executed: [] as { id: string; args: unknown[] }[],
  /** The answer the user gives to the next message shown (a button's title), if any. */
  messageChoice: undefined as string | undefined,
};

export function reset(): void {
  state.global.clear();
  state.workspace.clear();
  state.statusBarItems.length = 0;
  state.commands.clear();
  state.configListeners.length = 0;
  state.pending.length = 0;
  state.outputChannels.length = 0;
  state.inlineProviders.length = 0;
  state.messages.length = 0;
  state.executed.length = 0;
  state.messageChoice = undefined;
  window.activeTextEditor = undefined;
  env.remoteName = undefined;
}

/** Change settings the way a user editing settings.json does: write, then notify listeners. */
export function changeSettings(values: Record<string, unknown>, target = ConfigurationTarget.Global): void {
  const store = target === ConfigurationTarget.Global ? state.global : state.workspace;
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined) {
      store.delete(key);
    } else {
      store.set(key, value);
    }
  }
  const changed = Object.keys(values);
  const event = {
    affectsConfiguration: (section: string) =>
      changed.some((key) => key === section || key.startsWith(`${section}.`)),
  };
  for (const listener of state.configListeners) {
    state.pending.push(listener(event));
  }
}

/** Wait until every configuration listener fired so far has finished. */
export async function settle(): Promise<void> {
  await Promise.all(state.pending.splice(0));
}

function noEvent(): Disposable {
  return new Disposable(() => undefined);
}

/** Settings of these scopes are read from the user (or remote) settings only, as VS Code does. */
const USER_ONLY_SCOPES = new Set(["application", "machine"]);

function workspaceValue(name: string): unknown {
  return USER_ONLY_SCOPES.has(contributed[name]?.scope ?? "") ? undefined : state.workspace.get(name);
}

function configuration(section: string) {
  const full = (key: string) => (section ? `${section}.${key}` : key);
  return {
    get<T>(key: string, fallback?: T): T | undefined {
      const name = full(key);
      if (workspaceValue(name) !== undefined) {
        return workspaceValue(name) as T;
      }
      for (const store of [state.global]) {
        if (store.has(name)) {
          return store.get(name) as T;
        }
      }
      const declared = contributed[name]?.default as T | undefined;
      return declared !== undefined ? declared : fallback;
    },
    has(key: string): boolean {
      const name = full(key);
      return name in contributed || state.global.has(name) || state.workspace.has(name);
    },
    inspect<T>(key: string) {
      const name = full(key);
      return {
        key: name,
        defaultValue: contributed[name]?.default as T | undefined,
        globalValue: state.global.get(name) as T | undefined,
        workspaceValue: workspaceValue(name) as T | undefined,
        workspaceFolderValue: undefined,
      };
    },
    async update(key: string, value: unknown, target: ConfigurationTarget = ConfigurationTarget.Workspace) {
      changeSettings({ [full(key)]: value }, target);
    },
  };
}

export const workspace = {
  getConfiguration: (section = "") => configuration(section),
  onDidChangeConfiguration(listener: Listener<{ affectsConfiguration(section: string): boolean }>): Disposable {
    state.configListeners.push(listener);
    return new Disposable(() => {
      state.configListeners.splice(state.configListeners.indexOf(listener), 1);
    });
  },
  workspaceFolders: undefined,
  /** Documents and events the real client subscribes to; no document is open and nothing happens here. */
  textDocuments: [],
  notebookDocuments: [],
  onDidOpenTextDocument: noEvent,
  onDidChangeTextDocument: noEvent,
  onDidCloseTextDocument: noEvent,
  onDidSaveTextDocument: noEvent,
  onWillSaveTextDocument: noEvent,
  onDidChangeWorkspaceFolders: noEvent,
  onDidCreateFiles: noEvent,
  onDidRenameFiles: noEvent,
  onDidDeleteFiles: noEvent,
  onWillCreateFiles: noEvent,
  onWillRenameFiles: noEvent,
  onWillDeleteFiles: noEvent,
  onDidOpenNotebookDocument: noEvent,
  onDidChangeNotebookDocument: noEvent,
  onDidSaveNotebookDocument: noEvent,
  onDidCloseNotebookDocument: noEvent,
};

export const languages = {
  registerInlineCompletionItemProvider(
    selector: unknown,
    provider: { provideInlineCompletionItems: Function },
  ): Disposable {
    const entry = { selector, provider };
    state.inlineProviders.push(entry);
    return new Disposable(() => state.inlineProviders.splice(state.inlineProviders.indexOf(entry), 1));
  },
};

function showMessage(message: string, ...items: string[]): Promise<string | undefined> {
  state.messages.push(message);
  const choice = state.messageChoice;
  state.messageChoice = undefined;
  return Promise.resolve(choice !== undefined && items.includes(choice) ? choice : undefined);
}

export const window = {
  /** The focused editor; tests set it to stand for an open file. */
  activeTextEditor: undefined as unknown,
  showErrorMessage: showMessage,
  showWarningMessage: showMessage,
  showInformationMessage: showMessage,
  visibleTextEditors: [],
  onDidChangeVisibleTextEditors: noEvent,
  tabGroups: { all: [], onDidChangeTabs: noEvent, onDidChangeTabGroups: noEvent },
  createStatusBarItem(alignment: StatusBarAlignment, priority?: number): FakeStatusBarItem {
    const item = new FakeStatusBarItem(alignment, priority);
    state.statusBarItems.push(item);
    return item;
  },
  createOutputChannel(name: string) {
    state.outputChannels.push(name);
    return {
      name,
      logLevel: LogLevel.Info,
      onDidChangeLogLevel: new EventEmitter<LogLevel>().event,
      append() {},
      appendLine() {},
      trace() {},
      debug() {},
      info() {},
      warn() {},
      error() {},
      show() {},
      dispose() {},
    };
  },
};

/** VS Code's own commands the extension runs; executing them here only records them. */
const BUILT_IN_COMMANDS = new Set([
  "editor.action.inlineSuggest.trigger",
  "workbench.action.openSettings",
  "workbench.action.openRemoteSettings",
]);

export const commands = {
  registerCommand(id: string, handler: (...args: unknown[]) => unknown): Disposable {
    if (state.commands.has(id)) {
      throw new Error(`command ${id} already registered`);
    }
    state.commands.set(id, handler);
    return new Disposable(() => state.commands.delete(id));
  },
  async executeCommand(id: string, ...args: unknown[]): Promise<unknown> {
    state.executed.push({ id, args });
    const handler = state.commands.get(id);
    if (handler === undefined) {
      if (BUILT_IN_COMMANDS.has(id)) {
        return undefined;
      }
      throw new Error(`command ${id} not found`);
    }
    return handler(...args);
  },
};
