# Exim embedded Perl (example): functions for ${perl{...}} expansions, on MailPolicy.pm.
#
# Exim main configuration (Debian: exim4-daemon-heavy has embedded Perl):
#   perl_startup = do '/etc/exim4/mailpolicy.pl'
#   # perl_at_start = true    # load once in the daemon; MailPolicy reconnects in each fork
#
# In acl_check_data (the From header is known there):
#   warn  set acl_m_dmarc = ${perl{mp_dmarc_policy}{${domain:${address:$h_from:}}}}
#         add_header      = X-MailPolicy-DMARC: $acl_m_dmarc
#   deny  condition       = ${if eq{${perl{mp_spf_result}{$sender_host_address}{$sender_address}{$sender_helo_name}}}{fail}}
#         message         = SPF check failed for $sender_address
#
# The socket: $MAILPOLICYD_SOCKET below, else the environment's MAILPOLICYD_SOCKET (Exim
# passes it only if keep_environment names it), else /run/mailpolicyd/mailpolicyd.sock.
# Exim's user (Debian-exim) must be in the socket's group.

use strict;
use warnings;

use File::Basename qw(dirname);
use lib dirname(__FILE__), dirname(dirname(__FILE__)), '/usr/local/share/mailpolicyd/perl';
use MailPolicy;

our $MAILPOLICYD_SOCKET;
$MAILPOLICYD_SOCKET ||= $ENV{MAILPOLICYD_SOCKET} || '/run/mailpolicyd/mailpolicyd.sock';
our $MAILPOLICYD_TIMEOUT ||= 2;

my $client;

sub mp_client {
    $client ||= MailPolicy->new($MAILPOLICYD_SOCKET, timeout => $MAILPOLICYD_TIMEOUT);
    return $client;
}

# The From domain's DMARC policy: reject, quarantine or none; 'na' when there is none; 'fail'
# when there is no answer (an error is logged on stderr, which Exim writes to its panic log
# only for Perl's own errors, so nothing is lost by returning a word).
sub mp_dmarc_policy {
    my ($domain) = @_;
    return 'na' unless defined $domain && length $domain;
    my $d = eval { mp_client()->dmarc($domain) };
    return 'fail' unless $d;
    return ref $d->{applied} eq 'ARRAY' ? $d->{applied}[1] : 'na';
}

# SPF check_host() for the connection: pass, fail, softfail, neutral, none, temperror,
# permerror; 'fail' never comes from a failure to ask (that is 'temperror').
sub mp_spf_result {
    my ($ip, $mail_from, $helo) = @_;
    my $r = eval { mp_client()->spf_check($ip, $mail_from // '', $helo // '') };
    return $r ? $r->{result} : 'temperror';
}

# The Received-SPF header value for the same check (for add_header), or '' without one.
sub mp_received_spf {
    my ($ip, $mail_from, $helo) = @_;
    my $r = eval { mp_client()->spf_check($ip, $mail_from // '', $helo // '') };
    return $r ? $r->{received_spf} : '';
}

1;
