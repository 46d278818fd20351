import { InvalidArgumentError, silentLogger } from '@workbay/api';
import type { PluginLogger } from '@workbay/api';

/**
 * What counts against a workspace: a call it made that was answered with an error (a rate limit or the in-flight
 * limit mostly), a connection it opened beyond `maxConnections`, or bytes it sent beyond `penaltyBytesPerSecond`
 * (what grpc-js answers itself, such as unknown methods and malformed or oversized messages, reaches no gate).
 */
export type FloodOffence = 'calls' | 'connections' | 'traffic';

/** The penalty settings (`IwsConfig` carries them; `iws/context.ts` says what each means). */
export interface FloodGuardConfig {
  /** Offences forgiven per window; 0 turns the penalty off. */
  readonly penaltyThreshold: number;
  /** The window over which the threshold drains. */
  readonly penaltyWindowMs: number;
  /** The first cooldown. */
  readonly penaltyCooldownMs: number;
  /** The longest cooldown, and the good behaviour that forgives one doubling. */
  readonly penaltyMaxCooldownMs: number;
  /** Bytes a second the workspace may send to its socket without offending (see {@link FloodGuard.traffic}). */
  readonly penaltyBytesPerSecond?: number;
}

/** What a penalty acts on: the workspace's listener (see `listenIws`). */
export interface Suspendable {
  /** Closes every connection and stops accepting new ones. */
  suspend(): Promise<void>;
  /** Serves again, at the same socket path with the same mode and owner. */
  resume(): Promise<void>;
}

/** One penalty, as logged and counted. */
export interface FloodPenalty {
  /** The offence that crossed the threshold. */
  readonly reason: FloodOffence;
  /** How long the socket is not served. */
  readonly cooldownMs: number;
  /** Penalties not yet forgiven, this one included. */
  readonly strikes: number;
}

/** The guard's surroundings (all optional). */
export interface FloodGuardOptions {
  /** Clock of the bucket and the forgiveness (default Date.now; the cooldown itself runs on timers). */
  readonly now?: () => number;
  /** Where penalties are logged (with the workspace in its bindings). */
  readonly logger?: PluginLogger;
  /** Called at every penalty (the daemon counts them in a metric). */
  readonly onPenalty?: (penalty: FloodPenalty) => void;
}

/** Penalties of one workspace are logged at most this often; the ones in between are counted into the next line. */
const LOG_INTERVAL_MS = 10_000;
/**
 * A workspace let back in starts with its bucket this full: a flood that simply resumes is cut off after a tenth of
 * the threshold (each round of a flood costs the daemon its calls until the cut), while the bucket drains back to
 * empty within a window of good behaviour.
 */
const PROBATION_LEVEL = 0.9;
/**
 * Bytes over the traffic budget that make one offence. Small, so that the bucket's own drain (50 a second by
 * default) forgives little beside the budget (12.5 KiB/s), and a flood trips the default threshold once it has
 * sent 125 KiB more than its budget.
 */
export const TRAFFIC_OFFENCE_BYTES = 256;

/**
 * The penalty of one workspace that floods its socket. A refusal is cheap for the work behind it but not for the
 * daemon's one event loop: HTTP/2 framing, grpc-js's call setup and a status back cost about as much as an answer,
 * so a workspace refused ten thousand times a second still slows every other workspace. Past the threshold the
 * workspace's listener is taken away for a cooldown: its connections are destroyed and its socket accepts nothing
 * (the kernel refuses the connects, which costs the daemon nothing), then it serves again.
 *
 * Offences fill a leaky bucket that drains `penaltyThreshold` per `penaltyWindowMs`: a burst up to the threshold
 * is forgiven, a sustained rate above threshold/window is not. The cooldown starts at `penaltyCooldownMs` and
 * doubles with each penalty up to `penaltyMaxCooldownMs`; every `penaltyMaxCooldownMs` without a penalty forgives
 * one strike. A workspace let back in is on probation (see {@link PROBATION_LEVEL}). The defaults (500 per 10 s)
 * are two orders of magnitude above an IDE polling a few times a second (whose refusals are a few per second).
 * What grpc-js refuses itself never reaches the service, so the listener also meters the bytes a workspace sends
 * ({@link FloodGuard.traffic}): a call costs the daemon about the same whatever its answer, and its bytes too.
 */
export class FloodGuard {
  private readonly now: () => number;
  private readonly logger: PluginLogger;
  private level = 0;
  private levelAt = 0;
  private strikes = 0;
  private lastLiftedAt = Number.NEGATIVE_INFINITY;
  private lastLogAt = Number.NEGATIVE_INFINITY;
  private unlogged = 0;
  private target: Suspendable | undefined;
  private suspendedFlag = false;
  private timer: NodeJS.Timeout | undefined;
  /** Suspends and resumes run one after the other, and a detach waits for the running one. */
  private transitions: Promise<void> = Promise.resolve();

  constructor(
    private readonly config: FloodGuardConfig,
    private readonly options: FloodGuardOptions = {},
  ) {
    assertConfig(config);
    this.now = options.now ?? Date.now;
    this.logger = options.logger ?? silentLogger;
  }

  /** Whether the workspace is serving its cooldown now. */
  get suspended(): boolean {
    return this.suspendedFlag;
  }

  /** Puts `target` under this guard; the returned function ends that (cancelling a pending resume) once idle. */
  attach(target: Suspendable): () => Promise<void> {
    this.target = target;
    return async () => {
      if (this.target !== target) return;
      this.target = undefined;
      clearTimeout(this.timer);
      this.timer = undefined;
      await this.transitions;
    };
  }

