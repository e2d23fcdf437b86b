/**
 * A small client for Ollama's native API, as the extension needs it. Requests go to a base URL
 * on the Jupyter server (jupyter-server-proxy's `proxy/<port>/`), through a fetch function that
 * adds Jupyter's credentials (`ServerConnection.makeRequest` in JupyterLab, a plain fetch in
 * tests). Streams ask for Server-Sent Events and read whatever comes back (see `streams`).
 */
import { readStream } from './streams';

export type Fetcher = (url: string, init: RequestInit) => Promise<Response>;

export interface ModelDetails {
  family?: string;
  parameter_size?: string;
  quantization_level?: string;
  format?: string;
}

export interface ListModel {
  name: string;
  model: string;
  size: number;
  digest: string;
  modified_at: string;
  details?: ModelDetails;
  /** Ollama's fields for a model that runs elsewhere: a named backend the kernel routes to. */
  remote_model?: string;
  remote_host?: string;
}

/** Models grouped by where they run: the kernel's own first (backend `local`), then each named
 * backend (the `NAME` of `NAME/model`, for models with a `remote_host`) in the server's order. */
export function groupByBackend(models: ListModel[]): { backend: string; models: ListModel[] }[] {
  const groups = new Map<string, ListModel[]>([['local', []]]);
  for (const m of models) {
    const backend = m.remote_host ? m.name.split('/')[0] : 'local';
    groups.set(backend, [...(groups.get(backend) ?? []), m]);
  }
  return [...groups].filter(([, list]) => list.length).map(([backend, list]) => ({ backend, models: list }));
}

export interface ProcessModel extends ListModel {
  size_vram: number;
  expires_at: string;
  context_length?: number;
}

export interface Message {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
}

export interface ChatChunk {
  model: string;
  message?: Message;
  done: boolean;
  done_reason?: string;
  eval_count?: number;
  eval_duration?: number;
  prompt_eval_count?: number;
  total_duration?: number;
}

export interface GenerateChunk {
  model: string;
  response: string;
  done: boolean;
  eval_count?: number;
  eval_duration?: number;
}

export interface Progress {
  status: string;
  digest?: string;
  total?: number;
  completed?: number;
}

/** An error the server answered with (`{"error": ...}` and its HTTP status). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

/** Tokens per second of a final chunk, as Ollama's timings give it (null without timings). */
export function tokensPerSecond(chunk: { eval_count?: number; eval_duration?: number }): number | null {
  if (!chunk.eval_count || !chunk.eval_duration) {
    return null;
  }
  return chunk.eval_count / (chunk.eval_duration / 1e9);
}

export class OllamaApi {
  constructor(
    readonly baseUrl: string,
    private readonly fetcher: Fetcher
  ) {}

  version(signal?: AbortSignal): Promise<{ version: string }> {
    return this.json('GET', 'api/version', undefined, signal);
  }

  async tags(): Promise<ListModel[]> {
    return (await this.json<{ models: ListModel[] }>('GET', 'api/tags')).models ?? [];
  }

  async ps(): Promise<ProcessModel[]> {
    return (await this.json<{ models: ProcessModel[] }>('GET', 'api/ps')).models ?? [];
  }

  show(model: string): Promise<{ capabilities?: string[]; details?: ModelDetails }> {
    return this.json('POST', 'api/show', { model });
  }

  async remove(model: string): Promise<void> {
    await this.json('DELETE', 'api/delete', { model });
  }

  /** Ollama's way to unload: a request without a prompt and keep_alive 0. */
  async unload(model: string): Promise<void> {
    await this.json('POST', 'api/generate', { model, keep_alive: 0, stream: false });
  }

  pull(model: string, onProgress: (p: Progress) => void, signal?: AbortSignal): Promise<void> {
    return this.stream('api/pull', { model, stream: true }, onProgress, signal);
  }

  chat(
    body: { model: string; messages: Message[]; options?: Record<string, unknown> },
    onChunk: (c: ChatChunk) => void,
    signal?: AbortSignal
  ): Promise<void> {
    return this.stream('api/chat', { ...body, stream: true }, onChunk, signal);
  }

  generate(
    body: { model: string; prompt: string; suffix?: string; raw?: boolean; options?: Record<string, unknown> },
    onChunk: (c: GenerateChunk) => void,
    signal?: AbortSignal
  ): Promise<void> {
    return this.stream('api/generate', { ...body, stream: true }, onChunk, signal);
  }

  url(path: string): string {
    return this.baseUrl.replace(/\/?$/, '/') + path;
  }

  private async request(method: string, path: string, body: unknown, accept: string, signal?: AbortSignal,
                        requestId?: string) {
    const headers: Record<string, string> = { Accept: accept };
    if (requestId) {
      headers[REQUEST_ID_HEADER] = requestId;
    }
    const init: RequestInit = { method, signal, headers };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    const response = await this.fetcher(this.url(path), init);
    if (!response.ok) {
      throw new ApiError(response.status, await errorText(response));
    }
    return response;
  }

  private async json<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const response = await this.request(method, path, body, 'application/json', signal);
    const text = await response.text();
    return (text ? JSON.parse(text) : {}) as T;
  }

  /**
   * A streamed request, cancellable through `signal`. Aborting closes our connection, but
   * jupyter-server-proxy keeps reading from the server after the browser has gone, so the
   * request also carries an id and an abort asks the server to cancel it (`/api/cancel`, which
   * ollama_nb answers and a plain Ollama refuses harmlessly).
   */
  private async stream<T>(path: string, body: unknown, onItem: (item: T) => void, signal?: AbortSignal) {
    const id = newRequestId();
    const cancel = () => void this.json('POST', 'api/cancel', { id }).catch(() => undefined);
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      const response = await this.request('POST', path, body, 'text/event-stream', signal, id);
      await readStream(response, onItem);
    } finally {
      signal?.removeEventListener('abort', cancel);
    }
  }
}

export const REQUEST_ID_HEADER = 'X-Request-Id';

/** A request id; `crypto.randomUUID` needs a secure context, which a JupyterHub on http is not. */
export function newRequestId(): string {
  if (typeof crypto !== 'undefined' && typeof crypto.randomUUID === 'function' && globalThis.isSecureContext) {
    return crypto.randomUUID();
  }
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

async function errorText(response: Response): Promise<string> {
  const text = await response.text();
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed.error === 'string') {
      return parsed.error;
    }
  } catch {
    // not JSON: a proxy's or a server's plain-text page
  }
  return text.trim().split('\n')[0] || `${response.status} ${response.statusText}`;
}
