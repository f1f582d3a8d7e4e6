// Generate's text as clients see it: text that could be the start of a stop string is held
// back until it is known not to be, a matched stop string (and anything after it) is never
// sent, and every generated token id is reported in exactly one chunk, with the text of
// whole tokens (so no chunk is without a token id).

export interface TextChunk {
  text: string;
  tokenIds: number[];
}

export class StopStringHoldback {
  /** The whole completion so far, and how much of it was sent. */
  private text = "";
  private sent = 0;
  /** Tokens whose text is not sent yet. */
  private ids: number[] = [];
  /** Where the earliest stop string begins, once one has appeared. */
  private stopAt = -1;

  constructor(private readonly stopStrings: readonly string[]) {}

  /** Adds one token; returns the pending tokens' text when all of it is safe to send, else null. */
  push(tokenId: number, tokenText: string): TextChunk | null {
    this.ids.push(tokenId);
    if (this.stopAt >= 0) return null;
    this.text += tokenText;
    this.stopAt = this.earliestStop();
    if (this.stopAt >= 0 || this.couldBeginStop()) return null;
    return this.take(this.text.length);
  }

  /**
   * The rest when generation ends: held-back text goes out unless a stop string ended it
   * (then only the text before the stop string); the ids not yet reported go with it.
   */
  finish(): TextChunk | null {
    if (this.ids.length === 0) return null;
    return this.take(this.stopAt >= 0 ? this.stopAt : this.text.length);
  }

  private take(end: number): TextChunk {
    const chunk = { text: this.text.slice(this.sent, Math.max(end, this.sent)), tokenIds: this.ids };
    this.sent = Math.max(end, this.sent);
    this.ids = [];
    return chunk;
  }

  private earliestStop(): number {
    let earliest = -1;
    for (const stop of this.stopStrings) {
      const at = this.text.indexOf(stop, Math.max(0, this.sent - stop.length + 1));
      if (at >= 0 && (earliest < 0 || at < earliest)) earliest = at;
    }
    return earliest;
  }

  /** Whether the unsent text ends with the beginning of some stop string. */
  private couldBeginStop(): boolean {
    const unsent = this.text.slice(this.sent);
    return this.stopStrings.some((stop) => {
      for (let k = Math.min(stop.length - 1, unsent.length); k > 0; k--) if (unsent.endsWith(stop.slice(0, k))) return true;
      return false;
    });
  }
}
