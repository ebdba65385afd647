// @ts-check
// The frames a receiver opened recently, so that the encryption worker
// (worker.js) can tell a copy of one of them from a replay. A frame that
// fails SFrame's replay check is either a copy the network or the browser
// delivered twice (a packet duplicated on the way, a retransmission that
// raced its original, a receiver that hands its transform the same frame
// again under load) or a frame someone sends again on purpose. Both are
// dropped all the same; only the counter they go to differs, so that the
// worker's "replay" counter keeps meaning something worth a look.
//
// A frame counts as a copy only if it is byte for byte the frame that
// opened, as far as it can be without decrypting again: the same KID and
// counter (in the SFrame header), the same clear prefix and the same
// authentication tag. The tag covers the header, the prefix (through the
// metadata) and the ciphertext, so another frame with that tag cannot be
// made without the key. Bounded: the last RECENT_FRAMES opened per sender.

import { parseHeader } from './sframe.js';

/** Opened frames remembered per sender: about 7 s of one call's audio and video (70 frames a second). */
export const RECENT_FRAMES = 512;

/** @param {Uint8Array} b */
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

export class RecentFrames {
  /** @type {number} */ #tagLength;
  /** @type {number} */ #max;
  /** (KID, counter) → clear prefix and tag, oldest first. @type {Map<string, string>} */
  #seen = new Map();

  /**
   * @param {number} tagLength the cipher suite's tag length in bytes (Nt)
   * @param {number} [max] how many frames to remember
   */
  constructor(tagLength, max = RECENT_FRAMES) {
    this.#tagLength = tagLength;
    this.#max = max;
  }

  /** How many frames are remembered now. */
  get size() { return this.#seen.size; }

  /**
   * The (KID, counter) key and the fingerprint of a frame, or null when
   * its header does not parse or it has no room for a tag.
   * @param {Uint8Array} prefix the clear prefix sent before the SFrame ciphertext
   * @param {Uint8Array} body header || ciphertext || tag
   * @returns {{key: string, print: string}|null}
   */
  #id(prefix, body) {
    let h;
    try {
      h = parseHeader(body);
    } catch {
      return null;
    }
    if (body.length < h.length + this.#tagLength) return null;
    return { key: `${h.kid}:${h.ctr}`, print: `${hex(prefix)}:${hex(body.subarray(body.length - this.#tagLength))}` };
  }

  /**
   * Remembers a frame that opened, forgetting the oldest beyond the bound.
   * @param {Uint8Array} prefix @param {Uint8Array} body
   */
  add(prefix, body) {
    const id = this.#id(prefix, body);
    if (!id) return;
    this.#seen.delete(id.key);
    this.#seen.set(id.key, id.print);
    if (this.#seen.size > this.#max) {
      const oldest = this.#seen.keys().next().value;
      if (oldest !== undefined) this.#seen.delete(oldest);
    }
  }

  /**
   * Whether a frame is a copy of one remembered: same KID, counter, clear
   * prefix and tag.
   * @param {Uint8Array} prefix @param {Uint8Array} body
   * @returns {boolean}
   */
  has(prefix, body) {
    const id = this.#id(prefix, body);
    return !!id && this.#seen.get(id.key) === id.print;
  }
}
