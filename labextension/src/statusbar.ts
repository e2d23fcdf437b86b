/**
 * The status-bar item: the loaded model(s), the last reply's tokens/s, and a busy mark while a
 * request runs. Clicking it opens the sidebar.
 */
import { Widget } from '@lumino/widgets';

import { Connection } from './connection';
import { statusText } from './format';

export class StatusItem extends Widget {
  constructor(
    private readonly connection: Connection,
    onClick: () => void
  ) {
    super();
    this.addClass('onb-statusbar');
    this.node.title = 'Local models (click to open the sidebar)';
    this.node.onclick = onClick;
    connection.changed.connect(() => this.update());
    this.update();
  }

  protected onUpdateRequest(): void {
    const c = this.connection;
    this.node.textContent = statusText({
      loaded: c.loaded.map(m => m.name),
      tokensPerSecond: c.lastTokensPerSecond,
      busy: c.busy,
      server: c.server !== null
    });
    this.node.classList.toggle('onb-busy', c.busy);
  }
}
