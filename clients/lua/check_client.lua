--[[
Exercises mailpolicy.lua against a running daemon:

    lua check_client.lua SOCKET [cjson|dkjson]

Asks a fixed list of questions (about the zones of tests/clients.rs: example.test, other.test;
the same list as clients/perl/check_client.pl) through the client's methods and prints one
JSON object: for each question the method, its arguments, the operation it stands for, the
key of the reply it returns, and what the client returned ({"ok": ...} or {"error": {"code",
"message"}}), so the Rust test can ask the socket the same operations itself and compare. It
also checks on its own: ping and hello, the reconnect after the daemon closed the connection,
the per-call timeout against a socket that never answers, the error for an unreachable
socket. The second argument forces a JSON module (dkjson: cjson is hidden). Exits non-zero on
any failure.
]]

local path, force = arg[1], arg[2]
if not path then
  io.stderr:write("usage: lua check_client.lua SOCKET [cjson|dkjson]\n")
  os.exit(2)
end
if force == "dkjson" then
  package.preload["cjson"] = function() error("hidden by check_client.lua") end
end

local dir = (arg[0]:match("^(.*)/[^/]*$") or ".")
package.path = dir .. "/?.lua;" .. package.path
local mailpolicy = require("mailpolicy")
local socket = require("socket")
local null = mailpolicy.null

local function fail(msg)
  io.stderr:write("check_client.lua: " .. tostring(msg) .. "\n")
  os.exit(1)
end

if force and mailpolicy.json_module ~= force then
  fail("wanted the JSON module " .. force .. ", got " .. mailpolicy.json_module)
end

local function obj(t) return mailpolicy.object(t) end

local questions = {
  { "ping", {}, nil, "ping", nil },
  { "hello", { "1.0" }, nil, { hello = { version = "1.0" } }, "hello" },
  { "dmarc", { "example.test" }, nil, { dmarc = { domain = "example.test" } }, "dmarc" },
  { "dmarc", { "sub.example.test" }, nil, { dmarc = { domain = "sub.example.test" } }, "dmarc" },
  { "dmarc", { "other.test" }, nil, { dmarc = { domain = "other.test" } }, "dmarc" },
  { "spf", { "example.test" }, nil, { spf = { domain = "example.test" } }, "policy" },
  { "spf", { "nope.example.test" }, nil, { spf = { domain = "nope.example.test" } }, "policy" },
  { "spf", { "b\195\188cher.example.test" }, nil,
    { spf = { domain = "b\195\188cher.example.test" } }, "policy" },
  { "dkim_key", { "s1", "example.test" }, nil,
    { dkim_key = { selector = "s1", domain = "example.test" } }, "policy" },
  { "atps", { "example.test", "other.test", "sha256" }, nil,
    { atps = { signer = "example.test", author = "other.test", hash = "sha256" } }, "policy" },
  { "tlsa", { "mx.example.test", 25 }, nil, { tlsa = { host = "mx.example.test", port = 25 } },
    "policy" },
}
for _, c in ipairs({
  { "192.0.2.5", "user@example.test", "mail.example.test" },
  { "198.51.100.7", "user@example.test", "mail.example.test" },
  { "2001:db8::25", "user@example.test", "mail.example.test" },
  { "203.0.113.9", "user@example.test", "mail.example.test" },
  { "192.0.2.5", "", "example.test" },
}) do
  questions[#questions + 1] = { "spf_check", c, nil,
    { spf_check = { ip = c[1], mail_from = c[2], helo = c[3] } }, "spf_check" }
