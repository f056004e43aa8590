/**
 * Stands in for `vscode-languageclient/node` when the extension's own modules load it: the real client needs a
 * running VS Code and a server process. It records what the extension asked of it, and is as strict as the
 * real server: a request without params is rejected (as JSON-RPC's "Invalid params"), and so is a method the
 * server does not know.
 */

export enum State {
  Stopped = 1,
  Running = 2,
  Starting = 3,
  StartFailed = 4,
}

export interface Sent {
  method: string;
  params: unknown;
}

/** The methods the real server answers (see lsp/server.py); `shutdown` is the one LSP defines without params. */
export const KNOWN_REQUESTS = new Set(["codecomplete/status", "codecomplete/lastCompletion"]);

/** What vscode-jsonrpc rejects a request with when the server answers with an error. */
export class ResponseError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

type Handler = (params: unknown) => unknown;
type StateListener = (event: { oldState: State; newState: State }) => void;
type Middleware = {
  provideInlineCompletionItems?: (
    document: unknown,
    position: unknown,
    context: unknown,
    token: unknown,
    next: (...args: unknown[]) => Promise<unknown>,
  ) => Promise<unknown>;
};

export const fakes = {
  instances: [] as LanguageClient[],
  /** When set, `start()` rejects with it, as the real client does when the server cannot be spawned. */
  startFailure: undefined as Error | undefined,
  /** The answer to `codecomplete/status`; an Error makes the request fail. */
  statusAnswer: undefined as unknown,
  /** What the server answers an inline completion request with. */
  inlineAnswer: { items: [] } as unknown,
  reset(): void {
    this.instances.length = 0;
    this.startFailure = undefined;
    this.statusAnswer = undefined;
    this.inlineAnswer = { items: [] };
  },
};

export class LanguageClient {
  state = State.Stopped;
  startCalls = 0;
  disposed = false;
  readonly notifications: Sent[] = [];
  readonly requests: Sent[] = [];
  /** Server → client notification handlers the extension registered, by method. */
  readonly handlers = new Map<string, Handler>();
  private readonly stateListeners: StateListener[] = [];

  constructor(
    readonly id: string,
    readonly name: string,
    readonly serverOptions: { command: string; args: string[] },
    readonly clientOptions: {
      documentSelector: unknown;
      initializationOptions: unknown;
      outputChannel: unknown;
      middleware?: Middleware;
    },
  ) {
    fakes.instances.push(this);
  }

  private setState(next: State): void {
    const oldState = this.state;
    this.state = next;
    for (const listener of [...this.stateListeners]) {
      listener({ oldState, newState: next });
    }
  }

  onDidChangeState(listener: StateListener): { dispose(): void } {
    this.stateListeners.push(listener);
    return { dispose: () => this.stateListeners.splice(this.stateListeners.indexOf(listener), 1) };
  }

  onNotification(method: string, handler: Handler): { dispose(): void } {
    this.handlers.set(method, handler);
    return { dispose: () => this.handlers.delete(method) };
  }

  async start(): Promise<void> {
    this.startCalls += 1;
    this.setState(State.Starting);
    await Promise.resolve();
    if (fakes.startFailure !== undefined) {
      this.setState(State.StartFailed);
      throw fakes.startFailure;
    }
    this.setState(State.Running);
  }

  isRunning(): boolean {
    return this.state === State.Running;
  }

  async sendRequest(method: string, params?: unknown): Promise<unknown> {
    this.requests.push({ method, params });
    await Promise.resolve();
    if (!KNOWN_REQUESTS.has(method)) {
      throw new ResponseError(-32601, `Method Not Found: ${method}`);
    }
    if (params === undefined) {
      throw new ResponseError(-32602, `Invalid params: ${method} needs params`);
    }
    if (fakes.statusAnswer instanceof Error) {
      throw fakes.statusAnswer;
    }
    return fakes.statusAnswer;
  }

  async sendNotification(method: string, params?: unknown): Promise<void> {
    this.notifications.push({ method, params });
  }

  /** The server sends a notification (test helper). */
  push(method: string, params?: unknown): void {
    const handler = this.handlers.get(method);
    if (handler === undefined) {
      throw new Error(`no handler for ${method}: the extension did not subscribe to it`);
    }
    handler(params);
  }

  /** VS Code asks for inline completions through the client's provider and its middleware (test helper). */
  async provideInlineCompletion(): Promise<unknown> {
    const next = async () => fakes.inlineAnswer;
    const middleware = this.clientOptions.middleware?.provideInlineCompletionItems;
    return middleware ? middleware({}, {}, {}, {}, next) : next();
  }

  /** The server process went away and the client gave up restarting it (test helper). */
  crash(): void {
    this.setState(State.Stopped);
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    this.setState(State.Stopped);
  }
}
