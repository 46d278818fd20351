/**
 * The Perl that probes sparse files for sparse-prober.ts (which says why, and the protocol): it reads requests on
 * its stdin and answers each on its stdout, until its stdin ends. Arguments: the daemon's pid, the extents kept
 * while walking a file, and a probe's time limit in milliseconds.
 */
// SEEK_DATA is 3 and SEEK_HOLE 4 on Linux. "0 but true" (sysseek's 0) is numified by `+= 0`. ENXIO: no data
// after the position. A file system without hole support answers with one extent over the whole file. times()
// counts real time in clock ticks: Time::HiRes is not in perl-base. The file is opened O_NONBLOCK so that no
// open can wait (a FIFO, were one ever asked), and closed before the answer.
export const probeScript = `
use strict;
use Fcntl qw(O_RDONLY O_NONBLOCK O_NOCTTY);
use POSIX ();
my ($pid, $keep, $limit) = @ARGV;
my $ticks = $limit / 1000 * (POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100);
my @e;
sub merge {
  my @gaps = map { $e[2 * $_] - $e[2 * $_ - 1] } 1 .. @e / 2 - 1;
  my @order = sort { $gaps[$a] <=> $gaps[$b] || $a <=> $b } 0 .. $#gaps;
  my %close = map { $_ => 1 } @order[0 .. int(@order / 2)];
  my @m = @e[0, 1];
  for (my $i = 1; $i < @e / 2; $i++) {
    if ($close{$i - 1}) { $m[-1] = $e[2 * $i + 1]; } else { push @m, $e[2 * $i], $e[2 * $i + 1]; }
  }
  @e = @m;
}
sub seek_failed { die(($!{EINVAL} || $!{EOPNOTSUPP}) ? "unsupported\\n" : "$_[0]: $!\\n"); }
sub walk {
  my ($fh, $size) = @_;
  my ($p, $changes, $start) = (0, 0, (POSIX::times())[0]);
  @e = ();
  while ($p < $size) {
    die "took longer than $limit ms\\n" if (POSIX::times())[0] - $start > $ticks;
    my $d = sysseek($fh, $p, 3);
    if (!defined $d) { last if $!{ENXIO}; seek_failed('SEEK_DATA'); }
    $d += 0;
    last if $d >= $size;
    my $h = sysseek($fh, $d, 4);
    seek_failed('SEEK_HOLE') unless defined $h;
    $h += 0;
    # The data just found is gone again (a hole punched meanwhile): look again from the same place, a bounded number of times.
    if ($h <= $d) { die "the file kept changing\\n" if ++$changes > 1000; next; }
    $h = $size if $h > $size;
    push @e, $d, $h;
    merge() if @e >= 4 * $keep;
    $p = $h;
  }
}
$| = 1;
while (my $request = <STDIN>) {
  my ($id, $fd, $size, $dev, $ino) = $request =~ /^(\\d{1,15}) (\\d{1,9}) (\\d{1,16}) (\\d{1,20}) (\\d{1,20})\\n\\z/
    or die "bad request\\n";
  my $fh;
  my $answer = eval {
    sysopen($fh, "/proc/$pid/fd/$fd", O_RDONLY | O_NONBLOCK | O_NOCTTY) or die "cannot open the descriptor: $!\\n";
    my @s = stat $fh;
    die "not the file the daemon holds\\n" unless -f _ && "$s[0]" eq $dev && "$s[1]" eq $ino;
    walk($fh, $size);
    join('', map { "$e[2 * $_] $e[2 * $_ + 1]\\n" } 0 .. @e / 2 - 1) . "end $id\\n";
  };
  close $fh if $fh;
  if (!defined $answer) {
    (my $why = $@) =~ s/\\n.*//s;
    $answer = $why eq 'unsupported' ? "unsupported $id\\n" : "error $id $why\\n";
  }
  print $answer;
}
`;
