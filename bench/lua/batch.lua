-- POST /events: a CloudEvents batch of BENCH_BATCH_SIZE structured events, each with a unique id.
-- Each event is BENCH_EVENT_PREFIX .. id .. BENCH_EVENT_SUFFIX (built in bench/payloads.py), so
-- building a request is one string join, cheap enough to keep wrk off the critical path.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "common.lua")

local path = os.getenv("BENCH_PATH") or "/events"
local batch_size = tonumber(os.getenv("BENCH_BATCH_SIZE") or "100")
local ev_prefix = assert(os.getenv("BENCH_EVENT_PREFIX"), "BENCH_EVENT_PREFIX is not set")
local ev_suffix = assert(os.getenv("BENCH_EVENT_SUFFIX"), "BENCH_EVENT_SUFFIX is not set")
local headers = {
  ["Content-Type"] = "application/cloudevents-batch+json",
  ["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN is not set"),
}
local prefix

function init(args)
  prefix = id_prefix()
end

function request()
  sent = sent + 1
  local base = prefix .. sent .. "-"
  local parts = {}
  for i = 1, batch_size do
    parts[i] = ev_prefix .. base .. i .. ev_suffix
  end
  return wrk.format("POST", path, headers, "[" .. table.concat(parts, ",") .. "]")
end
