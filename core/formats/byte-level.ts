// The byte-level alphabet of GPT-2-style BPE tokenizers (Qwen2, Llama 3, ...): each of the
// 256 byte values is spelled as one printable character so token strings stay valid text.
// Printable Latin-1 bytes stand for themselves; the others (controls, space, soft hyphen)
// are shifted to U+0100 onwards in byte order. The tokenizer reads token bytes through it
// and init-model builds its vocabulary from it.

function buildAlphabet(): string[] {
  const chars: string[] = new Array(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    chars[b] = String.fromCharCode(printable(b) ? b : 256 + shifted++);
  }
  return chars;
}

/** byte value -> its character. */
export const BYTE_TO_CHAR: readonly string[] = buildAlphabet();

/** character -> byte value. */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/** The bytes a byte-level token stands for; characters outside the alphabet pass through as UTF-8. */
export function byteLevelToBytes(token: string): Uint8Array {
  const out: number[] = [];
  for (const ch of token) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b !== undefined) out.push(b);
    else out.push(...new TextEncoder().encode(ch));
  }
  return Uint8Array.from(out);
}
