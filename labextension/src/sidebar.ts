/**
 * The "Local models" sidebar: what is installed, what is loaded (with an unload button), a pull
 * box with a live progress bar that can be cancelled, delete with a confirmation, and a link to
 * the performance dashboard. When no server answers it says so in one line, with a button that
 * starts one in the active kernel.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ListModel } from './api';
import { Connection } from './connection';
import { el } from './dom';
import { humanBytes, processor, pullFraction, until } from './format';

export const NO_SERVER_TEXT =
  'No model server reachable. Start one in the kernel with `%ollama serve`, or set a server URL in the settings.';

export class ModelsSidebar extends Widget {
  private readonly status = el('div', 'onb-status');
  private readonly installed = el('div', 'onb-installed');
  private readonly loadedList = el('div', 'onb-loaded');
  private readonly pullName = el('input', 'onb-pull-name');
  private readonly pullButton = el('button', 'onb-button onb-pull-button', 'Pull');
  private readonly pullCancel = el('button', 'onb-button onb-pull-cancel', 'Cancel');
  private readonly pullBar = el('progress', 'onb-pull-bar');
  private readonly pullStatus = el('div', 'onb-pull-status');
  private pulling: AbortController | null = null;
  private capabilities = new Map<string, string[]>();

  constructor(
    private readonly connection: Connection,
    private readonly openDashboard: (url: string) => void
  ) {
    super();
    this.id = 'ollama-nb-models';
    this.addClass('onb-sidebar');
    this.title.caption = 'Local models';
    const header = el('div', 'onb-header');
    header.append(el('h2', '', 'Local models'));
    const refresh = el('button', 'onb-button onb-refresh', 'Refresh');
    refresh.onclick = () => void this.reload(true);
    header.append(refresh);

    this.pullName.placeholder = 'model to pull, e.g. gemma3:270m';
    this.pullButton.onclick = () => void this.pull();
    this.pullCancel.onclick = () => this.pulling?.abort();
    this.pullCancel.hidden = true;
    this.pullBar.hidden = true;
    const pullBox = el('div', 'onb-pull');
    pullBox.append(this.pullName, this.pullButton, this.pullCancel, this.pullBar, this.pullStatus);

    this.node.append(
      header,
      this.status,
      el('h3', '', 'Loaded'),
      this.loadedList,
      el('h3', '', 'Installed'),
      this.installed,
      el('h3', '', 'Pull'),
      pullBox
    );
    connection.changed.connect(() => this.renderLoaded());
  }

  /** Look again each time the sidebar is opened: a kernel may have started a server since. */
  protected onAfterShow(): void {
    void this.reload(true);
  }

  /** Find the server again and redraw (on show, on Refresh, after a change). */
  async reload(rediscover = false): Promise<void> {
    const rediscovered = rediscover || !this.connection.api;
    if (rediscovered) {
      await this.connection.refresh(); // which reads /api/ps too
    }
    this.renderStatus();
    const api = this.connection.api;
    if (!api) {
      this.installed.replaceChildren();
      return;
    }
    try {
      this.renderInstalled(await api.tags());
      if (!rediscovered) {
        await this.connection.refreshLoaded();
      }
    } catch (err) {
      this.status.textContent = `The model server stopped answering (${(err as Error).message}).`;
    }
  }

  private renderStatus(): void {
    const server = this.connection.server;
    this.status.replaceChildren();
    if (!server) {
      this.status.append(el('div', 'onb-no-server', NO_SERVER_TEXT));
      const start = el('button', 'onb-button onb-start', 'Start a server in the kernel');
      start.onclick = async () => {
        start.disabled = true;
        try {
          await this.connection.startInKernel();
          await this.reload();
        } catch (err) {
          this.status.append(el('div', 'onb-error', (err as Error).message));
        } finally {
          start.disabled = false;
        }
      };
      this.status.append(start);
      return;
    }
    const where = server.source === 'kernel' ? 'the kernel' : 'the settings';
    this.status.append(el('div', 'onb-server', `Server: ${server.url} (from ${where})`));
    const dashboard = el('a', 'onb-dashboard-link', 'Performance dashboard');
    dashboard.href = '#';
    dashboard.onclick = event => {
      event.preventDefault();
      this.openDashboard(server.proxyUrl + 'dashboard');
    };
    this.status.append(dashboard);
  }

  private renderInstalled(models: ListModel[]): void {
    this.installed.replaceChildren();
    if (!models.length) {
      this.installed.append(el('div', 'onb-empty', 'No models installed yet: pull one below.'));
    }
    for (const model of models) {
      const row = el('div', 'onb-model');
      row.dataset.model = model.name;
      const details = model.details ?? {};
      row.append(
        el('span', 'onb-model-name', model.name),
        el('span', 'onb-model-size', humanBytes(model.size)),
        el('span', 'onb-model-family', details.family ?? ''),
        el('span', 'onb-model-quant', details.quantization_level ?? '')
      );
      const caps = el('span', 'onb-model-caps', (this.capabilities.get(model.digest) ?? []).join(', '));
      row.append(caps);
      if (!this.capabilities.has(model.digest)) {
        void this.connection.api?.show(model.name).then(info => {
          this.capabilities.set(model.digest, info.capabilities ?? []);
          caps.textContent = (info.capabilities ?? []).join(', ');
        }, () => undefined);
      }
      const remove = el('button', 'onb-button onb-delete', 'Delete');
      remove.title = `Delete ${model.name}`;
      remove.onclick = () => void this.remove(model.name);
      row.append(remove);
      this.installed.append(row);
    }
  }

  private renderLoaded(): void {
    this.loadedList.replaceChildren();
    const loaded = this.connection.loaded;
    if (!loaded.length) {
      this.loadedList.append(el('div', 'onb-empty', this.connection.server ? 'No model loaded.' : ''));
    }
    for (const model of loaded) {
      const row = el('div', 'onb-model onb-loaded-model');
      row.dataset.model = model.name;
      row.append(
        el('span', 'onb-model-name', model.name),
        el('span', 'onb-model-size', humanBytes(model.size)),
        el('span', 'onb-model-processor', processor(model.size, model.size_vram)),
        el('span', 'onb-model-expiry', until(model.expires_at))
      );
      const unload = el('button', 'onb-button onb-unload', 'Unload');
      unload.onclick = async () => {
        unload.disabled = true;
        await this.connection.api?.unload(model.name).catch(() => undefined);
        await this.connection.refreshLoaded();
      };
      row.append(unload);
      this.loadedList.append(row);
    }
  }

  private async remove(name: string): Promise<void> {
    const answer = await showDialog({
      title: 'Delete model',
      body: `Delete ${name} from the model store? Its files are removed unless another model uses them.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await this.connection.api?.remove(name);
    } catch (err) {
      this.status.append(el('div', 'onb-error', (err as Error).message));
    }
    await this.reload();
  }

  private async pull(): Promise<void> {
    const api = this.connection.api;
    const name = this.pullName.value.trim();
    if (!api || !name || this.pulling) {
      return;
    }
    const controller = new AbortController();
    this.pulling = controller;
    this.pullButton.disabled = true;
    this.pullCancel.hidden = false;
    this.pullBar.hidden = false;
    this.pullBar.removeAttribute('value');
    this.pullStatus.className = 'onb-pull-status';
    this.pullStatus.textContent = 'starting…';
    try {
      await this.connection.track(
        api.pull(
          name,
          progress => {
            const fraction = pullFraction(progress);
            if (fraction === null) {
              this.pullBar.removeAttribute('value');
            } else {
              this.pullBar.value = fraction;
            }
            this.pullStatus.textContent =
              fraction === null ? progress.status : `${progress.status} ${Math.round(fraction * 100)}%`;
          },
          controller.signal
        )
      );
      this.pullStatus.textContent = `${name}: success`;
    } catch (err) {
      this.pullStatus.className = 'onb-pull-status onb-error';
      this.pullStatus.textContent = controller.signal.aborted
        ? `${name}: pull cancelled`
        : `${name}: ${(err as Error).message}`;
    } finally {
      this.pulling = null;
      this.pullButton.disabled = false;
      this.pullCancel.hidden = true;
      this.pullBar.hidden = true;
      await this.reload();
    }
  }
}
