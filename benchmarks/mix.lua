-- wrk script: POST the notification mix of benchmarks/bodies.py, every body unique.
--
--   wrk -t 1 -c 64 -d 10s --latency -s benchmarks/mix.lua http://127.0.0.1:PORT -- MIX.lua
--
-- MIX.lua is the table `python -m benchmarks.bodies --lua MIX.lua` writes: templates whose parts
-- are literal strings or token numbers (1 counter, 2 pooled device id, 3 unique device id,
-- 4 platform time). Request n uses template n mod #items, exactly as bodies.render(t, n) does;
-- n starts at the table's `first` (0 unless a prefilled store holds the earlier requests).
-- done() prints one line "IOTPUSH_BENCH_JSON {...}" that benchmarks/run.py reads.

local thread_count = 0
local counter = 0
local items, n_items, devices, base_time, device_prefix, unique_prefix
local headers = {["Content-Type"] = "application/json", ["User-Agent"] = "iotpush-bench"}
local fmt, date, concat = string.format, os.date, table.concat

function setup(thread)
  -- Threads get disjoint counter ranges, so bodies stay unique with -t > 1 too.
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  local mix = dofile(args[1])
  items, n_items = mix.items, #mix.items
  devices, base_time = mix.devices, mix.base_time
  device_prefix, unique_prefix = mix.device_prefix, mix.unique_prefix
  counter = (thread_index or 0) * 1e10 + (mix.first or 0)
end

function request()
  local n = counter
  counter = n + 1
  local item = items[(n % n_items) + 1]
  local parts, buf = item.parts, {}
  for i = 1, #parts do
    local p = parts[i]
    if type(p) == "string" then
      buf[i] = p
    elseif p == 1 then
      buf[i] = fmt("%d", n)
    elseif p == 2 then
      buf[i] = device_prefix .. fmt("%012d", n % devices)
    elseif p == 3 then
      buf[i] = unique_prefix .. fmt("%012d", n)
    else
      buf[i] = date("!%Y%m%dT%H%M%SZ", base_time + n)
    end
  end
  return wrk.format("POST", item.path, headers, concat(buf))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(fmt(
    'IOTPUSH_BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
