/** How sizes, processors and times read, as Ollama's CLI writes them. */

export function humanBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value >= 100 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

/** `ollama ps`'s PROCESSOR column: where the model's memory is. */
export function processor(size: number, sizeVram: number): string {
  if (!size || sizeVram <= 0) {
    return '100% CPU';
  }
  if (sizeVram >= size) {
    return '100% GPU';
  }
  const cpu = Math.round(((size - sizeVram) / size) * 100);
  return `${cpu}%/${100 - cpu}% CPU/GPU`;
}

/** "in 4 minutes", "forever" (Ollama's far-future expiry), "now". */
export function until(expiresAt: string, now: Date = new Date()): string {
  const when = new Date(expiresAt);
  if (isNaN(when.getTime()) || when.getFullYear() > 2200) {
    return 'forever';
  }
  const seconds = Math.round((when.getTime() - now.getTime()) / 1000);
  if (seconds <= 0) {
    return 'now';
  }
  if (seconds < 60) {
    return `in ${seconds} s`;
  }
  const minutes = Math.round(seconds / 60);
  return minutes < 60 ? `in ${minutes} min` : `in ${Math.round(minutes / 60)} h`;
}

/** A pull's progress as a fraction (null while the size is not known yet). */
export function pullFraction(p: { total?: number; completed?: number }): number | null {
  return p.total ? Math.min(1, (p.completed ?? 0) / p.total) : null;
}

/** The item's text for a given state (kept apart from the DOM so it can be tested). */
export function statusText(state: { loaded: string[]; tokensPerSecond: number | null; busy: boolean; server: boolean }) {
  if (!state.server) {
    return 'LLM: no server';
  }
  const models = state.loaded.length ? state.loaded.join(', ') : 'no model loaded';
  const speed = state.tokensPerSecond === null ? '' : ` · ${state.tokensPerSecond.toFixed(1)} tok/s`;
  return `${state.busy ? '● ' : ''}${models}${speed}`;
}
