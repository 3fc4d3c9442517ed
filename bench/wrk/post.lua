-- wrk script for `make bench`: POST a JSON body read from a file, with an optional bearer key, and
-- print one JSON line of results at the end (latencies in microseconds).
--
--   BENCH_BODY_FILE=body.json BENCH_KEY=gh_... wrk -t1 -c1 -d5s -s bench/wrk/post.lua URL
--
-- wrk counts a response with a status above 399 as an error (errors.status); the harness also
-- counts anything else that is not 2xx by comparing requests with its own checks.

local body_file = os.getenv("BENCH_BODY_FILE")
local key = os.getenv("BENCH_KEY")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if key ~= nil and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
if body_file ~= nil then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
