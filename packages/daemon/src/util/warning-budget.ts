/**
 * The warnings of one operation (a backup, a snapshot, a restore), bounded: the first `max` are logged, each clipped
 * to `maxChars`, and the rest only counted, with one line saying how many once the operation is over. Content a
 * workspace controls decides how many there are: files it deletes while a backup walks them logged one line each,
 * 48,896 lines (6.9 MB) for one backup, 21.6 MB for another with 3 KB paths (red team round 11 G1).
 */
export class WarningBudget {
  private logged = 0;
  private dropped = 0;

  constructor(
    private readonly log: (message: string) => void,
    private readonly max = 16,
    private readonly maxChars = 256,
  ) {}

  /** Logs `message` while the budget lasts, clipped; counts it afterwards. */
  readonly warn = (message: string): void => {
    if (this.logged >= this.max) {
      this.dropped += 1;
      return;
    }
    this.logged += 1;
    this.log(
      message.length > this.maxChars ? `${message.slice(0, this.maxChars)}… (${message.length} characters)` : message,
    );
  };

  /** Logs how many warnings were not logged, if any. Call once the operation is over, however it ended. */
  flush(): void {
    if (this.dropped === 0) return;
    this.log(`${this.dropped} more warnings like these were not logged`);
    this.dropped = 0;
  }
}
