/**
 * Inline code completion from a local model, through JupyterLab's own inline completer
 * (`IInlineCompletionProvider`, JupyterLab >= 4.1). The cell's text around the cursor and the
 * code cells above it are the context; a model whose template supports it gets the text after
 * the cursor as `suffix` (fill-in-the-middle), any other continues the prefix. Requests are
 * debounced, and each keystroke cancels the one in flight, so a slow 2-core machine answers
 * the last thing typed, not a queue of stale ones.
 */
import { GenerateChunk, OllamaApi } from './api';

export interface CompletionSettings {
  enabled: boolean;
  model: string;
  maxTokens: number;
  debounceMs: number;
}

export const DEFAULT_COMPLETION: CompletionSettings = {
  enabled: false,
  model: 'smollm2:135m',
  maxTokens: 48,
  debounceMs: 250
};

/** How many characters of earlier cells go into the prompt (small models, small contexts). */
export const MAX_CONTEXT_CHARS = 4000;

/**
 * At most one request alive: starting one aborts the previous, and each waits `delayMs` (aborted
 * meanwhile if another starts) before it runs. Resolves to null for a request that was
 * superseded.
 */
export class LatestOnly {
  private current: AbortController | null = null;

  async run<T>(delayMs: number, work: (signal: AbortSignal) => Promise<T>): Promise<T | null> {
    this.current?.abort();
    const controller = new AbortController();
    this.current = controller;
    const signal = controller.signal;
    await new Promise<void>(resolve => {
      const timer = setTimeout(resolve, delayMs);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (signal.aborted) {
      return null;
    }
    try {
      return await work(signal);
    } catch (err) {
      if (signal.aborted) {
        return null;
      }
      throw err;
    } finally {
      if (this.current === controller) {
        this.current = null;
      }
    }
  }

  cancel(): void {
    this.current?.abort();
    this.current = null;
  }
}

/** IPython's own syntax (magics, shell escapes): not code a model should continue. */
function isIPythonLine(line: string): boolean {
  return /^\s*[%!]/.test(line);
}

/** The prompt parts: earlier cells then the text before the cursor, and the text after it.
 * Magic and shell lines of earlier cells are left out: a small model reads them as prose. */
export function completionContext(cellsAbove: string[], text: string, offset: number) {
  const earlier = cellsAbove
    .map(cell => cell.split('\n').filter(line => !isIPythonLine(line)).join('\n').trim())
    .filter(cell => cell)
    .join('\n\n');
  const before = text.slice(0, offset);
  const joined = earlier ? `${earlier}\n\n${before}` : before;
  return { prefix: joined.slice(-MAX_CONTEXT_CHARS), suffix: text.slice(offset) };
}

/** A completion is a continuation: it stops at a blank line or a Markdown fence (chat-tuned
 * models like to close one), and keeps at most a few lines. */
export function trimCompletion(text: string, maxLines = 8): string {
  const cut = text.split(/\n\s*\n|```/)[0];
  return cut.split('\n').slice(0, maxLines).join('\n').replace(/\s+$/, '');
}

/** Ask the model for the text at the cursor. */
export async function complete(
  api: OllamaApi,
  settings: CompletionSettings,
  context: { prefix: string; suffix: string },
  fim: boolean,
  signal: AbortSignal
): Promise<string> {
  let text = '';
  const body = fim
    ? { model: settings.model, prompt: context.prefix, suffix: context.suffix }
    : { model: settings.model, prompt: context.prefix, raw: true };
  await api.generate(
    { ...body, options: { num_predict: settings.maxTokens, temperature: 0.2, stop: ['\n\n\n', '```'] } },
    (chunk: GenerateChunk) => {
      text += chunk.response ?? '';
    },
    signal
  );
  return trimCompletion(text);
}
