/**
 * The one connection every part of the extension shares: which server, its API client, and
 * what the status bar shows (loaded models, the last reply's speed, requests in flight). The
 * sidebar, the chat panels, the status bar and the completer all read it, so they always agree
 * on where the models are.
 */
import { PageConfig } from '@jupyterlab/coreutils';
import { Kernel, ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { OllamaApi, ProcessModel } from './api';
import {
  FoundServer,
  KERNEL_ANSWER_TIMEOUT_MS,
  KERNEL_SERVERS_EXPRESSION,
  START_SERVER_CODE,
  findServer,
  parseKernelServers,
  withTimeout
} from './discovery';

/** Jupyter's credentials (token, XSRF) on every request, through `ServerConnection`. */
export function jupyterFetcher(settings = ServerConnection.makeSettings()) {
  return (url: string, init: RequestInit) => ServerConnection.makeRequest(url, init, settings);
}

export class Connection {
  private _server: FoundServer | null = null;
  private _api: OllamaApi | null = null;
  private _loaded: ProcessModel[] = [];
  private _lastTokensPerSecond: number | null = null;
  private _busy = 0;
  private _changed = new Signal<this, void>(this);
  /** Bumped by every refresh and forget: a slow lookup that started earlier cannot undo a newer one. */
  private _generation = 0;

  constructor(
    private readonly options: {
      kernel: () => Kernel.IKernelConnection | null;
      settingsUrl: () => string;
      fetcher?: (url: string, init: RequestInit) => Promise<Response>;
    }
  ) {}

  get changed(): ISignal<this, void> {
    return this._changed;
  }
  get server(): FoundServer | null {
    return this._server;
  }
  get api(): OllamaApi | null {
    return this._api;
  }
  get loaded(): ProcessModel[] {
    return this._loaded;
  }
  get lastTokensPerSecond(): number | null {
    return this._lastTokensPerSecond;
  }
  get busy(): boolean {
    return this._busy > 0;
  }

  /** Look for a server again (a kernel started one, the settings changed, it went away). */
  async refresh(): Promise<FoundServer | null> {
    const generation = ++this._generation;
    const fetcher = this.options.fetcher ?? jupyterFetcher();
    const found = await findServer({
      baseUrl: PageConfig.getBaseUrl(),
      kernelServers: () => this.kernelServers(),
      settingsUrl: this.options.settingsUrl(),
      answers: async proxyUrl => {
        try {
          await new OllamaApi(proxyUrl, fetcher).version(AbortSignal.timeout(5000));
          return true;
        } catch {
          return false;
        }
      }
    });
    if (generation !== this._generation) {
      return this._server; // a newer refresh (or a forget) has already decided
    }
    if (found?.proxyUrl !== this._server?.proxyUrl) {
      this._server = found;
      this._api = found ? new OllamaApi(found.proxyUrl, fetcher) : null;
    }
    await this.refreshLoaded();
    return found;
  }

  /**
   * The server went away (its kernel restarted, it stopped): drop it now, so the next request
   * looks for a server again instead of reaching for the old address.
   */
  forget(): void {
    this._generation++;
    this._server = null;
    this._api = null;
    this._loaded = [];
    this._changed.emit();
  }

  /** `/api/ps` again; a server that stopped answering is forgotten. */
  async refreshLoaded(): Promise<void> {
    try {
      this._loaded = this._api ? await this._api.ps() : [];
    } catch {
      this._loaded = [];
    }
    this._changed.emit();
  }

  /** Start `ollama_nb.serve()` in the active kernel, then find it. */
  async startInKernel(): Promise<FoundServer | null> {
    const kernel = this.options.kernel();
    if (!kernel) {
      throw new Error('open a notebook with a Python kernel first');
    }
    const reply = await kernel.requestExecute({ code: START_SERVER_CODE, silent: true, store_history: false })
      .done;
    if (reply.content.status !== 'ok') {
      const content = reply.content as { ename?: string; evalue?: string };
      throw new Error(`${content.ename ?? 'error'}: ${content.evalue ?? 'the kernel could not start the server'}`);
    }
    return this.refresh();
  }

  /** Count a request in flight (the status bar's busy mark) until `work` settles. */
  async track<T>(work: Promise<T>): Promise<T> {
    this._busy++;
    this._changed.emit();
    try {
      return await work;
    } finally {
      this._busy--;
      this._changed.emit();
    }
  }

  /** A reply finished at this speed (tokens/s). */
  noteSpeed(tokensPerSecond: number | null): void {
    if (tokensPerSecond !== null) {
      this._lastTokensPerSecond = tokensPerSecond;
      this._changed.emit();
    }
  }

  private async kernelServers() {
    const kernel = this.options.kernel();
    if (!kernel) {
      return [];
    }
    // A restarting kernel may never answer this request: give up after a while, so a lookup
    // never hangs (the settings URL is tried next, and the next request looks again).
    const reply = await withTimeout(
      kernel.requestExecute({
        code: '',
        silent: true,
        store_history: false,
        user_expressions: { servers: KERNEL_SERVERS_EXPRESSION }
      }).done,
      KERNEL_ANSWER_TIMEOUT_MS
    );
    const result = (reply.content as any).user_expressions?.servers;
    return result?.status === 'ok' ? parseKernelServers(result.data?.['text/plain']) : [];
  }
}
