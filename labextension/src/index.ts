/**
 * ollama_nb in JupyterLab: the kernel's local models in a sidebar, chat panels in the main
 * area, a status-bar item, and inline code completion, all talking to one model server (the
 * active kernel's, or the one named in the settings) through jupyter-server-proxy. Models stay
 * loaded in one process only: the server's.
 */
import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, IFrame, MainAreaWidget, ToolbarButton } from '@jupyterlab/apputils';
import { ICompletionProviderManager } from '@jupyterlab/completer';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { ChatPanel } from './chat';
import { LocalModelCompleter } from './completer';
import { Connection } from './connection';
import { ModelsSidebar } from './sidebar';
import { StatusItem } from './statusbar';

const PLUGIN_ID = 'ollama-nb:plugin';

export const llamaIcon = new LabIcon({
  name: 'ollama-nb:models',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<path d="M7 3a2 2 0 0 0-2 2v4.5A5.5 5.5 0 0 0 4 13v6a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-6a5.5 5.5 0 0 0-1-3.5V5a2 2 0 0 0-4 0v3.1a5.5 5.5 0 0 0-6 0V5a2 2 0 0 0-2-2zm2 10a1 1 0 1 1 0 2 1 1 0 0 1 0-2zm6 0a1 1 0 1 1 0 2 1 1 0 0 1 0-2z"/>' +
    '</g></svg>'
});

export const COMMANDS = {
  openChat: 'ollama-nb:open-chat',
  openSidebar: 'ollama-nb:open-sidebar',
  refresh: 'ollama-nb:refresh',
  startServer: 'ollama-nb:start-server',
  dashboard: 'ollama-nb:open-dashboard'
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Local models from ollama_nb: sidebar, chat panels, status bar and inline completion.',
  autoStart: true,
  requires: [IRenderMimeRegistry, INotebookTracker],
  optional: [ISettingRegistry, ICommandPalette, ILauncher, IStatusBar, ILabShell, ILayoutRestorer, ICompletionProviderManager],
  activate: async (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    notebooks: INotebookTracker,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    statusBar: IStatusBar | null,
    labShell: ILabShell | null,
    restorer: ILayoutRestorer | null,
    completions: ICompletionProviderManager | null
  ) => {
    const settings = settingRegistry ? await settingRegistry.load(PLUGIN_ID).catch(() => null) : null;
    const setting = <T>(key: string, fallback: T): T => (settings?.get(key).composite as T) ?? fallback;
    const kernel = () => notebooks.currentWidget?.sessionContext.session?.kernel ?? null;
    const connection = new Connection({ kernel, settingsUrl: () => setting('serverUrl', '') });

    const openDashboard = (url: string) => {
      const frame = new IFrame({ sandbox: ['allow-scripts', 'allow-same-origin'] });
      frame.url = url;
      const widget = new MainAreaWidget({ content: frame });
      widget.id = 'ollama-nb-dashboard';
      widget.title.label = 'LLM performance';
      widget.title.closable = true;
      app.shell.add(widget, 'main');
    };

    const sidebar = new ModelsSidebar(connection, openDashboard);
    sidebar.title.icon = llamaIcon;
    app.shell.add(sidebar, 'left', { rank: 600 });
    restorer?.add(sidebar, sidebar.id);
    const shown = () => void sidebar.reload(true);
    labShell?.currentChanged.connect(() => void connection.refreshLoaded());
    notebooks.currentChanged.connect(() => void connection.refresh().then(() => sidebar.reload()));
    settings?.changed.connect(shown);

    const insertCode = (code: string): boolean => {
      const panel = notebooks.currentWidget;
      if (!panel) {
        return false;
      }
      NotebookActions.insertBelow(panel.content);
      const cell = panel.content.activeCell;
      if (cell) {
        cell.model.sharedModel.setSource(code.replace(/\n$/, ''));
      }
      return true;
    };

    app.commands.addCommand(COMMANDS.openChat, {
      label: 'Local LLM: new chat panel',
      caption: 'Chat with a local model in a panel of its own',
      icon: llamaIcon,
      execute: async args => {
        const content = new ChatPanel(connection, rendermime, insertCode, args?.model as string | undefined);
        const widget = new MainAreaWidget({ content });
        widget.id = content.id;
        content.title.changed.connect(() => (widget.title.label = content.title.label));
        widget.title.label = content.title.label;
        widget.title.icon = llamaIcon;
        app.shell.add(widget, 'main', { mode: 'split-right' });
        return widget;
      }
    });
    app.commands.addCommand(COMMANDS.openSidebar, {
      label: 'Local LLM: show local models',
      execute: () => app.shell.activateById(sidebar.id)
    });
    app.commands.addCommand(COMMANDS.refresh, {
      label: 'Local LLM: refresh models',
      execute: shown
    });
    app.commands.addCommand(COMMANDS.startServer, {
      label: 'Local LLM: start the model server in the kernel',
      execute: async () => {
        await connection.startInKernel();
        await sidebar.reload();
      }
    });
    app.commands.addCommand(COMMANDS.dashboard, {
      label: 'Local LLM: performance dashboard',
      isEnabled: () => connection.server !== null,
      execute: () => connection.server && openDashboard(connection.server.proxyUrl + 'dashboard')
    });
    for (const command of Object.values(COMMANDS)) {
      palette?.addItem({ command, category: 'Local LLM' });
    }
    launcher?.add({ command: COMMANDS.openChat, category: 'Other', rank: 1 });

    notebooks.widgetAdded.connect((_, panel: NotebookPanel) => {
      const button = new ToolbarButton({
        icon: llamaIcon,
        tooltip: 'Chat with a local model',
        className: 'onb-toolbar-chat',
        onClick: () => void app.commands.execute(COMMANDS.openChat)
      });
      panel.toolbar.insertItem(10, 'ollama-nb-chat', button);
    });

    if (statusBar) {
      const item = new StatusItem(connection, () => app.shell.activateById(sidebar.id));
      statusBar.registerStatusItem('ollama-nb:status', { item, align: 'left', rank: 5 });
    }

    if (completions) {
      completions.registerInlineProvider(
        new LocalModelCompleter(connection, () => ({
          enabled: setting('inlineCompletion', false),
          model: setting('completionModel', 'smollm2:135m'),
          maxTokens: setting('completionMaxTokens', 48),
          debounceMs: setting('completionDebounceMs', 250)
        }))
      );
    }

    void app.restored.then(shown);
    console.log('ollama-nb extension activated');
  }
};

export default plugin;
