package MailPolicy;

# A client for mailpolicyd's JSON-lines socket protocol, in core Perl only (IO::Socket::UNIX,
# IO::Select, JSON::PP, Socket, Scalar::Util, Time::HiRes, Errno): no CPAN module needed, so it loads in
# SpamAssassin plugins and in Exim's embedded Perl as shipped by Debian. Documentation: the POD
# at the end of this file (`perldoc clients/perl/MailPolicy.pm`).

use strict;
use warnings;

use Errno qw(EINTR EAGAIN EWOULDBLOCK EPIPE ECONNRESET ENOTCONN);
use Exporter qw(import);
use IO::Select;
use IO::Socket::UNIX;
use JSON::PP ();
use Scalar::Util qw(blessed);
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time);

our $VERSION = '1.0';
our @EXPORT_OK = qw(record);

# The longest reply line accepted (the Rust and Python clients refuse frames over 1 MiB).
use constant MAX_LINE => 1 << 20;

# send() flag that turns SIGPIPE into EPIPE on a closed peer (Linux, the BSDs); 0 elsewhere,
# where SIGPIPE is ignored around the write instead.
my $NOSIGNAL = eval { Socket::MSG_NOSIGNAL() } || 0;

my $JSON = JSON::PP->new->utf8;

sub new {
    my ($class, $path, %opt) = @_;
    die MailPolicy::Error->new('client_usage', 'MailPolicy->new(PATH, timeout => SECONDS)')
        unless defined $path && length $path;
    # The path is configuration, not message data: untainted, so that connect() works under
    # perl -T (spamd, SpamAssassin and Exim's embedded Perl may run with taint checks).
    ($path) = $path =~ /\A(.*)\z/s;
    my $self = bless {
        path    => $path,
        timeout => defined $opt{timeout} ? $opt{timeout} : 10,
        next_id => 1,
        sock    => undef,
        pid     => 0,
        buf     => '',
        opened  => 0,
    }, $class;
    $self->_connect;
    return $self;
}

sub path    { $_[0]{path} }
sub opened  { $_[0]{opened} }    # connections opened so far (the first, then reconnects)
sub timeout { my $self = shift; $self->{timeout} = shift if @_; $self->{timeout} }

sub close {
    my ($self) = @_;
    if ($self->{sock}) {
        # A connection inherited across fork() belongs to the parent too: only forget it.
        CORE::close($self->{sock}) if $self->{pid} == $$;
    }
    $self->{sock} = undef;
    $self->{buf}  = '';
    return;
}

sub DESTROY { $_[0]->close }

sub _connect {
    my ($self) = @_;
    $self->close;
    my $sock = eval {
        IO::Socket::UNIX->new(
            Type    => SOCK_STREAM,
            Peer    => $self->{path},
            Timeout => $self->{timeout},
        );
    };
    my $why = $@ || $!;
    die MailPolicy::Error->new('client_connect', "connect $self->{path}: $why") unless $sock;
    $sock->blocking(0);
    $self->{sock} = $sock;
    $self->{pid}  = $$;
    $self->{opened}++;
    return;
}

# Sends one operation ('ping', or { spf => { domain => ... } }) and returns the `ok` value of
# its reply; an error reply dies with a MailPolicy::Error. A connection the daemon closed (it
# restarted) is reopened once, as the Python client does.
sub call {
    my ($self, $op) = @_;
    my $retried = 0;
    while (1) {
        # A forked child (Exim, a preforking SpamAssassin) gets a connection of its own.
        $self->_connect if !$self->{sock} || $self->{pid} != $$;
        my $res = eval { $self->_call($op) };
        return $res unless $@;
        my $err = $@;
        die $err unless blessed($err) && $err->isa('MailPolicy::Error');
        if ($err->{broken} && !$retried) {
            $retried = 1;
            $self->close;
            next;
        }
        # After a timeout or a garbled reply the connection's state is unknown: drop it, so a
        # late answer can never be read as the answer to a later question.
        $self->close if $err->{broken} || $err->is_client;
        die $err;
    }
}

