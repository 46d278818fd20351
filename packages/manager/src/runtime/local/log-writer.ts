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
 * same meaning as {@link LogCap}'s: before a write would take the log past half of the cap, its newest
 * `cap - half` bytes, from the first line start in their first 64 KiB, replace `<log>.1` (through `<log>.1.tmp`, 0600)
 * and the log is truncated. Reads are at most half the cap (and 64 KiB), so the log never passes half of it, and the
 * log and `.1` together never pass the cap: the LogCap that also watches the file (for workspaces started before this
 * writer, and the plain ones) never has to act.
 *
 * Whatever fails (a full disk, `.1` not writable) drops output, never blocks the pipe: a workspace whose output
 * cannot be stored runs on. The writer ignores the stop signals (the wrapper's trap) and ends at the pipe's end.
 */
// No modules (strict, Fcntl, Errno: 5 ms of start-up each workspace start would pay): O_WRONLY|O_CREAT|O_TRUNC is
// 01|0100|01000, EINTR 4, on Linux.
export const logWriterScript = String.raw`
my ($file, $cap) = @ARGV;
my $half = int($cap / 2); my $keep = $cap - $half;
my $chunk = $half < 65536 ? $half : 65536;
my $line_search = 65536;
$SIG{PIPE} = 'IGNORE';
binmode STDIN; binmode STDOUT;
sub size_now { my @st = stat(STDOUT); return @st ? $st[7] : 0 }
sub keep_tail {
  my ($size) = @_;
  my $n = $size < $keep ? $size : $keep;
  open(my $in, '<:raw', '/proc/self/fd/1') or return;
  sysseek($in, $size - $n, 0) or return;
  my ($tail, $got) = ('', 0);
  while ($got < $n) {
    my $r = sysread($in, $tail, $n - $got, $got);
    last unless $r;
    $got += $r;
  }
  my $nl = index(substr($tail, 0, $line_search), "\n");
  $tail = substr($tail, $nl + 1) if $nl >= 0;
  my $tmp = "$file.1.tmp";
  sysopen(my $out, $tmp, 01 | 0100 | 01000, 0600) or return;
  my $off = 0;
  while ($off < length $tail) {
    my $w = syswrite($out, $tail, length($tail) - $off, $off);
    if (!defined $w) { next if $! == 4; close $out; unlink $tmp; return }
    $off += $w;
  }
  close $out or return;
  rename($tmp, "$file.1");
}
my $size = size_now();
my $buf;
for (;;) {
  my $n = sysread(STDIN, $buf, $chunk);
  if (!defined $n) { next if $! == 4; last }
  last if $n == 0;
  if ($size > 0 && $size + $n > $half) {
    keep_tail($size);
    truncate(STDOUT, 0);
  }
  my $off = 0;
  while ($off < $n) {
    my $w = syswrite(STDOUT, $buf, $n - $off, $off);
    if (!defined $w) { next if $! == 4; last }
    $off += $w;
  }
  $size = size_now();
}
`;
