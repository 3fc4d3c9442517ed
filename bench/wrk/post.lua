-- wrk script for `make bench`: POST a JSON body read from a file, with an optional bearer key, and
-- print one JSON line of results at the end (latencies in microseconds).
--
--   BENCH_BODY_FILE=body.json BENCH_KEY=gh_... wrk -t1 -c1 -d5s -s bench/wrk/post.lua URL
--
-- BENCH_KEY_HEADER names another header for the bare key (x-api-key, as Anthropic's clients send it);
-- BENCH_HEADERS adds headers, "name: value" separated by newlines (e.g. anthropic-version).
--
-- wrk counts a response with a status above 399 as an error (errors.status); the harness also
-- counts anything else that is not 2xx by comparing requests with its own checks.

local body_file = os.getenv("BENCH_BODY_FILE")
local key = os.getenv("BENCH_KEY")
local key_header = os.getenv("BENCH_KEY_HEADER")
local extra = os.getenv("BENCH_HEADERS")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if key ~= nil and key ~= "" then
  if key_header == nil or key_header == "" or key_header:lower() == "authorization" then
    wrk.headers["Authorization"] = "Bearer " .. key
  else
    wrk.headers[key_header] = key
  end
end
if extra ~= nil then
  for line in extra:gmatch("[^\n]+") do
    local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
    if name ~= nil then
      wrk.headers[name] = value
    end
  end
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
