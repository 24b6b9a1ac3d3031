-- Replays pre-built requests and counts the answers (bench/loadgen.py runs it).
--
--   wrk ... -s bench/wrk/requests.lua <url> -- <requests file>
--
-- The requests file has one request per line: METHOD <tab> PATH <tab> BODY then any number
-- of <tab> "Name: value" header fields (BODY may be empty; one without a Content-Type field
-- is sent as application/json). Every request string is built once in init(); each thread
-- walks its own slice of the lines in order, wrapping around, so a device code or token is
-- reused as late as possible. done() prints one JSON line:
-- the totals, latency percentiles (microseconds) and counts per status and error code.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  thread:set("thread_count", 0)  -- corrected for every thread below, before init() runs
  table.insert(threads, thread)
  for _, t in ipairs(threads) do t:set("thread_count", #threads) end
end

local function split(line)
  local fields = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do table.insert(fields, field) end
  return fields
end

local function has_header(headers, wanted)
  for name, _ in pairs(headers) do
    if name:lower() == wanted then return true end
  end
  return false
end

function init(args)
  local lines = {}
  for line in io.lines(args[1]) do
    if line ~= "" then table.insert(lines, line) end
  end
  -- This thread's slice: lines thread_id, thread_id + n, thread_id + 2n, ...
  requests = {}
  local step = math.max(thread_count, 1)
  for i = thread_id + 1, #lines, step do
    local f = split(lines[i])
    local headers = {}
    for h = 4, #f do
      local name, value = f[h]:match("^([^:]+):%s*(.*)$")
      if name then headers[name] = value end
    end
    local body = f[3] ~= "" and f[3] or nil
    if body and not has_header(headers, "content-type") then
      -- Every body this bench sends is JSON, and the server refuses any other type (415).
      headers["Content-Type"] = "application/json"
    end
    table.insert(requests, wrk.format(f[1], f[2], headers, body))
  end
  if #requests == 0 then requests = { wrk.format("GET", "/", {}, nil) } end
  position = 0
  counts = {}
end

function request()
  position = position % #requests + 1
  return requests[position]
end

function response(status, headers, body)
  local key = tostring(status)
  if status >= 400 and body then
    local code = body:match('"error"%s*:%s*"([%w_]+)"')
    if code then key = key .. ":" .. code end
  end
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    for key, n in pairs(t:get("counts") or {}) do merged[key] = (merged[key] or 0) + n end
  end
  local parts = {}
  for key, n in pairs(merged) do table.insert(parts, string.format('"%s": %d', key, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, "counts": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end