  /** `count` offences of the workspace; past the threshold, a penalty. Costs a few arithmetic operations. */
  offence(kind: FloodOffence, count = 1): void {
    if (this.config.penaltyThreshold === 0 || this.suspendedFlag || !this.target) return;
    const now = this.now();
    const drained = ((now - this.levelAt) * this.config.penaltyThreshold) / this.config.penaltyWindowMs;
    this.level = Math.max(0, this.level - drained) + count;
    this.levelAt = now;
    if (this.level > this.config.penaltyThreshold) this.penalise(kind, now);
  }

  /**
   * The workspace sent `bytes` to its socket over the last `elapsedMs` (the listener samples its connections):
   * each {@link TRAFFIC_OFFENCE_BYTES} beyond `penaltyBytesPerSecond` is an offence. Bursts above the budget are
   * forgiven as far as the bucket's threshold reaches; a sustained flood fills it within seconds.
   */
  traffic(bytes: number, elapsedMs: number): void {
    const budget = this.config.penaltyBytesPerSecond;
    if (!budget) return;
    const over = bytes - (budget * elapsedMs) / 1000;
    if (over > 0) this.offence('traffic', Math.ceil(over / TRAFFIC_OFFENCE_BYTES));
  }

  private penalise(reason: FloodOffence, now: number): void {
    const target = this.target!;
    this.level = 0;
    const forgiven = Math.floor((now - this.lastLiftedAt) / this.config.penaltyMaxCooldownMs);
    this.strikes = Math.max(0, this.strikes - forgiven);
    const cooldownMs = Math.min(this.config.penaltyMaxCooldownMs, this.config.penaltyCooldownMs * 2 ** this.strikes);
    // Strikes beyond the maximum cooldown are not kept: forgiving one always shortens the next cooldown.
    const maxStrikes = Math.ceil(Math.log2(this.config.penaltyMaxCooldownMs / this.config.penaltyCooldownMs));
    this.strikes = Math.min(maxStrikes, this.strikes + 1);
    this.suspendedFlag = true;
    const penalty: FloodPenalty = { reason, cooldownMs, strikes: this.strikes };
    this.report(penalty, now);
    this.options.onPenalty?.(penalty);
    // Started right away, not queued: the connections go before grpc-js parses the next calls that arrived with
    // this one. Nothing else runs then (a restore ends before the workspace can offend again).
    let suspending: Promise<void>;
    try {
      suspending = target.suspend();
    } catch (error) {
      suspending = Promise.reject(error as Error);
    }
    // Handled now (logged through the queue below), so never an unhandled rejection in between.
    suspending.catch(() => undefined);
    this.transition(() => suspending, 'could not stop serving a flooding workspace');
    this.schedule(cooldownMs);
  }

  private schedule(cooldownMs: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const target = this.target;
      if (!target) return;
      this.transition(async () => {
        try {
          await target.resume();
        } catch (error) {
          // Still down: the workspace's own doing (e.g. it put a directory at its socket's name); tried again.
          this.logger.error(
            { err: error instanceof Error ? error.message : String(error), retryMs: cooldownMs },
            'in-workspace service socket not restored after a flood penalty',
          );
          if (this.target === target) this.schedule(cooldownMs);
          return;
        }
        this.suspendedFlag = false;
        this.lastLiftedAt = this.now();
        this.level = this.config.penaltyThreshold * PROBATION_LEVEL;
        this.levelAt = this.lastLiftedAt;
      }, 'could not restore the in-workspace service socket');
    }, cooldownMs);
    // A pending cooldown never keeps the process alive; closing the listener detaches the guard anyway.
    this.timer.unref();
  }

  private transition(step: () => Promise<void>, failure: string): void {
    this.transitions = this.transitions.then(step).catch((error: unknown) => {
      this.logger.error({ err: error instanceof Error ? error.message : String(error) }, failure);
    });
  }

  private report(penalty: FloodPenalty, now: number): void {
    if (now - this.lastLogAt < LOG_INTERVAL_MS) {
      this.unlogged += 1;
      return;
    }
    this.logger.warn(
      {
        ...penalty,
        threshold: this.config.penaltyThreshold,
        windowMs: this.config.penaltyWindowMs,
        ...(penalty.reason === 'traffic' ? { bytesPerSecond: this.config.penaltyBytesPerSecond } : {}),
        unlogged: this.unlogged,
      },
      'workspace flooded its in-workspace service socket: not served for a cooldown',
    );
    this.lastLogAt = now;
    this.unlogged = 0;
  }
}

function assertConfig(config: FloodGuardConfig): void {
  if (!Number.isSafeInteger(config.penaltyThreshold) || config.penaltyThreshold < 0) {
    throw new InvalidArgumentError('penaltyThreshold', 'must be a non-negative integer');
  }
  for (const name of ['penaltyWindowMs', 'penaltyCooldownMs', 'penaltyMaxCooldownMs'] as const) {
    if (!Number.isFinite(config[name]) || config[name] < 1)
      throw new InvalidArgumentError(name, 'must be at least 1 ms');
  }
  const budget = config.penaltyBytesPerSecond;
  if (budget !== undefined && (!Number.isSafeInteger(budget) || budget < 0)) {
    throw new InvalidArgumentError('penaltyBytesPerSecond', 'must be a non-negative integer');
  }
  if (config.penaltyMaxCooldownMs < config.penaltyCooldownMs) {
    throw new InvalidArgumentError('penaltyMaxCooldownMs', 'must not be below penaltyCooldownMs');
  }
}
