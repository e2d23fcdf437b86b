import { describe, expect, it } from 'vitest';

import { findServer, parseKernelServers, proxyUrlFor, withTimeout } from '../discovery';
import { humanBytes, processor, pullFraction, statusText, until } from '../format';

describe('proxyUrlFor', () => {
  it('maps loopback servers to proxy/<port>/ under the base URL', () => {
    expect(proxyUrlFor('http://127.0.0.1:11434', '/user/ana/')).toBe('/user/ana/proxy/11434/');
    expect(proxyUrlFor('localhost:8000', '/')).toBe('/proxy/8000/');
    expect(proxyUrlFor('http://[::1]:9000/', '/')).toBe('/proxy/9000/');
  });

  it('keeps another host and a path, and refuses what the proxy cannot reach', () => {
    expect(proxyUrlFor('http://gpu-box:11434/ollama', '/')).toBe('/proxy/gpu-box:11434/ollama/');
    expect(proxyUrlFor('https://example.com', '/')).toBeNull();
    expect(proxyUrlFor('http://[bad', '/')).toBeNull();
  });
});

describe('parseKernelServers', () => {
  it("reads the kernel's repr of the JSON list", () => {
    expect(parseKernelServers(`'[{"port": 40123, "url": "http://127.0.0.1:40123"}]'`)).toEqual([
      { port: 40123, url: 'http://127.0.0.1:40123' }
    ]);
    expect(parseKernelServers("'[]'")).toEqual([]);
    expect(parseKernelServers(undefined)).toEqual([]);
    expect(parseKernelServers("'not json'")).toEqual([]);
  });
});

describe('findServer', () => {
  const base = { baseUrl: '/', settingsUrl: '' };

  it("prefers the kernel's server, then the settings", async () => {
    const found = await findServer({
      ...base,
      settingsUrl: 'http://127.0.0.1:11434',
      kernelServers: async () => [{ port: 4000, url: 'http://127.0.0.1:4000' }],
      answers: async () => true
    });
    expect(found).toEqual({ source: 'kernel', url: 'http://127.0.0.1:4000', proxyUrl: '/proxy/4000/' });
  });

  it('falls back to the settings when the kernel has none, or fails, or its server is silent', async () => {
    const settings = { ...base, settingsUrl: 'http://127.0.0.1:11434' };
    const viaSettings = { source: 'settings', url: 'http://127.0.0.1:11434', proxyUrl: '/proxy/11434/' };
    expect(await findServer({ ...settings, kernelServers: async () => [], answers: async () => true })).toEqual(
      viaSettings
    );
    const dead = async () => {
      throw new Error('kernel busy');
    };
    expect(await findServer({ ...settings, kernelServers: dead, answers: async () => true })).toEqual(viaSettings);
    const silent = await findServer({
      ...settings,
      kernelServers: async () => [{ port: 4000, url: 'http://127.0.0.1:4000' }],
      answers: async url => url !== '/proxy/4000/'
    });
    expect(silent).toEqual(viaSettings);
  });

  it('finds nothing when nothing answers', async () => {
    expect(await findServer({ ...base, kernelServers: async () => [], answers: async () => true })).toBeNull();
  });
});

describe('withTimeout', () => {
  it('passes on what settles in time, and gives up on what never does', async () => {
    expect(await withTimeout(Promise.resolve(7), 50)).toBe(7);
    await expect(withTimeout(Promise.reject(new Error('dead')), 50)).rejects.toThrow('dead');
    await expect(withTimeout(new Promise(() => undefined), 20)).rejects.toThrow('no answer in 20 ms');
  });

  it('lets a lookup whose kernel never answers fall through to the settings', async () => {
    const found = await findServer({
      baseUrl: '/',
      settingsUrl: 'http://127.0.0.1:11434',
      kernelServers: () => withTimeout(new Promise<never>(() => undefined), 20), // a restarting kernel
      answers: async () => true
    });
    expect(found).toEqual({ source: 'settings', url: 'http://127.0.0.1:11434', proxyUrl: '/proxy/11434/' });
  });
});

describe('formatting', () => {
  it('writes sizes, processors and expiry as Ollama does', () => {
    expect(humanBytes(98_400_000)).toBe('98.4 MB');
    expect(humanBytes(253_000_000)).toBe('253 MB');
    expect(humanBytes(512)).toBe('512 B');
    expect(processor(100, 0)).toBe('100% CPU');
    expect(processor(100, 100)).toBe('100% GPU');
    expect(processor(100, 25)).toBe('75%/25% CPU/GPU');
    const now = new Date('2026-12-01T00:00:00Z');
    expect(until('2026-12-01T00:04:00Z', now)).toBe('in 4 min');
    expect(until('2318-01-01T00:00:00Z', now)).toBe('forever');
    expect(until('2026-11-30T00:00:00Z', now)).toBe('now');
  });

  it('gives pull progress as a fraction, unknown without a total', () => {
    expect(pullFraction({ status: 'pulling', total: 200, completed: 50 } as any)).toBe(0.25);
    expect(pullFraction({ total: 10, completed: 20 })).toBe(1);
    expect(pullFraction({})).toBeNull();
  });

  it("shows the status bar's state", () => {
    expect(statusText({ loaded: [], tokensPerSecond: null, busy: false, server: false })).toBe('LLM: no server');
    expect(statusText({ loaded: ['a:1'], tokensPerSecond: 47.25, busy: true, server: true })).toBe(
      '● a:1 · 47.3 tok/s'
    );
    expect(statusText({ loaded: [], tokensPerSecond: null, busy: false, server: true })).toBe('no model loaded');
  });
});