sub _call {
    my ($self, $op) = @_;
    my $id       = $self->{next_id}++;
    my $deadline = time + $self->{timeout};
    $self->_write($JSON->encode({ id => $id, op => $op }) . "\n", $deadline);
    while (1) {
        my $line = $self->_read_line($deadline);
        my $resp = eval { $JSON->decode($line) };
        die MailPolicy::Error->new('client_protocol', "a reply that is not JSON: $@")
            unless ref $resp eq 'HASH' && ref $resp->{result} eq 'HASH';
        my $rid = defined $resp->{id} ? $resp->{id} : -1;
        next unless $rid == $id || $rid == 0;    # an answer to an earlier, abandoned question
        my $result = $resp->{result};
        if (my $e = $result->{error}) {
            die MailPolicy::Error->new($e->{code}, $e->{message}, wire => 1);
        }
        die MailPolicy::Error->new('client_protocol', 'a reply with neither ok nor error')
            unless exists $result->{ok};
        return $result->{ok};
    }
}

sub _write {
    my ($self, $data, $deadline) = @_;
    my $sock = $self->{sock};
    my $sel  = IO::Select->new($sock);
    while (length $data) {
        my $n = do {
            local $SIG{PIPE} = 'IGNORE' unless $NOSIGNAL;
            send($sock, $data, $NOSIGNAL);
        };
        if (defined $n) {
            substr($data, 0, $n, '');
            next;
        }
        next if $! == EINTR;
        if ($! == EAGAIN || $! == EWOULDBLOCK) {
            my $left = $deadline - time;
            die MailPolicy::Error->new('client_timeout', "no room to send within $self->{timeout} s")
                if $left <= 0;
            $sel->can_write($left);
            next;
        }
        my $broken = ($! == EPIPE || $! == ECONNRESET || $! == ENOTCONN);
        die MailPolicy::Error->new('client_io', "send: $!", broken => $broken);
    }
    return;
}

sub _read_line {
    my ($self, $deadline) = @_;
    my $sel = IO::Select->new($self->{sock});
    while (1) {
        my $nl = index($self->{buf}, "\n");
        if ($nl >= 0) {
            my $line = substr($self->{buf}, 0, $nl + 1, '');
            return $line;
        }
        die MailPolicy::Error->new('client_protocol', 'a reply line over ' . MAX_LINE . ' bytes')
            if length $self->{buf} > MAX_LINE;
        my $left = $deadline - time;
        die MailPolicy::Error->new('client_timeout', "no answer within $self->{timeout} s")
            if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($self->{sock}, $self->{buf}, 65536, length $self->{buf});
        if (!defined $n) {
            next if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
            my $broken = ($! == ECONNRESET || $! == ENOTCONN);
            die MailPolicy::Error->new('client_io', "read: $!", broken => $broken);
        }
        die MailPolicy::Error->new('client_io', 'the daemon closed the connection', broken => 1)
            if $n == 0;
    }
}

# Domain names given as UTF-8 bytes (what Exim and SpamAssassin usually hold) are taken as
# UTF-8; the daemon turns U-labels into A-labels.
sub _name {
    my ($s) = @_;
    die MailPolicy::Error->new('client_usage', 'a name is required') unless defined $s;
    $s = "$s";
    utf8::decode($s) unless utf8::is_utf8($s);
    return $s;
}

sub ping { $_[0]->call('ping') }

sub hello {
    my ($self, $version) = @_;
    return $self->call({ hello => { version => defined $version ? "$version" : '2.0' } })->{hello};
}

sub dmarc {
    my ($self, $domain) = @_;
    return $self->call({ dmarc => { domain => _name($domain) } })->{dmarc};
}

sub spf {
    my ($self, $domain) = @_;
    return $self->call({ spf => { domain => _name($domain) } })->{policy};
}

sub dkim_key {
    my ($self, $selector, $domain) = @_;
    return $self->call({ dkim_key => { selector => _name($selector), domain => _name($domain) } })
        ->{policy};
}

