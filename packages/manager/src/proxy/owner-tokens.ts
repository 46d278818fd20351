/**
 * Every live owner token, so that the proxy strips any owner's token from what a workspace receives, not only the
 * token of the workspace's own owner. Red team round 8 sent alice's token to mallory's public port: the proxy
 * removed the token's names (header, query parameter, owner cookies) but passed its value on in a Referer, in
 * `Authorization: Basic`, in other cookies and query values, because it compared values with mallory's token only.
 * A browser sends such a Referer when alice follows a link from a page whose address holds her token: with path
 * routing every workspace is one origin, so the whole address goes along.
 *
 * @module
 */
import type { Observable, Subscription } from 'rxjs';
import type { WorkspaceRecord } from '../domain/types.js';
import { deepDecode } from './parse.js';

/** Runs of the characters tokens are made of (base64url: `createOwnerToken`); shorter ones cannot hold one. */
const candidateRuns = /[A-Za-z0-9_-]+/g;

export class LiveOwnerTokens {
  private tokens = new Set<string>();
  private lengths: number[] = [];
  private builtAt = Number.NEGATIVE_INFINITY;
  private subscription: Subscription | undefined;
  /** {@link maxAgeMs}, or longer while following the updates. */
  private maxAge: number;

  /**
   * @param records every workspace record (the manager's)
   * @param maxAgeMs how long one full view of the tokens is used: a rebuild costs a pass over every record, so it is
   *   made at most this often. Between rebuilds, {@link follow} adds new workspaces' tokens as they appear; without it
   *   a workspace created within `maxAgeMs` is not yet known
   */
  constructor(
    private readonly records: () => Iterable<WorkspaceRecord>,
    private readonly maxAgeMs = 100,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.maxAge = maxAgeMs;
  }

  /**
   * Adds each token from the status updates as it appears, until {@link unfollow}: a workspace's creation publishes its
   * first status before its owner is told the token, so no request can carry a token not known yet. The rebuilds then
   * only drop tokens of workspaces that are gone.
   */
  follow(status$: Observable<WorkspaceRecord>, maxAgeMs = 1_000): void {
    this.unfollow();
    this.maxAge = maxAgeMs;
    this.subscription = status$.subscribe((record) => this.add(record.ownerToken));
  }

  unfollow(): void {
    this.subscription?.unsubscribe();
    this.subscription = undefined;
    this.maxAge = this.maxAgeMs;
  }

  /** Whether `text`, as sent or decoded as deep as any server would, holds a live owner token. */
  carriedBy(text: string): boolean {
    this.refresh();
    if (this.tokens.size === 0 || text.length === 0) return false;
    const decoded = deepDecode(text, true);
    return this.holds(text) || (decoded !== text && this.holds(decoded));
  }

  private holds(text: string): boolean {
    for (const run of text.match(candidateRuns) ?? []) {
      for (const length of this.lengths) {
        for (let at = 0; at + length <= run.length; at++) {
          if (this.tokens.has(run.slice(at, at + length))) return true;
        }
      }
    }
    return false;
  }

  private add(token: string | undefined): void {
    if (!token || this.tokens.has(token)) return;
    this.tokens.add(token);
    if (!this.lengths.includes(token.length)) this.lengths = [...this.lengths, token.length];
  }

  private refresh(): void {
    const now = this.now();
    if (now - this.builtAt < this.maxAge) return;
    const tokens = new Set<string>();
    for (const record of this.records()) if (record.ownerToken) tokens.add(record.ownerToken);
    this.tokens = tokens;
    this.lengths = [...new Set([...tokens].map((t) => t.length))];
    this.builtAt = now;
  }
}
