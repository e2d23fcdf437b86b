/**
 * A chat panel in the main area: a model picker, a system prompt and a temperature; replies
 * stream in as Markdown, a Stop button cancels the request on the server (closing the stream
 * is what cancels it there), each reply shows its tokens/s, and code blocks can be inserted
 * into the notebook. Each panel keeps its own conversation, so several can run side by side on
 * different models.
 */
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { ApiError, ChatChunk, groupByBackend, Message, tokensPerSecond } from './api';
import { Connection } from './connection';
import { el } from './dom';

/** How often a streaming reply is re-rendered: Markdown rendering per token would be wasted. */
export const RENDER_INTERVAL_MS = 80;

let panels = 0;

export class ChatPanel extends Widget {
  readonly messages: Message[] = [];
  private readonly modelPicker = el('select', 'onb-chat-model');
  private readonly system = el('textarea', 'onb-chat-system');
  private readonly temperature = el('input', 'onb-chat-temperature');
  private readonly transcript = el('div', 'onb-chat-transcript');
  private readonly prompt = el('textarea', 'onb-chat-prompt');
  private readonly sendButton = el('button', 'onb-button onb-chat-send', 'Send');
  private readonly stopButton = el('button', 'onb-button onb-chat-stop', 'Stop');
  private inFlight: AbortController | null = null;

  constructor(
    private readonly connection: Connection,
    private readonly rendermime: IRenderMimeRegistry,
    private readonly insertCode: (code: string) => boolean,
    model?: string
  ) {
    super();
    panels++;
    this.id = `ollama-nb-chat-${panels}`;
    this.addClass('onb-chat');
    this.title.label = 'Local chat';
    this.title.closable = true;

    this.system.placeholder = 'system prompt (optional)';
    this.system.rows = 2;
    this.temperature.type = 'number';
    this.temperature.min = '0';
    this.temperature.max = '2';
    this.temperature.step = '0.1';
    this.temperature.value = '0.8';
    this.temperature.title = 'temperature';
    const reset = el('button', 'onb-button onb-chat-new', 'New conversation');
    reset.onclick = () => {
      this.messages.length = 0;
      this.transcript.replaceChildren();
    };
    const settings = el('div', 'onb-chat-settings');
    settings.append(this.modelPicker, el('label', '', 'temperature'), this.temperature, reset);

    this.prompt.placeholder = 'Message (Enter to send, Shift+Enter for a new line)';
    this.prompt.rows = 3;
    this.prompt.onkeydown = event => {
      if (event.key === 'Enter' && !event.shiftKey) {
        event.preventDefault();
        void this.send();
      }
    };
    this.sendButton.onclick = () => void this.send();
    this.stopButton.onclick = () => this.stop();
    this.stopButton.disabled = true;
    const input = el('div', 'onb-chat-input');
    input.append(this.prompt, this.sendButton, this.stopButton);

    this.node.append(settings, this.system, this.transcript, input);
    void this.loadModels(model);
  }

  get model(): string {
    return this.modelPicker.value;
  }

  set model(name: string) {
    this.modelPicker.value = name;
    this.title.label = name ? `Chat: ${name}` : 'Local chat';
  }

  /** Fill the model picker from the server (the given model first, if installed). */
  async loadModels(preferred?: string): Promise<void> {
    if (!this.connection.api) {
      await this.connection.refresh();
    }
    const models = this.connection.api ? await this.connection.api.tags().catch(() => []) : [];
    const current = preferred ?? this.modelPicker.value;
    const groups = groupByBackend(models);
    if (groups.length > 1) {
      // several backends: one group each, so "gpu/llama3.1:70b" sits under "gpu"
      this.modelPicker.replaceChildren(
        ...groups.map(g => {
          const group = el('optgroup');
          group.label = g.backend;
          group.append(...g.models.map(m => new Option(m.remote_model ?? m.name, m.name)));
          return group;
        })
      );
    } else {
      this.modelPicker.replaceChildren(...models.map(m => new Option(m.name, m.name)));
    }
    this.modelPicker.onchange = () => (this.model = this.modelPicker.value);
    if (models.some(m => m.name === current)) {
      this.model = current;
    } else if (models.length) {
      this.model = models[0].name;
    }
  }