sub atps {
    my ($self, $signer, $author, $hash) = @_;
    my $op = {
        signer => _name($signer),
        author => _name($author),
        hash   => defined $hash ? "$hash" : 'sha256',
    };
    return $self->call({ atps => $op })->{policy};
}

sub tlsa {
    my ($self, $host, $port) = @_;
    return $self->call({ tlsa => { host => _name($host), port => 0 + (defined $port ? $port : 25) } })
        ->{policy};
}

sub spf_check {
    my ($self, $ip, $mail_from, $helo) = @_;
    my $op = {
        ip        => "$ip",
        mail_from => defined $mail_from ? _name($mail_from) : '',
        helo      => _name($helo),
    };
    return $self->call({ spf_check => $op })->{spf_check};
}

sub dmarc_evaluate {
    my ($self, $from_domain, %in) = @_;
    my $op = {
        from_domain => _name($from_domain),
        spf         => $in{spf},
        dkim        => [ @{ $in{dkim} || [] } ],
        forwarders  => [ map { _name($_) } @{ $in{forwarders} || [] } ],
        seed        => defined $in{seed} ? 0 + $in{seed} : undef,
    };
    return $self->call({ dmarc_evaluate => $op })->{dmarc_verdict};
}

sub stats { $_[0]->call('stats')->{stats} }

# The parsed record of a policy answer (spf, dkim_key, atps), or undef when there is none
# (no record, or one that did not parse).
sub record {
    my ($answer) = @_;
    my $data = ref $answer eq 'HASH' && ref $answer->{answer} eq 'HASH' ? $answer->{answer}{data} : undef;
    return undef unless ref $data eq 'HASH' && keys %$data == 1;
    my ($found) = values %$data;
    return undef unless ref $found eq 'HASH' && ref $found->{valid} eq 'HASH';
    return $found->{valid}{policy};
}

package MailPolicy::Error;

use overload '""' => sub { "$_[0]{code}: $_[0]{message}" }, fallback => 1;

sub new {
    my ($class, $code, $message, %extra) = @_;
    return bless { code => $code, message => defined $message ? $message : '', %extra }, $class;
}

sub code      { $_[0]{code} }
sub message   { $_[0]{message} }
sub is_client { !$_[0]{wire} }
sub throw     { my $class = shift; die $class->new(@_) }

1;

__END__

=head1 NAME

MailPolicy - a core-Perl client for mailpolicyd's Unix socket (JSON lines)

=head1 SYNOPSIS

    use lib '/usr/local/share/mailpolicyd/perl';    # where MailPolicy.pm was copied
    use MailPolicy qw(record);

    my $mp = MailPolicy->new('/run/mailpolicyd/mailpolicyd.sock', timeout => 2);
    my $d  = $mp->dmarc('example.com');       # the DMARC policy for mail From: example.com
    print "$d->{applied}[0]=$d->{applied}[1] found at $d->{found_at}\n" if $d->{applied};

    my $spf = record($mp->spf('example.com'));     # the parsed record, or undef
    my $chk = $mp->spf_check('192.0.2.1', 'user@example.com', 'mail.example.com');
    print "Received-SPF: $chk->{received_spf}\n";

    my $v = $mp->dmarc_evaluate('example.com',
        spf  => { domain => 'example.com', result => 'pass' },
        dkim => [ { domain => 'example.com', selector => 's1', result => 'pass' } ]);
    print "$v->{result} $v->{disposition}\n";

    eval { $mp->spf('a..b'); 1 } or do {
        my $e = $@;                        # a MailPolicy::Error
        warn $e->code, ': ', $e->message, "\n";   # invalid_name: "a..b": empty label
    };

=head1 DESCRIPTION

The same calls as the Python client (F<clients/python/mailpolicy.py>), over the daemon's
JSON-lines framing: one JSON object per line, C<{"id":N,"op":...}> out,
C<{"id":N,"result":{"ok":...}}> or C<{"id":N,"result":{"error":{"code":...,"message":...}}}> back.

