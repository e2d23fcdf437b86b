import { describe, expect, it } from 'vitest';

import { NdjsonParser, SseParser, parserFor, readStream } from '../streams';

function split(text: string, size: number): string[] {
  const parts = [];
  for (let i = 0; i < text.length; i += size) {
    parts.push(text.slice(i, i + size));
  }
  return parts;
}

function response(chunks: string[], contentType: string): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      chunks.forEach(c => controller.enqueue(encoder.encode(c)));
      controller.close();
    }
  });
  return new Response(body, { headers: { 'Content-Type': contentType } });
}

describe('NdjsonParser', () => {
  it('joins lines split across chunks, in any piece size', () => {
    const text = '{"a":1}\n{"b":"x\\ny"}\n\n{"c":[1,2]}\n';
    for (const size of [1, 2, 5, 100]) {
      const parser = new NdjsonParser();
      const items = split(text, size).flatMap(p => parser.push(p));
      expect([...items, ...parser.end()]).toEqual([{ a: 1 }, { b: 'x\ny' }, { c: [1, 2] }]);
    }
  });

  it('keeps a last line without its newline until the end', () => {
    const parser = new NdjsonParser();
    expect(parser.push('{"done":true}')).toEqual([]);
    expect(parser.end()).toEqual([{ done: true }]);
  });
});

describe('SseParser', () => {
  it('reads data events, skips comments and other fields, in any piece size and line ending', () => {
    for (const eol of ['\n', '\r\n', '\r']) {
      const text = [': ping', 'data: {"a":1}', '', 'id: 4', 'event: record', 'data: {"b":2}', '', ''].join(eol);
      for (const size of [1, 3, 1000]) {
        const parser = new SseParser();
        const items = split(text, size).flatMap(p => parser.push(p));
        expect([...items, ...parser.end()]).toEqual([{ a: 1 }, { b: 2 }]);
      }
    }
  });

  it('joins the data lines of one event with newlines', () => {
    const parser = new SseParser();
    expect(parser.push('data: {"a":\ndata: 1}\n\n')).toEqual([{ a: 1 }]);
  });

  it('delivers an event whose blank line never came, at the end', () => {
    const parser = new SseParser();
    expect(parser.push('data: {"x":true}\n')).toEqual([]);
    expect(parser.end()).toEqual([{ x: true }]);
  });
});

describe('readStream', () => {
  it('picks the parser from the content type', () => {
    expect(parserFor('text/event-stream')).toBeInstanceOf(SseParser);
    expect(parserFor('application/x-ndjson')).toBeInstanceOf(NdjsonParser);
    expect(parserFor(null)).toBeInstanceOf(NdjsonParser);
  });

  it('hands every object over, in order, from SSE and from NDJSON', async () => {
    const seen: unknown[] = [];
    await readStream(response(['data: {"n":1}\n\ndata: {"n"', ':2}\n\n'], 'text/event-stream'), i => seen.push(i));
    await readStream(response(['{"n":3}\n{"n":', '4}\n'], 'application/x-ndjson'), i => seen.push(i));
    expect(seen).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]);
  });

  it('ends with an Error when the stream reports one', async () => {
    const seen: unknown[] = [];
    const failing = response(['data: {"n":1}\n\n', 'data: {"error":"model crashed"}\n\n'], 'text/event-stream');
    await expect(readStream(failing, i => seen.push(i))).rejects.toThrow('model crashed');
    expect(seen).toEqual([{ n: 1 }]);
  });
});
