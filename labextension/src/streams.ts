/**
 * Reading a streamed reply. Through jupyter-server-proxy, ollama_nb answers with Server-Sent
 * Events (the proxy streams only responses to requests that accept `text/event-stream`); a real
 * Ollama, or ollama_nb reached directly, answers with NDJSON. Both arrive in arbitrary pieces,
 * so each parser keeps what it has not seen the end of.
 */

/** One JSON object per line; a line may span several network chunks. */
export class NdjsonParser {
  private buffer = '';

  /** The objects completed by `text`. */
  push(text: string): unknown[] {
    this.buffer += text;
    const lines = this.buffer.split('\n');
    this.buffer = lines.pop() ?? '';
    return lines.filter(line => line.trim() !== '').map(line => JSON.parse(line));
  }

  /** Whatever is left when the stream ends (a last line without its newline). */
  end(): unknown[] {
    const rest = this.buffer.trim();
    this.buffer = '';
    return rest ? [JSON.parse(rest)] : [];
  }
}

/**
 * Server-Sent Events carrying JSON in `data:` fields. Comments (`: ping`) and fields other than
 * `data` are skipped; the multi-line `data` of one event is joined with newlines, as the
 * EventSource specification says. Lines may end in LF, CRLF or CR.
 */
export class SseParser {
  private buffer = '';
  private data: string[] = [];

  push(text: string): unknown[] {
    this.buffer += text;
    const out: unknown[] = [];
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() ?? '';
    for (const line of lines) {
      if (line === '') {
        if (this.data.length) {
          out.push(JSON.parse(this.data.join('\n')));
          this.data = [];
        }
      } else if (line.startsWith('data:')) {
        this.data.push(line.slice(5).replace(/^ /, ''));
      }
    }
    return out;
  }

  end(): unknown[] {
    const out = this.push('\n\n');
    this.buffer = '';
    return out;
  }
}

/** The parser that fits a response's content type. */
export function parserFor(contentType: string | null): NdjsonParser | SseParser {
  return (contentType ?? '').includes('text/event-stream') ? new SseParser() : new NdjsonParser();
}

/**
 * Hand every object of a streamed response body to `onItem`, in order. An `{"error": ...}`
 * object (how Ollama reports a failure after the stream began) ends the stream with an Error.
 */
export async function readStream(response: Response, onItem: (item: any) => void): Promise<void> {
  const parser = parserFor(response.headers.get('Content-Type'));
  const deliver = (items: unknown[]) => {
    for (const item of items) {
      if (item && typeof item === 'object' && 'error' in item) {
        throw new Error(String((item as { error: unknown }).error));
      }
      onItem(item);
    }
  };
  if (!response.body) {
    deliver(parser.push(await response.text()));
    deliver(parser.end());
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    deliver(parser.push(decoder.decode(value, { stream: true })));
  }
  deliver(parser.push(decoder.decode()));
  deliver(parser.end());
}