Only core modules are used (IO::Socket::UNIX, IO::Select, JSON::PP, Socket, Time::HiRes,
Errno, Exporter), so the file can be dropped next to a SpamAssassin plugin or named in Exim's
C<perl_startup>.

=head2 Methods

Each returns the decoded reply as Perl data, unchanged: hashes, arrays, strings, numbers, and
JSON::PP::Boolean for C<true>/C<false>. Fields the daemon adds later (such as C<raw>, the
record's text as published, on C<dmarc>, C<spf>, C<dkim_key> and C<atps> answers) appear
without a client change.

=over

=item MailPolicy->new($path, timeout => $seconds)

Connects (dies with a C<client_connect> error if it cannot). C<timeout> (default 10 s) bounds
each call as a whole: connect, send, and the wait for its answer.

=item ping

Returns C<"pong">.

=item hello($version = "2.0")

Returns C<{ version =E<gt> "2.0", server =E<gt> "mailpolicyd X.Y.Z" }>; another major version
dies with C<unsupported_version>.

=item dmarc($domain)

The DMARC policy for mail from C<$domain> (discovery included): C<found_at>, C<reason>,
C<org_domain>, C<applied> (C<["p","reject"]>, or undef when there is no policy), C<record>
(the policy answer of the record used), C<queries>.

=item spf($domain), dkim_key($selector, $domain), atps($signer, $author, $hash = "sha256"), tlsa($host, $port = 25)

A policy answer: C<source>, C<ttl>, C<answer> (C<kind>, C<name>, C<found_at>, C<rcode>,
C<dnssec>, C<data>). C<record($answer)> (exported on request) returns the parsed record
inside it, or undef.

=item spf_check($ip, $mail_from, $helo)

RFC 7208 C<check_host()>: C<result>, C<mechanism>, C<explanation>, C<received_spf>, ...
An empty or undef C<$mail_from> is the null sender.

=item dmarc_evaluate($from_domain, spf => {domain, result}, dkim => [{domain, selector, result}], forwarders => [...], seed => N)

The DMARC verdict: C<result>, C<disposition>, C<applied>, alignment of each identifier.

=item stats

The daemon's counters.

=item call($op)

Any operation, e.g. C<< $mp->call({ spf => { domain => 'example.com' } }) >>: the reply's
C<ok> value.

=item close

Closes the connection (the next call reopens it).

=item opened

How many connections this object has opened (1 until a reconnect).

=back

=head2 Errors

Every failure dies with a B<MailPolicy::Error> object (it stringifies as C<"code: message">),
with C<code> and C<message> methods:

=over

=item * an error answered by the daemon: C<is_client> is false and C<code> is one of the
daemon's stable codes (C<invalid_name>, C<invalid_ip>, C<rate_limited>, C<timeout>,
C<servfail>, C<refused>, C<dnssec_bogus>, C<upstream>, C<unknown_op>, C<bad_json>,
C<unsupported_version>, C<forbidden>, C<internal>, ...);

=item * a failure on this side: C<is_client> is true and C<code> is C<client_connect> (the
socket cannot be reached), C<client_timeout> (no answer in time), C<client_io> (the
connection broke), C<client_protocol> (a reply that is not a response) or C<client_usage>.

=back

=head2 Connections

One connection per object, one question at a time. A connection the daemon closed (a restart)
is reopened once and the question asked again, as the Python client does. After a timeout the
connection is dropped (a late answer is never taken for the next question's), and the next
call opens a new one. An object used in a child after C<fork()> (Exim forks per message; a
preforking spamd forks per child) opens its own connection there and leaves the parent's
alone. Writes never raise SIGPIPE. Names given as UTF-8 bytes are decoded as UTF-8; the
daemon turns them into A-labels.

=head1 SEE ALSO

F<clients/perl/check_client.pl> (runs every call against a daemon), F<README.md> ("The socket
protocol").

=cut
