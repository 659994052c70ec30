-- bench/wrk/get.lua: a plain GET (the /healthz baseline), with the same BENCH_JSON summary line.
local threads = {}
function setup(thread) table.insert(threads, thread) end
ok, non200 = 0, 0
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else non200 = non200 + 1 end
end
function done(summary, latency, requests)
  local ok_total, bad_total = 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + (t:get("ok") or 0)
    bad_total = bad_total + (t:get("non200") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"ok":%.0f,"non200":%.0f,"duplicates":0,' ..
    '"err_connect":%.0f,"err_read":%.0f,"err_write":%.0f,"err_timeout":%.0f,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%.0f,"lat_p90_us":%.0f,"lat_p99_us":%.0f,"lat_max_us":%.0f}\n',
    summary.requests, summary.duration, ok_total, bad_total,
    e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
