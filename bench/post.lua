-- wrk script for bench_api.py: POST bodies read from a file (one JSON body per line), in turn; at the end,
-- print the results as one JSON line.
local bodies = {}
local n = 0
local headers = {["Content-Type"] = "application/json"}

init = function(args)
  local f = assert(io.open(args[1], "rb"))
  for line in f:lines() do
    bodies[#bodies + 1] = line
  end
  f:close()
  n = math.random(#bodies)
end

request = function()
  n = n % #bodies + 1
  return wrk.format("POST", nil, headers, bodies[n])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
