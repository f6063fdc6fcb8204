--[[
mailpolicyd.lua: an rspamd plugin (example) that asks mailpolicyd for the DMARC policy of the
message's From domain, over mailpolicyd's Unix socket (JSON lines), with rspamd's own
asynchronous socket API (rspamd_tcp, which takes a socket path as `host`): no blocking call in
the worker, no luasocket.

What it asks: `{"id":1,"op":{"dmarc":{"domain":"<RFC5322.From domain>"}}}`, one connection
per message, bounded by `timeout`. mailpolicyd answers from its cache (DMARC discovery
included: the author domain's record, else the organizational domain's, with `sp`/`np`), so
many rspamd workers share one cache and one upstream query per domain and TTL.

What it inserts (one of, all in group "mailpolicyd", score 0 unless you score them):
  MAILPOLICYD_DMARC_REJECT      the policy that applies is reject
  MAILPOLICYD_DMARC_QUARANTINE  the policy that applies is quarantine
  MAILPOLICYD_DMARC_NONE        the policy that applies is none (monitoring)
  MAILPOLICYD_DMARC_NA          the domain publishes no DMARC policy
  MAILPOLICYD_FAIL              no answer: the socket cannot be reached or timed out, or
                                mailpolicyd answered an error (option: its code, e.g.
                                servfail, timeout, dnssec_bogus, invalid_name)
with options: the tag that applied (p, sp or np), `found_at=<domain the record was found at>`
and `reason=<why there>` (author_domain, organizational_domain, ...). The answer, as decoded,
is also kept in the task's mempool variable `mailpolicyd_dmarc` (the tag and the policy,
"p:reject") for other rules. The answer carries more than is used here (the parsed record,
and `raw`, the record's text as published, once the daemon sends it): see `dmarc` in
README.md, "The socket protocol".

This plugin only reports the published policy; rspamd's own `dmarc` module still evaluates
the message (SPF/DKIM alignment) and gives DMARC_POLICY_*; point that module's DNS at
mailpolicyd's DNS front-end (options.inc: dns { nameserver = ["127.0.0.1:5300"]; }) to share
the same cache.

Loading (see README.md beside this file):
  1. copy this file to $LOCAL_CONFDIR/plugins.d/mailpolicyd.lua (Debian: /etc/rspamd/plugins.d/);
  2. add to $LOCAL_CONFDIR/rspamd.conf.local (a Lua plugin is enabled by its section):
       mailpolicyd {
         socket = "/run/mailpolicyd/mailpolicyd.sock";  # mailpolicyd's --socket
         timeout = 1.0;                                 # seconds, per message
         # symbol_prefix = "MAILPOLICYD";               # symbol names: PREFIX_DMARC_REJECT, ...
       }
  3. let rspamd's user (_rspamd) connect: the socket's group (mailpolicyd's socket.group)
     must be one of _rspamd's groups, mode 0660;
  4. `rspamadm configtest`, then reload rspamd.
]]

local N = "mailpolicyd"

local rspamd_logger = require "rspamd_logger"
local rspamd_tcp = require "rspamd_tcp"
local lua_util = require "lua_util"
local ucl = require "ucl"

local settings = {
  socket = "/run/mailpolicyd/mailpolicyd.sock",
  timeout = 1.0,
  symbol_prefix = "MAILPOLICYD",
}

local opts = rspamd_config:get_all_opt(N)
if not opts then
  lua_util.disable_module(N, "config")
  return
end
settings = lua_util.override_defaults(settings, opts)

local P = settings.symbol_prefix
local SYM = {
  check = P .. "_CHECK",
  reject = P .. "_DMARC_REJECT",
  quarantine = P .. "_DMARC_QUARANTINE",
  none = P .. "_DMARC_NONE",
  na = P .. "_DMARC_NA",
  fail = P .. "_FAIL",
}

-- The first RFC5322.From domain, lower-cased, or nil.
local function from_domain(task)
  local from = task:get_from("mime")
  if not from or not from[1] or not from[1].domain or from[1].domain == "" then
    return nil
  end
  return string.lower(from[1].domain)
end

-- Decodes one JSON reply line with rspamd's UCL parser. UCL refuses integers above 2^63-1
-- ("numeric value out of range") and the answers' `fingerprint` is an unsigned 64-bit
-- number, so it is read as a string (a key outside any string: inside one, the quotes would
-- be escaped).
local function decode(line)
  local text = string.gsub(tostring(line), '"fingerprint":(%d+)', '"fingerprint":"%1"')
  local parser = ucl.parser()
  local ok, err = parser:parse_string(text)
  if not ok then return nil, err end
  return parser:get_object()
end

local function mailpolicyd_check(task)
  local domain = from_domain(task)
  if not domain then return end
  local request = ucl.to_format({ id = 1, op = { dmarc = { domain = domain } } }, "json-compact")

  local answered = false
  local function on_reply(err, data)
    answered = true
    if err then
      rspamd_logger.infox(task, "mailpolicyd %s: %s", settings.socket, err)
      task:insert_result(SYM.fail, 1.0, "socket: " .. tostring(err))
      return
    end
    local resp, perr = decode(data)
    if type(resp) ~= "table" or type(resp.result) ~= "table" then
      task:insert_result(SYM.fail, 1.0, "bad reply: " .. tostring(perr))
      return
    end
    local e = resp.result.error
    if type(e) == "table" then
      rspamd_logger.infox(task, "mailpolicyd: dmarc %s: %s: %s", domain, e.code, e.message)
      task:insert_result(SYM.fail, 1.0, tostring(e.code))
      return
    end
    local answer = type(resp.result.ok) == "table" and resp.result.ok.dmarc
    if type(answer) ~= "table" then
      task:insert_result(SYM.fail, 1.0, "bad reply: no dmarc answer")
      return
    end
    local applied = answer.applied -- ["p", "reject"], or null: no policy
    if type(applied) ~= "table" then
      task:insert_result(SYM.na, 1.0, domain)
      return
    end
    local tag, policy = tostring(applied[1]), tostring(applied[2])
    local sym = SYM[policy]
    if not sym or sym == SYM.check or sym == SYM.fail or sym == SYM.na then
      task:insert_result(SYM.fail, 1.0, "unknown policy " .. policy)
      return
    end
    task:get_mempool():set_variable("mailpolicyd_dmarc", tag .. ":" .. policy)
    task:insert_result(sym, 1.0, tag, "found_at=" .. tostring(answer.found_at),
      "reason=" .. tostring(answer.reason))
  end

  local sent = rspamd_tcp.request({
    task = task,
    host = settings.socket, -- a path: rspamd_tcp connects to a Unix socket
    data = request .. "\n",
    stop_pattern = "\n",   -- one JSON line back
    read = true,
    timeout = settings.timeout,
    callback = on_reply,
  })
  if not sent and not answered then
    task:insert_result(SYM.fail, 1.0, "cannot connect to " .. settings.socket)
  end
end

local id = rspamd_config:register_symbol({
  name = SYM.check,
  type = "callback",
  callback = mailpolicyd_check,
  group = N,
})
for key, description in pairs({
  reject = "mailpolicyd: the From domain's DMARC policy is reject",
  quarantine = "mailpolicyd: the From domain's DMARC policy is quarantine",
  none = "mailpolicyd: the From domain's DMARC policy is none",
  na = "mailpolicyd: the From domain publishes no DMARC policy",
  fail = "mailpolicyd: no answer (socket error, timeout, or an error code)",
}) do
  rspamd_config:register_symbol({
    name = SYM[key],
    type = "virtual",
    parent = id,
    score = 0.0,
    group = N,
    description = description,
  })
end
