-- Shared by the bench scripts (loaded with dofile): a thread id for unique ids, counting of
-- responses by status, and one machine-readable result line printed by done().
-- Every non-202 answer is counted and the first one is kept, so the harness can report it loudly.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

-- Per-thread counters (globals, so done() can read them with thread:get).
sent, n202, n200, n4xx, n5xx, nother = 0, 0, 0, 0, 0, 0
first_bad = ""
run_id = os.getenv("BENCH_RUN_ID") or "run"

-- Unique across threads and runs: the harness gives every wrk run a fresh BENCH_RUN_ID.
function id_prefix()
  return run_id .. "-" .. tostring(tid or 0) .. "-"
end

function response(status, headers, body)
  if status == 202 then
    n202 = n202 + 1
    return
  end
  if status == 200 then
    n200 = n200 + 1 -- the hub's "duplicate": answered but not published
  elseif status >= 400 and status < 500 then
    n4xx = n4xx + 1
  elseif status >= 500 then
    n5xx = n5xx + 1
  else
    nother = nother + 1
  end
  if first_bad == "" then
    first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 200)
  end
end

local function json_string(s)
  s = string.gsub(s, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local totals = { sent = 0, n202 = 0, n200 = 0, n4xx = 0, n5xx = 0, nother = 0 }
  local bad = ""
  for _, t in ipairs(threads) do
    for k, v in pairs(totals) do
      totals[k] = v + (t:get(k) or 0)
    end
    if bad == "" then
      bad = t:get("first_bad") or ""
    end
  end
  local e = summary.errors
  local fields = {
    '"requests":' .. summary.requests,
    '"duration_us":' .. summary.duration,
    '"bytes":' .. summary.bytes,
    '"p50_us":' .. latency:percentile(50),
    '"p99_us":' .. latency:percentile(99),
    '"max_us":' .. latency.max,
    '"mean_us":' .. string.format("%.1f", latency.mean),
    '"connect_errors":' .. e.connect,
    '"read_errors":' .. e.read,
    '"write_errors":' .. e.write,
    '"timeouts":' .. e.timeout,
    '"first_bad":' .. json_string(bad),
  }
  for k, v in pairs(totals) do
    table.insert(fields, '"' .. k .. '":' .. v)
  end
  io.write("BENCH_RESULT {" .. table.concat(fields, ",") .. "}\n")
end