end
local none = mailpolicy.array({})
local dkim_pass = mailpolicy.array({ { domain = "example.test", selector = "s1", result = "pass" } })
local more = {
  { "dmarc_evaluate", { "example.test" },
    { spf = { domain = "example.test", result = "fail" }, dkim = none, forwarders = none, seed = 7 },
    { dmarc_evaluate = { from_domain = "example.test",
      spf = { domain = "example.test", result = "fail" }, dkim = none, forwarders = none, seed = 7 } },
    "dmarc_verdict" },
  { "dmarc_evaluate", { "sub.example.test" },
    { dkim = dkim_pass, forwarders = none, seed = 7 },
    { dmarc_evaluate = { from_domain = "sub.example.test", spf = null, dkim = dkim_pass,
      forwarders = none, seed = 7 } },
    "dmarc_verdict" },
  { "spf", { "a..b" }, nil, { spf = { domain = "a..b" } }, "policy" },
  { "spf_check", { "not-an-ip", "user@example.test", "mail.example.test" }, nil,
    { spf_check = { ip = "not-an-ip", mail_from = "user@example.test", helo = "mail.example.test" } },
    "spf_check" },
  -- Another major version: the daemon answers the error and closes the connection; the
  -- question after it must be answered on a new one.
  { "hello", { "3.0" }, nil, { hello = { version = "3.0" } }, "hello" },
  { "ping", {}, nil, "ping", nil },
}
for _, q in ipairs(more) do questions[#questions + 1] = q end

local unpack = table.unpack or unpack
local c, err = mailpolicy.new(path, { timeout = 10 })
if not c then fail(err) end

local answers = mailpolicy.array({})
for _, q in ipairs(questions) do
  local method, args, opts, op, key = q[1], q[2], q[3], q[4], q[5]
  local call_args = { unpack(args) }
  if opts then call_args[#call_args + 1] = opts end
  local res, e = c[method](c, unpack(call_args, 1, #args + (opts and 1 or 0)))
  local result
  if res ~= nil then
    result = { ok = res }
  elseif mailpolicy.is_error(e) and not e.client then
    result = { error = { code = e.code, message = e.message } }
  else
    fail(method .. ": " .. tostring(e))
  end
  answers[#answers + 1] = { method = method, args = mailpolicy.array(args), options = opts or null,
    op = op, key = key or null, result = result }
end

if answers[1].result.ok ~= "pong" then fail("ping did not answer pong") end
if not tostring(answers[2].result.ok.version):match("^2%.") then fail("hello: not a 2.x server") end
local last, before = answers[#answers].result, answers[#answers - 1].result
if last.ok ~= "pong" or not before.error or before.error.code ~= "unsupported_version" then
  fail("the question after the closed connection was not answered")
end
if c:opened() ~= 2 then fail("connections opened: " .. c:opened() .. ", not 2 (one reconnect)") end

local checks = { connections_opened = c:opened(), json_module = mailpolicy.json_module,
  lua = _VERSION }
local spf = mailpolicy.record(c:spf("example.test"))
if not spf then fail("no SPF record for example.test") end
checks.spf_directives = #spf.directives
if mailpolicy.record(c:spf("nope.example.test")) ~= nil then
  fail("record() of a missing record is not nil")
end
local stats = assert(c:stats())
checks.stats_upstream = 0
for _, pair in ipairs(stats.upstream) do checks.stats_upstream = checks.stats_upstream + pair[2] end
c:close()

-- The per-call timeout, against a socket that accepts and never answers.
local silent_path = os.tmpname()
os.remove(silent_path)
silent_path = silent_path .. ".sock"
local unix = require("socket.unix")
local server = assert((type(unix) == "table" and unix.stream or unix)())
assert(server:bind(silent_path))
assert(server:listen(4))
local slow = assert(mailpolicy.new(silent_path, { timeout = 0.3 }))
local t0 = socket.gettime()
local res, terr = slow:ping()
local took = socket.gettime() - t0
server:close()
os.remove(silent_path)
if res ~= nil then fail("a silent daemon answered") end
if terr.code ~= "client_timeout" then fail("a silent daemon: " .. tostring(terr) .. ", not client_timeout") end
if took < 0.29 or took > 3 then fail("the 0.3 s timeout took " .. took .. " s") end
checks.timeout_code = terr.code
checks.timeout_s = math.floor(took * 100 + 0.5) / 100

-- An unreachable socket.
local none_client, cerr = mailpolicy.new(silent_path .. ".absent", { timeout = 1 })
if none_client then fail("connected to a socket that does not exist") end
checks.connect_code = cerr.code

print(assert(mailpolicy.encode({ client = "lua", answers = answers, checks = checks })))
