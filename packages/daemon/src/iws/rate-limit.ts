import { ResourceExhaustedError } from '@workbay/api';

/** A token bucket: `burst` calls at once, then one per `intervalMs`. `intervalMs: Infinity` = only `burst` ever. */
export interface RateLimitRule {
  readonly burst: number;
  readonly intervalMs: number;
}

export const onceOnly: RateLimitRule = Object.freeze({ burst: 1, intervalMs: Number.POSITIVE_INFINITY });

/** At most `max` calls at once; {@link tryEnter} says no instead of queueing. */
export class InFlightLimit {
  private running = 0;

  constructor(readonly max: number) {}

  tryEnter(): boolean {
    if (this.running >= this.max) return false;
    this.running += 1;
    return true;
  }

  leave(): void {
    this.running = Math.max(0, this.running - 1);
  }
}

/** Per-method token buckets for one workspace's service. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; updatedAt: number }>();

  constructor(
    private readonly rules: Readonly<Record<string, RateLimitRule>>,
    private readonly now: () => number = Date.now,
    private readonly enabled = true,
  ) {}

  /** Takes a token for `method` or throws {@link ResourceExhaustedError}. Methods without a rule are free. */
  take(method: string): void {
    const rule = this.rules[method];
    if (!this.enabled || !rule) return;
    const b = this.refill(method, rule);
    this.buckets.set(method, b);
    if (b.tokens < 1) throw refusal(method, rule);
    b.tokens -= 1;
  }

  /**
   * The refusal a call of `method` would get now, without taking a token: a caller can refuse before doing any
   * work (tokens only come back with time, so a later {@link take} would refuse as well).
   */
  check(method: string): ResourceExhaustedError | undefined {
    const rule = this.rules[method];
    if (!this.enabled || !rule) return undefined;
    return this.refill(method, rule).tokens < 1 ? refusal(method, rule) : undefined;
  }

  private refill(method: string, rule: RateLimitRule): { tokens: number; updatedAt: number } {
    const now = this.now();
    const b = this.buckets.get(method) ?? { tokens: rule.burst, updatedAt: now };
    const tokens = Number.isFinite(rule.intervalMs)
      ? Math.min(rule.burst, b.tokens + (now - b.updatedAt) / rule.intervalMs)
      : b.tokens;
    return { tokens, updatedAt: now };
  }
}

function refusal(method: string, rule: RateLimitRule): ResourceExhaustedError {
  return new ResourceExhaustedError(
    Number.isFinite(rule.intervalMs)
      ? `${method} is rate limited (${rule.burst} at once, then one per ${rule.intervalMs} ms)`
      : `${method} may be called only ${rule.burst === 1 ? 'once' : `${rule.burst} times`} per workspace`,
  );
}
