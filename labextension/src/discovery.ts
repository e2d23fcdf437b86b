/**
 * Which model server the extension talks to, in this order: the server the active kernel runs
 * (`ollama_nb.serve()` or `%ollama serve`), else the URL in the settings (an `ollama-nb serve`,
 * or a real Ollama on 11434), else none, and the sidebar offers to start one in the kernel.
 * Whatever is found is reached through jupyter-server-proxy on the Jupyter server's own origin,
 * so it works on JupyterHub and Binder, where the browser cannot see the kernel's ports.
 */

/** Asked of the kernel without importing anything: an empty list unless ollama_nb serves. */
export const KERNEL_SERVERS_EXPRESSION =
  "__import__('json').dumps([{'port': s.port, 'url': s.url} for s in " +
  "getattr(__import__('sys').modules.get('ollama_nb.server.lifecycle'), 'running_servers', list)()])";

/** What starts the server in the kernel (the sidebar's button). */
export const START_SERVER_CODE = 'import ollama_nb\nollama_nb.serve()';

export interface KernelServer {
  port: number;
  url: string;
}

export type ServerSource = 'kernel' | 'settings';

export interface FoundServer {
  source: ServerSource;
  /** The URL the server answers on, as its owner knows it. */
  url: string;
  /** The same server through jupyter-server-proxy, relative to the Jupyter server. */
  proxyUrl: string;
}

/** The servers a kernel reported for `KERNEL_SERVERS_EXPRESSION` (its `text/plain` repr). */
export function parseKernelServers(plain: string | undefined): KernelServer[] {
  if (!plain) {
    return [];
  }
  const text = plain.trim();
  const quoted = /^(['"])(.*)\1$/s.exec(text);
  const json = quoted ? quoted[2].replace(/\\'/g, "'").replace(/\\\\/g, '\\') : text;
  try {
    const value = JSON.parse(json);
    return Array.isArray(value)
      ? value.filter(s => Number.isInteger(s?.port) && typeof s?.url === 'string')
      : [];
  } catch {
    return [];
  }
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/**
 * `http://127.0.0.1:11434` -> `<base>proxy/11434/`; another host -> `<base>proxy/<host>:<port>/`
 * (jupyter-server-proxy then needs that host in its allowlist). Null for a URL it cannot proxy.
 */
export function proxyUrlFor(url: string, baseUrl: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url.includes('://') ? url : `http://${url}`);
  } catch {
    return null;
  }
  if (parsed.protocol !== 'http:') {
    return null; // the proxy speaks plain HTTP to its targets
  }
  const port = parsed.port || '80';
  const base = baseUrl.replace(/\/?$/, '/');
  const target = LOOPBACK.has(parsed.hostname) ? port : `${parsed.hostname}:${port}`;
  const path = parsed.pathname.replace(/^\/+/, '').replace(/\/?$/, '/');
  return `${base}proxy/${target}/${path === '/' ? '' : path}`;
}

/** How long a lookup waits for the kernel to say which servers it runs. */
export const KERNEL_ANSWER_TIMEOUT_MS = 10_000;

/** `work`, or a rejection once `ms` have passed without it settling. */
export function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms);
    work.then(
      value => {
        clearTimeout(timer);
        resolve(value);
      },
      error => {
        clearTimeout(timer);
        reject(error);
      }
    );
  });
}

/** The first server that answers, by the order above. */
export async function findServer(options: {
  baseUrl: string;
  kernelServers: () => Promise<KernelServer[]>;
  settingsUrl: string;
  answers: (proxyUrl: string) => Promise<boolean>;
}): Promise<FoundServer | null> {
  const candidates: { source: ServerSource; url: string }[] = [];
  try {
    for (const server of await options.kernelServers()) {
      candidates.push({ source: 'kernel', url: server.url });
    }
  } catch {
    // no kernel, a busy or dead kernel: fall through to the settings
  }
  if (options.settingsUrl.trim()) {
    candidates.push({ source: 'settings', url: options.settingsUrl.trim() });
  }
  for (const candidate of candidates) {
    const proxyUrl = proxyUrlFor(candidate.url, options.baseUrl);
    if (proxyUrl && (await options.answers(proxyUrl))) {
      return { ...candidate, proxyUrl };
    }
  }
  return null;
}
