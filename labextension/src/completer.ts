/**
 * The JupyterLab side of inline completion: a provider for JupyterLab's inline completer that
 * asks the connection's server (see `completion` for the prompt, the debounce and the cancel).
 */
import {
  CompletionHandler,
  IInlineCompletionContext,
  IInlineCompletionList,
  IInlineCompletionProvider
} from '@jupyterlab/completer';
import { NotebookPanel } from '@jupyterlab/notebook';

import { CompletionSettings, LatestOnly, complete, completionContext } from './completion';
import { Connection } from './connection';

export const COMPLETER_ID = 'ollama-nb:inline';

/** The code cells above the active one, for the prompt (none outside a notebook). */
function cellsAbove(widget: unknown): string[] {
  if (!(widget instanceof NotebookPanel)) {
    return [];
  }
  const notebook = widget.content;
  const sources: string[] = [];
  for (let i = 0; i < notebook.activeCellIndex; i++) {
    const cell = notebook.widgets[i];
    if (cell.model.type === 'code') {
      sources.push(cell.model.sharedModel.getSource());
    }
  }
  return sources;
}

export class LocalModelCompleter implements IInlineCompletionProvider {
  readonly name = 'Local model (ollama_nb)';
  readonly identifier = COMPLETER_ID;
  // JupyterLab's own debounce stays at 0: ours also cancels the request in flight.
  readonly schema = { default: { debouncerDelay: 0, timeout: 30000, autoFillInMiddle: true } };
  private readonly latest = new LatestOnly();
  private fim = new Map<string, boolean>();

  constructor(
    private readonly connection: Connection,
    private readonly settings: () => CompletionSettings
  ) {}

  async fetch(request: CompletionHandler.IRequest, context: IInlineCompletionContext): Promise<IInlineCompletionList> {
    const settings = this.settings();
    if (!settings.enabled || !request.text.trim()) {
      this.latest.cancel();
      return { items: [] };
    }
    const text = await this.latest.run(settings.debounceMs, async signal => {
      if (!this.connection.api) {
        await this.connection.refresh();
      }
      const api = this.connection.api;
      if (!api) {
        return '';
      }
      const fim = await this.supportsInsert(settings.model);
      const prompt = completionContext(cellsAbove(context.widget), request.text, request.offset);
      return this.connection.track(complete(api, settings, prompt, fim, signal));
    });
    if (text !== null) {
      console.debug(`ollama-nb: completion ${JSON.stringify(text)}`);
    }
    return { items: text ? [{ insertText: text }] : [] };
  }

  /** Whether the model's template takes a suffix (Ollama's `insert` capability). */
  private async supportsInsert(model: string): Promise<boolean> {
    const known = this.fim.get(model);
    if (known !== undefined) {
      return known;
    }
    const info = await this.connection.api!.show(model).catch(() => ({ capabilities: [] as string[] }));
    const fim = (info.capabilities ?? []).includes('insert');
    this.fim.set(model, fim);
    return fim;
  }
}