  /** Send what is in the box (or `text`) and stream the reply into the transcript. */
  async send(text?: string): Promise<void> {
    const content = (text ?? this.prompt.value).trim();
    if (!content || this.inFlight) {
      return;
    }
    if (!this.connection.api) {
      await this.connection.refresh();
    }
    const api = this.connection.api;
    if (!api) {
      this.note('No model server reachable: start one with `%ollama serve` in a notebook.');
      return;
    }
    this.prompt.value = '';
    this.messages.push({ role: 'user', content });
    this.addTurn('user', content);
    const reply = this.addTurn('assistant', '');
    const stats = el('div', 'onb-chat-stats', '…');
    reply.append(stats);
    const body = reply.querySelector('.onb-chat-body') as HTMLElement;

    const controller = new AbortController();
    this.inFlight = controller;
    this.sendButton.disabled = true;
    this.stopButton.disabled = false;
    let textSoFar = '';
    let final: ChatChunk | null = null;
    let timer: number | null = null;
    const render = () => {
      timer = null;
      void this.renderMarkdown(body, textSoFar);
    };
    const system = this.system.value.trim();
    const messages: Message[] = system ? [{ role: 'system', content: system }, ...this.messages] : [...this.messages];
    try {
      let target = api;
      for (let attempt = 1; ; attempt++) {
        try {
          await this.connection.track(
            target.chat(
              { model: this.model, messages, options: { temperature: Number(this.temperature.value) } },
              chunk => {
                textSoFar += chunk.message?.content ?? '';
                if (chunk.done) {
                  final = chunk;
                }
                if (timer === null) {
                  timer = window.setTimeout(render, RENDER_INTERVAL_MS);
                }
              },
              controller.signal
            )
          );
          break;
        } catch (err) {
          // Nothing of the reply came and no model server answered: the server this panel knew
          // may be gone (its kernel restarted while the panel was idle). Look again, once.
          const unanswered = !(err instanceof ApiError) || err.status >= 502;
          if (attempt > 1 || textSoFar || final || controller.signal.aborted || !unanswered) {
            throw err;
          }
          this.connection.forget();
          await this.connection.refresh();
          if (!this.connection.api) {
            throw err;
          }
          target = this.connection.api;
        }
      }
      const last = final as ChatChunk | null; // set by the callback above
      if (!last) {
        // the connection closed without Ollama's last chunk: the server (or its kernel) went away
        throw new Error('the reply ended before it was complete');
      }
      const speed = tokensPerSecond(last);
      this.connection.noteSpeed(speed);
      stats.textContent = `${this.model} · ${last.eval_count ?? 0} tokens` +
        (speed === null ? '' : ` · ${speed.toFixed(1)} tokens/s`);
    } catch (err) {
      if (controller.signal.aborted) {
        stats.textContent = `${this.model} · stopped`;
      } else {
        stats.textContent = `The model server stopped mid-reply (${(err as Error).message}); send again once it is back.`;
        stats.classList.add('onb-error');
        this.connection.forget(); // the next message looks for a server again
        void this.connection.refresh();
      }
    } finally {
      if (timer !== null) {
        window.clearTimeout(timer);
      }
      await this.renderMarkdown(body, textSoFar);
      if (textSoFar) {
        this.messages.push({ role: 'assistant', content: textSoFar });
      }
      this.inFlight = null;
      this.sendButton.disabled = false;
      this.stopButton.disabled = true;
      void this.connection.refreshLoaded();
    }
  }

  /** Cancel the reply in progress; what arrived stays. */
  stop(): void {
    this.inFlight?.abort();
  }

  protected onCloseRequest(msg: any): void {
    this.stop();
    super.onCloseRequest(msg);
  }

  private note(text: string): void {
    this.transcript.append(el('div', 'onb-chat-note', text));
  }

  private addTurn(role: 'user' | 'assistant', text: string): HTMLElement {
    const turn = el('div', `onb-chat-turn onb-chat-${role}`);
    const body = el('div', 'onb-chat-body');
    turn.append(el('div', 'onb-chat-role', role === 'user' ? 'You' : this.model), body);
    this.transcript.append(turn);
    if (role === 'user') {
      body.textContent = text;
    }
    this.transcript.scrollTop = this.transcript.scrollHeight;
    return turn;
  }

  private async renderMarkdown(host: HTMLElement, markdown: string): Promise<void> {
    const renderer = this.rendermime.createRenderer('text/markdown');
    await renderer.renderModel(this.rendermime.createModel({ data: { 'text/markdown': markdown }, trusted: false }));
    host.replaceChildren(renderer.node);
    for (const code of Array.from(renderer.node.querySelectorAll('pre'))) {
      const insert = el('button', 'onb-button onb-chat-insert', 'Insert into notebook');
      insert.onclick = () => {
        if (!this.insertCode(code.textContent ?? '')) {
          insert.textContent = 'Open a notebook first';
        }
      };
      code.after(insert);
    }
    this.transcript.scrollTop = this.transcript.scrollHeight;
  }
}
