package MailPolicyd::SpamAssassin;

# A SpamAssassin plugin (example) built on MailPolicy.pm: the DMARC policy of the message's
# From domain, asked of mailpolicyd, as eval rules and a template tag. See
# clients/perl/README.md for the configuration; tested by tests/clients.rs with Debian's
# SpamAssassin.
#
#   loadplugin MailPolicyd::SpamAssassin /etc/spamassassin/MailPolicyd.pm
#   mailpolicyd_socket  /run/mailpolicyd/mailpolicyd.sock
#   mailpolicyd_timeout 2
#   mailpolicyd_lib     /usr/local/share/mailpolicyd/perl     # where MailPolicy.pm is
#   header MAILPOLICYD_DMARC_REJECT eval:check_mailpolicyd_dmarc('reject')
#   header MAILPOLICYD_DMARC_QUARANTINE eval:check_mailpolicyd_dmarc('quarantine')
#   header MAILPOLICYD_DMARC_NONE eval:check_mailpolicyd_dmarc('none')
#   header MAILPOLICYD_DMARC_NA eval:check_mailpolicyd_dmarc('na')
#   header MAILPOLICYD_DMARC_FAIL eval:check_mailpolicyd_dmarc('fail')
#   add_header all MailPolicyd-DMARC _MAILPOLICYD_DMARC_

use strict;
use warnings;

use File::Basename qw(dirname);
use Mail::SpamAssassin::Plugin;
use Mail::SpamAssassin::Logger qw(dbg info);

our @ISA = qw(Mail::SpamAssassin::Plugin);

sub new {
    my ($class, $mailsa) = @_;
    my $self = $class->SUPER::new($mailsa);
    bless $self, $class;
    $self->register_eval_rule('check_mailpolicyd_dmarc');
    $mailsa->{conf}{parser}->register_commands([
        { setting => 'mailpolicyd_socket', default => '/run/mailpolicyd/mailpolicyd.sock',
          type => $Mail::SpamAssassin::Conf::CONF_TYPE_STRING },
        { setting => 'mailpolicyd_timeout', default => 2,
          type => $Mail::SpamAssassin::Conf::CONF_TYPE_NUMERIC },
        { setting => 'mailpolicyd_lib', default => dirname(dirname(__FILE__)),
          type => $Mail::SpamAssassin::Conf::CONF_TYPE_STRING },
    ]);
    return $self;
}

# One client per process (spamd's children each open their own after fork).
sub _client {
    my ($self, $conf) = @_;
    unless ($INC{'MailPolicy.pm'}) {
        local @INC = ($conf->{mailpolicyd_lib}, @INC);
        require MailPolicy;
    }
    $self->{client} ||= MailPolicy->new($conf->{mailpolicyd_socket},
                                        timeout => $conf->{mailpolicyd_timeout});
    return $self->{client};
}

# The From domain's policy, asked once per message: 'reject', 'quarantine', 'none', 'na' (no
# policy), or 'fail' (no answer: unreachable socket, timeout, or an error code).
sub _policy {
    my ($self, $pms) = @_;
    return $pms->{mailpolicyd_dmarc} if exists $pms->{mailpolicyd_dmarc};
    my ($from) = $pms->get('From:addr');
    my $policy = 'na';
    my $tag = 'none';
    if (defined $from && $from =~ /\@([^\@\s>]+)\z/) {
        my $domain = lc $1;
        my $d = eval { $self->_client($pms->{conf})->dmarc($domain) };
        if (!$d) {
            my $e = $@;
            info("mailpolicyd: dmarc $domain: $e");
            ($policy, $tag) = ('fail', ref $e ? $e->code : 'error');
        } elsif (ref $d->{applied} eq 'ARRAY') {
            ($tag, $policy) = @{ $d->{applied} };
            $tag = "$tag:$policy found_at=$d->{found_at}";
        }
        dbg("mailpolicyd: dmarc $domain: $policy ($tag)");
    }
    $pms->set_tag('MAILPOLICYD_DMARC', "$policy ($tag)");
    return $pms->{mailpolicyd_dmarc} = $policy;
}

sub check_mailpolicyd_dmarc {
    my ($self, $pms, $want) = @_;
    return $self->_policy($pms) eq ($want || '') ? 1 : 0;
}

1;
