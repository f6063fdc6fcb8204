--[[
mailpolicy.lua: a client for mailpolicyd's JSON-lines socket protocol, for Lua 5.1 to 5.4.

Needs luasocket with its Unix-socket module (`socket.unix`; Debian: lua-socket) and a JSON
module to read replies: lua-cjson (`cjson`) if present, else dkjson (`dkjson`; Debian:
lua-cjson, lua-dkjson). Requests are written by this file itself, so that empty lists go out
as JSON arrays (cjson cannot tell an empty array from an empty object).

    local mailpolicy = require("mailpolicy")
    local c = assert(mailpolicy.new("/run/mailpolicyd/mailpolicyd.sock", { timeout = 2 }))
    local d, err = c:dmarc("example.com")    -- the DMARC policy for mail From: example.com
    if d and d.applied ~= mailpolicy.null then print(d.applied[1], d.applied[2], d.found_at) end
    local spf = mailpolicy.record(c:spf("example.com"))      -- the parsed record, or nil
    local chk = c:spf_check("192.0.2.1", "user@example.com", "mail.example.com")
    local v = c:dmarc_evaluate("example.com", {
      spf = { domain = "example.com", result = "pass" },
      dkim = { { domain = "example.com", selector = "s1", result = "pass" } },
    })

The same calls as the Python client (clients/python/mailpolicy.py): ping, hello, dmarc, spf,
dkim_key, atps, tlsa, spf_check, dmarc_evaluate, stats, call, and the helper record. Each
returns the decoded reply unchanged (fields the daemon adds later, such as `raw`, the record's
text as published on dmarc, spf, dkim_key and atps answers, appear without a client change),
or nil and an error: a table with `code` and `message` (tostring gives "code: message") and
`client` (false for an error the daemon answered, with one of its stable codes such as
invalid_name, servfail, dnssec_bogus; true for client_connect, client_timeout, client_io,
client_protocol, client_usage). JSON null is `mailpolicy.null`. Numbers above 2^53 (the
answers' `fingerprint`) lose precision in Lua 5.1/5.2 and with cjson; an empty JSON array and
an empty object both decode to an empty table.

One connection per client, one question at a time; `timeout` (default 10 s) bounds each call
as a whole. A connection the daemon closed (a restart) is reopened once and the question asked
again, as the Python client does; after a timeout the connection is dropped, so a late answer
is never read as the answer to the next question.
]]

local socket = require("socket")

local M = { _VERSION = "1.0" }

-- The longest reply line accepted (the Rust and Python clients refuse frames over 1 MiB).
local MAX_LINE = 1048576

-- luasocket 3.x: require("socket.unix") is a table with stream(); 2.x: a function.
local unix_stream
do
  local ok, unix = pcall(require, "socket.unix")
  if not ok then
    error("mailpolicy.lua needs luasocket's socket.unix (Debian: lua-socket): " .. tostring(unix))
  end
  if type(unix) == "table" and unix.stream then
    unix_stream = unix.stream
  elseif type(unix) == "function" then
    unix_stream = unix
  elseif type(socket.unix) == "function" then
    unix_stream = socket.unix
  else
    error("mailpolicy.lua: this luasocket's socket.unix has no stream socket")
  end
end

-- The JSON decoder: cjson, else dkjson.
local decode
do
  local ok, cjson = pcall(require, "cjson")
  if ok and type(cjson) == "table" and cjson.decode then
    local inst = cjson.new and cjson.new() or cjson
    M.null = cjson.null
    M.json_module = "cjson"
    decode = function(s)
      local good, v = pcall(inst.decode, s)
      if good then return v end
      return nil, tostring(v)
    end
  else
    local ok2, dkjson = pcall(require, "dkjson")
    if not (ok2 and type(dkjson) == "table" and dkjson.decode) then
      error("mailpolicy.lua needs a JSON module: lua-cjson (cjson) or lua-dkjson (dkjson)")
    end
    M.null = dkjson.null
    M.json_module = "dkjson"
    decode = function(s)
      local v, _, err = dkjson.decode(s, 1, dkjson.null)
      if err then return nil, err end
      return v
    end
  end
end

-- Encoding ------------------------------------------------------------------------------

local array_mt, object_mt = {}, {}

--- Marks a table as a JSON array (an empty table is written as [] unless marked an object).
function M.array(t) return setmetatable(t or {}, array_mt) end
--- Marks a table as a JSON object.
function M.object(t) return setmetatable(t or {}, object_mt) end

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(ch)
    return escapes[ch] or string.format("\\u%04x", ch:byte())
  end) .. '"'
end

local math_type = math.type or function() return nil end

