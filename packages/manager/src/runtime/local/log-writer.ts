/**
 * The process that reads an isolated workspace's output from its pipe and appends it to the log, capping the log
 * itself: the only writer of the file, it rotates between two of its own writes, so a rotation loses nothing that came
 * after it. {@link LogCap}'s copy-truncate from outside races the writer (a line appended between its last size read
 * and its truncation is gone: a workspace's last words, right after a flood, in a CI run) and needs a manager watching;
 * this one keeps capping through a manager restart.
 *
 * Perl (perl-base is part of every Debian system; see the daemon's `archive/sparse.ts`), because the writer runs for the
 * workspace's whole life, one per workspace: `cat` cannot rotate, and a Node process per workspace would cost tens of MB.
 *
 * Arguments: the log file (its stdout, opened with O_APPEND by the manager) and the cap (`logs.maxBytes`), with the
 * same meaning as {@link LogCap}'s: before a write would take the log to half of the cap or past it, the log becomes
 * `<log>.1` (renamed: the whole previous log, nothing copied) and a new log is created (O_APPEND, 0600) for the next
 * writes. Reads are at most half the cap (and 64 KiB), so the log never passes half of it, and the log and `.1`
 * together never pass the cap: the manager's LogCap, which watches the logs of workspaces without this writer (and
 * those of older runtimes' writers), never has to act on them. When the read that is due to rotate has a newline that
 * still fits, the lines up to the last such newline go to the old log first, so that both files start at a line (a
 * line is split only when it does not fit).
 *
 * Rotating by rename, the disk writes are the output itself: the copy of half the cap into `.1.tmp` at every rotation
 * made a flood write twice its output to the disk (red team round 7: 1,944 MiB for 940 MB, ~100 MB/s). The old `.1`
 * is removed before the rename rather than replaced by it: ext4 (`auto_da_alloc`) starts writing a file out when a
 * rename replaces another one, so every rotation pushed the whole log to the disk, while a log removed within seconds
 * (the next-but-one rotation of a flood) is dropped from the page cache before it is ever written (1 GiB through the
 * writer: 2,030 MiB written to the disk by the copy, 1,020 MiB by a replacing rename, 8 to 11 MiB this way). For that
 * instant `.1` is missing; the log it replaces is still whole.
 *
 * The manager's file (the writer's stdout) stays open in the wrapper (its stdout and stderr) for the workspace's whole
 * life: once the second rotation removes it as `.1`, the writer truncates it, so that its blocks do not stay allocated
 * with no name.
 *
 * Whatever fails drops output, never blocks the pipe nor ends the writer, so a workspace whose output cannot be stored
 * runs on: a write that fails (a full disk) drops the rest of its read; a rename that fails (`.1` a directory, the log
 * removed) truncates the log instead, losing its part but keeping the cap; a new log that cannot be created (no inode
 * left) leaves nothing to append to, and each read after it tries again, dropped until one succeeds. The writer
 * ignores the stop signals (the wrapper's trap) and ends at the pipe's end.
 */
// No modules (strict, Fcntl, Errno: 5 ms of start-up each workspace start would pay; `perl -Mstrict -c` is clean):
// O_WRONLY|O_CREAT|O_APPEND is 01|0100|02000, EINTR 4, on Linux.
export const logWriterScript = String.raw`
my ($file, $cap) = @ARGV;
my $half = int($cap / 2);
my $chunk = $half < 65536 ? $half : 65536;
$SIG{PIPE} = 'IGNORE';
binmode STDIN; binmode STDOUT;
my $out = \*STDOUT;
sub size_of { my @st = stat($_[0]); return @st ? $st[7] : 0 }
sub put {
  my ($off, $end) = @_[1, 2];
  while ($off < $end) {
    my $w = syswrite($out, $_[0], $end - $off, $off);
    if (!defined $w) { next if $! == 4; return }
    $off += $w;
  }
}
sub reopen { my $fh; $out = sysopen($fh, $file, 01 | 02000 | 0100, 0600) ? $fh : undef }
sub rotate {
  my @held = stat(STDOUT);
  my @old = stat("$file.1");
  unlink("$file.1");
  if (!rename($file, "$file.1")) { truncate($out, 0); return }
  truncate(STDOUT, 0) if @held && @old && $held[0] == $old[0] && $held[1] == $old[1];
  close($out) unless fileno($out) == 1;
  reopen();
}
my $size = size_of($out);
my $buf;
for (;;) {
  my $n = sysread(STDIN, $buf, $chunk);
  if (!defined $n) { next if $! == 4; last }
  last if $n == 0;
  if (!$out) { reopen(); $size = $out ? size_of($out) : 0 }
  my $from = 0;
  if ($out && $size > 0 && $size + $n >= $half) {
    my $nl = $half > $size ? rindex($buf, "\n", $half - $size - 1) : -1;
    if ($nl >= 0) { put($buf, 0, $nl + 1); $from = $nl + 1 }
    rotate();
  }
  next unless $out;
  put($buf, $from, $n);
  $size = size_of($out);
}
`;
