-- POST distinct Alertmanager v4 deliveries to the webhook, optionally paced; report as JSON.
--
-- wrk -s webhook.lua URL -- TEMPLATE TOKEN RUN [INTERVAL_MS]
--   TEMPLATE     a delivery body in which every "@ID@" is replaced, per request, by ten hex
--                digits unique to this run, thread and request: each fingerprint is new, so
--                every delivery is recorded and processed, none is a duplicate.
--   TOKEN        the webhook bearer token.
--   RUN          0..239, distinguishes runs against the same server (ids from 0xf0 on are
--                left to bodies the bench posts itself).
--   INTERVAL_MS  pacing: each thread starts one request every INTERVAL_MS (on any of its
--                connections). Closed loop: a connection waits for its answer, so the rate
--                holds only while latency stays below connections x interval.
-- done() prints one line "WRK-RESULT {json}" with counts, errors and latency percentiles.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
  return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end

-- main state: give each thread its number, keep the threads to collect their counters
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

-- thread state; the counters are globals so that done() can read them with thread:get
local parts, headers, run_id, interval, next_slot
sent, answered, non2xx = 0, 0, 0

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local text = file:read("*a")
  file:close()
  parts = {}
  local start = 1
  while true do
    local i, j = string.find(text, "@ID@", start, true)
    if not i then break end
    table.insert(parts, string.sub(text, start, i - 1))
    start = j + 1
  end
  table.insert(parts, string.sub(text, start))
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. args[2],
  }
  run_id = tonumber(args[3])
  interval = tonumber(args[4] or "0")
end

function delay()
  if interval <= 0 then return 0 end
  local now = now_ms()
  if next_slot == nil or next_slot < now then next_slot = now end
  local wait = next_slot - now
  next_slot = next_slot + interval
  return math.floor(wait)
end

function request()
  local id = string.format("%02x%02x%06x", run_id, thread_id, sent)
  sent = sent + 1
  return wrk.format("POST", "/webhook", headers, table.concat(parts, id))
end

function response(status, headers, body)
  answered = answered + 1
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local total_sent, total_answered, total_non2xx = 0, 0, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_answered = total_answered + thread:get("answered")
    total_non2xx = total_non2xx + thread:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "sent": %d, ' ..
    '"answered": %d, "non2xx": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "mean_us": %.1f, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, total_sent, total_answered,
    total_non2xx, e.connect, e.read, e.write, e.status, e.timeout, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