local function encode_number(n)
  if n ~= n or n == math.huge or n == -math.huge then
    error("JSON cannot hold " .. tostring(n))
  end
  if math_type(n) == "integer" then return tostring(n) end
  if n == math.floor(n) and n >= -2 ^ 53 and n <= 2 ^ 53 then
    return string.format("%d", n)
  end
  return string.format("%.17g", n)
end

local function is_array(t)
  local mt = getmetatable(t)
  if mt == array_mt then return true end
  if mt == object_mt then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

local encode

local function encode_table(t, depth)
  if depth > 64 then error("JSON nested too deeply") end
  local out = {}
  if is_array(t) then
    for i = 1, #t do out[i] = encode(t[i], depth + 1) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then error("JSON object keys must be strings") end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for i, k in ipairs(keys) do out[i] = quote(k) .. ":" .. encode(t[k], depth + 1) end
  return "{" .. table.concat(out, ",") .. "}"
end

encode = function(v, depth)
  if v == nil or v == M.null then return "null" end
  local ty = type(v)
  if ty == "string" then return quote(v) end
  if ty == "number" then return encode_number(v) end
  if ty == "boolean" then return tostring(v) end
  if ty == "table" then return encode_table(v, depth or 0) end
  error("JSON cannot hold a " .. ty)
end

--- Encodes a Lua value as JSON (as requests are written).
function M.encode(v)
  local ok, s = pcall(encode, v, 0)
  if ok then return s end
  return nil, s
end

--- Decodes one JSON text with the module in use (cjson or dkjson).
function M.decode(s) return decode(s) end

-- Errors ----------------------------------------------------------------------------------

local Error = {}
Error.__index = Error
Error.__tostring = function(e) return e.code .. ": " .. e.message end

local function new_error(code, message, client, broken)
  return setmetatable({ code = code, message = message or "", client = client, broken = broken },
    Error)
end

--- True when `e` is an error of this module.
function M.is_error(e) return getmetatable(e) == Error end

-- The client ------------------------------------------------------------------------------

local Client = {}
Client.__index = Client

--- Opens a client: `new(path [, {timeout = seconds}])` (or a number for the timeout).
--- Returns the client, or nil and a client_connect error.
function M.new(path, opts)
  if type(path) ~= "string" or path == "" then
    return nil, new_error("client_usage", "mailpolicy.new(PATH [, {timeout = SECONDS}])", true)
  end
  if type(opts) == "number" then opts = { timeout = opts } end
  opts = opts or {}
  local self = setmetatable({ path = path, timeout = opts.timeout or 10, next_id = 1,
    sock = nil, connections = 0 }, Client)
  local ok, err = self:_connect(socket.gettime() + self.timeout)
  if not ok then return nil, err end
  return self
end

M.connect = M.new

function Client:_connect(deadline)
  self:close()
  local sock, err = unix_stream()
  if not sock then return nil, new_error("client_connect", "socket: " .. tostring(err), true) end
  sock:settimeout(math.max(deadline - socket.gettime(), 0.001))
  local ok, cerr = sock:connect(self.path)
  if not ok then
    sock:close()
    return nil, new_error("client_connect", "connect " .. self.path .. ": " .. tostring(cerr), true)
  end
  self.sock = sock
  self.connections = self.connections + 1
  return true
end

--- Closes the connection (the next call reopens it).
function Client:close()
  if self.sock then self.sock:close() end
  self.sock = nil
end

--- How many connections this client has opened (1 until a reconnect).
function Client:opened() return self.connections end

local function broken_error(err)
  return err == "closed" or err == "Connection reset by peer" or err == "Broken pipe"
    or err == "Socket is not connected" or err == "connection reset by peer"
end

function Client:_send(data, deadline)
  local i = 1
  while i <= #data do
    local left = deadline - socket.gettime()
    if left <= 0 then
      return nil, new_error("client_timeout", "no room to send within " .. self.timeout .. " s", true)
    end
    self.sock:settimeout(left)
    local last, err, partial = self.sock:send(data, i)
    if last then
      i = last + 1
    elseif err == "timeout" then
      i = (partial or i - 1) + 1
    else
      return nil, new_error("client_io", "send: " .. tostring(err), true, broken_error(err))
    end
  end
  return true
end

function Client:_receive_line(deadline)
  local have = ""
  while true do
    local left = deadline - socket.gettime()
    if left <= 0 then
      return nil, new_error("client_timeout", "no answer within " .. self.timeout .. " s", true)
    end
    self.sock:settimeout(left)
    local line, err, partial = self.sock:receive("*l", have)
    if line then
      if #line > MAX_LINE then
        return nil, new_error("client_protocol", "a reply line over " .. MAX_LINE .. " bytes", true)
      end
      return line
    end
    if err ~= "timeout" then
      local msg = err == "closed" and "the daemon closed the connection" or ("read: " .. tostring(err))
      return nil, new_error("client_io", msg, true, broken_error(err))
    end
    have = partial or have
    if #have > MAX_LINE then
      return nil, new_error("client_protocol", "a reply line over " .. MAX_LINE .. " bytes", true)
    end
  end
