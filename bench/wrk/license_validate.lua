-- bench/wrk/license_validate.lua: POST /v1/licenses/validate with one JSON body read from a file.
--
-- Usage: wrk -t1 -c64 -d10s --latency -s bench/wrk/license_validate.lua URL -- BODY_FILE
-- BODY_FILE (written by bench/licensing.py) holds {"key": "<licence key>", "fingerprint": "..."}.
-- Counts 200s, and among them the answers that say "valid":true (a 200 can say a key is not
-- valid); prints one line: BENCH_JSON {...} (requests, status counts, latency percentiles).

local threads = {}
function setup(thread) table.insert(threads, thread) end

local req
ok, non200, valid, last_bad = 0, 0, 0, ""

function init(args)
  local f = assert(io.open(args[1], "r"))
  local body = f:read("*a")
  f:close()
  req = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

function request() return req end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    if body and string.find(body, '"valid":true', 1, true) then valid = valid + 1 end
  else
    non200 = non200 + 1
    last_bad = status .. " " .. string.sub(body or "", 1, 200)
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total, valid_total, bad = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    ok_total = ok_total + (t:get("ok") or 0)
    bad_total = bad_total + (t:get("non200") or 0)
    valid_total = valid_total + (t:get("valid") or 0)
    local lb = t:get("last_bad")
    if lb and lb ~= "" then bad = lb end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"ok":%.0f,"non200":%.0f,"duplicates":0,"valid":%.0f,' ..
    '"err_connect":%.0f,"err_read":%.0f,"err_write":%.0f,"err_timeout":%.0f,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%.0f,"lat_p90_us":%.0f,"lat_p99_us":%.0f,"lat_max_us":%.0f}\n',
    summary.requests, summary.duration, ok_total, bad_total, valid_total,
    e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  io.write("BENCH_LASTBAD " .. (string.gsub(bad, "\n", " ")) .. "\n")
end
