import { describe, expect, it } from 'vitest';

import { LatestOnly, completionContext, trimCompletion } from '../completion';

describe('LatestOnly', () => {
  it('runs only the last of requests that come faster than the delay', async () => {
    const latest = new LatestOnly();
    const started: number[] = [];
    const results = await Promise.all(
      [1, 2, 3].map(n =>
        latest.run(20, async () => {
          started.push(n);
          return n;
        })
      )
    );
    expect(results).toEqual([null, null, 3]);
    expect(started).toEqual([3]);
  });

  it('aborts the request in flight when the next one starts', async () => {
    const latest = new LatestOnly();
    let seenSignal: AbortSignal | null = null;
    const first = latest.run(0, signal => {
      seenSignal = signal;
      return new Promise<string>((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted'))));
    });
    await new Promise(r => setTimeout(r, 5));
    const second = latest.run(0, async () => 'second');
    expect(await first).toBeNull(); // superseded, not an error
    expect(await second).toBe('second');
    expect(seenSignal!.aborted).toBe(true);
  });

  it('passes on a failure of the request that is still current', async () => {
    const latest = new LatestOnly();
    await expect(
      latest.run(0, async () => {
        throw new Error('server down');
      })
    ).rejects.toThrow('server down');
  });

  it('cancel() drops the waiting request', async () => {
    const latest = new LatestOnly();
    const waiting = latest.run(50, async () => 'never');
    latest.cancel();
    expect(await waiting).toBeNull();
  });
});

describe('completion prompt', () => {
  it('puts earlier code cells (without magics) before the text at the cursor', () => {
    const { prefix, suffix } = completionContext(['%load_ext x\nimport os', '', '!ls'], 'def f():\n    return 1', 9);
    expect(prefix).toBe('import os\n\ndef f():\n');
    expect(suffix).toBe('    return 1');
  });

  it('keeps the end of a long context', () => {
    const { prefix } = completionContext(['x = 1\n'.repeat(2000)], 'y', 1);
    expect(prefix.length).toBe(4000);
    expect(prefix.endsWith('\n\ny')).toBe(true);
  });

  it('trims a suggestion at a blank line or a fence', () => {
    expect(trimCompletion(' return a + b\n\n# Example usage:\nadd')).toBe(' return a + b');
    expect(trimCompletion('x = 1\n```\nmore')).toBe('x = 1');
    expect(trimCompletion('a\nb\nc', 2)).toBe('a\nb');
  });
});
