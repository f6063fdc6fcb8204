#!/usr/bin/perl
# Exercises MailPolicy.pm against a running daemon: `perl check_client.pl SOCKET`.
#
# Asks a fixed list of questions (about the zones of tests/clients.rs: example.test, other.test)
# through the client's methods and prints one JSON object: for each question the method, its
# arguments, the operation it stands for, the key of the reply it returns, and what the client
# returned ({"ok": ...} or {"error": {"code", "message"}}), so the Rust test can ask the socket
# the same operations itself and compare, and ask the Python client the same calls. It also
# checks on its own: ping and hello, the reconnect after the daemon closed the connection,
# the per-call timeout against a socket that never answers, the error for an unreachable
# socket. Exits non-zero on any failure.

use strict;
use warnings;
use utf8;

use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use JSON::PP ();
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time);

use lib dirname(File::Spec->rel2abs(__FILE__));
use MailPolicy qw(record);

my $path = shift or die "usage: $0 SOCKET\n";
my $json = JSON::PP->new->utf8->canonical;

# method, arguments, options (dmarc_evaluate), the operation it sends, the reply key it returns.
my @questions = (
    [ ping  => [],                 undef, 'ping',                                     undef ],
    [ hello => ['1.0'],            undef, { hello => { version => '1.0' } },          'hello' ],
    [ dmarc => ['example.test'],     undef, { dmarc => { domain => 'example.test' } },     'dmarc' ],
    [ dmarc => ['sub.example.test'], undef, { dmarc => { domain => 'sub.example.test' } }, 'dmarc' ],
    [ dmarc => ['other.test'],       undef, { dmarc => { domain => 'other.test' } },       'dmarc' ],
    [ spf   => ['example.test'],      undef, { spf => { domain => 'example.test' } },      'policy' ],
    [ spf   => ['nope.example.test'], undef, { spf => { domain => 'nope.example.test' } }, 'policy' ],
    [ spf   => ['bücher.example.test'], undef, { spf => { domain => 'bücher.example.test' } }, 'policy' ],
    [ dkim_key => [ 's1', 'example.test' ], undef,
        { dkim_key => { selector => 's1', domain => 'example.test' } }, 'policy' ],
    [ atps => [ 'example.test', 'other.test', 'sha256' ], undef,
        { atps => { signer => 'example.test', author => 'other.test', hash => 'sha256' } }, 'policy' ],
    [ tlsa => [ 'mx.example.test', 25 ], undef, { tlsa => { host => 'mx.example.test', port => 25 } },
        'policy' ],
    (map {
        my ($ip, $from, $helo) = @$_;
        [ spf_check => [ $ip, $from, $helo ], undef,
            { spf_check => { ip => $ip, mail_from => $from, helo => $helo } }, 'spf_check' ]
    } (
        [ '192.0.2.5',     'user@example.test', 'mail.example.test' ],
        [ '198.51.100.7',  'user@example.test', 'mail.example.test' ],
        [ '2001:db8::25',  'user@example.test', 'mail.example.test' ],
        [ '203.0.113.9',   'user@example.test', 'mail.example.test' ],
        [ '192.0.2.5',     '',                  'example.test' ],
    )),
    [ dmarc_evaluate => ['example.test'],
        { spf => { domain => 'example.test', result => 'fail' }, dkim => [], forwarders => [], seed => 7 },
        { dmarc_evaluate => { from_domain => 'example.test',
            spf => { domain => 'example.test', result => 'fail' }, dkim => [], forwarders => [], seed => 7 } },
        'dmarc_verdict' ],
    [ dmarc_evaluate => ['sub.example.test'],
        { dkim => [ { domain => 'example.test', selector => 's1', result => 'pass' } ], forwarders => [], seed => 7 },
        { dmarc_evaluate => { from_domain => 'sub.example.test', spf => undef,
            dkim => [ { domain => 'example.test', selector => 's1', result => 'pass' } ], forwarders => [], seed => 7 } },
        'dmarc_verdict' ],
    [ spf => ['a..b'], undef, { spf => { domain => 'a..b' } }, 'policy' ],
    [ spf_check => [ 'not-an-ip', 'user@example.test', 'mail.example.test' ], undef,
        { spf_check => { ip => 'not-an-ip', mail_from => 'user@example.test', helo => 'mail.example.test' } },
        'spf_check' ],
    # Another major version: the daemon answers the error and closes the connection; the
    # question after it must be answered on a new one.
    [ hello => ['3.0'], undef, { hello => { version => '3.0' } }, 'hello' ],
    [ ping  => [],      undef, 'ping', undef ],
);

sub fail { print STDERR "check_client.pl: @_\n"; exit 1 }

my $c = MailPolicy->new($path, timeout => 10);
my (@answers, %checks);
for my $q (@questions) {
    my ($method, $args, $opts, $op, $key) = @$q;
    my $result = eval { +{ ok => $c->$method(@$args, $opts ? %$opts : ()) } };
    unless ($result) {
        my $e = $@;
        fail("$method: $e") unless ref $e && $e->isa('MailPolicy::Error') && !$e->is_client;
        $result = { error => { code => $e->code, message => $e->message } };
    }
    push @answers, { method => $method, args => $args, options => $opts, op => $op, key => $key,
                     result => $result };
}

fail('ping did not answer pong') unless $answers[0]{result}{ok} eq 'pong';
fail('hello: not a 2.x server') unless $answers[1]{result}{ok}{version} =~ /^2\./;
fail('the question after the closed connection was not answered')
    unless ($answers[-1]{result}{ok} // '') eq 'pong'
    && ($answers[-2]{result}{error}{code} // '') eq 'unsupported_version';
fail('connections opened: ' . $c->opened . ', not 2 (one reconnect)') unless $c->opened == 2;
$checks{connections_opened} = $c->opened;

my $spf = record($c->spf('example.test')) or fail('no SPF record for example.test');
$checks{spf_directives} = scalar @{ $spf->{directives} };
fail('record() of a missing record is not undef') if defined record($c->spf('nope.example.test'));
$checks{stats_upstream} = 0;
$checks{stats_upstream} += $_->[1] for @{ $c->stats->{upstream} };
$c->close;

# The per-call timeout, against a socket that accepts and never answers.
my $dir = tempdir(CLEANUP => 1);
my $silent_path = "$dir/silent.sock";
my $silent = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $silent_path, Listen => 4)
    or fail("listen $silent_path: $!");
my $slow = MailPolicy->new($silent_path, timeout => 0.3);
my $t0 = time;
my $ok = eval { $slow->ping; 1 };
my $took = time - $t0;
fail('a silent daemon answered') if $ok;
fail("a silent daemon: $@, not client_timeout") unless ref $@ && $@->code eq 'client_timeout';
fail("the 0.3 s timeout took $took s") unless $took >= 0.29 && $took < 3;
$checks{timeout_code} = $@->code;
$checks{timeout_s} = 0 + sprintf('%.2f', $took);
close $silent;

# An unreachable socket.
$ok = eval { MailPolicy->new("$dir/absent.sock", timeout => 1); 1 };
fail('connected to a socket that does not exist') if $ok;
$checks{connect_code} = $@->code;

print $json->encode({ client => 'perl', answers => \@answers, checks => \%checks }), "\n";
