-- bench/wrk/signed_webhooks.lua: POST pre-signed provider webhooks, each with its own delivery id.
--
-- Usage: wrk -t2 -c32 -d10s --latency -s bench/wrk/signed_webhooks.lua URL -- FILE THREADS
-- FILE (written by bench/payments.py) has one request per line, tab-separated:
--   <header name>: <value> [TAB <header name>: <value> ...] TAB <body>
-- (the body is the last field; it is one line of JSON). Thread k of n takes the lines
-- k, k+n, k+2n, ... and sends them in turn, so no two requests of a run share a delivery id
-- until a thread has used all of its lines (then it starts again: those are duplicates, counted).
-- Prints one line: BENCH_JSON {...} (requests, status counts, duplicates, latency percentiles).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local reqs = {}
local pos = 0
ok, non200, dup, last_bad = 0, 0, 0, ""

function init(args)
  local file = args[1]
  local nthreads = tonumber(args[2] or "1")
  local i = 0
  for line in io.lines(file) do
    if (i % nthreads) == (tid - 1) then
      local fields = {}
      for f in string.gmatch(line, "[^\t]+") do table.insert(fields, f) end
      local body = table.remove(fields)
      local headers = {}
      for _, h in ipairs(fields) do
        local k, v = string.match(h, "^([^:]+):%s*(.*)$")
        headers[k] = v
      end
      table.insert(reqs, wrk.format("POST", nil, headers, body))
    end
    i = i + 1
  end
end

function request()
  pos = pos + 1
  if pos > #reqs then pos = 1 end
  return reqs[pos]
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    if body and string.find(body, '"duplicate":true', 1, true) then dup = dup + 1 end
  else
    non200 = non200 + 1
    last_bad = status .. " " .. string.sub(body or "", 1, 200)
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total, dup_total, bad = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    ok_total = ok_total + (t:get("ok") or 0)
    bad_total = bad_total + (t:get("non200") or 0)
    dup_total = dup_total + (t:get("dup") or 0)
    local lb = t:get("last_bad")
    if lb and lb ~= "" then bad = lb end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"ok":%.0f,"non200":%.0f,"duplicates":%.0f,' ..
    '"err_connect":%.0f,"err_read":%.0f,"err_write":%.0f,"err_timeout":%.0f,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%.0f,"lat_p90_us":%.0f,"lat_p99_us":%.0f,"lat_max_us":%.0f}\n',
    summary.requests, summary.duration, ok_total, bad_total, dup_total,
    e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  io.write("BENCH_LASTBAD " .. (string.gsub(bad, "\n", " ")) .. "\n")
end