end

function Client:_call(op, deadline)
  local id = self.next_id
  self.next_id = id + 1
  local req, eerr = M.encode({ id = id, op = op })
  if not req then return nil, new_error("client_usage", eerr, true) end
  local ok, err = self:_send(req .. "\n", deadline)
  if not ok then return nil, err end
  while true do
    local line, rerr = self:_receive_line(deadline)
    if not line then return nil, rerr end
    local resp, derr = decode(line)
    if type(resp) ~= "table" or type(resp.result) ~= "table" then
      return nil, new_error("client_protocol", "a reply that is not a response: " .. tostring(derr), true)
    end
    -- Skip answers to earlier, abandoned questions; id 0 is an error without a request id.
    if resp.id == id or resp.id == 0 then
      local e = resp.result.error
      if type(e) == "table" then
        return nil, new_error(tostring(e.code), tostring(e.message), false)
      end
      if resp.result.ok == nil then
        return nil, new_error("client_protocol", "a reply with neither ok nor error", true)
      end
      return resp.result.ok
    end
  end
end

--- Sends one operation ("ping", or {spf = {domain = ...}}) and returns the reply's `ok`
--- value, or nil and an error.
function Client:call(op)
  local deadline = socket.gettime() + self.timeout
  for attempt = 1, 2 do
    if not self.sock then
      local ok, err = self:_connect(deadline)
      if not ok then return nil, err end
    end
    local res, err = self:_call(op, deadline)
    if res ~= nil then return res end
    if err.client then
      -- The connection's state is unknown (broken, timed out, garbled): never reuse it.
      self:close()
      if not (err.broken and attempt == 1) then return nil, err end
    else
      return nil, err
    end
  end
end

local function field(key)
  return function(res, err)
    if res == nil then return nil, err end
    if type(res) ~= "table" or res[key] == nil then
      return nil, new_error("client_protocol", "the reply has no " .. key, true)
    end
    return res[key]
  end
end

-- A copy of a list, marked as a JSON array (so an empty one is still []).
local function list(t)
  local out = M.array({})
  for i, v in ipairs(t or {}) do out[i] = v end
  return out
end

local function name(s)
  if type(s) ~= "string" then error("a name (string) is required, got " .. type(s), 3) end
  return s
end

function Client:ping() return self:call("ping") end

function Client:hello(version)
  return field("hello")(self:call({ hello = { version = version or "2.0" } }))
end

function Client:dmarc(domain)
  return field("dmarc")(self:call({ dmarc = { domain = name(domain) } }))
end

function Client:spf(domain)
  return field("policy")(self:call({ spf = { domain = name(domain) } }))
end

function Client:dkim_key(selector, domain)
  return field("policy")(self:call({ dkim_key = { selector = name(selector), domain = name(domain) } }))
end

function Client:atps(signer, author, hash)
  return field("policy")(self:call({ atps = { signer = name(signer), author = name(author),
    hash = hash or "sha256" } }))
end

function Client:tlsa(host, port)
  return field("policy")(self:call({ tlsa = { host = name(host), port = port or 25 } }))
end

--- SPF check_host(): {result, mechanism, explanation, received_spf, ...}. An empty or nil
--- mail_from is the null sender.
function Client:spf_check(ip, mail_from, helo)
  return field("spf_check")(self:call({ spf_check = { ip = tostring(ip),
    mail_from = mail_from or "", helo = name(helo) } }))
end

--- The DMARC verdict. opts: spf = {domain, result}; dkim = {{domain, selector, result}, ...};
--- forwarders = {domain, ...}; seed = number.
function Client:dmarc_evaluate(from_domain, opts)
  opts = opts or {}
  local op = {
    from_domain = name(from_domain),
    spf = opts.spf or M.null,
    dkim = list(opts.dkim),
    forwarders = list(opts.forwarders),
    seed = opts.seed or M.null,
  }
  return field("dmarc_verdict")(self:call({ dmarc_evaluate = op }))
end

function Client:stats() return field("stats")(self:call("stats")) end

--- The parsed record of a policy answer (spf, dkim_key, atps), or nil when there is none.
function M.record(answer)
  if type(answer) ~= "table" or type(answer.answer) ~= "table" then return nil end
  local data = answer.answer.data
  if type(data) ~= "table" then return nil end
  local found, n = nil, 0
  for _, v in pairs(data) do found, n = v, n + 1 end
  if n ~= 1 or type(found) ~= "table" or type(found.valid) ~= "table" then return nil end
  return found.valid.policy
end

return M
