import { seconds } from './format.js';
import { printable } from './printable.js';

const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/**
 * Progress of a long wait on stderr: one line per phase change with the time since the wait began, and on a
 * TTY a spinner line showing the current phase that is rewritten in place.
 */
export class PhaseProgress {
  private readonly began = Date.now();
  private phase?: string;
  private phaseSince = this.began;
  private frame = 0;
  private timer?: NodeJS.Timeout;
  private lastNote = '';

  constructor(
    private readonly stderr: { write(text: string): unknown; readonly isTTY?: boolean },
    private readonly subject: string,
  ) {
    if (stderr.isTTY) {
      this.timer = setInterval(() => this.draw(), 100);
      this.timer.unref();
    }
  }

  /** Reports the current phase; prints a line only when it changed. */
  update(phase: string): void {
    if (phase === this.phase) return;
    const now = Date.now();
    this.clearLine();
    if (this.phase !== undefined && this.stderr.isTTY) {
      this.stderr.write(`✓ ${this.phase} (${seconds(now - this.phaseSince)})\n`);
    }
    if (!this.stderr.isTTY) this.stderr.write(`${this.subject}: ${phase} after ${seconds(now - this.began)}\n`);
    this.phase = phase;
    this.phaseSince = now;
    this.draw();
  }

  /**
   * Reports the workspace's status message (e.g. the retries of a clone while INITIALIZING); prints a line only
   * when it changed and is not empty. The text comes from the server: control characters are not passed to the
   * terminal, and a line is bounded.
   */
  note(message: string): void {
    // eslint-disable-next-line no-control-regex -- control characters are exactly what is kept off the terminal
    const text = message.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').slice(0, 300);
    if (text === this.lastNote) return;
    this.lastNote = text;
    if (text === '') return;
    this.clearLine();
    this.stderr.write(`${this.subject}: ${printable(text)}\n`);
    this.draw();
  }

  /**
   * Ends the display. On a TTY the current phase is ticked off; `message` (e.g. why the wait ended early) is
   * printed in either case.
   */
  done(message?: string): void {
    if (this.timer) clearInterval(this.timer);
    this.clearLine();
    if (this.stderr.isTTY && this.phase !== undefined) {
      this.stderr.write(`✓ ${this.phase} (${seconds(Date.now() - this.phaseSince)})\n`);
    }
    if (message)
      this.stderr.write(`${this.subject}: ${printable(message)} after ${seconds(Date.now() - this.began)}\n`);
  }

  private draw(): void {
    if (!this.stderr.isTTY || this.phase === undefined) return;
    this.frame = (this.frame + 1) % frames.length;
    this.stderr.write(
      `\r\x1b[2K${frames[this.frame]} ${this.subject}: ${this.phase} ${seconds(Date.now() - this.began)}`,
    );
  }

  private clearLine(): void {
    if (this.stderr.isTTY) this.stderr.write('\r\x1b[2K');
  }
}
