import { describe, expect, it } from 'vitest';

import { ApiError, groupByBackend, ListModel, OllamaApi, tokensPerSecond } from '../api';

interface Call {
  url: string;
  init: RequestInit;
}

function fakeServer(answer: (call: Call) => Response) {
  const calls: Call[] = [];
  const fetcher = async (url: string, init: RequestInit) => {
    const call = { url, init };
    calls.push(call);
    if (init.signal?.aborted) {
      throw new DOMException('aborted', 'AbortError');
    }
    return answer(call);
  };
  return { calls, api: new OllamaApi('/lab/proxy/11434', fetcher) };
}

const json = (value: unknown, status = 200) =>
  new Response(JSON.stringify(value), { status, headers: { 'Content-Type': 'application/json' } });

describe('OllamaApi', () => {
  it('joins paths onto the base URL and reads lists', async () => {
    const { calls, api } = fakeServer(() => json({ models: [{ name: 'smollm2:135m', size: 1 }] }));
    const models = await api.tags();
    expect(models.map(m => m.name)).toEqual(['smollm2:135m']);
    expect(calls[0].url).toBe('/lab/proxy/11434/api/tags');
    expect(calls[0].init.method).toBe('GET');
  });

  it("turns Ollama's error body into an ApiError with its status", async () => {
    const { api } = fakeServer(() => json({ error: "model 'x' not found" }, 404));
    const err = await api.show('x').catch(e => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(404);
    expect(err.message).toBe("model 'x' not found");
  });

  it('unloads with keep_alive 0 and deletes with DELETE', async () => {
    const { calls, api } = fakeServer(() => json({}));
    await api.unload('m');
    await api.remove('m');
    expect(JSON.parse(calls[0].init.body as string)).toEqual({ model: 'm', keep_alive: 0, stream: false });
    expect(calls[1].init.method).toBe('DELETE');
  });

  it('streams a chat as events, with a request id', async () => {
    const { calls, api } = fakeServer(
      () =>
        new Response('data: {"message":{"content":"Hi"},"done":false}\n\ndata: {"done":true,"eval_count":2}\n\n', {
          headers: { 'Content-Type': 'text/event-stream' }
        })
    );
    const chunks: any[] = [];
    await api.chat({ model: 'm', messages: [{ role: 'user', content: 'hello' }] }, c => chunks.push(c));
    const headers = calls[0].init.headers as Record<string, string>;
    expect(headers.Accept).toBe('text/event-stream');
    expect(headers['X-Request-Id']).toMatch(/.{8,}/);
    expect(JSON.parse(calls[0].init.body as string).stream).toBe(true);
    expect(chunks.map(c => c.done)).toEqual([false, true]);
  });

  it('asks the server to cancel a stream when it is aborted', async () => {
    const controller = new AbortController();
    let release: () => void = () => undefined;
    const { calls, api } = fakeServer(call => {
      if (call.url.endsWith('api/cancel')) {
        return json({ cancelled: JSON.parse(call.init.body as string).id });
      }
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new TextEncoder().encode('data: {"status":"pulling"}\n\n'));
          release = () => c.error(new DOMException('aborted', 'AbortError'));
        }
      });
      return new Response(body, { headers: { 'Content-Type': 'text/event-stream' } });
    });
    const progress: any[] = [];
    const pulling = api.pull('gemma3:270m', p => progress.push(p), controller.signal);
    await new Promise(r => setTimeout(r, 10));
    controller.abort();
    release();
    await expect(pulling).rejects.toThrow();
    const id = (calls[0].init.headers as Record<string, string>)['X-Request-Id'];
    expect(calls[1].url).toBe('/lab/proxy/11434/api/cancel');
    expect(JSON.parse(calls[1].init.body as string)).toEqual({ id });
    expect(progress).toEqual([{ status: 'pulling' }]);
  });

  it('computes tokens per second from Ollama timings', () => {
    expect(tokensPerSecond({ eval_count: 50, eval_duration: 1e9 })).toBe(50);
    expect(tokensPerSecond({ eval_count: 0, eval_duration: 1e9 })).toBeNull();
    expect(tokensPerSecond({})).toBeNull();
  });
});

describe('groupByBackend', () => {
  const model = (name: string, host?: string): ListModel => ({
    name, model: name, size: 0, digest: '', modified_at: '',
    ...(host ? { remote_host: host, remote_model: name.split('/').slice(1).join('/') } : {})
  });

  it("puts the kernel's models first, then each backend's, by the NAME of NAME/model", () => {
    const groups = groupByBackend([
      model('gpu/llama3.1:70b', 'http://gpu:11434'), model('smollm2:135m'),
      model('vllm/Qwen/Qwen2.5-72B', 'http://vllm:8000'), model('user/custom:1b'), model('gpu/qwen3:32b', 'http://gpu:11434')
    ]);
    expect(groups.map(g => [g.backend, g.models.map(m => m.name)])).toEqual([
      ['local', ['smollm2:135m', 'user/custom:1b']],  // a namespace is not a backend
      ['gpu', ['gpu/llama3.1:70b', 'gpu/qwen3:32b']],
      ['vllm', ['vllm/Qwen/Qwen2.5-72B']]
    ]);
  });

  it('gives one group when everything is local', () => {
    expect(groupByBackend([model('a:1'), model('b:2')]).map(g => g.backend)).toEqual(['local']);
  });
});
